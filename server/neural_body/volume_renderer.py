"""Volume rendering of Neural Body, reference path (if_clight_renderer + raw2outputs of the original).

Ray level (differentiable; used by training):

- ``sample_depths(near (R,), far (R,), n_samples=64, *, perturb=False, generator=None, uniforms=None) -> z_vals (R,S)``:
  linear in camera z-depth; stratified jitter when ``perturb``.
- ``raw2outputs(raw (R,S,4), z_vals (R,S), ray_d (R,3), *, white_bkgd=False) -> RayOutputs``:
  rgb = sigmoid, alpha = 1 − exp(−relu(σ)·dist), dist·‖ray_d‖ with 1e10 appended (``sample_intervals``), weights
  with +1e-10 cumprod (``alpha_weights``); ``composite(rgb (R,S,3), weights (R,S), z_vals) -> RayOutputs`` its sums.
- ``render_rays(network, volumes, sparse_input, ray_o (R,3), ray_d (R,3), near (R,), far (R,), latent_index, *,
  n_samples=64, perturb=False, chunk=2048, occupancy=None, outside_share=0, noise=None, march=None) -> RayOutputs``:
  ``perturb`` only takes effect while ``network.training`` (as the original); with ``occupancy``, the fast path's
  training sampler, marched as ``TrainingMarch`` says (rays stop when hidden, colours only where they count).
  ``volumes = network.encode_sparse_voxels(sparse_input)``, encoded once per image / training step.
- ``RayNoise.draw(R, S, generator, outside=False)``: the random numbers of a ray batch drawn up front (the stratified
  jitter, the occupancy sampler's choice of outside samples); ``render_rays(..., noise=noise.rows(a, b))`` renders
  rays a..b exactly as they would be rendered within the whole batch (data-parallel training splits a batch so).
- ``RayOutputs``: ``rgb_map (R,3)``, ``acc_map (R,)``, ``depth_map (R,)`` (Σ w·z: camera z-depth in metres),
  ``weights (R,S)``; also readable as ``out["rgb_map"]``.

Image level (inference, no grad):

- ``render_image(network, vertices, Rh, Th, latent_index, K, R, T, width, height, *, renderer=None,
  box_padding=ZJU_PADDING, voxel_size=0.005) -> ImageRender`` voxelises the body and renders every pixel.
- ``ImageRender``: numpy ``rgb (H,W,3)``, ``alpha (H,W)`` (= acc), ``depth (H,W)`` (raw Σ w·z as the original;
  0 outside the box, callers zero it where alpha = 0), ``mask_at_box (H,W) bool``. Row 0 = top.
- ``ImageRenderer`` protocol: ``render(network, sparse_input, latent_index, K, R, T, width, height) -> ImageRender``.
  ``ReferenceRenderer(n_samples=64, chunk=2048)`` is this module's implementation; a faster one (issue 4) implements
  the same method and is passed as ``renderer=``.

``render_image`` switches the network to eval mode for the call (BatchNorm then follows the network's
``batchnorm`` mode, batch statistics by default) and restores the previous mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from server.neural_body.config import point_chunk
from server.neural_body.feature_tables import FeatureTables
from server.neural_body.network import NeuralBodyNetwork, smpl_grid_coords
from server.neural_body.occupancy import Occupancy
from server.neural_body.rays import get_rays, near_far
from server.neural_body.sparse_input import VOXEL_SIZE, ZJU_PADDING, BoxPadding, SparseInput, prepare_sparse_input

N_SAMPLES = 64
CHUNK = 2048  # rays per network call
FAR_DIST = 1e10  # length given to the last sample interval


@dataclass
class RayOutputs:
    rgb_map: torch.Tensor  # (R,3) in [0,1]
    acc_map: torch.Tensor  # (R,) accumulated opacity
    depth_map: torch.Tensor  # (R,) Σ w·z, camera z-depth (metres)
    weights: torch.Tensor  # (R,S)
    # The same sums without the last sample, whose interval the original stretches to 1e10: on a black background
    # that sample absorbs every ray that does not hit the body (opaque black "fog" filling the box), which is harmless
    # for RGB over black but not for compositing. These give the opacity of the box's own volume.
    opacity_map: torch.Tensor | None = None  # (R,) Σ_{i<S-1} w_i = 1 − transmittance up to the last sample
    inner_rgb_map: torch.Tensor | None = None  # (R,3) Σ_{i<S-1} w_i·c_i (premultiplied)
    inner_depth_map: torch.Tensor | None = None  # (R,) Σ_{i<S-1} w_i·z_i
    # The occupancy sampler only: Σ of the opacities (α) of the samples outside the occupancy that were evaluated
    # (its outside share), a scalar with autograd: what the loss's emptiness term reads.
    outside_alpha: torch.Tensor | None = None

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)


@dataclass
class ImageRender:
    rgb: np.ndarray  # (H,W,3) float32
    alpha: np.ndarray  # (H,W) float32
    depth: np.ndarray  # (H,W) float32, metres; raw Σ w·z (0 outside the box)
    mask_at_box: np.ndarray  # (H,W) bool: rays that hit the padded world box
    # For compositing (RayOutputs.opacity_map): the box volume's own opacity, the straight colour and the expected
    # camera z of what it holds (0 where the opacity is 0).
    opacity: np.ndarray | None = None  # (H,W) float32
    straight_rgb: np.ndarray | None = None  # (H,W,3) float32
    surface_depth: np.ndarray | None = None  # (H,W) float32


@dataclass
class RayNoise:
    """The random numbers of a ray batch, drawn before rendering: ``jitter`` (R,S) uniforms place the stratified
    samples within their bins, ``outside`` (R,S) uniforms (or None) pick the occupancy sampler's outside samples
    (those below ``outside_share``). A ray's samples then depend only on its own row, not on the chunking or on
    which process renders it."""

    jitter: torch.Tensor
    outside: torch.Tensor | None = None

    @classmethod
    def draw(cls, n_rays: int, n_samples: int, generator: torch.Generator, *, outside: bool = False) -> RayNoise:
        """Uniforms on the generator's device, jitter first, then (if ``outside``) the outside choice."""
        device = generator.device
        jitter = torch.rand((n_rays, n_samples), generator=generator, device=device)
        picks = torch.rand((n_rays, n_samples), generator=generator, device=device) if outside else None
        return cls(jitter, picks)

    def rows(self, start: int, stop: int) -> RayNoise:
        return RayNoise(self.jitter[start:stop], None if self.outside is None else self.outside[start:stop])

    def to(self, device: torch.device | str) -> RayNoise:
        return RayNoise(self.jitter.to(device), None if self.outside is None else self.outside.to(device))


