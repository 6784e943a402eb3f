"""`python -m server <command>`: one command line for the server side.

Each command lives in its own module, which exposes ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``--help`` stays fast and a command's heavy imports
(torch, bpy) are paid only by that command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build-demo-body": ("server.body.demo_body_build", "build the open demo body model from MakeHuman assets"),
    "make-data": ("server.data.make_data", "render a synthetic multi-view dataset in the ZJU-MoCap layout"),
    "demo": ("server.commands.demo", "run the end-to-end demo and write demo_output/"),
    "import-checkpoint": ("server.neural_body.checkpoint_import",
                          "convert a checkpoint of the original Neural Body implementation into an actor folder"),
    "check-dataset": ("server.data.zju_reader", "summarise a ZJU-MoCap-layout dataset and list missing/corrupt files"),
    "train": ("server.neural_body.train", "train a Neural Body actor on a ZJU-MoCap-layout dataset"),
    "evaluate": ("server.neural_body.evaluate", "evaluate an actor: PSNR/SSIM (Neural Body protocol), IoU/Chamfer"),
    "mesh": ("server.neural_body.mesh", "extract a coloured mesh of an actor in one pose as a PLY"),
    "bench": ("server.commands.bench", "measure rendering, meshing and training speed (JSON)"),
    "serve": ("server.commands.serve", "run the local inference server (HTTP API v1) for the Blender add-on"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=help_text, description=module.__doc__)
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
