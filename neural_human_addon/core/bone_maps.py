"""Bone maps: JSON presets mapping SMPL's 24 joints to a rig family's bone names, name-based auto-detection, overrides.

A bone map is a dict {smpl_joint: bone_name or None}. Presets live in bone_map_presets/*.json as
{"name": ..., "family": ..., "joints": {smpl_joint: bone_name or null}}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .bone_detect import StructureError, detect_by_names, detect_by_structure, normalize_bone_name
from .errors import UserError
from .smpl_skeleton import REQUIRED_JOINTS, SMPL_JOINT_NAMES

PRESET_DIR = Path(__file__).resolve().parent / "bone_map_presets"

BoneMap = dict[str, str | None]


class BoneMapError(UserError, ValueError):
    """A bone map or preset is malformed; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Preset:
    key: str  # file stem, e.g. "mixamo"
    name: str
    family: str
    joints: BoneMap


EDITOR_HINT = (
    "pick the bone in the sidebar's Neural Human > Retarget > Bone Map list (or Load a saved map there), "
    "then Bind again"
)
LIMB_JOINTS = tuple(
    f"{s}_{p}" for s in ("left", "right") for p in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")
)


@dataclass
class Detection:
    """Result of matching a rig: a preset (exact family names) or the structure (hierarchy + rest geometry)."""

    preset: Preset | None
    bone_map: BoneMap  # resolved to the rig's actual bone names; None where not found
    coverage: float  # fraction of the 24 SMPL joints mapped to an existing bone
    missing_required: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # preset key -> score, for the UI
    method: str = "preset"  # "preset", "structure" or "none"
    confidence: float = 0.0  # 0..1
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.method != "none" and not self.missing_required

    @property
    def label(self) -> str:
        if self.method == "structure":
            return "hierarchy and rest pose (no preset)"
        if self.method == "names":
            return "bone-name words and side cues (no preset)"
        return self.preset.name if self.preset is not None else "nothing"

    def chosen(self) -> str:
        return ", ".join(f"{j}={b}" for j, b in self.bone_map.items() if b)

    @property
    def message(self) -> str:
        if self.method == "none":
            why = f" ({'; '.join(self.notes)})" if self.notes else ""
            return (f"Could not find a humanoid's legs, spine and arms in this armature{why}; "
                    f"map the bones by hand: {EDITOR_HINT}.")  # fmt: skip
        head = (f"Detected by {self.label} ({round(100 * self.confidence)}% confidence, "
                f"{round(100 * self.coverage)}% of SMPL joints mapped).")  # fmt: skip
        if not self.missing_required:
            return f"{head} Bones: {self.chosen()}."
        if self.preset is not None:
            wanted = ", ".join(f"{j} (expected '{self.preset.joints.get(j)}')" for j in self.missing_required)
        else:
            wanted = ", ".join(self.missing_required)
        return f"{head} Missing required joints: {wanted}; {EDITOR_HINT}. Found so far: {self.chosen()}."


def validate_joints(joints: Mapping[str, object], where: str) -> BoneMap:
    """Check a {smpl_joint: name|None} dict; returns a full 24-key map (absent keys -> None)."""
    unknown = sorted(set(joints) - set(SMPL_JOINT_NAMES))
    if unknown:
        raise BoneMapError(f"{where}: unknown SMPL joint(s) {unknown}; valid names are {list(SMPL_JOINT_NAMES)}")
    out: BoneMap = {}
    for j in SMPL_JOINT_NAMES:
        v = joints.get(j)
        if v is not None and (not isinstance(v, str) or not v):
            raise BoneMapError(f"{where}: joint '{j}' must map to a bone name string or null, got {v!r}")
        out[j] = v
    return out


def load_preset(path: str | Path) -> Preset:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BoneMapError(f"cannot read bone-map preset {path}: {e}") from e
    for key in ("name", "family", "joints"):
        if key not in data:
            raise BoneMapError(f"bone-map preset {path} lacks the '{key}' field (needs name, family, joints)")
    if not isinstance(data["joints"], dict):
        raise BoneMapError(f"bone-map preset {path}: 'joints' must be an object {{smpl_joint: bone_name}}")
    return Preset(path.stem, str(data["name"]), str(data["family"]), validate_joints(data["joints"], str(path)))


def load_presets(directory: str | Path = PRESET_DIR) -> dict[str, Preset]:
    """All presets in `directory`, keyed by file stem, sorted by key."""
    return {p.stem: load_preset(p) for p in sorted(Path(directory).glob("*.json"))}


def resolve_map(joints: BoneMap, bone_names: Iterable[str]) -> tuple[BoneMap, int]:
    """Resolve a preset's names to the rig's names: exact match first, then normalised; returns (map, exact hits)."""
    names = list(bone_names)
    exact = set(names)
    by_norm: dict[str, str] = {}
    for n in names:
        by_norm.setdefault(normalize_bone_name(n), n)
    out: BoneMap = {}
    n_exact = 0
    for j, want in joints.items():
        if want is None:
            out[j] = None
        elif want in exact:
            out[j] = want
            n_exact += 1
        else:
            out[j] = by_norm.get(normalize_bone_name(want))
    return out, n_exact


def missing_required(bone_map: Mapping[str, str | None]) -> list[str]:
    return [j for j in REQUIRED_JOINTS if not bone_map.get(j)]


def _score_presets(names: list[str], presets: Mapping[str, Preset]) -> tuple[dict[str, float], list]:
    scores: dict[str, float] = {}
    ranked = []
    for key, p in presets.items():
        named = [j for j, b in p.joints.items() if b]
        if not named:
            continue
        resolved, n_exact = resolve_map(p.joints, names)
        found = sum(1 for j in named if resolved[j])
        score = found / len(named) + 0.01 * n_exact / len(named) + 0.001 * found / len(SMPL_JOINT_NAMES)
        scores[key] = score
        ranked.append((score, key, p, resolved, n_exact / max(found, 1)))
    ranked.sort(key=lambda r: (-r[0], r[1]))
    return scores, ranked


