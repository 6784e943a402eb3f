"""Defaults of training, evaluation and meshing, in one place. Torch-free: the commands read them to build their
``--help`` without loading the model code; the libraries (train, evaluate, mesh) import them from here."""

from __future__ import annotations

from dataclasses import dataclass

# Training: the original recipe (Neural Body's configs/zju_mocap_exp/latent_xyzc_313.yaml and train/trainers).
BASE_LR = 5e-4
EPOCH_ITERS = 500  # ep_iter: the lr steps once per epoch
DECAY_EPOCHS = 1000  # lr = base · gamma^(epoch / decay_epochs)
N_RAYS = 1024
N_SAMPLES = 64
DEFAULT_ITERS = 200_000  # 400 epochs × 500
DEFAULT_CACHE_MB = 4096


@dataclass
class TrainConfig:
    iters: int = DEFAULT_ITERS
    rays: int = N_RAYS
    n_samples: int = N_SAMPLES
    lr: float = BASE_LR
    epoch_iters: int = EPOCH_ITERS
    decay_iters: float = DECAY_EPOCHS * EPOCH_ITERS
    save_every: int = 5 * EPOCH_ITERS  # the original's save_latest_ep = 5
    log_every: int = 100
    seed: int = 0
    cache_mb: float = DEFAULT_CACHE_MB
    progress: bool = True
    # Not in the original: weight of an MSE between the accumulated opacity and the body mask. On black backgrounds
    # the colour loss alone cannot tell "transparent" from "opaque black", so actors trained without it may carry
    # black fog inside the body's box; compositing needs a clean alpha.
    mask_loss: float = 0.0
    # "occupancy" (the fast path's sampler): only samples inside the posed body's occupancy reach the network, the
    # rest count as empty; "box": every sample of the padded box, as the original.
    sampler: str = "occupancy"
    occupancy_margin: float = 0.05
    # Share of the samples outside the occupancy that are evaluated anyway (drawn at random each step), so that the
    # network keeps learning that space is empty there: renders with the reference path (the whole box) stay clean.
    outside_share: float = 0.05
    # Weight of the occupancy sampler's emptiness term: the opacity per ray the space outside the occupancy adds
    # (estimated from the outside share), pushed to 0. The sampler counts that space as empty; the colour loss alone
    # empties it slowly (after 10 minutes from scratch: a faint fog outside the occupancy that only the reference
    # renderer shows, SSIM 0.684). Measured over 10 minutes from scratch (docs/fast_path.md): 0.1 removes it and
    # learns faster (20.43 dB / SSIM 0.841 against 20.13 / 0.684 without; in a second, slowed pair 19.92 / 0.821
    # against 18.68 / 0.394); 0.3 and 1 remove it too but cost PSNR (19.80, 19.58 dB).
    outside_loss: float = 0.1
    # Held-out PSNR every N steps (0 = never), logged beside the loss for learning curves (not counted as training
    # time): a fixed set of test-view images at half resolution, rendered with the fast path.
    eval_every: int = 0
    # Stop after this much training time (seconds, held-out evaluations not counted; 0 = no limit): the checkpoint
    # and the actor are written as at the last step. For equal-time comparisons and budgets.
    max_seconds: float = 0.0


SAMPLERS: tuple[str, ...] = ("occupancy", "box")


# Evaluation (the original's evaluator: every 30th frame) and meshing (mesh_th of the ZJU config, 5 mm voxels).
FRAME_INTERVAL = 30
MESH_POINTS = 100_000  # IoU / Chamfer samples
MESH_VOXEL_SIZE = 0.005  # metres
MESH_THRESHOLD = 5.0  # iso level of the raw density

# Rendering paths (render_settings.RenderSettings): fast (default) or reference; the fast path's occupancy margin
# (occupancy.DEFAULT_MARGIN) and the precision of its point network.
RENDERERS: tuple[str, ...] = ("fast", "reference")
DEFAULT_MARGIN = 0.05  # metres: measured, see docs/fast_path.md
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")  # tf32: fp32 matrix products on tensor cores (CUDA)
# Points per batch of the point network on the fast paths (render, mesh): small batches on a CPU keep the 256-wide
# activations in its caches (measured on 2 cores: ~1.6x the matrix throughput of 64k-point batches), large ones fill
# a GPU.
CPU_POINT_CHUNK = 2048
GPU_POINT_CHUNK = 262144
# How the fast renderer marches a ray on each device. A CPU pays for every sample it evaluates: segments of 8 samples,
# a ray stopping at its surface (~40 % fewer density queries). A GPU has arithmetic to spare and pays for each
# kernel launch and each result read back to the host (measured on an H200: the GPU busy 36 ms of a 250 ms frame):
# one pass over all of a ray's samples, with more rays and points per batch (a 512² frame, counted by launch_count:
# 3,979 operations and 22 read-backs against 8,897 and 334 for the segments as they were, for 29 % more density
# queries; docs/fast_path.md).
CPU_MARCH_SEGMENT = 8
GPU_MARCH_SEGMENT = 64  # = N_SAMPLES: one pass
CPU_RAY_CHUNK = 32768  # rays whose samples are laid out at once (bounds the (R,S,3) point arrays)
GPU_RAY_CHUNK = 262144  # a 512² frame's box rays at once (~200 MB per (R,S,3) float array)


def point_chunk(device_type: str) -> int:
    """Points per point-network batch on a device type ("cpu", "cuda", ...)."""
    return GPU_POINT_CHUNK if device_type == "cuda" else CPU_POINT_CHUNK


def march_segment(device_type: str) -> int:
    """Samples per march segment of the fast renderer on a device type (see CPU_MARCH_SEGMENT)."""
    return GPU_MARCH_SEGMENT if device_type == "cuda" else CPU_MARCH_SEGMENT


def ray_chunk(device_type: str) -> int:
    """Rays laid out at once by the fast renderer on a device type."""
    return GPU_RAY_CHUNK if device_type == "cuda" else CPU_RAY_CHUNK

# BatchNorm statistics at render time: the frame's batch statistics (the original's) or the running ones.
BATCHNORM_MODES: tuple[str, ...] = ("batch_stats", "running")
