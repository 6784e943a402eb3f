"""Bone-map detection by structure (numpy only): the SMPL joints found from a rig's hierarchy and rest geometry.

Works for any humanoid, whatever its bone names: the two feet are the lowest leaves whose common ancestor lies on the
path to the highest leaf (the head), that ancestor is the pelvis, the arms are the two leaves farthest out from the
spine whose common ancestor is on it (the chest). Roles along each chain come from rest geometry: heights along the
legs (hip where the long drop starts, ankle near the floor, knee in between), arc length along the arms (collar when
the first segment is short, wrist where the hand branches into fingers, elbow in between). Names only break ties
(twist bones, 'knee'/'forearm' words) and give sides when they carry side cues; otherwise sides come from the toes'
forward direction (left = up × forward), else Blender's convention (the character faces -Y).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .smpl_skeleton import REQUIRED_JOINTS, SMPL_JOINT_NAMES

Z_UP = np.array([0.0, 0.0, 1.0])
_NUB = re.compile(r"(end|nub|top|tip|site)$")
_SIDE_WORDS = re.compile(r"(?:^|[^a-z])(left|right)|(?:^|[\s._\-])([lr])(?:[\s._\-]|$)|^([lr])(?=[A-Z])")
KNEE_WORDS = ("knee", "shin", "calf", "lowerleg", "leg")
ELBOW_WORDS = ("elbow", "forearm", "lowerarm")


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


class StructureError(ValueError):
    """The hierarchy does not look like a humanoid; the message says which part was not found."""


@dataclass
class StructureMatch:
    bone_map: dict[str, str | None]
    confidence: float  # 0..1: required joints found, left/right chains alike in length, names agreeing
    notes: list[str] = field(default_factory=list)


def side_cue(name: str) -> str:
    """'l', 'r' or '' from a bone name's side token (Left/Right, .L/_R, L_, 'LHipJoint', 'lShldr')."""
    base = name.rsplit(":", 1)[-1]
    m = re.match(r"^([LRlr])(?=[A-Z])", base)
    if m:
        return m.group(1).lower()
    hit = _SIDE_WORDS.search(base.lower())
    if hit:
        return next(g for g in hit.groups() if g)[0]
    return ""


class _Tree:
    def __init__(self, names: Sequence[str], parents: Sequence[int], heads: np.ndarray, up: np.ndarray) -> None:
        self.names, self.parents = list(names), list(parents)
        self.heads = np.asarray(heads, dtype=np.float64)
        self.up = up / np.linalg.norm(up)
        self.h = self.heads @ self.up
        self.children: list[list[int]] = [[] for _ in self.names]
        for i, p in enumerate(self.parents):
            if p >= 0:
                self.children[p].append(i)
        self.leaves = [i for i, c in enumerate(self.children) if not c]

    def path(self, i: int) -> list[int]:
        """Root ... i."""
        out = []
        while i >= 0:
            out.append(i)
            i = self.parents[i]
        return out[::-1]

    def lca(self, a: int, b: int) -> int:
        pa, pb = self.path(a), self.path(b)
        k = 0
        while k < min(len(pa), len(pb)) and pa[k] == pb[k]:
            k += 1
        return pa[k - 1] if k else -1

    def between(self, top: int, leaf: int) -> list[int]:
        """Bones strictly below `top` down to `leaf` (inclusive)."""
        p = self.path(leaf)
        return p[p.index(top) + 1 :] if top in p else []

    def horizontal(self, v: np.ndarray) -> np.ndarray:
        return v - (v @ self.up) * self.up

    def is_nub(self, i: int) -> bool:
        return not self.children[i] and bool(_NUB.search(re.sub(r"[\s._\-:]", "", self.names[i].lower())))