def sample_depths(near: torch.Tensor, far: torch.Tensor, n_samples: int = N_SAMPLES, *, perturb: bool = False,
                  generator: torch.Generator | None = None, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """(R,) near/far → (R,S) sample depths, linear between them; jittered within their bins when ``perturb`` (by
    ``uniforms`` (R,S) when given, else by fresh ones from ``generator``)."""
    t = torch.linspace(0.0, 1.0, n_samples, device=near.device, dtype=near.dtype)
    z = near[:, None] * (1.0 - t) + far[:, None] * t
    if perturb:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        upper = torch.cat([mids, z[:, -1:]], dim=1)
        lower = torch.cat([z[:, :1], mids], dim=1)
        u = (uniforms.to(z.dtype) if uniforms is not None
             else torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype))
        z = lower + (upper - lower) * u
    return z


def raw2outputs(raw: torch.Tensor, z_vals: torch.Tensor, ray_d: torch.Tensor, *,
                white_bkgd: bool = False) -> RayOutputs:
    """Composite raw network outputs along each ray (NeRF quadrature as in the original)."""
    rgb = torch.sigmoid(raw[..., :3])
    alpha = 1.0 - torch.exp(-F.relu(raw[..., 3]) * sample_intervals(z_vals, ray_d))
    out = composite(rgb, alpha_weights(alpha), z_vals)
    if white_bkgd:
        out.rgb_map = out.rgb_map + (1.0 - out.acc_map[:, None])
    return out


