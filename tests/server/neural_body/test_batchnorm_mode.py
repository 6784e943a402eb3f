"""BatchNorm with batch statistics at test time, as the original's run.py ."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from server.neural_body.batchnorm_mode import batch_statistics, batchnorm_mode, set_batchnorm_mode
from server.neural_body.sparse_input import prepare_sparse_input
from tests.server.neural_body.nb_fixtures import ellipsoid_body, random_network


def _volumes(network, sparse):
    with torch.no_grad():
        return network.encode_sparse_voxels(sparse)


def test_batch_stats_mode_matches_train_mode_without_touching_running_buffers() -> None:
    network = random_network(200, 2, seed=5)
    sparse = prepare_sparse_input(ellipsoid_body(200, seed=5), np.zeros(3), np.zeros(3))
    buffers = {k: v.clone() for k, v in network.named_buffers()}
    assert batchnorm_mode(network) == "batch_stats"  # the default, as imported checkpoints

    batch = _volumes(network, sparse)
    for key, value in network.named_buffers():
        assert torch.equal(value, buffers[key]), f"{key} changed"

    original_style = copy.deepcopy(network).train()  # the original: network.train() at evaluation
    reference = _volumes(original_style, sparse)
    for a, b in zip(batch, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    with batch_statistics(network, enabled=False):
        assert batchnorm_mode(network) == "running"
        running = _volumes(network, sparse)
    assert batchnorm_mode(network) == "batch_stats"  # restored
    assert any(not torch.allclose(a, b, atol=1e-3) for a, b in zip(batch, running, strict=True))

    set_batchnorm_mode(network, "running")
    torch.testing.assert_close(_volumes(network, sparse)[0], running[0])
    with batch_statistics(network):
        torch.testing.assert_close(_volumes(network, sparse)[0], batch[0])
    assert batchnorm_mode(network) == "running"
    for key, value in network.named_buffers():
        assert torch.equal(value, buffers[key]), f"{key} changed"


def test_bad_mode_is_named() -> None:
    with pytest.raises(ValueError, match="batchnorm mode must be one of"):
        set_batchnorm_mode(torch.nn.Sequential(), "frozen")
