"""The extension zip as users get it: `make addon` builds and validates it with Blender's own extension tool; installed
into a fresh Blender profile it enables, registers every class, disables cleanly and enables again.

`make test-blender` builds the zip once and names it in NEURAL_HUMAN_ADDON_ZIP, so every Blender version of the matrix
installs the same file (as Blender's own "Install from Disk" does); without it the fixture runs `make addon`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

INSTALL_SCRIPT = r"""
import json, sys, warnings
import bpy
import addon_utils

# The add-on's own modules must not use deprecated API (bpy warns, e.g. Scene.compositing_node_group on 5.3).
warnings.filterwarnings("error", category=DeprecationWarning, module=r"bl_ext\.")

zip_path = sys.argv[-1]
bpy.context.preferences.use_preferences_save = False
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.neural_human"
package = sys.modules[module]
names = [f"{module}.{m}" for m in package._BPY_MODULES]
classes = [c for m in names for c in getattr(sys.modules[m], "CLASSES", ())]
enabled = {
    "enabled": addon_utils.check(module)[1],
    "classes": [c.__name__ for c in classes],
    "registered": [c.__name__ for c in classes if getattr(c, "is_registered", False)],
    "operators": sorted(op for op in dir(bpy.ops.neural_human)),
    "scene_props": hasattr(bpy.types.Scene, "neural_human"),
    "prefs": module in bpy.context.preferences.addons,
}
addon_utils.disable(module, default_set=True)
disabled = {
    "enabled": addon_utils.check(module)[1],
    "registered": [c.__name__ for c in classes if getattr(c, "is_registered", False)],
    "operators": sorted(op for op in dir(bpy.ops.neural_human)),
    "scene_props": hasattr(bpy.types.Scene, "neural_human"),
}
addon_utils.enable(module, default_set=True)
again = addon_utils.check(module)[1] and all(c.is_registered for c in classes)
addon_utils.disable(module, default_set=True)
print("RESULT " + json.dumps({"enabled": enabled, "disabled": disabled, "again": again}))
"""


MANIFEST = tomllib.loads((REPO / "blender_manifest.toml").read_text())


@pytest.fixture(scope="module")
def addon_zip() -> Path:
    if os.environ.get("NEURAL_HUMAN_ADDON_ZIP"):  # built once by `make test-blender` for every version
        path = Path(os.environ["NEURAL_HUMAN_ADDON_ZIP"])
        assert path.is_file() and path.name == f"neural_human-{MANIFEST['version']}.zip", path
        return path
    version = MANIFEST["version"]
    proc = subprocess.run(["make", "-s", "addon"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success parsing TOML" in proc.stdout  # Blender's validator ran on the built zip
    path = REPO / "dist" / f"neural_human-{version}.zip"
    assert path.is_file()
    return path


@pytest.mark.blender
def test_oldest_supported_blender_is_42() -> None:
    """blender_version_min stays 4.2.0 (the first Blender with extensions, an LTS users keep), and it is true: the
    matrix of `make test-blender-all` starts at 4.2; here the running bpy is one the manifest admits."""
    import bpy

    assert MANIFEST["blender_version_min"] == "4.2.0"
    assert tuple(bpy.app.version) >= (4, 2, 0)
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^BLENDER_VERSIONS \?= 4\.2 ", makefile, re.M), "the Blender matrix must start at 4.2"


@pytest.mark.blender
@pytest.mark.slow
def test_zip_holds_the_addon_and_manifest(addon_zip: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(addon_zip).namelist())
    source = {p.relative_to(REPO / "neural_human_addon").as_posix() for p in (REPO / "neural_human_addon").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert source <= names
    assert "blender_manifest.toml" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


@pytest.mark.blender
@pytest.mark.slow
def test_install_enable_disable_in_fresh_profile(addon_zip: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", INSTALL_SCRIPT, str(addon_zip)], env=env, capture_output=True,
                          text=True, timeout=300)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    enabled, disabled = result["enabled"], result["disabled"]
    assert enabled["enabled"] and enabled["prefs"] and enabled["scene_props"]
    assert enabled["classes"] and enabled["registered"] == enabled["classes"]
    assert {"connect", "render_frame", "render_animation", "import_mesh", "import_mesh_sequence", "cancel",
            "add_actor", "bind_armature", "reanimate"} <= set(enabled["operators"])
    assert not disabled["enabled"] and disabled["registered"] == [] and not disabled["scene_props"]
    assert disabled["operators"] == []
    assert result["again"]
    # Installed where a user's extensions go, inside the fresh profile only.
    assert (tmp_path / "blender" / "extensions" / "user_default" / "neural_human" / "__init__.py").is_file()
    assert not re.search(r"Traceback", proc.stderr), proc.stderr[-3000:]