def sample_intervals(z_vals: torch.Tensor, ray_d: torch.Tensor) -> torch.Tensor:
    """(R,S) metric length of each sample's interval: the z-depth steps times ‖ray_d‖, FAR_DIST for the last."""
    dists = torch.cat([z_vals[:, 1:] - z_vals[:, :-1], torch.full_like(z_vals[:, :1], FAR_DIST)], dim=1)
    return dists * torch.linalg.norm(ray_d, dim=-1)[:, None]


def alpha_weights(alpha: torch.Tensor) -> torch.Tensor:
    """(R,S) weights α·T of the samples' opacities (R,S), T with the original's +1e-10 in its cumulative product."""
    ones = torch.ones_like(alpha[:, :1])
    return alpha * torch.cumprod(torch.cat([ones, 1.0 - alpha + 1e-10], dim=1), dim=1)[:, :-1]


def composite(rgb: torch.Tensor, weights: torch.Tensor, z_vals: torch.Tensor) -> RayOutputs:
    """The per-ray sums of colours (R,S,3) and sample depths (R,S) under ``weights`` (R,S)."""
    rgb_map = torch.sum(weights[..., None] * rgb, dim=1)
    acc_map = torch.sum(weights, dim=1)
    depth_map = torch.sum(weights * z_vals, dim=1)
    inner = weights[:, :-1]
    opacity_map = torch.sum(inner, dim=1)
    inner_rgb_map = torch.sum(inner[..., None] * rgb[:, :-1], dim=1)
    inner_depth_map = torch.sum(inner * z_vals[:, :-1], dim=1)
    return RayOutputs(rgb_map=rgb_map, acc_map=acc_map, depth_map=depth_map, weights=weights,
                      opacity_map=opacity_map, inner_rgb_map=inner_rgb_map, inner_depth_map=inner_depth_map)


def _render_chunk(network: NeuralBodyNetwork, volumes: list[torch.Tensor], sparse_input: SparseInput,
                  ray_o: torch.Tensor, ray_d: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                  latent_index: int | torch.Tensor, n_samples: int, perturb: bool,
                  occupancy: Occupancy | None, outside_share: float, noise: RayNoise | None,
                  march: TrainingMarch, outside_alpha: bool = False) -> RayOutputs:
    z_vals = sample_depths(near, far, n_samples, perturb=perturb, uniforms=None if noise is None else noise.jitter)
    pts = ray_o[:, None] + ray_d[:, None] * z_vals[..., None]  # (R,S,3) world
    viewdir = ray_d / torch.linalg.norm(ray_d, dim=-1, keepdim=True)
    viewdir = viewdir[:, None].expand_as(pts)
    if occupancy is None:
        raw = network.calculate_density_color(pts.reshape(-1, 3), viewdir.reshape(-1, 3), volumes, sparse_input,
                                              latent_index)
        return raw2outputs(raw.reshape(-1, n_samples, 4), z_vals, ray_d)
    # Samples outside the body's occupancy are empty (density 0: they add nothing).
    pts_smpl = sparse_input.world_to_smpl(pts)
    keep = occupancy.contains(pts_smpl)
    if outside_share > 0.0:  # a random share of the empty space too, so the network keeps it empty
        picks = (noise.outside if noise is not None and noise.outside is not None
                 else torch.rand(keep.shape, device=keep.device))
        picked = picks < outside_share
        outside = picked & ~keep if outside_alpha else None  # only when the loss reads their opacity
        keep = keep | picked
    else:
        outside = None
    return _march_occupied(network, volumes, sparse_input, pts, pts_smpl, viewdir[:, 0], z_vals, ray_d, keep,
                           latent_index, march, outside)