def _find_ends(t: _Tree) -> tuple[int, int, int, int, int, int]:
    """(pelvis, head leaf, foot leaf A, foot leaf B, hand leaf A, hand leaf B)."""
    if len(t.names) < 10:
        raise StructureError(f"the rig has {len(t.names)} bones; a humanoid needs at least legs, spine and arms")
    top = max(t.leaves, key=lambda i: t.h[i])
    lows = sorted(t.leaves, key=lambda i: t.h[i])
    f1 = lows[0]
    tall = float(t.h[top] - t.h[f1])
    f2 = next((x for x in lows[1:] if t.h[t.lca(f1, x)] - t.h[f1] > 0.4 * tall), None)
    if f2 is None:
        raise StructureError("found no second leg: no other low end bone branches off near the hips")
    pelvis = t.lca(t.lca(f1, f2), top)
    spine_path = t.path(top)
    if pelvis not in spine_path:
        raise StructureError("the two legs do not meet on the path from the root to the head")
    upper_spine = set(spine_path[spine_path.index(pelvis) + 1 :])
    leg_roots = {t.between(pelvis, f)[0] for f in (f1, f2)}
    cand = [
        x for x in t.leaves
        if x != top and t.lca(x, top) in upper_spine and not leg_roots & set(t.path(x))
    ]  # fmt: skip
    if len(cand) < 2:
        raise StructureError("found no two arms branching off the spine above the hips")
    axis = t.heads[top] - t.heads[pelvis]
    axis = axis / max(np.linalg.norm(axis), 1e-12)

    def off_axis(x: int) -> float:
        v = t.heads[x] - t.heads[pelvis]
        return float(np.linalg.norm(v - (v @ axis) * axis))

    a1 = max(cand, key=off_axis)
    others = [x for x in cand if t.lca(a1, x) in upper_spine]
    if not others:
        raise StructureError("found one arm but no second one branching off the spine")
    a2 = max(others, key=lambda x: float(np.linalg.norm(t.horizontal(t.heads[x] - t.heads[a1]))))
    return pelvis, top, f1, f2, a1, a2


def _closest_mid(t: _Tree, chain: list[int], value: np.ndarray, target: float, words: tuple[str, ...]) -> int | None:
    """Chain bone whose `value` is closest to `target`; bones whose names carry one of `words` win."""
    if not chain:
        return None
    worded = [b for b in chain if any(w in t.names[b].lower() for w in words) and "up" not in t.names[b].lower()]
    pool = worded or chain
    return min(pool, key=lambda b: abs(float(value[chain.index(b)]) - target))


def _leg(t: _Tree, pelvis: int, leaf: int, floor: float, lateral: np.ndarray) -> dict[str, int | None]:
    chain = t.between(pelvis, leaf)
    span = max(float(t.h[pelvis]) - floor, 1e-9)
    drop = np.array([(t.h[pelvis] - t.h[b]) / span for b in chain])
    # hip: the first bone out to the side (hip joints, not the pelvis's own bones at its centre), high up the leg
    side = np.array([abs(float((t.heads[b] - t.heads[pelvis]) @ lateral)) for b in chain])
    upper = [k for k, d in enumerate(drop) if d < 0.3] or [0]
    widest = max(side[k] for k in upper)
    hip_k = next(k for k in upper if side[k] >= 0.5 * widest)
    low = [k for k, d in enumerate(drop) if d > 0.8 and k > hip_k]
    ankle_k = low[0] if low else len(chain) - 1
    mid = chain[hip_k + 1 : ankle_k]
    knee = _closest_mid(t, mid, drop[hip_k + 1 : ankle_k], (drop[hip_k] + drop[ankle_k]) / 2, KNEE_WORDS)
    ankle = chain[ankle_k]
    toe = None
    tol = 0.02 * span
    for b in chain[ankle_k + 1 :]:
        if np.linalg.norm(t.heads[b] - t.heads[ankle]) > tol and not t.is_nub(b):
            toe = b
            break
    return {"hip": chain[hip_k], "knee": knee, "ankle": ankle, "foot": toe}


def _arc(t: _Tree, chain: list[int]) -> np.ndarray:
    d = [0.0] + [float(np.linalg.norm(t.heads[b] - t.heads[a])) for a, b in zip(chain[:-1], chain[1:], strict=True)]
    return np.cumsum(d)


