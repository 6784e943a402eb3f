"""`python -m server <command>`: one command line for the server side.

Each command is a module of ``server.commands`` with ``add_arguments(parser)`` and ``run(args) -> int``. Command
modules import only light modules at their top (argument defaults come from torch-free config modules); the
libraries a command needs (torch, bpy, ...) are imported inside its ``run()``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module in server.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build-demo-body": ("build_demo_body", "build the open demo body model from MakeHuman assets"),
    "make-data": ("make_data", "render a synthetic multi-view dataset in the ZJU-MoCap layout"),
    "demo": ("demo", "run the end-to-end demo and write demo_output/"),
    "import-checkpoint": ("import_checkpoint",
                          "convert a checkpoint of the original Neural Body implementation into an actor folder"),
    "check-dataset": ("check_dataset", "summarise a ZJU-MoCap-layout dataset and list missing/corrupt files"),
    "train": ("train", "train a Neural Body actor on a ZJU-MoCap-layout dataset"),
    "evaluate": ("evaluate", "evaluate an actor: PSNR/SSIM (Neural Body protocol), IoU/Chamfer"),
    "mesh": ("mesh", "extract a coloured mesh of an actor in one pose as a PLY"),
    "bench": ("bench", "measure rendering, meshing and training speed (JSON)"),
    "serve": ("serve", "run the local inference server (HTTP API v1) for the Blender add-on"),
}


def fail(message: str, status: int = 2) -> int:
    """Print ``error: message`` to stderr and return the exit status (2: bad arguments, 1: the work failed)."""
    print(f"error: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"{__package__}.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=module.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
