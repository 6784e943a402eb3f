"""Run the local inference server (HTTP API v1, docs/API.md) over the actor folders under --actors (default: the
bundled actors in server/actors, which hold the demo actor).

Every call but GET /v1/health needs ``Authorization: Bearer <token>``. The token is generated on first start,
printed once and stored with 0600 permissions in $XDG_CONFIG_HOME/neural-human/token (default
~/.config/neural-human/token); --token sets one explicitly (not stored). The server binds 127.0.0.1; binding any
other address needs --allow-remote.

Memory: actors load on first use and stay loaded; before one loads, the least recently used actors are unloaded
(and their cached feature volumes dropped) while --max-loaded actors are loaded or, on CUDA, while the free GPU
memory is below --min-free-gpu-mb plus the new actor's weights. A render or mesh that runs out of GPU memory
unloads every other actor, clears the feature cache and runs once more; if it fails again the answer is 503.

Ray farm (optional package ``ray``: pip install ray==2.60.0): --ray auto|local|ADDRESS hands the jobs'
frames to a pool of Ray workers (one per GPU of the cluster, or one per --ray-cpus-per-worker CPUs), each with its own
loaded actors and feature cache; the HTTP API and the jobs folder stay as they are, and single-frame renders and
meshes still run in this process. Every node needs this checkout and the --actors folder at the same paths (shared
storage); frames are written by this process into --jobs-dir. See README, "Rendering on a Ray cluster".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from neural_human_addon.core.server_client import is_loopback_host
from server.commands.cli import fail
from server.inference.limits import BUNDLED_ACTORS_DIR, DEFAULT_CACHE_MB, DEFAULT_MIN_FREE_GPU_MB, JobPolicy
from server.neural_body.config import DEFAULT_MARGIN, PRECISIONS, RENDERERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actors", type=Path, default=None,
                        help=f"folder holding actor folders (default: the bundled actors in {BUNDLED_ACTORS_DIR})")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="model device")
    parser.add_argument("--token", default=None, help="use this bearer token instead of the stored one")
    parser.add_argument("--jobs-dir", type=Path, default=None,
                        help="folder for jobs (frames + job.json); jobs found there are served again after a restart "
                             "(default: $XDG_CACHE_HOME/neural-human/jobs, i.e. ~/.cache/neural-human/jobs)")
    parser.add_argument("--cache-mb", type=int, default=DEFAULT_CACHE_MB,
                        help="memory budget in MiB of the per-pose feature cache (0 disables it; default "
                             f"{DEFAULT_CACHE_MB})")
    parser.add_argument("--max-loaded", type=int, default=0,
                        help="most actors kept loaded at once; loading one more unloads the least recently used "
                             "(default 0: no limit)")
    parser.add_argument("--min-free-gpu-mb", type=int, default=DEFAULT_MIN_FREE_GPU_MB,
                        help="CUDA: before an actor loads, unload least-recently-used actors until this much GPU "
                             f"memory stays free besides its weights (default {DEFAULT_MIN_FREE_GPU_MB})")
    parser.add_argument("--renderer", choices=RENDERERS, default="fast",
                        help="fast (default): only where the body is, agreeing with the reference path (PSNR >= 40 "
                             "dB); reference: Neural Body's own sampling of the whole box")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help=f"fast path: metres around the body that may hold density (default {DEFAULT_MARGIN}; "
                             "raise it for actors with loose clothes far from the body model)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fast path: precision of the point network (tf32/bf16/fp16 on CUDA; default fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="fast path: run the point network through torch.compile (fused kernels for a GPU; "
                             "compiled before the server listens, tens of seconds; on a CPU it is slower)")
    parser.add_argument("--keep-jobs", type=int, default=JobPolicy.keep,
                        help="jobs kept; beyond, the oldest ended ones are removed with their frames (jobs queued, "
                             f"running or ended in the last {JobPolicy.recent_s:.0f} s never are; default "
                             f"{JobPolicy.keep})")
    parser.add_argument("--job-max-age-hours", type=float, default=JobPolicy.max_age_s / 3600,
                        help="ended jobs older than this are removed with their frames (default "
                             f"{JobPolicy.max_age_s / 3600:g})")
    parser.add_argument("--max-queued-jobs", type=int, default=JobPolicy.max_queued,
                        help=f"jobs queued or running at once; more answer 429 (default {JobPolicy.max_queued})")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow binding a non-loopback address and Host headers other than loopback names")
    farm = parser.add_argument_group("Ray farm (optional 'ray' package)")
    farm.add_argument("--ray", metavar="auto|local|ADDRESS", default=None,
                      help="compute the jobs' frames on Ray workers: auto joins the cluster `ray start` runs on this "
                           "machine, ADDRESS (host:port) a remote head node, local starts a one-machine cluster "
                           "inside the server (default: no Ray, frames computed in this process)")
    farm.add_argument("--ray-workers", type=int, default=None, metavar="N",
                      help="Ray workers (default: one per GPU of the cluster, or its CPUs // --ray-cpus-per-worker)")
    farm.add_argument("--ray-cpus-per-worker", type=float, default=1.0, metavar="C",
                      help="CPUs each Ray worker reserves and uses as torch threads (default 1)")
    farm.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="G",
                      help="GPUs each Ray worker reserves, fractions allowed (default: 1 on a cluster with GPUs, "
                           "else 0: CPU workers)")


def is_loopback(host: str) -> bool:
    """Whether ``--host`` is this machine (the add-on's check: brackets and IPv4-mapped addresses included)."""
    return is_loopback_host(host)


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments as an error line, or None; warns about a remote bind."""
    if not is_loopback(args.host):
        if not args.allow_remote:
            return (f"--host {args.host} is not a loopback address; anyone who can reach it could use the GPU with "
                    "the token. Pass --allow-remote to bind it anyway.")
        print(f"warning: binding {args.host}: the API is reachable from other machines (bearer token required, "
              "traffic is not encrypted)", file=sys.stderr)
    if not 1 <= args.port <= 65535:
        return f"--port must be 1..65535; got {args.port}"
    if args.cache_mb < 0:
        return f"--cache-mb must be >= 0 (0 disables the cache); got {args.cache_mb}"
    if args.max_loaded < 0 or args.min_free_gpu_mb < 0:
        return f"--max-loaded and --min-free-gpu-mb must be >= 0; got {args.max_loaded}, {args.min_free_gpu_mb}"
    if args.actors is not None and not args.actors.is_dir():  # the bundled folder may be empty or absent
        return f"--actors {args.actors}: no such folder (create it or point to your actors)"
    if args.keep_jobs < 1 or args.max_queued_jobs < 1 or not args.job_max_age_hours > 0:
        return (f"--keep-jobs and --max-queued-jobs must be >= 1 and --job-max-age-hours > 0; got {args.keep_jobs}, "
                f"{args.max_queued_jobs}, {args.job_max_age_hours}")
    if args.token is not None and len(args.token) < 16:
        return "--token must be at least 16 characters"
    return _check_renderer_arguments(args) or _check_ray_arguments(args)


def _check_renderer_arguments(args: argparse.Namespace) -> str | None:
    if not 0.0 <= args.margin <= 1.0:
        return f"--margin must be 0..1 metres; got {args.margin}"
    if args.compile and args.renderer != "fast":
        return "--compile compiles the fast path's point network: it needs --renderer fast (the default)"
    return None


def _check_ray_arguments(args: argparse.Namespace) -> str | None:
    if args.ray is None:
        if args.ray_workers is not None or args.ray_gpus_per_worker is not None or args.ray_cpus_per_worker != 1.0:
            return "--ray-workers, --ray-cpus-per-worker and --ray-gpus-per-worker need --ray"
        return None
    if args.ray_workers is not None and args.ray_workers < 1:
        return f"--ray-workers must be >= 1; got {args.ray_workers}"
    if not args.ray_cpus_per_worker > 0:
        return f"--ray-cpus-per-worker must be > 0; got {args.ray_cpus_per_worker}"
    if args.ray_gpus_per_worker is not None and not args.ray_gpus_per_worker >= 0:
        return f"--ray-gpus-per-worker must be >= 0; got {args.ray_gpus_per_worker}"
    return None


def _token(args: argparse.Namespace) -> str:
    from server.http.auth import load_or_create_token, token_path

    if args.token is not None:
        return args.token
    token, created = load_or_create_token()
    if created:
        print(f"API token (stored in {token_path()}): {token}", flush=True)
    else:
        print(f"API token: stored in {token_path()}", flush=True)
    return token


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.http.app import create_app
    from server.http.protocol import uvicorn_options
    from server.inference.service import default_jobs_dir
    from server.neural_body.render_settings import RenderSettings
    from server.neural_body.train import resolve_device

    problem = check_arguments(args)
    if problem is not None:
        return fail(problem)
    token = _token(args)
    try:
        device = str(resolve_device(args.device))
    except ValueError as err:
        return fail(str(err))
    actors_dir = args.actors if args.actors is not None else BUNDLED_ACTORS_DIR
    jobs_dir = args.jobs_dir if args.jobs_dir is not None else default_jobs_dir()
    settings = RenderSettings(args.renderer, args.margin, args.precision, args.compile)
    farm = None
    if args.ray is not None:
        farm = _start_farm(args, Path(actors_dir).resolve(), settings)
        if farm is None:
            return 1
    try:
        app = create_app(str(actors_dir), token, device, str(jobs_dir), cache_bytes=args.cache_mb * 2**20,
                         max_loaded=args.max_loaded, min_free_gpu_bytes=args.min_free_gpu_mb * 2**20,
                         settings=settings, allow_remote=args.allow_remote,
                         policy=JobPolicy(args.keep_jobs, args.job_max_age_hours * 3600, args.max_queued_jobs),
                         executor=farm)
    except OSError as err:
        if farm is not None:
            farm.close()
        return fail(f"--jobs-dir {jobs_dir}: {err}")
    if settings.compile:  # (check_arguments refused it beside the reference path)
        print("compiling the fast path's point network (torch.compile) ...", flush=True)
        seconds = settings.compile_point_network(device)
        print(f"compiled the point network in {seconds:.1f} s", flush=True)
    actor_ids = [a["id"] for a in app.state.registry.list()]
    where = actors_dir.resolve()
    if actor_ids:
        print(f"serving {len(actor_ids)} actor(s) from {where}: {', '.join(actor_ids)}", flush=True)
    else:
        print(f"no actors found in {where}: train one with `python -m server train` or pass --actors", flush=True)
    limit = f"at most {args.max_loaded} loaded" if args.max_loaded else "no limit on loaded actors"
    print(f"listening on http://{args.host}:{args.port}/v1 (device {device}, {args.renderer} renderer, jobs in "
          f"{jobs_dir}, {limit})",
          flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **uvicorn_options())
    finally:
        if farm is not None:
            farm.close()
    return 0


def _start_farm(args: argparse.Namespace, actors_dir: Path, settings: Any) -> Any:
    """The Ray farm for --ray (None, after an error line, when it cannot start)."""
    from server.inference.farm import FarmUnavailable, WorkerConfig, start_farm

    config = WorkerConfig(str(actors_dir), cache_bytes=args.cache_mb * 2**20, max_loaded=args.max_loaded,
                          min_free_gpu_bytes=args.min_free_gpu_mb * 2**20, settings=settings)
    print(f"starting the Ray farm ({args.ray}) ...", flush=True)
    try:
        farm = start_farm(args.ray, config, workers=args.ray_workers, cpus_per_worker=args.ray_cpus_per_worker,
                          gpus_per_worker=args.ray_gpus_per_worker)
    except FarmUnavailable as err:
        fail(f"--ray {args.ray}: {err}", 1)
        return None
    print(f"Ray farm: {farm.pool.size} workers computing the jobs' frames (actors from {actors_dir} on every node)",
          flush=True)
    return farm