def _arm(t: _Tree, chest: int, leaf: int) -> dict[str, int | None]:
    chain = t.between(chest, leaf)
    arc = _arc(t, chain)
    total = max(float(arc[-1]), 1e-9)
    wrist_k = next((k for k, b in enumerate(chain) if len(t.children[b]) >= 2 and arc[k] / total >= 0.65), None)
    if wrist_k is None:
        wrist_k = len(chain) - 2 if len(chain) >= 4 and t.is_nub(chain[-1]) or len(chain) >= 5 else len(chain) - 1
    best = None
    for s in range(wrist_k - 1):  # shoulder at s, elbow at e: the upper arm about 1.05 × the forearm (SMPL)
        for e in range(s + 1, wrist_k):
            upper, fore = arc[e] - arc[s], arc[wrist_k] - arc[e]
            if upper > 0 and fore > 0:
                worded = any(w in t.names[chain[e]].lower() for w in ELBOW_WORDS)
                cost = abs(upper / fore - 1.05) - (0.05 if worded else 0.0)
                if best is None or cost < best[0]:
                    best = (cost, s, e)
    if best is None:
        raise StructureError(f"the arm ending in '{t.names[leaf]}' has too few bones for shoulder, elbow and wrist")
    _, start, elbow_k = best
    collar = chain[start - 1] if start >= 1 else None
    shoulder, elbow = chain[start], chain[elbow_k]
    hand = chain[wrist_k + 1] if wrist_k + 1 < len(chain) and not t.is_nub(chain[wrist_k + 1]) else None
    return {"collar": collar, "shoulder": shoulder, "elbow": elbow, "wrist": chain[wrist_k], "hand": hand}