@dataclass(frozen=True)
class TrainingMarch:
    """How the occupancy sampler marches a training ray (``render_rays(..., occupancy=...)``): in segments of
    ``segment`` samples, a ray's samples stop once the transmittance in front of them is below ``stop_transmittance``
    (they could add at most that much to any output, and their gradient is as small), and the colour head runs only
    for samples whose weight exceeds ``min_weight`` (a dropped sample's colour would enter the loss with less than
    that weight). ``TrainingMarch(0.0, 0.0)`` evaluates every kept sample: exactly the box sampler with zero density
    outside the occupancy.

    Under autograd, a sample whose raw density is ≤ 0 has no gradient at all (the ReLU is flat there, its opacity is
    0, so its weight is 0 and its colour is never asked for): once fewer than ``recompute_below`` of a call's
    density samples so far were positive, a segment's density pass runs without autograd first (oneDNN's fused
    layers, no saved activations) and again with it only for the positive samples. On a trained actor ~25 % of the
    samples are positive, so the backward pass, twice a forward, covers a quarter of them; early in training most
    are positive and one pass is cheaper. The gradients are the same (the dropped samples add exact zeros)."""

    stop_transmittance: float = 1e-4
    min_weight: float = 1e-5
    segment: int = 8
    recompute_below: float = 0.5


