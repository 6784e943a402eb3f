"""Train a Neural Body actor on a ZJU-MoCap-layout dataset and write the actor folder.

The original recipe (latent_xyzc_313.yaml and lib/train/): each step renders 1024 rays of one training image (a random
training frame seen from a random training camera; half the rays on the body, half in the projected body box),
64 stratified samples per ray, MSE on the colour, Adam (lr 5e-4, one parameter group per parameter), gradient
values clipped to 40, lr = 5e-4·0.1^(epoch/1000) with 500 iterations per epoch, BatchNorm in training mode.
The original trains 200k iterations (400 epochs) on 4 GPUs.

The randomness of step k (the frame, the view, the rays, the stratified jitter and the occupancy sampler's outside
samples) is drawn from generators seeded with (seed, k) alone, for the whole batch and before rendering.

Checkpoints (network + optimizer + scheduler + step + seed) are written atomically to ``ACTOR_DIR.train/latest.pt``
every ``--save-every`` steps; ``--resume`` continues from there, drawing exactly what the uninterrupted run would
have drawn. At the end the actor folder (model.pt, actor.json, motion.npz, shapes.npy) is written.

Several processes (data parallel): ``torchrun --nproc_per_node N -m server train ...`` (gloo on the CPU, nccl on
GPUs). Every rank draws the same frame, view and ``rays`` rays of a step with the same random numbers and renders
its contiguous share of ``rays / N`` of them (``rays`` must be divisible by N); the sparse-conv encoding, and so its
BatchNorm statistics, is that of the same frame on every rank. Each rank's loss is the mean over its share and
DistributedDataParallel averages the gradients, so a step equals the single-process step over all ``rays`` rays (up
to float summation order); the logged loss is the mean over the ranks. Rank 0 alone writes the log, the checkpoints
(the others wait at a barrier) and the actor; ``--resume`` loads the checkpoint on every rank.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from neural_human_addon.core.atomic_files import atomic_path
from server.body.model import body_model_name
from server.data.zju_reader import ZjuMocapDataset
from server.neural_body.actor import ActorManifest, Motion, load_actor, save_actor
from server.neural_body.config import (
    BASE_LR,
    DECAY_EPOCHS,
    DEFAULT_CACHE_MB,
    EPOCH_ITERS,
    TrainConfig,
)
from server.neural_body.fast_renderer import FastRenderer
from server.neural_body.feature_tables import FeatureTables
from server.neural_body.network import NeuralBodyNetwork
from server.neural_body.occupancy import Occupancy, body_occupancy
from server.neural_body.ray_sampling import sample_rays
from server.neural_body.rays import get_rays
from server.neural_body.sparse_conv_net import Rulebook
from server.neural_body.sparse_input import ZJU_PADDING, SparseInput, prepare_sparse_input
from server.neural_body.volume_renderer import RayNoise, render_image, render_rays

GAMMA = 0.1
GRAD_CLIP_VALUE = 40.0
CHECKPOINT_NAME = "latest.pt"
CHECKPOINT_FORMAT = "neural-human-train/1"
INITIAL_DENSITY_BIAS = 0.1
RULEBOOK_BUDGET_MB = 1024


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------------- schedule


def learning_rate(step: int, *, base_lr: float = BASE_LR, epoch_iters: int = EPOCH_ITERS,
                  decay_iters: float = DECAY_EPOCHS * EPOCH_ITERS, gamma: float = GAMMA) -> float:
    """The lr in force at ``step`` (0-based): base·gamma^(epoch·epoch_iters/decay_iters), epoch = step // epoch_iters.

    With the defaults that is the original's 5e-4·0.1^(epoch/1000), stepped once per 500-iteration epoch."""
    epoch = step // epoch_iters
    return base_lr * gamma ** (epoch * epoch_iters / decay_iters)