def _spine(t: _Tree, pelvis: int, chest: int, top: int) -> dict[str, int | None]:
    lower = t.between(pelvis, chest)
    out: dict[str, int | None] = {"spine1": None, "spine2": None, "spine3": None}
    if len(lower) == 1:
        out["spine1"] = lower[0]
    elif len(lower) == 2:
        out["spine1"], out["spine3"] = lower
    elif lower:
        out["spine1"], out["spine3"] = lower[0], lower[-1]
        out["spine2"] = lower[len(lower) // 2]
    upper = t.between(chest, top)
    out["neck"] = upper[0] if upper else None
    if upper:
        below_neck = [x for x in t.leaves if upper[0] in t.path(x) and x != upper[0]]
        head = below_neck[0] if below_neck else None
        for x in below_neck[1:]:
            head = t.lca(head, x)
        while head is not None and t.is_nub(head) and t.parents[head] != upper[0]:
            head = t.parents[head]
        out["head"] = head
    return out


def _sides(t: _Tree, legs: tuple[dict, dict], arms: tuple[dict, dict], pelvis: int) -> tuple[bool, bool, str]:
    """(first leg is the left one, first arm is the left one, how the sides were decided)."""

    def cue(chains: dict) -> str:
        cues = {side_cue(t.names[b]) for b in chains.values() if b is not None} - {""}
        return cues.pop() if len(cues) == 1 else ""

    cl, ca = (cue(legs[0]), cue(legs[1])), (cue(arms[0]), cue(arms[1]))
    if {cl[0], cl[1]} == {"l", "r"} and {ca[0], ca[1]} == {"l", "r"}:
        return cl[0] == "l", ca[0] == "l", "names"
    fwd = np.zeros(3)
    for leg in legs:
        if leg["foot"] is not None:
            fwd += t.horizontal(t.heads[leg["foot"]] - t.heads[leg["ankle"]])
    how = "toes"
    if np.linalg.norm(fwd) < 1e-6:
        fwd, how = np.array([0.0, -1.0, 0.0]), "Blender's facing convention (-Y)"
    left = np.cross(t.up, fwd)

    def is_left(chain: dict) -> bool:
        pts = [t.heads[b] for b in chain.values() if b is not None]
        return float((np.mean(pts, axis=0) - t.heads[pelvis]) @ left) > 0

    return is_left(legs[0]), is_left(arms[0]), how


def _symmetry(t: _Tree, a: dict, b: dict, keys: tuple[str, str, str]) -> float:
    def length(c: dict) -> float:
        pts = [c[k] for k in keys]
        if any(p is None for p in pts):
            return 0.0
        return float(sum(np.linalg.norm(t.heads[y] - t.heads[x]) for x, y in zip(pts[:-1], pts[1:], strict=True)))

    la, lb = length(a), length(b)
    return 0.0 if max(la, lb) <= 0 else min(la, lb) / max(la, lb)


def detect_by_structure(
    names: Sequence[str], parents: Sequence[int], heads: np.ndarray, up: np.ndarray = Z_UP
) -> StructureMatch:
    """SMPL joint -> bone name from the hierarchy and rest heads (world, `up` = the world's up axis)."""
    t = _Tree(names, parents, heads, np.asarray(up, dtype=np.float64))
    pelvis, top, f1, f2, a1, a2 = _find_ends(t)
    chest = t.lca(a1, a2)
    floor = float(min(t.h[f1], t.h[f2]))
    lateral = t.horizontal(t.heads[f1] - t.heads[f2])
    lateral = lateral / max(float(np.linalg.norm(lateral)), 1e-12)  # the feet stand apart sideways
    legs = (_leg(t, pelvis, f1, floor, lateral), _leg(t, pelvis, f2, floor, lateral))
    arms = (_arm(t, chest, a1), _arm(t, chest, a2))
    first_leg_left, first_arm_left, how = _sides(t, legs, arms, pelvis)
    lleg, rleg = legs if first_leg_left else legs[::-1]
    larm, rarm = arms if first_arm_left else arms[::-1]
    idx: dict[str, int | None] = {"pelvis": pelvis, **_spine(t, pelvis, chest, top)}
    for side, leg, arm in (("left", lleg, larm), ("right", rleg, rarm)):
        for k, v in leg.items():
            idx[f"{side}_{k}"] = v
        for k, v in arm.items():
            idx[f"{side}_{k}"] = v
    bone_map = {j: (t.names[idx[j]] if idx.get(j) is not None else None) for j in SMPL_JOINT_NAMES}
    found = sum(1 for j in REQUIRED_JOINTS if bone_map[j]) / len(REQUIRED_JOINTS)
    sym = min(
        _symmetry(t, lleg, rleg, ("hip", "knee", "ankle")), _symmetry(t, larm, rarm, ("shoulder", "elbow", "wrist"))
    )
    confidence = round(found * (0.6 + 0.4 * sym) * (1.0 if how in ("names", "toes") else 0.9), 3)
    notes = [f"sides from {how}", f"left/right chain length agreement {sym:.2f}"]
    return StructureMatch(bone_map, confidence, notes)


# --- names alone: side cues and synonyms --------------------------------------------------------------------------

_ROLE_PATTERNS: tuple[tuple[str, str], ...] = (  # (role, regex on the side-less core name), most specific first
    ("thigh", r"^(up(per)?leg|thigh|legupper|upleg)\d*$"),
    ("knee", r"^(leg|knee|shin|calf|lo(wer)?leg|leglower)\d*$"),
    ("ankle", r"^(foot|ankle)\d*$"),
    ("toe", r"^(toe|toes|toebase|ball)\d*$"),
    ("collar", r"^(clavicle|collar|collarbone)\d*$"),
    ("upperarm", r"^(up(per)?arm|arm|armupper)\d*$"),
    ("elbow", r"^(forearm|lo(wer)?arm|armlower|elbow)\d*$"),
    ("wrist", r"^(hand|wrist)\d*$"),
    ("shoulder", r"^shoulder\d*$"),
    ("hip", r"^hip\d*$"),
    ("neck", r"^neck\d*$"),
    ("head", r"^head$"),
    ("pelvis", r"^(hips|pelvis)$"),
    ("root", r"^root$"),
    ("spine", r"^(lowerback|abdomen|spine\d*|chest\d*|upperchest|torso)$"),
)
_SPINE_ORDER = ("lowerback", "abdomen", "torso", "spine", "chest", "upperchest")


def _number(core: str) -> int:
    m = re.search(r"(\d+)$", core)
    return int(m.group(1)) if m else -1


def _strip_common_prefix(names: Sequence[str]) -> list[str]:
    """Drop a prefix all names share (Character1_, Armature|, ...) and namespaces."""
    bare = [n.rsplit(":", 1)[-1].rsplit("|", 1)[-1] for n in names]
    k = 0
    while len(bare) > 1 and all(len(b) > k for b in bare) and len({b[k] for b in bare}) == 1:
        k += 1
    cut = max((i + 1 for i, c in enumerate(bare[0][:k]) if c in "_.-: "), default=0) if k else 0
    return [b[cut:] for b in bare]


def _spine_key(core: str) -> tuple[int, int]:
    base = re.sub(r"\d+$", "", core)
    return (_SPINE_ORDER.index(base) if base in _SPINE_ORDER else len(_SPINE_ORDER), _number(core))


def detect_by_names(names: Sequence[str]) -> StructureMatch:
    """SMPL joint -> bone name from the names alone: side cues (Left/Right, L/R, _l/_r, .L/.R, l/r prefixes) and
    synonyms (thigh/upleg/hip, calf/shin/leg/knee, upperarm/arm/shoulder, forearm/lowerarm/elbow,
    clavicle/collar/shoulder, chest/spine, ...). 'Shoulder' is the upper arm when the rig has a collar bone, else the
    collar; a sided 'hip' is the thigh when the rig has no thigh word. Confidence is lower than by structure."""
    stripped = _strip_common_prefix(names)
    roles: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for orig, s in zip(names, stripped, strict=True):
        side, core = normalize_bone_name(s).split("|", 1)
        side = side or side_cue(s)
        for role, pat in _ROLE_PATTERNS:
            if re.match(pat, core):
                roles.setdefault((role, side), []).append((core, orig))
                break

    def pick(role: str, side: str = "") -> str | None:
        cands = roles.get((role, side), [])
        return min(cands, key=lambda c: (_number(c[0]), len(c[0])))[1] if cands else None

    out: dict[str, str | None] = dict.fromkeys(SMPL_JOINT_NAMES)
    out["pelvis"] = pick("pelvis") or pick("root")
    for side, word in (("l", "left"), ("r", "right")):
        has_collar = (("collar", side) in roles) or (("upperarm", side) in roles and ("shoulder", side) in roles)
        out[f"{word}_hip"] = pick("thigh", side) or pick("hip", side)
        out[f"{word}_knee"] = pick("knee", side)
        out[f"{word}_ankle"] = pick("ankle", side)
        out[f"{word}_foot"] = pick("toe", side)
        shoulder_is_collar = ("upperarm", side) in roles
        out[f"{word}_collar"] = pick("collar", side) or (pick("shoulder", side) if shoulder_is_collar else None)
        upper = pick("upperarm", side)
        out[f"{word}_shoulder"] = upper or (pick("shoulder", side) if has_collar else None)
        out[f"{word}_elbow"] = pick("elbow", side)
        out[f"{word}_wrist"] = pick("wrist", side)
    spine = sorted(roles.get(("spine", ""), []), key=lambda c: _spine_key(c[0]))
    if spine:
        out["spine1"], out["spine3"] = spine[0][1], (spine[-1][1] if len(spine) > 1 else None)
        out["spine2"] = spine[len(spine) // 2][1] if len(spine) > 2 else None
    out["neck"], out["head"] = pick("neck"), pick("head")
    found = sum(1 for j in REQUIRED_JOINTS if out[j]) / len(REQUIRED_JOINTS)
    return StructureMatch(out, round(0.8 * found, 3), ["bones matched by name words and side cues only"])