def _march_occupied(network: NeuralBodyNetwork, volumes: list[torch.Tensor] | FeatureTables,
                    sparse_input: SparseInput, pts: torch.Tensor, pts_smpl: torch.Tensor, viewdir: torch.Tensor,
                    z_vals: torch.Tensor, ray_d: torch.Tensor, keep: torch.Tensor, latent_index: int | torch.Tensor,
                    march: TrainingMarch, outside: torch.Tensor | None = None) -> RayOutputs:
    """``raw2outputs`` of R rays whose samples ``pts`` (R,S,3) world (``pts_smpl`` in the SMPL frame) are evaluated
    where ``keep`` (R,S) and, per ``march``, while the ray is still visible; the colour only where a sample's weight
    counts (differentiable). ``outside`` (R,S) marks the kept samples outside the occupancy: their opacities' sum
    comes back as ``outside_alpha``."""
    num_rays, num_samples = keep.shape
    flat_pts, flat_smpl = pts.reshape(-1, 3), pts_smpl.reshape(-1, 3)
    dists = sample_intervals(z_vals, ray_d).reshape(-1)
    step = point_chunk(pts.device.type)  # cache-sized point batches on a CPU, as the fast renderer's
    alpha = pts.new_zeros(num_rays * num_samples)
    transmittance = torch.ones(num_rays, device=pts.device)  # in front of the segment (no gradient: a decision)
    flats, trunks = [], []
    positive, seen = 0, 0  # density samples so far with raw density > 0, and all of them
    tracked = torch.is_grad_enabled()  # without autograd there is nothing to save: one pass
    for s0 in range(0, num_samples, march.segment):
        s1 = min(num_samples, s0 + march.segment)
        alive = transmittance > march.stop_transmittance
        ray_idx, sample_idx = torch.nonzero(keep[:, s0:s1] & alive[:, None], as_tuple=True)
        flat = ray_idx * num_samples + sample_idx + s0
        grid = smpl_grid_coords(flat_smpl[flat], sparse_input)
        # the first segment with samples always runs one pass (it measures the share, and makes fc_0's fold with
        # autograd for the segments after it)
        recompute = (tracked and flat.numel() > 0 and seen > 0 and positive < march.recompute_below * seen)
        seen += flat.numel()
        if recompute:
            with torch.no_grad():  # which samples can have a gradient (see TrainingMarch)
                raw = torch.cat([network.density_head(network.trunk_at(part, volumes)) for part in grid.split(step)])
                has_density = raw[:, 0] > 0
            flat, grid = flat[has_density], grid[has_density]
            positive += flat.numel()
        if flat.numel():
            # (split, not slices: a slice's backward writes into a zero tensor of the whole input, every chunk)
            trunk = torch.cat([network.trunk_at(part, volumes) for part in grid.split(step)])
            density = network.density_head(trunk)[:, 0]
            if tracked and not recompute:
                positive += int((density > 0).sum())
            seg_alpha = 1.0 - torch.exp(-F.relu(density) * dists[flat])
            alpha = alpha.index_put((flat,), seg_alpha)
            flats.append(flat)
            trunks.append(trunk)
        with torch.no_grad():
            seg = alpha.view(num_rays, num_samples)[:, s0:s1]
            transmittance = transmittance * torch.prod(1.0 - seg + 1e-10, dim=1)
    weights = alpha_weights(alpha.view(num_rays, num_samples))
    rgb = pts.new_zeros((num_rays * num_samples, 3))
    if flats:
        flat, trunk = torch.cat(flats), torch.cat(trunks)
        shown = weights.detach().view(-1)[flat] > march.min_weight
        flat, trunk = flat[shown], trunk[shown]
        parts = zip(trunk.split(step), flat_pts[flat].split(step), viewdir[flat // num_samples].split(step),
                    strict=True)
        layer = network.colour_layer(latent_index)
        colour = torch.cat([network.color_head(net, wpts, dirs, latent_index, layer) for net, wpts, dirs in parts]
                           or [trunk.new_zeros((0, 3))])
        rgb = rgb.index_put((flat,), torch.sigmoid(colour))
    out = composite(rgb.view(num_rays, num_samples, 3), weights, z_vals)
    # (a stopped ray's hidden samples were not evaluated: their α is 0 here, as their share of the opacity is < 1e-4)
    out.outside_alpha = None if outside is None else torch.dot(alpha, outside.reshape(-1).to(alpha.dtype))
    return out


def render_rays(network: NeuralBodyNetwork, volumes: list[torch.Tensor], sparse_input: SparseInput,
                ray_o: torch.Tensor, ray_d: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                latent_index: int | torch.Tensor, *, n_samples: int = N_SAMPLES, perturb: bool = False,
                chunk: int = CHUNK, occupancy: Occupancy | None = None, outside_share: float = 0.0,
                noise: RayNoise | None = None, march: TrainingMarch | None = None,
                outside_alpha: bool = False) -> RayOutputs:
    """Render R rays (all assumed to hit the box) in chunks of ``chunk`` rays → ``RayOutputs``. With ``occupancy``
    only the samples inside it (and a random ``outside_share`` of the others) reach the network, marched as
    ``march`` says (default ``TrainingMarch()``); the others are empty: the training sampler of the fast path.
    ``outside_alpha`` also sums the opacities of the evaluated outside samples (``RayOutputs.outside_alpha``).
    ``noise`` (R rows of S) supplies the random numbers; without it
    they come from torch's global generator."""
    if noise is not None and tuple(noise.jitter.shape) != (ray_o.shape[0], n_samples):
        raise ValueError(f"noise has shape {tuple(noise.jitter.shape)}; expected ({ray_o.shape[0]}, {n_samples})")
    jitter = bool(perturb) and network.training
    parts = [
        _render_chunk(network, volumes, sparse_input, ray_o[i:i + chunk], ray_d[i:i + chunk], near[i:i + chunk],
                      far[i:i + chunk], latent_index, n_samples, jitter, occupancy, outside_share,
                      None if noise is None else noise.rows(i, i + chunk), march or TrainingMarch(),
                      outside_alpha)
        for i in range(0, ray_o.shape[0], chunk)
    ]
    if not parts:
        empty = ray_o.new_zeros((0,))
        return RayOutputs(ray_o.new_zeros((0, 3)), empty, empty, ray_o.new_zeros((0, n_samples)))
    if len(parts) == 1:
        return parts[0]
    out = RayOutputs(*(torch.cat([getattr(p, name) for p in parts], dim=0)
                       for name in ("rgb_map", "acc_map", "depth_map", "weights", "opacity_map", "inner_rgb_map",
                                    "inner_depth_map")))
    if parts[0].outside_alpha is not None:
        out.outside_alpha = torch.stack([p.outside_alpha for p in parts]).sum()
    return out


class ImageRenderer(Protocol):
    def render(self, network: NeuralBodyNetwork, sparse_input: SparseInput, latent_index: int,
               K: np.ndarray, R: np.ndarray, T: np.ndarray, width: int, height: int) -> ImageRender: ...


@dataclass
class ReferenceRenderer:
    """Every pixel whose ray hits the padded world box, 64 uniform samples, chunks of 2048 rays."""

    n_samples: int = N_SAMPLES
    chunk: int = CHUNK

    def render(self, network: NeuralBodyNetwork, sparse_input: SparseInput, latent_index: int,
               K: np.ndarray, R: np.ndarray, T: np.ndarray, width: int, height: int) -> ImageRender:
        device = network.c.weight.device
        sparse_input = sparse_input.to(device)
        ray_o, ray_d = get_rays(height, width, K, R, T, device=device)
        near, far, mask = near_far(sparse_input.world_bounds, ray_o, ray_d)
        rgb = torch.zeros((height, width, 3), device=device)
        acc = torch.zeros((height, width), device=device)
        depth = torch.zeros((height, width), device=device)
        opacity = torch.zeros((height, width), device=device)
        straight = torch.zeros((height, width, 3), device=device)
        surface = torch.zeros((height, width), device=device)
        if bool(mask.any()):
            volumes = self.volumes(network, sparse_input)
            out = render_rays(network, volumes, sparse_input, ray_o[mask], ray_d[mask], near[mask], far[mask],
                              latent_index, n_samples=self.n_samples, chunk=self.chunk)
            rgb[mask] = out.rgb_map
            acc[mask] = out.acc_map
            depth[mask] = out.depth_map
            opacity[mask] = out.opacity_map
            seen = out.opacity_map.clamp_min(1e-6)
            straight[mask] = torch.where(out.opacity_map[:, None] > 1e-6, out.inner_rgb_map / seen[:, None], 0.0)
            surface[mask] = torch.where(out.opacity_map > 1e-6, out.inner_depth_map / seen, 0.0)
        return ImageRender(rgb=rgb.cpu().numpy(), alpha=acc.cpu().numpy(), depth=depth.cpu().numpy(),
                           mask_at_box=mask.cpu().numpy(), opacity=opacity.cpu().numpy(),
                           straight_rgb=straight.cpu().numpy(), surface_depth=surface.cpu().numpy())

    def volumes(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> list[torch.Tensor]:
        """The sparse-conv feature volumes of this pose; subclasses may cache them (they depend only on the pose)."""
        return network.encode_sparse_voxels(sparse_input)


def render_image(network: NeuralBodyNetwork, vertices: np.ndarray | torch.Tensor, Rh: np.ndarray | torch.Tensor,
                 Th: np.ndarray | torch.Tensor, latent_index: int, K: np.ndarray, R: np.ndarray, T: np.ndarray,
                 width: int, height: int, *, renderer: ImageRenderer | None = None,
                 box_padding: BoxPadding = ZJU_PADDING, voxel_size: float = VOXEL_SIZE) -> ImageRender:
    """Render one image of the body posed as ``vertices`` (V,3 world metres, with its Rh/Th) seen by the OpenCV
    camera K, R, T (metres) at width×height, with appearance code ``latent_index``."""
    if not 0 <= int(latent_index) < network.num_train_frames:
        raise ValueError(f"latent_index must be in [0, {network.num_train_frames - 1}]; got {latent_index}")
    sparse_input = prepare_sparse_input(vertices, Rh, Th, voxel_size=voxel_size, box_padding=box_padding,
                                        device=network.c.weight.device)
    renderer = renderer if renderer is not None else ReferenceRenderer()
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            return renderer.render(network, sparse_input, int(latent_index), K, R, T, int(width), int(height))
    finally:
        network.train(was_training)
