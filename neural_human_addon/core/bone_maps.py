"""Bone maps: JSON presets mapping SMPL's 24 joints to a rig family's bone names, name-based auto-detection, overrides.

A bone map is a dict {smpl_joint: bone_name or None}. Presets live in bone_map_presets/*.json as
{"name": ..., "family": ..., "joints": {smpl_joint: bone_name or null}}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class Detection:
    """Result of matching presets against a rig's bone names."""

    preset: Preset | None
    bone_map: BoneMap  # resolved to the rig's actual bone names; None where not found
    coverage: float  # fraction of the 24 SMPL joints mapped to an existing bone
    missing_required: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)  # preset key -> score, for the UI

    @property
    def ok(self) -> bool:
        return self.preset is not None and not self.missing_required

    @property
    def message(self) -> str:
        if self.preset is None:
            return "No bone-map preset matches this armature's bone names; map the bones by hand."
        head = f"Detected '{self.preset.name}' ({round(100 * self.coverage)}% of SMPL joints mapped)."
        if not self.missing_required:
            return head
        wanted = ", ".join(f"{j} (expected '{self.preset.joints.get(j)}')" for j in self.missing_required)
        return f"{head} Missing required bones: {wanted}. Assign them in the bone map overrides."


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


_PREFIXES = re.compile(
    r"^(def|org|mch|bip\d*|bip|mixamorig\d*|[mf]_avg|armature|skeleton|rig)(?=[\s._\-:]|$)[\s._\-:]*"
)
_SIDE_PATTERNS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"(left|right)"), 0),  # anywhere: LeftUpLeg, left_hip, UpperArm_Left
    (re.compile(r"[\s._\-]([lr])$"), 1),  # thigh.L, UpLeg_L, hand-l
    (re.compile(r"^([lr])[\s._\-]"), 1),  # L_Thigh, l.hand
    (re.compile(r"[\s._\-]([lr])[\s._\-]"), 1),  # Bip01 L Thigh, m_avg_L_Hip
)


def normalize_bone_name(name: str) -> str:
    """Canonical key for fuzzy matching, 'side|core': 'mixamorig:LeftUpLeg' -> 'l|upleg', 'DEF-thigh.L' -> 'l|thigh'.

    Lower-cases, drops namespaces ('ns:'), rig prefixes (DEF-, ORG-, Bip01, mixamorig), the side token
    (Left/Right, .L/_R, L_, 'L' between separators, a leading 'L'/'R' before a capital as in 'LHipJoint'/'rThigh')
    and separators.
    """
    s = name.rsplit(":", 1)[-1].strip()
    side = ""
    m = re.match(r"^([LRlr])(?=[A-Z])", s)  # camel-case side prefix: LHipJoint, lShldr
    low = s.lower()
    for _ in range(3):
        low = _PREFIXES.sub("", low)
    for pat, grp in _SIDE_PATTERNS:
        hit = pat.search(low)
        if hit:
            side = hit.group(grp)[0]
            low = low[: hit.start(grp)] + low[hit.end(grp) :]
            break
    else:
        if m and len(s) > 1:
            side = m.group(1).lower()
            low = low[1:]
    core = re.sub(r"[\s._\-:]+", "", low)
    return f"{side}|{core}"


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


def detect_bone_map(bone_names: Iterable[str], presets: Mapping[str, Preset] | None = None) -> Detection:
    """Score each preset against a rig's bone names and return the best resolved map.

    Score = fraction of the preset's named joints found in the rig (exact or normalised), with a small bonus
    for exact hits so that, e.g., a Mixamo rig picks the Mixamo preset over a look-alike.
    """
    names = list(bone_names)
    presets = load_presets() if presets is None else presets
    best: tuple[float, Preset, BoneMap] | None = None
    scores: dict[str, float] = {}
    for key, p in presets.items():
        named = [j for j, b in p.joints.items() if b]
        if not named:
            continue
        resolved, n_exact = resolve_map(p.joints, names)
        found = sum(1 for j in named if resolved[j])
        score = found / len(named) + 0.01 * n_exact / len(named) + 0.001 * found / len(SMPL_JOINT_NAMES)
        scores[key] = score
        if best is None or score > best[0]:
            best = (score, p, resolved)
    if best is None or best[0] < 0.25:
        empty = dict.fromkeys(SMPL_JOINT_NAMES)
        return Detection(None, empty, 0.0, list(REQUIRED_JOINTS), scores)
    _, preset, resolved = best
    coverage = sum(1 for b in resolved.values() if b) / len(SMPL_JOINT_NAMES)
    return Detection(preset, resolved, coverage, missing_required(resolved), scores)


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
