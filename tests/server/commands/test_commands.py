"""The command modules: every command builds its parser from light modules, and the defaults they declare for --help
agree with the libraries that use them."""

from __future__ import annotations

from server.commands.cli import COMMANDS, build_parser


def test_every_command_has_help_and_a_run():
    subparsers = build_parser()._subparsers._group_actions[0].choices
    for name in COMMANDS:
        assert subparsers[name].description and callable(subparsers[name].get_default("_module").run)


def test_make_data_preset_names_are_the_presets():
    from server.commands.make_data import PRESET_NAMES
    from server.data.make_data import PRESETS

    assert sorted(PRESET_NAMES) == sorted(PRESETS)
