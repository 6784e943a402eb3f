"""Train a Neural Body actor on a ZJU-MoCap-layout dataset and write the actor folder.

The original recipe (see server/neural_body/train.py): 1024 rays per step, 64 samples per ray, Adam with the lr
decaying tenfold over 1000 epochs of 500 iterations. Checkpoints are written to ``OUT.train/latest.pt`` every
``--save-every`` steps; ``--resume`` continues from there. Several processes (GPUs, or CPU processes with gloo):
``torchrun --nproc_per_node N -m server train ...``: the ``--rays`` of a step are split across the processes (the
same step as one process with the same ``--rays``), gradients are averaged, rank 0 writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from server.commands.cli import fail
from server.neural_body.config import SAMPLERS, TrainConfig

DEFAULTS = TrainConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="dataset folder in the ZJU-MoCap layout (holds annots.npy)")
    parser.add_argument("--out", type=Path, required=True, help="actor folder to write")
    parser.add_argument("--iters", type=int, default=DEFAULTS.iters, help=f"total iterations ({DEFAULTS.iters})")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.train/latest.pt")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--rays", type=int, default=DEFAULTS.rays,
                        help=f"rays per step ({DEFAULTS.rays}, the original's; the occupancy sampler makes each step "
                             "cheaper, so it takes more steps per minute — measured on a CPU, 2048 rays per step "
                             "learned no more per step than 1024 early on); under torchrun split evenly across the "
                             "processes, so it must be divisible by their number")
    parser.add_argument("--samples", type=int, default=DEFAULTS.n_samples,
                        help=f"samples per ray ({DEFAULTS.n_samples})")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help=f"initial learning rate ({DEFAULTS.lr})")
    parser.add_argument("--epoch-iters", type=int, default=DEFAULTS.epoch_iters,
                        help=f"iterations per epoch; the lr steps once per epoch ({DEFAULTS.epoch_iters})")
    parser.add_argument("--lr-decay-iters", type=float, default=DEFAULTS.decay_iters,
                        help="iterations over which the lr falls tenfold (500000 = 1000 epochs, the original); "
                             "lower it for short runs")
    parser.add_argument("--save-every", type=int, default=DEFAULTS.save_every,
                        help=f"checkpoint period in steps ({DEFAULTS.save_every})")
    parser.add_argument("--log-every", type=int, default=DEFAULTS.log_every,
                        help=f"log period in steps ({DEFAULTS.log_every})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"random seed ({DEFAULTS.seed})")
    parser.add_argument("--cache-mb", type=float, default=DEFAULTS.cache_mb,
                        help=f"memory for decoded images and masks ({DEFAULTS.cache_mb:g} MB)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoint folder (default OUT.train)")
    parser.add_argument("--ratio", type=float, default=None, help="image scale (default: dataset's; 0.5 for ZJU)")
    parser.add_argument("--mask-loss", type=float, default=DEFAULTS.mask_loss,
                        help="weight of an extra MSE between rendered opacity and the body mask (0 = the original "
                             "recipe; 0.1-1 gives the clean alpha compositing needs on black backgrounds)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=DEFAULTS.sampler,
                        help="occupancy (default): only samples near the posed body reach the network, the others "
                             "count as empty, a ray stops once hidden and colours run only where they count (the "
                             "fast path's sampler); box: every sample of the padded box, as the original recipe")
    parser.add_argument("--occupancy-margin", type=float, default=DEFAULTS.occupancy_margin,
                        help=f"metres around the body that the occupancy sampler keeps ({DEFAULTS.occupancy_margin})")
    parser.add_argument("--outside-share", type=float, default=DEFAULTS.outside_share,
                        help="share of the samples outside the occupancy still evaluated, so the network keeps that "
                             f"space empty ({DEFAULTS.outside_share})")
    parser.add_argument("--outside-loss", type=float, default=DEFAULTS.outside_loss,
                        help="weight of the occupancy sampler's emptiness term: the opacity per ray of the space "
                             f"outside the occupancy, pushed to 0, so that --renderer reference shows no fog there "
                             f"({DEFAULTS.outside_loss:g}; 0 = off; higher weights empty it faster and cost PSNR)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this actor's weights (trained on the same dataset) instead of a fresh network")
    parser.add_argument("--eval-every", type=int, default=DEFAULTS.eval_every,
                        help="log a held-out PSNR (two test-view images, half resolution, fast renderer) every N "
                             "steps, for learning curves (0 = never; must be a multiple of --log-every)")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop after this many minutes of training time (held-out evaluations not counted) and "
                             "write the checkpoint and the actor as at the last step (0 = no limit; a resumed run "
                             "counts the time already spent)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--name", default=None, help="actor name in its manifest (default: the dataset's name)")
    parser.add_argument("--weights", choices=("float32", "float16"), default="float32",
                        help="precision of the saved weights (float16 halves the actor's size; loaded as float32)")


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments as an error line, or None."""
    for name in ("iters", "rays", "samples", "epoch_iters", "log_every"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}"
    if args.lr <= 0 or args.lr_decay_iters <= 0:
        return "--lr and --lr-decay-iters must be positive"
    if not args.mask_loss >= 0:
        return f"--mask-loss must be >= 0 (0 = the original recipe); got {args.mask_loss}"
    if args.eval_every < 0 or (args.eval_every and args.eval_every % args.log_every):
        return f"--eval-every must be 0 or a multiple of --log-every ({args.log_every}); got {args.eval_every}"
    if not args.max_minutes >= 0:
        return f"--max-minutes must be >= 0 (0 = no limit); got {args.max_minutes}"
    if args.threads is not None and args.threads < 1:
        return f"--threads must be >= 1; got {args.threads}"
    if not 0.0 <= args.outside_share <= 1.0 or not 0.0 <= args.occupancy_margin <= 1.0:
        return "--outside-share must be 0..1 and --occupancy-margin 0..1 m"
    if not (0.0 <= args.outside_loss < float("inf")):
        return f"--outside-loss must be a weight >= 0; got {args.outside_loss}"
    return None


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from server.errors import NeuralHumanError
    from server.neural_body.train import init_distributed

    problem = check_arguments(args)
    if problem is not None:
        return fail(problem)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        rank, world_size, device = init_distributed(args.device)
    except ValueError as err:
        return fail(str(err))
    try:
        return _train(args, rank, world_size, device)
    except (NeuralHumanError, ValueError, FloatingPointError, OSError) as err:
        return fail(str(err), 1)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _train(args: argparse.Namespace, rank: int, world_size: int, device: Any) -> int:
    """Train (resuming with --resume) and, on rank 0, write the actor folder."""
    from server.data.zju_reader import ZjuMocapDataset
    from server.neural_body.train import Trainer, write_actor

    dataset = ZjuMocapDataset(args.data, ratio=args.ratio)
    config = TrainConfig(iters=args.iters, rays=args.rays, n_samples=args.samples, lr=args.lr,
                         epoch_iters=args.epoch_iters, decay_iters=args.lr_decay_iters, save_every=args.save_every,
                         log_every=args.log_every, seed=args.seed, cache_mb=args.cache_mb,
                         progress=not args.no_progress, mask_loss=args.mask_loss, sampler=args.sampler,
                         occupancy_margin=args.occupancy_margin, outside_share=args.outside_share,
                         outside_loss=args.outside_loss,
                         eval_every=args.eval_every, max_seconds=args.max_minutes * 60.0)
    checkpoint_dir = args.checkpoint_dir or args.out.with_name(args.out.name + ".train")
    trainer = Trainer(dataset, device, config, checkpoint_dir=checkpoint_dir, rank=rank, world_size=world_size)
    if args.resume:
        if not trainer.checkpoint_path.is_file():
            print(f"error: --resume: no checkpoint at {trainer.checkpoint_path}; run without --resume to start "
                  "training", file=sys.stderr)
            return 1
        trainer.load_checkpoint(trainer.checkpoint_path)
        if rank == 0:
            print(f"resumed at step {trainer.step} from {trainer.checkpoint_path}")
    elif args.init is not None:
        trainer.init_from_actor(args.init)
        if rank == 0:
            print(f"starting from the weights of {args.init} (step {trainer.step})")
    elif rank == 0 and trainer.checkpoint_path.is_file():
        print(f"note: {trainer.checkpoint_path} exists and will be overwritten (pass --resume to continue it)")
    if rank == 0:
        print(f"training {dataset.name}: {len(trainer.data.frames)} frames x {len(trainer.data.views)} views, "
              f"{trainer.network.num_vertices} vertices, {args.iters} iterations on {device}"
              f"{f' x {world_size} processes' if world_size > 1 else ''}")
    result = trainer.run()
    if rank == 0:
        info = {"iterations": result.step, "rays_per_step": args.rays, "samples": args.samples,
                "mask_loss": args.mask_loss, "sampler": args.sampler, "train_seconds": round(trainer.train_seconds, 1),
                "world_size": world_size, "seconds_this_run": round(result.seconds, 1),
                "final_loss": result.losses[-1] if result.losses else None}
        path = write_actor(trainer, args.out, iters_info={"training": info}, name=args.name, weights=args.weights)
        print(f"wrote actor {path} ({result.step} iterations; checkpoint {result.checkpoint})")
    return 0