class EpochExponentialLR:
    """Exponential decay stepped once per epoch (the original's custom ExponentialLR): every param group gets
    ``base_lr · gamma^(last_epoch / decay_epochs)``. ``state_dict`` keeps the same fields as the original's."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, decay_epochs: float, gamma: float = GAMMA) -> None:
        self.optimizer = optimizer
        self.decay_epochs = float(decay_epochs)
        self.gamma = float(gamma)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        factor = self.gamma ** (self.last_epoch / self.decay_epochs)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch, "gamma": self.gamma,
                "decay_epochs": self.decay_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.last_epoch = int(state["last_epoch"])
        self.gamma = float(state["gamma"])
        self.decay_epochs = float(state["decay_epochs"])
        self._apply()


def make_optimizer(network: torch.nn.Module, lr: float = BASE_LR) -> torch.optim.Adam:
    """Adam with one parameter group per parameter, as the original's make_optimizer (weight decay 0)."""
    groups = [{"params": [p], "lr": lr, "weight_decay": 0.0} for p in network.parameters() if p.requires_grad]
    return torch.optim.Adam(groups, lr=lr)


# ---------------------------------------------------------------------------------------------------- data


class TrainingData:
    """Training frames/views of a dataset with decoded images and masks cached in memory up to a budget, the
    voxelised body and its sparse-conv rulebook per frame (rulebooks up to ``RULEBOOK_BUDGET_MB``) and the camera
    rays per view."""

    def __init__(self, dataset: ZjuMocapDataset, device: torch.device, *, cache_mb: float = DEFAULT_CACHE_MB,
                 box_padding: Any = None) -> None:
        self.dataset = dataset
        self.device = device
        self.frames = list(dataset.train_frames)
        self.views = list(dataset.train_views)
        self.box_padding = box_padding or ZJU_PADDING
        self._cache_budget = int(cache_mb * 2**20)
        self._cache_bytes = 0
        self._images: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._inputs: dict[int, SparseInput] = {}
        self._rays: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._occupancy: dict[tuple[int, float], Occupancy] = {}
        self._rulebooks: dict[int, Rulebook] = {}

    def image_and_mask(self, frame: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        key = (frame, view)
        hit = self._images.get(key)
        if hit is not None:
            return hit
        image, mask = self.dataset.image_and_mask(frame, view)
        size = image.nbytes + mask.nbytes
        if self._cache_bytes + size <= self._cache_budget:
            self._images[key] = (image, mask)
            self._cache_bytes += size
        return image, mask

    def sparse_input(self, frame: int) -> SparseInput:
        hit = self._inputs.get(frame)
        if hit is None:
            params = self.dataset.params(frame)
            hit = prepare_sparse_input(self.dataset.vertices(frame), params.Rh, params.Th,
                                       box_padding=self.box_padding, device=self.device)
            self._inputs[frame] = hit
        return hit

    def rulebook(self, frame: int) -> Rulebook:
        """The frame's sparse-conv neighbour pairs, kept between its encodes while the kept ones fit the budget
        (~8 MB a frame for the demo body; past the budget a frame's pairs are built for each encode)."""
        hit = self._rulebooks.get(frame)
        if hit is None:
            hit = Rulebook()
            if sum(book.nbytes for book in self._rulebooks.values()) < RULEBOOK_BUDGET_MB * 2**20:
                self._rulebooks[frame] = hit
        return hit

    def occupancy(self, frame: int, margin: float) -> Occupancy:
        """The posed body's occupancy of a training frame (computed once per frame)."""
        hit = self._occupancy.get((frame, margin))
        if hit is None:
            hit = body_occupancy(self.sparse_input(frame), margin)
            self._occupancy[(frame, margin)] = hit
        return hit

    def rays(self, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-image rays of a camera, on the CPU (sampling indexes them there)."""
        hit = self._rays.get(view)
        if hit is None:
            cam = self.dataset.cameras[view]
            hit = get_rays(cam.height, cam.width, cam.K, cam.R, cam.T)
            self._rays[view] = hit
        return hit


# ---------------------------------------------------------------------------------------------------- step


def render_loss_module(network: NeuralBodyNetwork, n_samples: int, mask_loss: float = 0.0,
                        outside_share: float = 0.0, outside_loss: float = 0.0) -> torch.nn.Module:
    """A module whose forward renders a ray batch and returns (loss, colour MSE): the unit DistributedDataParallel
    wraps. loss = colour MSE + ``mask_loss`` · MSE(box-volume opacity (``RayOutputs.opacity_map``), body mask)
    + ``outside_loss`` · the opacity per ray of the space outside the occupancy (occupancy sampler: the evaluated
    outside samples' α summed, over the rays and the outside share, which estimates it for all of them)."""
    class RenderLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, sparse_input: SparseInput, ray_o: torch.Tensor, ray_d: torch.Tensor, near: torch.Tensor,
                    far: torch.Tensor, latent_index: int, rgb: torch.Tensor,
                    alpha: torch.Tensor | None = None, occupancy: Occupancy | None = None,
                    noise: RayNoise | None = None,
                    rulebook: Rulebook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            if occupancy is None:  # the original: dense volumes, every sample of the box
                volumes = self.network.encode_sparse_voxels(sparse_input, rulebook)
            else:  # the fast path's sampler: feature tables (same values, no densifying), occupied samples only
                volumes = FeatureTables.from_levels(self.network.encode_sparse_levels(sparse_input, rulebook))
            out = render_rays(self.network, volumes, sparse_input, ray_o, ray_d, near, far, latent_index,
                              n_samples=n_samples, perturb=True, occupancy=occupancy, outside_share=outside_share,
                              noise=noise, outside_alpha=outside_loss > 0.0)
            # Means over this process's rays: with equal shares, DDP's gradient average is the full batch's gradient.
            colour = torch.mean((out.rgb_map - rgb) ** 2)
            loss = colour
            if mask_loss > 0.0 and alpha is not None:
                loss = loss + mask_loss * torch.mean((out.opacity_map - alpha) ** 2)
            if outside_loss > 0.0 and out.outside_alpha is not None:
                loss = loss + outside_loss * out.outside_alpha / (rgb.shape[0] * outside_share)
            return loss, colour

    return RenderLoss()


@dataclass
class TrainResult:
    step: int  # steps done in total (including resumed ones)
    losses: list[float]  # per step of this run
    seconds: float
    checkpoint: Path | None


class Trainer:
    """The training loop on one process (rank) with checkpoint save/restore."""

    def __init__(self, dataset: ZjuMocapDataset, device: torch.device, config: TrainConfig, *,
                 checkpoint_dir: Path | None = None, rank: int = 0, world_size: int = 1) -> None:
        self.dataset = dataset
        self.device = device
        self.config = config
        self.rank, self.world_size = rank, world_size
        if config.rays % world_size:
            raise ValueError(f"--rays {config.rays} must be divisible by the number of processes ({world_size}): "
                             "each renders an equal share of a step's rays")
        self.checkpoint_dir = checkpoint_dir
        self.data = TrainingData(dataset, device, cache_mb=config.cache_mb)
        torch.manual_seed(config.seed)  # same initial weights on every rank
        num_vertices = int(dataset.vertices(dataset.train_frames[0]).shape[0])
        self.network = NeuralBodyNetwork(num_vertices, dataset.num_train_frames).to(device)
        with torch.no_grad():
            # PyTorch's default init draws alpha_fc's bias from ±1/16; with small features (a small body, or an
            # unlucky seed) the raw density is then negative everywhere, ReLU passes no gradient and training never
            # starts. A small positive bias guarantees a live start (init only; checkpoints are unaffected).
            self.network.alpha_fc.bias.fill_(INITIAL_DENSITY_BIAS)
        self.network.train()
        self.optimizer = make_optimizer(self.network, config.lr)
        self.scheduler = EpochExponentialLR(self.optimizer, decay_epochs=config.decay_iters / config.epoch_iters)
        self.step = 0
        self.train_seconds = 0.0  # training wall-clock over every run of this checkpoint (evaluations excluded)
        self._eval_seconds = 0.0  # held-out evaluations of the current run (not training time)
        self.seed = config.seed  # with the step, all a step draws depends on (a checkpoint keeps it)
        self.loss_module = render_loss_module(self.network, config.n_samples, config.mask_loss, config.outside_share,
                                               config.outside_loss)
        if world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.loss_module = DistributedDataParallel(self.loss_module, device_ids=ids)

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    def save_checkpoint(self) -> Path | None:
        """Write ``latest.pt`` atomically (rank 0 only; with several processes every rank calls this and waits until
        it is written); returns its path on rank 0."""
        path = self.checkpoint_path
        if path is None:
            return None
        if self.rank == 0:
            self._write_checkpoint(path)
        if self.world_size > 1:
            dist.barrier()
        return path if self.rank == 0 else None

    def _write_checkpoint(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # atomic_path's temp file of a killed earlier run
            stale.unlink(missing_ok=True)
        state = {
            "format": CHECKPOINT_FORMAT,
            "net": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optim": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "recorder": {"step": self.step, "train_seconds": self.train_seconds},
            "epoch": self.step // self.config.epoch_iters,
            "sizes": [self.network.num_vertices, self.network.num_train_frames],
            "dataset": str(self.dataset.root),
            "seed": self.seed,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # damaged files raise many kinds
            raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); delete it to start "
                             "over") from err
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a training checkpoint of this project (format "
                             f"{state.get('format') if isinstance(state, dict) else None!r})")
        sizes = [self.network.num_vertices, self.network.num_train_frames]
        if list(state["sizes"]) != sizes:
            raise ValueError(f"{path}: checkpoint is for {state['sizes'][0]} vertices / {state['sizes'][1]} training "
                             f"frames but the dataset has {sizes[0]} / {sizes[1]}; train into a new --out folder")
        self.network.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optim"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["recorder"]["step"])
        self.train_seconds = float(state["recorder"].get("train_seconds", 0.0))
        # The run's seed, not --seed: a resumed run draws what the uninterrupted one would have. (Checkpoints of
        # earlier versions kept generator states instead; they continue with --seed.)
        self.seed = int(state.get("seed", self.seed))

    def init_from_actor(self, actor_dir: Path) -> None:
        """Start from a trained actor's weights (a fresh optimizer; the step count and the lr schedule continue from
        the iterations its manifest records)."""
        actor = load_actor(actor_dir, "cpu")
        sizes = (actor.network.num_vertices, actor.network.num_train_frames)
        if sizes != (self.network.num_vertices, self.network.num_train_frames):
            raise ValueError(f"{actor_dir}: the actor has {sizes[0]} vertices / {sizes[1]} frames but the dataset "
                             f"{self.network.num_vertices} / {self.network.num_train_frames}; --init needs an actor of "
                             "this dataset")
        self.network.load_state_dict(actor.network.state_dict())
        done = actor.manifest.training_data.get("training", {}).get("iterations", 0)
        self.step = int(done) if isinstance(done, int) and done > 0 else 0
        self.scheduler.last_epoch = self.step // self.config.epoch_iters
        self.scheduler._apply()

    def held_out_psnr(self) -> float:
        """Mean PSNR (the box protocol, the original's rgb_map on black) of two test-view images at half resolution,
        rendered with the fast path: a cheap learning-curve point, not the full evaluation."""
        views = list(self.dataset.test_views) or list(self.dataset.train_views)
        frames = list(self.dataset.train_frames)
        picks = [(frames[len(frames) // 2], views[0]), (frames[0], views[min(1, len(views) - 1)])]
        values = []
        for frame, view in picks:
            cam = self.dataset.cameras[view]
            K = np.array(cam.K, np.float64).copy()
            K[:2, :2] *= 0.5
            K[:2, 2] = (K[:2, 2] + 0.5) * 0.5 - 0.5  # integer pixel centres at half resolution
            width, height = cam.width // 2, cam.height // 2
            params = self.dataset.params(frame)
            out = render_image(self.network, self.dataset.vertices(frame), params.Rh, params.Th,
                               self.dataset.latent_index(frame), K, cam.R, cam.T, width, height,
                               renderer=FastRenderer())
            gt = self.dataset.image(frame, view)[:height * 2, :width * 2].reshape(height, 2, width, 2, 3).mean((1, 3))
            box = out.mask_at_box
            values.append(mse_to_psnr(float(np.mean((out.rgb[box] - gt[box]) ** 2))))
        return float(np.mean(values))

    # ------------------------------------------------------------------ loop

    def step_generators(self, step: int) -> tuple[np.random.Generator, torch.Generator]:
        """The random streams of ``step``: numpy's for the frame, view and rays, torch's (CPU) for the per-sample
        numbers. Seeded from (seed, step) alone: the same on every rank, and the same after a resume."""
        rng = np.random.default_rng([self.seed, step])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return rng, generator

    def _step_inputs(self) -> tuple[Any, ...]:
        """The loss module's arguments for this step: this rank's contiguous share of the step's rays."""
        cfg = self.config
        rng, generator = self.step_generators(self.step)
        frame = int(self.data.frames[rng.integers(len(self.data.frames))])
        view = int(self.data.views[rng.integers(len(self.data.views))])
        image, mask = self.data.image_and_mask(frame, view)
        sparse_input = self.data.sparse_input(frame)
        cam = self.dataset.cameras[view]
        batch = sample_rays(image, mask, self.data.rays(view), cam.K, cam.R, cam.T,
                            sparse_input.world_bounds.cpu().numpy(), cfg.rays, rng)
        occupancy = self.data.occupancy(frame, cfg.occupancy_margin) if cfg.sampler == "occupancy" else None
        # Drawn for the whole batch, then sliced: a ray gets the same numbers whichever rank renders it.
        noise = RayNoise.draw(cfg.rays, cfg.n_samples, generator,
                              outside=occupancy is not None and cfg.outside_share > 0.0)
        share = cfg.rays // self.world_size
        rows = slice(self.rank * share, (self.rank + 1) * share)
        pixels = batch.pixels[rows]
        alpha = torch.from_numpy((mask[pixels[:, 0], pixels[:, 1]] == 1).astype(np.float32))
        dev = self.device
        return (sparse_input, batch.ray_o[rows].to(dev), batch.ray_d[rows].to(dev), batch.near[rows].to(dev),
                batch.far[rows].to(dev), self.dataset.latent_index(frame), batch.rgb[rows].to(dev), alpha.to(dev),
                occupancy, noise.rows(rows.start, rows.stop).to(dev), self.data.rulebook(frame))

    def train_step(self) -> float:
        """One optimisation step; returns the colour MSE over the step's rays (all ranks' mean)."""
        loss, colour = self.loss_module(*self._step_inputs())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP: the gradients are averaged over the ranks here
        torch.nn.utils.clip_grad_value_(self.network.parameters(), GRAD_CLIP_VALUE)
        self.optimizer.step()
        self.step += 1
        if self.step % self.config.epoch_iters == 0:
            self.scheduler.step()
        return self._mean_over_ranks(colour.detach())  # the colour MSE (what PSNR is computed from)

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        if self.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)  # sum; every rank gets it, so every rank sees the same (non-finite) loss
            value = value / self.world_size
        return float(value)

    def run(self) -> TrainResult:
        """Train until ``iters`` steps or ``max_seconds`` of training time (every rank stops at the same step)."""
        cfg = self.config
        losses: list[float] = []
        start = time.perf_counter()
        bar = tqdm(total=cfg.iters, initial=self.step, desc="train", unit="it", dynamic_ncols=True,
                   disable=not cfg.progress or self.rank != 0)
        checkpoint, saved_step = None, -1
        window: list[float] = []
        self._eval_seconds = 0.0
        run_start_seconds = self.train_seconds

        def seconds() -> float:
            return run_start_seconds + time.perf_counter() - start - self._eval_seconds

        try:
            while self.step < cfg.iters:
                loss = self.train_step()
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} at step {self.step}; lower --lr or resume from "
                                             "the last checkpoint")
                losses.append(loss)
                window.append(loss)
                bar.update(1)
                out_of_time = self._out_of_time(seconds())
                if self.step % max(1, cfg.log_every) == 0 or self.step == cfg.iters or out_of_time:
                    self.train_seconds = seconds()
                    self._log_window(window, bar, final=out_of_time)
                if cfg.save_every > 0 and self.step % cfg.save_every == 0:
                    checkpoint, saved_step = self.save_checkpoint(), self.step
                if out_of_time:
                    break
        finally:
            bar.close()
        self.train_seconds = seconds()
        if self.step != 0 and saved_step != self.step:
            checkpoint = self.save_checkpoint() or checkpoint
        return TrainResult(step=self.step, losses=losses, seconds=time.perf_counter() - start, checkpoint=checkpoint)

    def _out_of_time(self, seconds: float) -> bool:
        """Whether ``max_seconds`` of training time are spent; under torchrun, whether any rank's are (so that every
        rank stops after the same step)."""
        if self.config.max_seconds <= 0:
            return False
        spent = seconds >= self.config.max_seconds
        if self.world_size > 1:
            flag = torch.tensor([float(spent)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            spent = bool(flag.item() > 0)
        return spent

    def _log_window(self, window: list[float], bar: Any, *, final: bool) -> None:
        """Log the mean loss of the steps since the last record (and a held-out PSNR when it is due, or at a stop
        for time when learning curves are on)."""
        cfg = self.config
        mean = sum(window) / len(window)
        bar.set_postfix(loss=f"{mean:.4f}", psnr=f"{mse_to_psnr(mean):.2f}",
                        lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        record = {"step": self.step, "loss": mean, "psnr": mse_to_psnr(mean),
                  "lr": self.scheduler.get_last_lr()[0], "seconds": self.train_seconds}
        if cfg.eval_every > 0 and self.rank == 0 and (self.step % cfg.eval_every == 0 or final):
            eval_start = time.perf_counter()
            record["held_out_psnr"] = self.held_out_psnr()
            self._eval_seconds += time.perf_counter() - eval_start
        self._log(record)
        window.clear()

    def _log(self, record: dict[str, Any]) -> None:
        if self.checkpoint_dir is None or self.rank != 0:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with open(self.checkpoint_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def mse_to_psnr(mse: float) -> float:
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


# ---------------------------------------------------------------------------------------------------- actor


def _body_model_name(dataset: ZjuMocapDataset) -> str:
    name = str(dataset.meta.get("body_model", "")) if dataset.is_synthetic else ""
    return body_model_name(name or "neutral")  # ZJU-MoCap is fitted with the neutral SMPL model


def write_actor(trainer: Trainer, out: Path, *, iters_info: dict[str, Any] | None = None, name: str | None = None,
                weights: str = "float32") -> Path:
    """Write the trained network with its manifest, motion (training frames) and shapes as an actor folder."""
    dataset = trainer.dataset
    frames = list(dataset.train_frames)
    params = [dataset.params(f) for f in frames]
    motion = Motion(poses=np.stack([p.poses for p in params]), shapes=np.stack([p.shapes for p in params]),
                    Rh=np.stack([p.Rh for p in params]), Th=np.stack([p.Th for p in params]),
                    fps=float(dataset.fps or 30.0))
    boxes = np.stack([trainer.data.sparse_input(f).world_bounds.cpu().numpy() for f in frames])
    bounds = [np.min(boxes[:, 0], axis=0).tolist(), np.max(boxes[:, 1], axis=0).tolist()]
    summary = dataset.summary()
    summary.update(iters_info or {})
    manifest = ActorManifest(
        name=name or dataset.name, body_model=_body_model_name(dataset), vertex_count=trainer.network.num_vertices,
        frames_trained=trainer.network.num_train_frames, up_axis=dataset.up_axis.lstrip("+") or "z",
        bounds=bounds, batchnorm="batch_stats", training_data=summary)
    network = trainer.network
    was_training = network.training
    try:
        path = save_actor(out, network, manifest, motion, np.asarray(params[0].shapes, np.float32), weights=weights)
    finally:
        network.train(was_training)
    return path


# ---------------------------------------------------------------------------------------------- processes


def init_distributed(device_name: str) -> tuple[int, int, Any]:
    """(rank, world size, device) from torchrun's environment; a single process when WORLD_SIZE is unset/1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device

