# SPDX-License-Identifier: GPL-3.0-or-later
"""What the add-on last learned from the server (health, actor list, skeletons), kept per Blender session.

Pure Python: the bpy layer fills it from worker results on the main thread and reads it while drawing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def describe_health(health: dict[str, Any]) -> str:
    """One line for the panel: device, GPU name and free memory."""
    device = health.get("device") or {}
    kind = str(device.get("type", "?"))
    text = kind.upper() if kind in ("cpu", "cuda") else kind
    if device.get("name"):
        text += f" ({device['name']})"
    free = device.get("free_memory_bytes")
    if isinstance(free, (int, float)) and free > 0:
        text += f", {free / 2**30:.1f} GiB free"
    return f"server {health.get('server_version', '?')}, {text}"


@dataclass
class ConnectionState:
    health: dict[str, Any] | None = None
    actors: list[dict[str, Any]] = field(default_factory=list)
    skeletons: dict[str, dict[str, Any]] = field(default_factory=dict)
    # EnumProperty items must stay referenced from Python while Blender shows them.
    actor_enum_items: list[tuple[str, str, str]] = field(default_factory=lambda: [("", "(connect first)", "")])

    def set_actors(self, actors: list[dict[str, Any]]) -> None:
        self.actors = list(actors)
        items = []
        for a in self.actors:
            frames = a.get("frames")
            desc = f"{a.get('name', a['id'])}: {frames} frames trained, body {a.get('body_model', '?')}"
            items.append((str(a["id"]), str(a.get("name") or a["id"]), desc))
        self.actor_enum_items = items or [("", "(no actors on the server)", "")]

    def actor(self, actor_id: str) -> dict[str, Any] | None:
        return next((a for a in self.actors if a.get("id") == actor_id), None)

    def reset(self) -> None:
        self.health = None
        self.skeletons.clear()
        self.set_actors([])
        self.actor_enum_items = [("", "(connect first)", "")]


STATE = ConnectionState()
