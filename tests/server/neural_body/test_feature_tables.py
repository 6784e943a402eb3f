"""Feature tables: the dense volumes' trilinear values from the active sites, and fc_0 folded into them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from server.neural_body.feature_tables import FeatureTables
from server.neural_body.network import features_at, smpl_grid_coords
from server.neural_body.sparse_input import prepare_sparse_input
from tests.server.neural_body.nb_fixtures import ellipsoid_body, random_network


def _body_and_points(seed: int = 3):
    """A random network on an ellipsoid body and grid coordinates near its surface, far outside the grid and on the
    grid's faces and corners (where zero padding and the index grid's padding meet)."""
    verts = ellipsoid_body(400, seed=seed)
    network = random_network(400, 2, seed=seed)
    sparse = prepare_sparse_input(verts, np.array([0.1, 0.3, -0.2]), np.array([0.2, 0.0, 0.1]))
    generator = torch.Generator().manual_seed(seed)
    smpl = sparse.world_to_smpl(torch.from_numpy(verts))
    near = smpl_grid_coords(smpl + 0.02 * torch.randn(smpl.shape, generator=generator), sparse)
    edges = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.3], [-3.0, 0.0, 0.0], [3.0, 0.2, 0.1],
                          [0.0, 5.0, 0.0], [0.999, 0.999, -0.999]])
    return network, sparse, torch.cat([near, edges])


def test_tables_give_the_dense_volumes_values() -> None:
    network, sparse, grid = _body_and_points()
    with torch.no_grad():
        dense = features_at(grid, network.encode_sparse_voxels(sparse))
        tables = FeatureTables.from_levels(network.encode_sparse_levels(sparse))
        looked_up = tables.features_at(grid)
    assert looked_up.shape == (grid.shape[0], 352)
    assert float(dense.abs().max()) > 0.1  # the points see features
    torch.testing.assert_close(looked_up, dense, rtol=1e-5, atol=1e-5)
    assert float(looked_up[-4:-1].abs().max()) == 0.0  # beyond one cell outside the grid: zero padding


@pytest.mark.parametrize("fold_from", [0, 1, 2, 3, 4])
def test_folded_first_layer_is_fc0_of_the_features_values_and_gradients(fold_from: int) -> None:
    network, sparse, grid = _body_and_points()
    layer = network.fc_0
    results = []
    for folded in (False, True):
        network.zero_grad(set_to_none=True)
        tables = FeatureTables.from_levels(network.encode_sparse_levels(sparse))
        if folded:
            out = tables.first_layer(layer, fold_from)(grid)
        else:
            out = F.linear(tables.features_at(grid), layer.weight[..., 0], layer.bias)
        (out * torch.linspace(-1.0, 1.0, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), layer.weight.grad.clone(), network.c.weight.grad.clone()))
    (plain, plain_w, plain_c), (fold, fold_w, fold_c) = results
    torch.testing.assert_close(fold, plain, rtol=1e-5, atol=1e-5)
    # the gradients, to float rounding of their largest entries: fc_0's, and through the sparse conv to the codes
    for got, expected in ((fold_w, plain_w), (fold_c, plain_c)):
        assert float(expected.abs().max()) > 0.0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_the_fold_is_kept_per_pose_and_redone_when_the_weights_change() -> None:
    network, sparse, grid = _body_and_points()
    with torch.no_grad():
        tables = FeatureTables.from_levels(network.encode_sparse_levels(sparse))
        first = tables.first_layer(network.fc_0)
        assert tables.first_layer(network.fc_0) is first
        before = first(grid)
        network.fc_0.weight.mul_(2.0)  # in place, as an optimiser step
        again = tables.first_layer(network.fc_0)
        assert again is not first
        expected = F.linear(tables.features_at(grid), network.fc_0.weight[..., 0], network.fc_0.bias)
        torch.testing.assert_close(again(grid), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, again(grid))


def test_the_training_bags_gradient_equals_embedding_bags() -> None:
    """weighted_bag's sparse-product gradient (a CPU training step's) gives the table the gradient embedding_bag's
    own backward gives, repeated rows and the zero row included."""
    from server.neural_body.feature_tables import weighted_bag

    generator = torch.Generator().manual_seed(4)
    table = torch.randn(50, 24, generator=generator, requires_grad=True)
    rows = torch.randint(0, 50, (300, 8), generator=generator)
    rows[:40] = 49  # many bags reading one row
    weights = torch.rand(300, 8, generator=generator)
    grad_out = torch.randn(300, 24, generator=generator)
    got = weighted_bag(rows, table, weights)
    (got_grad,) = torch.autograd.grad(got, table, grad_out)
    want = F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
    (want_grad,) = torch.autograd.grad(want, table, grad_out)
    assert got.grad_fn is not None and "SparseGradientBag" in type(got.grad_fn).__name__
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-5)


def test_a_fold_made_without_autograd_is_made_again_under_it() -> None:
    """A fold first made under no_grad (the training march's density probe) has no graph; the same tables under
    autograd fold again, so fc_0 and the codes still get their gradient; a fold made with autograd serves both."""
    network, sparse, grid = _body_and_points()
    tables = FeatureTables.from_levels(network.encode_sparse_levels(sparse))
    with torch.no_grad():
        probe = tables.first_layer(network.fc_0)
    tracked = tables.first_layer(network.fc_0)
    assert tracked is not probe and tracked.folded.requires_grad
    with torch.no_grad():
        assert tables.first_layer(network.fc_0) is tracked
    network.zero_grad(set_to_none=True)
    tracked(grid).sum().backward()
    assert float(network.fc_0.weight.grad.abs().sum()) > 0 and float(network.c.weight.grad.abs().sum()) > 0