def _coverage(bone_map: Mapping[str, str | None]) -> float:
    return sum(1 for b in bone_map.values() if b) / len(SMPL_JOINT_NAMES)


def _agrees(resolved: BoneMap, structural: BoneMap | None) -> bool:
    """A preset fits a rig whose structure is known only if its limb bones are the ones the structure finds."""
    return structural is None or all(resolved.get(j) == structural.get(j) for j in LIMB_JOINTS)


def detect_bone_map(
    bone_names: Iterable[str],
    presets: Mapping[str, Preset] | None = None,
    parents: Sequence[int] | None = None,
    heads: object = None,
    up: Sequence[float] = (0.0, 0.0, 1.0),
) -> Detection:
    """The bone map of a rig: a preset when its names fit, else the rig's structure.

    Presets are scored by the fraction of their named joints found in the rig (exact or normalised, a small bonus for
    exact hits). A preset wins only when it maps every required joint, and, given the hierarchy (`parents`) and rest
    heads (world (N, 3), `up` = world up), when its names are (90%) exact or its limb bones are those the structure
    finds: generic names shared by several families (LeftShoulder, LeftHip) cannot make a wrong family win.
    Otherwise the map comes from the structure (bone_detect.detect_by_structure), else from name words and side
    cues (bone_detect.detect_by_names); failing all, the best partial preset is reported with its missing joints
    (only on its own exact names)."""
    names = list(bone_names)
    presets = load_presets() if presets is None else presets
    scores, ranked = _score_presets(names, presets)
    structural, notes, s_conf = None, [], 0.0
    if parents is not None and heads is not None:
        try:
            m = detect_by_structure(names, parents, heads, up)
            structural, notes, s_conf = validate_joints(m.bone_map, "structure"), m.notes, m.confidence
        except StructureError as e:
            notes = [str(e)]
    for score, _, p, resolved, exact in ranked:
        # the structure vetoes only look-alike (normalised) matches: a family's own exact names are trusted (Rigify's
        # DEF chains, say, where the hierarchy also holds ORG/MCH copies of every limb)
        trusted = exact >= 0.9 or _agrees(resolved, structural)
        if score >= 0.5 and not missing_required(resolved) and trusted:
            conf = min(1.0, score) if structural is None else min(1.0, 0.5 * score + 0.5 * max(s_conf, 0.9))
            return Detection(p, resolved, _coverage(resolved), [], scores, "preset", round(conf, 3), notes)
    if structural is not None and not missing_required(structural):
        return Detection(None, structural, _coverage(structural), [], scores, "structure", s_conf, notes)
    by_names = detect_by_names(names)
    if not missing_required(by_names.bone_map):
        bm = validate_joints(by_names.bone_map, "names")
        return Detection(None, bm, _coverage(bm), [], scores, "names", by_names.confidence, notes + by_names.notes)
    if ranked and ranked[0][0] >= 0.25 and ranked[0][4] >= 0.5 and structural is None:
        # a partial family match only on its own exact names: generic look-alikes (LeftHip) do not make a family
        score, _, p, resolved, _ = ranked[0]
        return Detection(p, resolved, _coverage(resolved), missing_required(resolved), scores, "preset",
                         round(min(1.0, score), 3), notes)  # fmt: skip
    partial = structural or dict.fromkeys(SMPL_JOINT_NAMES)
    return Detection(None, partial, _coverage(partial), missing_required(partial), scores, "none", 0.0, notes)


def apply_overrides(
    bone_map: Mapping[str, str | None], overrides: Mapping[str, str | None], bone_names: Iterable[str] | None = None
) -> BoneMap:
    """Merge user overrides {smpl_joint: bone or None (unmap)} into a map; checks names against the rig if given."""
    base = validate_joints(bone_map, "bone map")
    extra = validate_joints(overrides, "bone-map overrides")
    names = set(bone_names) if bone_names is not None else None
    for j in overrides:
        b = extra[j]
        if b is not None and names is not None and b not in names:
            raise BoneMapError(f"override for '{j}': the armature has no bone named '{b}'; pick one of its bones")
        base[j] = b
    return base


# --- user presets (saved from the panel's bone-map editor) -------------------------------------------------------

USER_PREFIX = "user_"


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    if not slug:
        raise BoneMapError(f"bone-map name {name!r} has no letters or digits; type a name such as 'my rig'")
    return slug


def save_user_preset(directory: str | Path, name: str, joints: Mapping[str, str | None]) -> Path:
    """Write a named bone map as a preset JSON in `directory` (created); returns the file. Same name = replaced."""
    checked = validate_joints(joints, f"bone map '{name}'")
    missing = missing_required(checked)
    if missing:
        raise BoneMapError(f"bone map '{name}' lacks required joints {missing}; {EDITOR_HINT}")
    path = Path(directory) / f"{_slug(name)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"name": name.strip(), "family": "user", "joints": checked}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_user_presets(directory: str | Path | None) -> dict[str, Preset]:
    """The user's saved bone maps, keyed 'user_<file stem>' (none if the folder does not exist)."""
    if directory is None or not Path(directory).is_dir():
        return {}
    return {USER_PREFIX + k: Preset(USER_PREFIX + k, p.name, p.family, p.joints)
            for k, p in load_presets(directory).items()}  # fmt: skip


def all_presets(user_dir: str | Path | None = None) -> dict[str, Preset]:
    """Built-in presets and the user's saved maps (offered by detection like any preset)."""
    return load_presets() | load_user_presets(user_dir)
