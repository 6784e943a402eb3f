"""The layout's rules (DESIGN.md §2), checked by reading every module's imports with ``ast``:

- ``neural_human_addon/core`` never imports bpy (nor Blender's other modules, nor the add-on's ``blender`` shell);
- ``server/inference`` never imports FastAPI (nor anything of the HTTP stack);
- only ``server/commands`` parses command lines (argparse);
- the server imports only ``neural_human_addon.core`` of the add-on;
- imports run down the list body/data -> neural_body -> inference -> http -> commands, never back up;
- only ``server/inference/farm.py`` imports ray (an optional extra);
- imports inside functions only in ``server/commands`` (where they keep ``--help`` fast), and command modules import
  no heavy library at their top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLENDER_MODULES = {"bpy", "mathutils", "bpy_extras", "addon_utils", "gpu", "bmesh", "_cycles", "bl_ui"}
HTTP_STACK = {"fastapi", "starlette", "uvicorn", "httpx"}
HEAVY = {"torch", "spconv", "bpy", "fastapi", "uvicorn", "scipy", "skimage", "mcubes", "smplx", "PIL", "tqdm", "ray"}
# server packages from the bottom up; a module may import its own level or a lower one
LEVELS = {"server.errors": 0, "server.body": 1, "server.data": 1, "server.neural_body": 2, "server.inference": 3,
          "server.http": 4, "server.commands": 5}
# (module, imported top-level name) pairs allowed inside functions outside server/commands, with the reason
LAZY_ALLOWED = {
    ("server.data.synthetic_scene", "_cycles"): "probes an optional Cycles feature (ImportError means: not built in)",
    ("neural_human_addon", "importlib"): "register() imports the bpy shell so the package root stays bpy-free",
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[Import]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if child.module is None or child.level and not child.module:  # "from . import a, b"
                    found.extend(Import(module, f"{target}.{a.name}", child.lineno, in_function)
                                 for a in child.names)
                else:
                    found.append(Import(module, target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def _all_imports(*packages: str) -> list[Import]:
    out: list[Import] = []
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            out.extend(_imports(path))
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _show(bad: list[Import]) -> str:
    return "\n".join(f"{i.module}:{i.line} imports {i.target}" for i in bad)


SERVER = _all_imports("server")
ADDON = _all_imports("neural_human_addon")


def test_addon_core_never_imports_bpy_or_the_shell():
    bad = [i for i in ADDON if _within(i.module, "neural_human_addon.core")
           and (_top(i.target) in BLENDER_MODULES | {"server"} or _within(i.target, "neural_human_addon.blender"))]
    assert not bad, _show(bad)


def test_inference_never_imports_the_http_stack():
    bad = [i for i in SERVER if _within(i.module, "server.inference")
           and (_top(i.target) in HTTP_STACK or _within(i.target, "server.http"))]
    assert not bad, _show(bad)


def test_only_commands_parse_argv():
    bad = [i for i in SERVER + ADDON if _top(i.target) == "argparse" and not _within(i.module, "server.commands")]
    assert not bad, _show(bad)


def test_only_the_farm_imports_ray():
    """ray is an optional extra: the single-machine server never imports it (serve imports the farm for --ray)."""
    bad = [i for i in SERVER + ADDON if _top(i.target) == "ray" and i.module != "server.inference.farm"]
    assert not bad, _show(bad)


def test_server_imports_only_the_addon_core():
    bad = [i for i in SERVER if _top(i.target) == "neural_human_addon"
           and not _within(i.target, "neural_human_addon.core")]
    assert not bad, _show(bad)


def _level(name: str) -> int | None:
    return next((level for package, level in LEVELS.items() if _within(name, package)), None)


def test_imports_run_down_the_layers():
    bad = []
    for i in SERVER:
        mine, theirs = _level(i.module), _level(i.target)
        if mine is not None and theirs is not None and theirs > mine:
            bad.append(i)
    assert not bad, _show(bad)


def test_lazy_imports_only_in_commands():
    bad = [i for i in SERVER + ADDON if i.in_function and not _within(i.module, "server.commands")
           and (i.module, _top(i.target)) not in LAZY_ALLOWED]
    assert not bad, _show(bad)


def test_command_modules_import_no_heavy_library_at_the_top():
    def heavy(target: str) -> bool:
        level = _level(target)
        library = level is not None and level < LEVELS["server.commands"] and target not in _LIGHT_MODULES
        return _top(target) in HEAVY or library

    bad = [i for i in SERVER if _within(i.module, "server.commands") and not i.in_function and heavy(i.target)]
    assert not bad, _show(bad)


# torch-free modules whose constants the commands' arguments use
_LIGHT_MODULES = {"server.body.skeleton", "server.neural_body.config", "server.inference.limits", "server.errors"}


def test_help_imports_no_heavy_library():
    """Building every command's parser (what `python -m server <command> --help` does) loads no heavy library."""
    code = ("import sys; from server.commands.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


PLANTED = {  # rule -> an import that breaks it
    test_addon_core_never_imports_bpy_or_the_shell: Import("neural_human_addon.core.camera", "bpy", 1, False),
    test_inference_never_imports_the_http_stack: Import("server.inference.jobs", "fastapi", 1, False),
    test_only_commands_parse_argv: Import("server.neural_body.train", "argparse", 1, False),
    test_server_imports_only_the_addon_core: Import("server.data.make_data", "neural_human_addon.blender.x", 1, False),
    test_imports_run_down_the_layers: Import("server.neural_body.mesh", "server.inference.frames", 1, False),
    test_lazy_imports_only_in_commands: Import("server.neural_body.mesh", "torch", 1, True),
    test_command_modules_import_no_heavy_library_at_the_top: Import("server.commands.train", "torch", 1, False),
    test_only_the_farm_imports_ray: Import("server.inference.jobs", "ray", 1, False),
}


@pytest.mark.parametrize("rule", list(PLANTED), ids=lambda rule: rule.__name__)
def test_rules_catch_a_violation(rule, monkeypatch):
    """The checks are real: one planted bad import fails each of them."""
    monkeypatch.setitem(globals(), "ADDON", ADDON + [PLANTED[rule]])
    monkeypatch.setitem(globals(), "SERVER", SERVER + [PLANTED[rule]])
    with pytest.raises(AssertionError):
        rule()
