"""Which path renders and meshes: the fast path (the default everywhere but ``evaluate``) or the reference path.

``RenderSettings(renderer="fast", margin=DEFAULT_MARGIN, precision="fp32", compile=False)``:

- ``image_renderer(cache=None, owner="")``: a ``FastRenderer`` or ``ReferenceRenderer`` (their cached variants with a
  ``FeatureCache``), for ``volume_renderer.render_image``.
- ``compile_point_network(device) -> seconds``: with ``compile``, the fast path's compiled point network built now
  (``serve --compile`` does it before it listens, so that no request waits for the compilation).
- ``mesh(network, sparse_input, latent_index, *, voxel_size, colors, threshold, cache=None, owner="")``: the
  coarse-to-fine mesh inside the occupancy (fast) or the dense grid over the box (reference); both share the pose's
  cached features with renders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from server.body.model import load_body_model
from server.neural_body.config import DEFAULT_MARGIN, MESH_THRESHOLD, PRECISIONS, RENDERERS
from server.neural_body.fast_renderer import FastRenderer
from server.neural_body.feature_cache import (
    CachedFastRenderer,
    CachedRenderer,
    FeatureCache,
    cached_occupancy,
    cached_tables,
    cached_volumes,
)
from server.neural_body.mesh import Mesh, extract_mesh
from server.neural_body.mesh_coarse_to_fine import extract_mesh_coarse_to_fine
from server.neural_body.network import NeuralBodyNetwork
from server.neural_body.sparse_input import SparseInput, prepare_sparse_input
from server.neural_body.volume_renderer import ImageRenderer, ReferenceRenderer


@dataclass(frozen=True)
class RenderSettings:
    renderer: str = "fast"
    margin: float = DEFAULT_MARGIN  # metres of the occupancy around the body (fast path)
    precision: str = "fp32"  # the point network's precision on the fast path (bf16/fp16: CUDA)
    compile: bool = False  # the fast path's point network through torch.compile (FastRenderer.compile)

    def __post_init__(self) -> None:
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}; got {self.renderer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"the occupancy margin must be 0..1 m; got {self.margin}")

    @property
    def fast(self) -> bool:
        return self.renderer == "fast"

    def image_renderer(self, cache: FeatureCache | None = None, owner: str = "") -> ImageRenderer:
        if self.fast:
            if cache is None:
                return FastRenderer(margin=self.margin, precision=self.precision, compile=self.compile)
            return CachedFastRenderer(cache=cache, owner=owner, margin=self.margin, precision=self.precision,
                                      compile=self.compile)
        return ReferenceRenderer() if cache is None else CachedRenderer(cache=cache, owner=owner)

    def compile_point_network(self, device: str | torch.device) -> float:
        """With ``compile`` on the fast path: build the point network's compiled code for ``device`` now, on a
        network of the demo body's size with random weights (it serves every actor of the architecture); returns
        the seconds it took (0 without ``compile``)."""
        if not (self.fast and self.compile):
            return 0.0
        start = time.perf_counter()
        body = load_body_model(None)
        network = NeuralBodyNetwork(body.num_vertices).to(device)
        zero = np.zeros(3, np.float32)
        vertices = body.pose({"poses": np.zeros(72), "shapes": np.zeros(10), "Rh": zero, "Th": zero}).vertices[0]
        renderer = FastRenderer(margin=self.margin, precision=self.precision, compile=True)
        renderer.compile_now(network, prepare_sparse_input(vertices, zero, zero, device=device))
        return time.perf_counter() - start

    def mesh(self, network: NeuralBodyNetwork, sparse_input: SparseInput, latent_index: int, *, voxel_size: float,
             colors: bool = True, threshold: float = MESH_THRESHOLD, cache: FeatureCache | None = None,
             owner: str = "") -> Mesh:
        if not self.fast:
            encode = None if cache is None else (lambda s: cached_volumes(cache, owner, network, s))
            return extract_mesh(network, sparse_input, latent_index, voxel_size=voxel_size, threshold=threshold,
                                colors=colors, encode=encode)
        occupancy = None
        encode = None
        if cache is not None:
            occupancy = cached_occupancy(cache, owner, network, sparse_input, self.margin)
            encode = lambda s: cached_tables(cache, owner, network, s)  # noqa: E731
        return extract_mesh_coarse_to_fine(network, sparse_input, latent_index, voxel_size=voxel_size,
                                           threshold=threshold, colors=colors, occupancy=occupancy, encode=encode,
                                           margin=self.margin)


DEFAULT_SETTINGS = RenderSettings()  # the fast path with the measured margin, fp32
