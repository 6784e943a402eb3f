# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: where the server is, the token, timeouts, and an optional command that starts a local server.

Only loopback servers are contacted unless the user allows others here *and* Blender's online access is on.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from ..core.server_client import DEFAULT_URL, ServerClient
from . import ADDON_PACKAGE


def local_token_path() -> Path:
    """Where `python -m server serve` stores its generated token for this user."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "neural-human" / "token"


class NeuralHumanPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    server_url: StringProperty(
        name="Server URL", default=DEFAULT_URL,
        description="Address of the Neural Human inference server (python -m server serve)")
    token: StringProperty(
        name="Token", subtype="PASSWORD", default="",
        description="Bearer token of the server. Empty: read the local server's token file "
                    "(~/.config/neural-human/token)")
    connect_timeout: FloatProperty(
        name="Connect Timeout", default=3.0, min=0.2, max=60.0, unit="TIME_ABSOLUTE",
        description="Seconds to wait for the server to accept a connection")
    request_timeout: FloatProperty(
        name="Request Timeout", default=120.0, min=5.0, max=3600.0, unit="TIME_ABSOLUTE",
        description="Seconds to wait for one reply (a single frame on a CPU server can take a while)")
    allow_remote: BoolProperty(
        name="Allow Remote Servers", default=False,
        description="Allow servers that are not on this machine (also needs Blender's Allow Online Access)")
    server_command: StringProperty(
        name="Start Command", default="",
        description="Command that starts a local server, e.g. '/path/to/.venv/bin/python -m server serve' "
                    "(run without a shell, from the folder given below)")
    server_workdir: StringProperty(
        name="Start Folder", subtype="DIR_PATH", default="",
        description="Working folder for the start command (the Neural Human checkout)")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "server_url")
        col.prop(self, "token")
        row = col.row(align=True)
        row.prop(self, "connect_timeout")
        row.prop(self, "request_timeout")
        col.prop(self, "allow_remote")
        if self.allow_remote and not bpy.app.online_access:
            col.label(text="Remote servers also need Preferences > System > Allow Online Access", icon="ERROR")
        col.separator()
        col.prop(self, "server_command")
        col.prop(self, "server_workdir")


def addon_preferences(context: bpy.types.Context | None = None) -> NeuralHumanPreferences:
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    if addon is None:
        raise RuntimeError(f"the add-on {ADDON_PACKAGE!r} is not enabled")
    return addon.preferences


def resolve_token(prefs: NeuralHumanPreferences) -> str:
    if prefs.token:
        return prefs.token
    path = local_token_path()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def make_client(context: bpy.types.Context | None = None) -> ServerClient:
    """A client configured from the preferences (raises ServerError for a URL the settings do not allow)."""
    prefs = addon_preferences(context)
    return ServerClient(
        prefs.server_url, token=resolve_token(prefs), timeout=prefs.request_timeout,
        connect_timeout=prefs.connect_timeout, allow_remote=bool(prefs.allow_remote and bpy.app.online_access))


CLASSES = (NeuralHumanPreferences,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
