"""Parse a command line exactly as `python -m server <command> ...` does, for tests that call a command's run()."""

from __future__ import annotations

import argparse

from server.commands.cli import build_parser


def command_args(command: str, *argv: str) -> argparse.Namespace:
    return build_parser().parse_args([command, *argv])
