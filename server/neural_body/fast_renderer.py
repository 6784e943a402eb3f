"""The fast path of the renderer: the reference's rays, sample depths and quadrature, evaluated only where the body is.

``FastRenderer(margin=DEFAULT_MARGIN, n_samples=64, segment=None, stop_transmittance=1e-4, min_weight=1e-5,
chunk_points=None, chunk_rays=None, precision="fp32", compile=False, refine=True, refine_dilations=DEFAULT_DILATIONS,
refine_min_samples_per_probe=REFINE_MIN_SAMPLES_PER_PROBE)`` implements
``volume_renderer.ImageRenderer``:

1. the same rays and the same 64 sample depths as ``ReferenceRenderer`` (so ``raw2outputs``' quadrature applies
   unchanged, including the 1e10 interval of the last sample);
2. samples outside the pose's ``Occupancy`` count as empty (density 0) and never reach the network; rays with no
   occupied sample are empty without any work. With ``refine`` the body occupancy is first narrowed by density
   queries at the cell centres (``occupancy.refine_level``: cells near a positive density only), level by level,
   each level only when the image's samples pay for its probes (``REFINE_MIN_SAMPLES_PER_PROBE``; a cache also
   counts the samples of the pose's earlier images, and a cached refinement is always used);
3. the rays are marched in segments of ``segment`` samples: the occupied samples of every ray still visible
   (transmittance > ``stop_transmittance``) are compacted into large batches for the density network; a ray stops
   once its transmittance falls below the threshold (what it would still add is bounded by it). ``segment`` None
   takes the device's (``config.march_segment``: 8 on a CPU, where each query costs; one pass of all samples on a
   GPU, where kernel launches and read-backs cost more than the extra queries);
4. the colour head runs only for samples whose weight exceeds ``min_weight`` (opacity and depth take every weight,
   so they do not depend on it; the colour misses at most the dropped weights).

Skipping a sample is exactly the reference with zero density there, so the only differences are the density the
network puts outside the (refined) occupancy, the transmittance left at a ray's stop and the dropped tiny weights.

``compile`` runs the point network (trunk, density and colour heads) through ``torch.compile`` with dynamic shapes
(one compilation serves every pose, batch size and actor; ``compile_now`` builds it ahead, tens of seconds): fewer,
fused kernels on a GPU, for ``bench --compile`` to measure. On a CPU it is slower than the eager path's fused oneDNN
products (measured on 2 cores, new poses: 256² frames 0.85–1.1 s against 0.70–0.95 s, 128² 0.48 against 0.40 s),
so it is off by default. Where ``torch.compile`` cannot build its kernels (no C++ compiler, no Triton) the renderer
warns once and stays eager.
``precision`` "bf16"/"fp16" runs the point network under autocast (CUDA; on CPUs without bf16 units it is slower);
"tf32" keeps fp32 tensors but lets CUDA's matrix products use TF32 tensor cores (on a CPU it is fp32).
The pose's features come as ``FeatureTables`` (the sparse-conv levels' active sites and an index grid, instead of
the reference's dense volumes: the same trilinear values, without densifying ~150 MB per pose).
``features(network, sparse_input)``, ``occupancy(network, sparse_input)`` and ``refined_occupancy(network,
sparse_input, occupancy, tables, samples_in)`` are the hooks a cache overrides. ``chunk_points`` (points per
network batch) and ``chunk_rays`` (rays laid out at once) default by device (``config.point_chunk``, ``ray_chunk``:
small batches on a CPU, large ones on a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from server.neural_body.config import PRECISIONS, march_segment, point_chunk, ray_chunk
from server.neural_body.feature_tables import FeatureTables, FirstLayer
from server.neural_body.network import ColourLayer, NeuralBodyNetwork, smpl_grid_coords
from server.neural_body.occupancy import DEFAULT_DILATIONS, DEFAULT_MARGIN, Occupancy, body_occupancy, refine_level
from server.neural_body.rays import get_rays, near_far
from server.neural_body.sparse_input import SparseInput
from server.neural_body.volume_renderer import N_SAMPLES, ImageRender, sample_depths, sample_intervals

# Apply a refinement level only when the image (with a cache: the pose's images so far) has at least this many
# samples in the current occupancy per probe of the level. A level skips about half of the samples the march
# evaluates, and the march evaluates ~70 % of the occupied ones (it stops at the surface). Measured on the demo actor
# at 256² (a new pose, 398k samples in the 2 cm occupancy, 198k probes for the 1 cm level, 2.0 per probe): the level
# cut the march from 325k to 153k points for its 198k probes, 26k queries more than it saved; the break-even is near
# 2.3 samples per probe, so levels need 3.
REFINE_MIN_SAMPLES_PER_PROBE = 3.0


@dataclass
class FastRenderer:
    """Occupancy-culled, early-terminating renderer that agrees with ``ReferenceRenderer`` (see the module doc)."""

    margin: float = DEFAULT_MARGIN
    n_samples: int = N_SAMPLES
    segment: int | None = None  # None: config.march_segment of the device (8 on a CPU, one pass on a GPU)
    stop_transmittance: float = 1e-4
    min_weight: float = 1e-5
    chunk_points: int | None = None  # None: config.point_chunk of the device
    chunk_rays: int | None = None  # None: config.ray_chunk of the device
    precision: str = "fp32"
    compile: bool = False  # torch.compile the point network (see the module doc)
    refine: bool = True
    refine_dilations: tuple[int, ...] = DEFAULT_DILATIONS
    refine_min_samples_per_probe: float = REFINE_MIN_SAMPLES_PER_PROBE  # 0: every level for every pose

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        self.last_stats: dict[str, int] = {}

    # ------------------------------------------------------------------ hooks (a cache overrides these)

    def features(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> FeatureTables:
        return FeatureTables.from_levels(network.encode_sparse_levels(sparse_input))

    def occupancy(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> Occupancy:
        return body_occupancy(sparse_input, self.margin)

    def refine_pays(self, occupancy: Occupancy, samples_in: Callable[[Occupancy], int] | None) -> bool:
        """Whether another refinement level pays for its probes with ``samples_in(occupancy)`` samples in it (None:
        refine); the samples are only counted when a level is left."""
        if occupancy.level >= len(self.refine_dilations):
            return False
        return samples_in is None or (samples_in(occupancy)
                                      >= self.refine_min_samples_per_probe * occupancy.next_level_probes)

    def refined_occupancy(self, network: NeuralBodyNetwork, sparse_input: SparseInput, occupancy: Occupancy,
                          tables: FeatureTables,
                          samples_in: Callable[[Occupancy], int] | None = None) -> Occupancy:
        """``occupancy`` refined by density level by level while a level pays for itself: ``samples_in(occ)`` is the
        number of the image's samples inside ``occ`` (None: apply every level)."""
        def density(pts: torch.Tensor) -> torch.Tensor:
            return self._density(network, tables, sparse_input, pts, keep_trunk=False)[0]

        while self.refine_pays(occupancy, samples_in):
            probes = occupancy.probes
            occupancy = refine_level(occupancy, density, self.refine_dilations[occupancy.level])
            self.last_stats["probe_points"] = self.last_stats.get("probe_points", 0) + occupancy.probes - probes
        return occupancy

    def compile_now(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> None:
        """With ``compile``: build the point network's compiled code now, on a few points of ``sparse_input``'s body,
        so that no frame waits for it (it serves every later pose, batch size and actor of this architecture, with
        this renderer's precision)."""
        if not self.compile:
            return
        device = network.c.weight.device
        sparse_input = sparse_input.to(device)
        was_training = network.training
        network.eval()  # as render_image runs it (the compiled code is specialised to the modules' mode)
        try:
            with torch.no_grad():
                tables = self.features(network, sparse_input)
                # a batch size no other dimension has: the compiler would take an equal one for the same size
                steps = torch.linspace(0.0, 1.0, 97, device=device)[:, None]
                pts_smpl = sparse_input.bounds[0] + steps * (sparse_input.bounds[1] - sparse_input.bounds[0])
                _, trunks = self._density(network, tables, sparse_input, pts_smpl)
                wpts = pts_smpl @ sparse_input.R.t() + sparse_input.Th
                self._colour(network, trunks[0], wpts, F.normalize(wpts, dim=1), 0)
        finally:
            network.train(was_training)

    # ------------------------------------------------------------------ image

    def render(self, network: NeuralBodyNetwork, sparse_input: SparseInput, latent_index: int,
               K: np.ndarray, R: np.ndarray, T: np.ndarray, width: int, height: int) -> ImageRender:
        device = network.c.weight.device
        sparse_input = sparse_input.to(device)
        ray_o, ray_d = get_rays(height, width, K, R, T, device=device)
        near, far, mask = near_far(sparse_input.world_bounds, ray_o, ray_d)
        names = ("rgb", "acc", "depth", "opacity", "inner_rgb", "inner_depth")
        image = {n: torch.zeros((height, width, 3) if "rgb" in n else (height, width), device=device) for n in names}
        self.last_stats = {"box_rays": int(mask.sum()), "occupied_rays": 0, "density_points": 0, "color_points": 0,
                           "probe_points": 0}
        if bool(mask.any()):
            occupancy = self.occupancy(network, sparse_input).to(device)
            volumes = None
            rows = torch.nonzero(mask.reshape(-1))[:, 0]
            o, d = ray_o.reshape(-1, 3)[rows], ray_d.reshape(-1, 3)[rows]
            n, f = near.reshape(-1)[rows], far.reshape(-1)[rows]
            rays_at_once = self.chunk_rays if self.chunk_rays is not None else ray_chunk(device.type)
            for start in range(0, rows.numel(), rays_at_once):
                sl = slice(start, start + rays_at_once)
                z = sample_depths(n[sl], f[sl], self.n_samples)
                pts = o[sl, None] + d[sl, None] * z[..., None]  # (R,S,3) world
                pts_smpl = sparse_input.world_to_smpl(pts)
                occupied = occupancy.contains(pts_smpl)  # (R,S)
                if not bool(occupied.any()):
                    continue
                if volumes is None:  # the pose's first occupied ray: encode (and refine) now, not for empty views
                    volumes = self.features(network, sparse_input)
                    if self.refine:
                        def samples_in(occ: Occupancy, pts: torch.Tensor = pts_smpl, rays: int = rows.numel(),
                                       body: Occupancy = occupancy, in_body: torch.Tensor = occupied) -> int:
                            # the image's samples inside occ, estimated from this first chunk of rays (every 8th
                            # ray of it for a refined occupancy: an estimate, at an eighth of the lookups)
                            if occ is body:
                                return int(in_body.sum()) * rays // pts.shape[0]
                            some = pts[::8]
                            return int(occ.contains(some).sum()) * rays // some.shape[0]

                        occupancy = self.refined_occupancy(network, sparse_input, occupancy, volumes,
                                                           samples_in).to(device)
                        # the refined cells lie inside the body occupancy: test only the samples inside that
                        occupied = occupied.masked_scatter(occupied, occupancy.contains(pts_smpl[occupied]))
                # row indices, not a boolean mask: one read-back here instead of one per array indexed
                hit = torch.nonzero(occupied.any(dim=1))[:, 0]
                if not hit.numel():
                    continue
                out = self._march(network, volumes, sparse_input, latent_index, pts.index_select(0, hit),
                                  pts_smpl.index_select(0, hit), d[sl].index_select(0, hit), z.index_select(0, hit),
                                  occupied.index_select(0, hit))
                target = rows[sl].index_select(0, hit)
                for name in names:
                    image[name].view(height * width, -1)[target] = out[name].reshape(target.numel(), -1)
        opacity = image["opacity"]
        seen = opacity.clamp_min(1e-6)
        straight = torch.where(opacity[..., None] > 1e-6, image["inner_rgb"] / seen[..., None], 0.0)
        surface = torch.where(opacity > 1e-6, image["inner_depth"] / seen, 0.0)

        def np32(t: torch.Tensor) -> np.ndarray:
            return t.float().cpu().numpy()

        return ImageRender(rgb=np32(image["rgb"]), alpha=np32(image["acc"]), depth=np32(image["depth"]),
                           mask_at_box=mask.cpu().numpy(), opacity=np32(opacity), straight_rgb=np32(straight),
                           surface_depth=np32(surface))

    # ------------------------------------------------------------------ rays

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.precision == "fp32" or (self.precision == "tf32" and device.type != "cuda"):
            return contextlib.nullcontext()
        if self.precision == "tf32":
            return _tf32_matmuls()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _march(self, network: NeuralBodyNetwork, volumes: FeatureTables, sparse_input: SparseInput,
               latent_index: int, pts: torch.Tensor, pts_smpl: torch.Tensor, ray_d: torch.Tensor, z: torch.Tensor,
               occupied: torch.Tensor) -> dict[str, torch.Tensor]:
        """Composite R rays whose samples ``pts`` (R,S,3) world / ``pts_smpl`` (R,S,3) are occupied where
        ``occupied`` (R,S); returns the per-ray sums of ``raw2outputs`` (full and without the last sample)."""
        num_rays, num_samples = z.shape
        pts, pts_smpl = pts.reshape(-1, 3), pts_smpl.reshape(-1, 3)  # (R·S,3): samples picked by flat index
        dists = sample_intervals(z, ray_d)
        viewdir = ray_d / torch.linalg.norm(ray_d, dim=-1, keepdim=True)
        transmittance = torch.ones(num_rays, device=z.device)
        sums = _RaySums.zeros(num_rays, z.device)
        self.last_stats["occupied_rays"] += num_rays
        segment = self.segment if self.segment is not None else march_segment(z.device.type)
        for s0 in range(0, num_samples, segment):
            s1 = min(num_samples, s0 + segment)
            alive = transmittance > self.stop_transmittance
            if not bool(alive.any()):
                break
            ray_idx, sample_idx = torch.nonzero(occupied[:, s0:s1] & alive[:, None], as_tuple=True)
            local = ray_idx * (s1 - s0) + sample_idx  # flat indices into the segment's (R,seg) arrays
            flat = ray_idx * num_samples + sample_idx + s0  # flat indices into the (R,S) arrays
            alpha_seg = torch.zeros((num_rays, s1 - s0), device=z.device)
            if ray_idx.numel():
                sigma, trunk = self._density(network, volumes, sparse_input, pts_smpl.index_select(0, flat))
                alpha = 1.0 - torch.exp(-F.relu(sigma) * dists.take(flat))
                alpha_seg.view(-1).index_copy_(0, local, alpha)
            factor = 1.0 - alpha_seg + 1e-10
            before = torch.cumprod(torch.cat([torch.ones_like(factor[:, :1]), factor[:, :-1]], dim=1), dim=1)
            seg_trans = transmittance[:, None] * before  # (R,seg) transmittance in front of each sample
            transmittance = transmittance * torch.prod(factor, dim=1)
            if not ray_idx.numel():
                continue
            w = alpha * seg_trans.take(local)
            self.last_stats["density_points"] += int(ray_idx.numel())
            is_last = (flat % num_samples == num_samples - 1).to(w.dtype)
            sums.add_weights(ray_idx, w, z.take(flat), is_last)
            keep = torch.nonzero(w > self.min_weight)[:, 0]  # indices: one read-back for all the arrays below
            if keep.numel():
                ray_keep = ray_idx.index_select(0, keep)
                colour = self._colour(network, _kept_rows(trunk, keep), pts.index_select(0, flat.index_select(0, keep)),
                                      viewdir.index_select(0, ray_keep), latent_index)
                self.last_stats["color_points"] += int(colour.shape[0])
                sums.add_colours(ray_keep, w.index_select(0, keep), colour, is_last.index_select(0, keep))
        return sums.outputs(z[:, -1])

    def _chunk(self, device: torch.device) -> int:
        return self.chunk_points if self.chunk_points is not None else point_chunk(device.type)

    def _density(self, network: NeuralBodyNetwork, volumes: FeatureTables, sparse_input: SparseInput,
                 pts_smpl: torch.Tensor, *, keep_trunk: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(N,3) SMPL-frame points → raw density (N,) and, with ``keep_trunk``, the trunk outputs the colour head
        needs, one (≤chunk,256) tensor per chunk of ``chunk_points`` (kept as they come: copying them into one
        array cost ~5 % of a frame; ``_kept_rows`` gathers the few the colour head takes)."""
        chunk = self._chunk(pts_smpl.device)
        count = pts_smpl.shape[0]
        sigma = pts_smpl.new_empty((count,))
        trunks = []
        point_fn = _compiled(_trunk_and_density) if self.compile else _trunk_and_density
        with self._autocast(pts_smpl.device):
            first = volumes.first_layer(network.fc_0)
            for i in range(0, count, chunk):
                net, sigma[i:i + chunk] = point_fn(network, first, smpl_grid_coords(pts_smpl[i:i + chunk],
                                                                                    sparse_input))
                if keep_trunk:
                    trunks.append(net)
        return sigma, trunks

    def _colour(self, network: NeuralBodyNetwork, trunk: torch.Tensor, wpts: torch.Tensor, viewdir: torch.Tensor,
                latent_index: int) -> torch.Tensor:
        """sigmoid(colour head) for (N,256) trunk outputs at world points (N,3) seen along viewdir (N,3)."""
        colour_fn = _compiled(_colour_rgb) if self.compile else _colour_rgb
        with self._autocast(trunk.device):
            step = self._chunk(trunk.device)
            layer = network.colour_layer(latent_index)
            parts = [colour_fn(network, layer, net, pts, dirs)
                     for net, pts, dirs in zip(trunk.split(step), wpts.split(step), viewdir.split(step), strict=True)]
        return torch.cat(parts) if parts else trunk.new_zeros((0, 3))


# The point network's per-batch work, as functions of their tensors and modules alone: torch.compile traces them
# once for every pose, batch size and actor of the same architecture (the pose's tables are arguments, not
# constants).
def _trunk_and_density(network: NeuralBodyNetwork, first: FirstLayer,
                       grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The trunk output (N,256) and the raw density (N,) at grid_sample coordinates (N,3)."""
    net = network.trunk_after_first(first(grid))
    return net, network.density_head(net)[:, 0]


def _colour_rgb(network: NeuralBodyNetwork, layer: ColourLayer, trunk: torch.Tensor, wpts: torch.Tensor,
                viewdir: torch.Tensor) -> torch.Tensor:
    """sigmoid(colour head) (N,3) float32 for one appearance code's ``layer``."""
    return torch.sigmoid(network.color_head(trunk, wpts, viewdir, 0, layer).float())


class _CompiledOrEager:
    """``fn`` through ``torch.compile`` (dynamic shapes); if the compiler cannot build its kernels here, ``fn``
    itself from then on, after one warning."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.compiled: Callable[..., Any] | None = torch.compile(fn, dynamic=True)

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*(_plain(a) for a in args))
            except torch._dynamo.exc.BackendCompilerFailed as err:  # e.g. no C++ compiler, no Triton
                self.compiled = None
                warnings.warn(f"torch.compile cannot build the point network here, rendering without it: {err}",
                              RuntimeWarning, stacklevel=2)
        return self.fn(*args)


def _plain(arg: Any) -> Any:
    """A tensor argument as a contiguous tensor that is not a view: torch.compile guards on the layout of its inputs
    and on the bases of views, so batches sliced from arrays of other sizes or layouts (the refinement's probes, the
    colour head's kept rows) would each compile again (measured: seconds per frame)."""
    if isinstance(arg, torch.Tensor):
        arg = arg.contiguous()
        return arg if arg.requires_grad else arg.detach()
    return arg


@functools.cache
def _compiled(fn: Callable[..., Any]) -> _CompiledOrEager:
    return _CompiledOrEager(fn)


def _kept_rows(parts: list[torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """Rows ``keep`` (sorted indices) of the row-wise concatenation of ``parts``, without concatenating them."""
    if len(parts) == 1:
        return parts[0].index_select(0, keep)
    starts = np.cumsum([0] + [part.shape[0] for part in parts])
    # where each part's indices begin in ``keep``: one read-back for all the parts (it drains the queue anyway, so the
    # copy of ``starts`` before it costs no extra wait)
    bounds = torch.searchsorted(keep, torch.as_tensor(starts, device=keep.device)).tolist()
    return torch.cat([part.index_select(0, keep[bounds[i]:bounds[i + 1]] - int(starts[i]))
                      for i, part in enumerate(parts)])


@dataclass
class _RaySums:
    """Per-ray sums of ``raw2outputs`` over the samples marched so far, and the last sample's share of them."""

    rgb: torch.Tensor  # (R,3) Σ w·colour
    acc: torch.Tensor  # (R,) Σ w
    depth: torch.Tensor  # (R,) Σ w·z
    last_w: torch.Tensor  # (R,) weight of the last sample (the 1e10 interval)
    last_rgb: torch.Tensor  # (R,3) colour of the last sample

    @staticmethod
    def zeros(rays: int, device: torch.device) -> _RaySums:
        return _RaySums(torch.zeros((rays, 3), device=device), torch.zeros(rays, device=device),
                        torch.zeros(rays, device=device), torch.zeros(rays, device=device),
                        torch.zeros((rays, 3), device=device))

    # ``is_last`` is 1.0 for a ray's last sample, else 0.0: a ray has at most one, so adding is_last·value into the
    # zero-initialised last_* sums sets it (without a boolean-mask index, which reads a count back from a GPU)
    def add_weights(self, rays: torch.Tensor, w: torch.Tensor, z: torch.Tensor, is_last: torch.Tensor) -> None:
        """Opacity and depth take every weight (colour only the visible ones: ``add_colours``)."""
        self.acc.index_add_(0, rays, w)
        self.depth.index_add_(0, rays, w * z)
        self.last_w.index_add_(0, rays, w * is_last)

    def add_colours(self, rays: torch.Tensor, w: torch.Tensor, colour: torch.Tensor, is_last: torch.Tensor) -> None:
        self.rgb.index_add_(0, rays, w[:, None] * colour)
        self.last_rgb.index_add_(0, rays, colour * is_last[:, None])

    def outputs(self, z_last: torch.Tensor) -> dict[str, torch.Tensor]:
        """Full sums and, for compositing, the sums without the last sample."""
        return {"rgb": self.rgb, "acc": self.acc, "depth": self.depth, "opacity": self.acc - self.last_w,
                "inner_rgb": self.rgb - self.last_w[:, None] * self.last_rgb,
                "inner_depth": self.depth - self.last_w * z_last}


@contextlib.contextmanager
def _tf32_matmuls() -> Iterator[None]:
    """CUDA fp32 matrix products on tensor cores (TF32) for the duration; the process-wide flag is restored after."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
