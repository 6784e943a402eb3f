"""Small bodies, cameras and networks for the Neural Body model tests (CPU, a few hundred vertices)."""

from __future__ import annotations

import numpy as np
import torch

from neural_human_addon.core.camera import look_at_extrinsics
from server.neural_body.network import NeuralBodyNetwork


def ellipsoid_body(num_vertices: int = 300, seed: int = 0, center=(0.1, -0.2, 1.0),
                   radii=(0.15, 0.1, 0.35)) -> np.ndarray:
    """(V,3) float32 world vertices scattered on an ellipsoid (a stand-in for a posed body, z up)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(num_vertices, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return (directions * np.asarray(radii) + np.asarray(center)).astype(np.float32)


def look_at(center, target) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world-to-camera (R, T) of a camera at ``center`` looking at ``target`` (world z up)."""
    return look_at_extrinsics(center, target)


def pinhole(width: int, height: int, focal: float) -> np.ndarray:
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])


def random_network(num_vertices: int, num_frames: int, seed: int = 0) -> NeuralBodyNetwork:
    """A natively initialised network with non-trivial BatchNorm affine/running statistics."""
    torch.manual_seed(seed)
    network = NeuralBodyNetwork(num_vertices, num_frames)
    with torch.no_grad():
        for name, buffer in network.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
        for name, param in network.named_parameters():
            if "xyzc_net" in name and param.ndim == 1:  # BN weight / bias
                param.add_(torch.randn_like(param) * 0.1)
        network.alpha_fc.bias.fill_(2.0)  # some opacity so renders are not empty
    return network.eval()


def make_semi_transparent(network: NeuralBodyNetwork, sparse_input) -> None:
    """Density 0 away from the body's features and mixed-sign around them, so many rays end with 0 < alpha < 1
    (with a constant positive density the last sample, 1e10 long, makes every ray opaque)."""
    with torch.no_grad():
        network.alpha_fc.bias.zero_()
        volumes = network.encode_sparse_voxels(sparse_input)
        far_away = sparse_input.world_bounds[1:] + 100.0  # outside the grid: zero features
        baseline = network.calculate_density(far_away, volumes, sparse_input)[0, 0]
        network.alpha_fc.weight.mul_(30.0)
        network.alpha_fc.bias.fill_(-30.0 * float(baseline) - 1e-3)
