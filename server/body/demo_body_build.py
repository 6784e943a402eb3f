"""Build the openly licensed demo body model (SMPL layout) from the CC0 MakeHuman assets.

Takes the `body` group of MakeHuman's base mesh, reposes it from MakeHuman's A-pose to SMPL's T-pose with
MakeHuman's own skeleton and weights, converts it to metres in SMPL's canonical frame, folds the 163 MakeHuman bones
onto SMPL's 24 joints, regresses the 24 joints from surface vertices, and derives 10 shape components from the
MakeHuman shape targets (component 0 = height). Output: an .npz in SMPL's layout (see server.body.model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.sparse import csr_matrix

from neural_human_addon.core.atomic_files import atomic_path
from server.body import makehuman as mh
from server.body.rotations import axis_angle_to_matrix
from server.body.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from server.body.surface import signed_volume

DM_TO_M = 0.1
PELVIS_TARGET_M = np.array([0.0, -0.23, 0.03])  # where SMPL's template has its pelvis joint, roughly
HEIGHT_STD_M = 0.07  # one unit of the height component: about one standard deviation of adult height
SLIDER_STD = 0.25  # a MakeHuman slider's full range (min..max) taken as +-2 standard deviations
NUM_BETAS = 10
MAX_INFLUENCES = 4
FORMAT = "neural-human-demo-body/1"
CANDIDATES = 300  # nearest vertices of neighbouring segments offered to each joint's regressor fit

# SMPL joint -> MakeHuman bones whose head(s) give its position (mean of several heads where listed).
JOINT_ANCHORS: dict[str, tuple[str, ...]] = {
    "pelvis": ("spine05",),
    "spine1": ("spine03",),
    "spine2": ("spine02",),
    "spine3": ("spine01",),
    "neck": ("neck01",),
    "head": ("head",),
    **{
        f"{side}_{name}": tuple(b.format(s=s) for b in bones)
        for side, s in (("left", "L"), ("right", "R"))
        for name, bones in (
            ("hip", ("upperleg01.{s}",)),
            ("knee", ("lowerleg01.{s}",)),
            ("ankle", ("foot.{s}",)),
            ("foot", ("toe1-1.{s}", "toe2-1.{s}", "toe3-1.{s}", "toe4-1.{s}", "toe5-1.{s}")),
            ("collar", ("clavicle.{s}",)),
            ("shoulder", ("upperarm01.{s}",)),
            ("elbow", ("lowerarm01.{s}",)),
            ("wrist", ("wrist.{s}",)),
            ("hand", ("finger2-1.{s}", "finger3-1.{s}", "finger4-1.{s}", "finger5-1.{s}")),
        )
    },
}
# Extra MakeHuman bones folded onto an SMPL joint other than their nearest anchored ancestor's (the thumb bends
# with SMPL's hand joint, whose anchors are the finger bases).
EXTRA_SEGMENT_BONES = {"finger1-1.L": "left_hand", "finger1-1.R": "right_hand"}


@dataclass
class DemoBody:
    v_template: np.ndarray  # (V,3) metres
    shapedirs: np.ndarray  # (V,3,10)
    joint_regressor: np.ndarray  # (24,V) dense, sparse in content
    weights: np.ndarray  # (V,24)
    faces: np.ndarray  # (F,3)
    uvs: np.ndarray  # (T,2)
    face_uv_index: np.ndarray  # (F,3)
    shape_names: list[str]
    report: dict[str, float]


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction ``a`` to direction ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        raise ValueError("opposite directions: rotation axis undefined")
    return axis_angle_to_matrix(axis / s * np.arctan2(s, c))


class Reposer:
    """Poses MakeHuman's skeleton with fixed world-aligned rotations about each bone head (LBS with MH weights).

    For fixed rotations the result is affine in the input vertices (bone heads are vertex means), so the same
    reposer brings shape-target displacements into the T-pose exactly: repose(V + d) - repose(V).
    """

    def __init__(self, skeleton: mh.Skeleton, weights: np.ndarray, rest_vertices: np.ndarray):
        self.skeleton = skeleton
        self.weights = weights
        self.rotations = np.tile(np.eye(3), (len(skeleton.bone_names), 1, 1))
        self._solve_t_pose(rest_vertices)

    def _global_linear(self, bone: int) -> np.ndarray:
        chain = []
        while bone >= 0:
            chain.append(bone)
            bone = int(self.skeleton.parents[bone])
        out = np.eye(3)
        for b in reversed(chain):
            out = out @ self.rotations[b]
        return out

    def _aim(self, bone: str, direction: np.ndarray, target: np.ndarray) -> None:
        i = self.skeleton.index(bone)
        parent = self._global_linear(int(self.skeleton.parents[i]))
        self.rotations[i] = rotation_between(direction, parent.T @ target)

    def _solve_t_pose(self, v: np.ndarray) -> None:
        sk = self.skeleton

        def head(bone: str) -> np.ndarray:
            return sk.joint_position(v, sk.head_joint[sk.index(bone)])

        def mean_head(bones: tuple[str, ...]) -> np.ndarray:
            return np.mean([head(b) for b in bones], axis=0)

        for s, sign in (("L", 1.0), ("R", -1.0)):
            out = np.array([sign, 0.0, 0.0])
            down = np.array([0.0, -1.0, 0.0])
            hand = mean_head(JOINT_ANCHORS[f"{'left' if s == 'L' else 'right'}_hand"])
            # arms horizontal and straight, hand in line with the forearm
            self._aim(f"upperarm01.{s}", head(f"lowerarm01.{s}") - head(f"upperarm01.{s}"), out)
            self._aim(f"lowerarm01.{s}", head(f"wrist.{s}") - head(f"lowerarm01.{s}"), out)
            self._aim(f"wrist.{s}", hand - head(f"wrist.{s}"), out)
            # legs straight down, feet kept in their rest orientation (soles flat)
            self._aim(f"upperleg01.{s}", head(f"foot.{s}") - head(f"upperleg01.{s}"), down)
            self._aim(f"lowerleg01.{s}", head(f"foot.{s}") - head(f"lowerleg01.{s}"), down)
            foot = sk.index(f"foot.{s}")
            self.rotations[foot] = self._global_linear(int(sk.parents[foot])).T

    def transforms(self, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-bone world linear parts (K,3,3) and translations (K,3) for a mesh's own skeleton."""
        sk = self.skeleton
        heads = sk.heads(vertices)
        lin = np.zeros_like(self.rotations)
        trans = np.zeros((len(heads), 3))
        for i, p in enumerate(sk.parents):
            local_t = heads[i] - self.rotations[i] @ heads[i]  # rotation about the bone head
            if p < 0:
                lin[i], trans[i] = self.rotations[i], local_t
            else:
                lin[i] = lin[p] @ self.rotations[i]
                trans[i] = lin[p] @ local_t + trans[p]
        return lin, trans

    def __call__(self, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posed vertices (N,3) and posed bone heads (K,3)."""
        lin, trans = self.transforms(vertices)
        blended_lin = np.einsum("nk,kij->nij", self.weights, lin)
        blended_t = self.weights @ trans
        posed = np.einsum("nij,nj->ni", blended_lin, vertices) + blended_t
        heads = self.skeleton.heads(vertices)
        posed_heads = np.einsum("kij,kj->ki", lin, heads) + trans
        return posed, posed_heads


def smpl_joints_from_heads(skeleton: mh.Skeleton, heads: np.ndarray) -> np.ndarray:
    return np.stack([heads[[skeleton.index(b) for b in JOINT_ANCHORS[name]]].mean(axis=0) for name in SMPL_JOINT_NAMES])


def bone_segments(skeleton: mh.Skeleton) -> np.ndarray:
    """SMPL joint index whose transform moves each MakeHuman bone: its nearest anchored ancestor (itself included)."""
    anchor_of = {}
    for j, name in enumerate(SMPL_JOINT_NAMES):
        anchors = JOINT_ANCHORS[name]
        for b in anchors:
            anchor_of[b] = j
    for bone, joint in EXTRA_SEGMENT_BONES.items():
        anchor_of[bone] = SMPL_JOINT_NAMES.index(joint)
    anchor_of.setdefault("root", 0)
    out = np.zeros(len(skeleton.bone_names), dtype=np.int64)
    for i in range(len(skeleton.bone_names)):
        b = i
        while skeleton.bone_names[b] not in anchor_of:
            b = int(skeleton.parents[b])
        out[i] = anchor_of[skeleton.bone_names[b]]
    return out


def fold_weights(weights: np.ndarray, segments: np.ndarray, num_joints: int = 24) -> np.ndarray:
    folded = np.zeros((weights.shape[0], num_joints))
    np.add.at(folded.T, segments, weights.T)
    # keep the strongest MAX_INFLUENCES per vertex (stable order for determinism), renormalise
    order = np.argsort(-folded, axis=1, kind="stable")
    pruned = np.zeros_like(folded)
    rows = np.arange(folded.shape[0])[:, None]
    keep = order[:, :MAX_INFLUENCES]
    pruned[rows, keep] = folded[rows, keep]
    return pruned / pruned.sum(axis=1, keepdims=True)


def shape_directions(targets: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Curated MakeHuman directions (D,N,3), each scaled to about one standard deviation; the first is height."""

    def t(name: str) -> np.ndarray:
        return targets[f"macrodetails/{name}"]

    genders = ("female", "male")
    dirs: list[np.ndarray] = []
    names: list[str] = []
    height = np.mean(
        [
            t(f"height/{g}-young-averagemuscle-averageweight-maxheight")
            - t(f"height/{g}-young-averagemuscle-averageweight-minheight")
            for g in genders
        ],
        axis=0,
    )
    dirs.append(height)  # rescaled to HEIGHT_STD_M later, where height is measured
    names.append("height")
    for name, hi, lo in (
        ("weight", "universal-{g}-young-averagemuscle-maxweight", "universal-{g}-young-averagemuscle-minweight"),
        ("muscle", "universal-{g}-young-maxmuscle-averageweight", "universal-{g}-young-minmuscle-averageweight"),
        (
            "proportions",
            "proportions/{g}-young-averagemuscle-averageweight-idealproportions",
            "proportions/{g}-young-averagemuscle-averageweight-uncommonproportions",
        ),
    ):
        dirs.append(SLIDER_STD * np.mean([t(hi.format(g=g)) - t(lo.format(g=g)) for g in genders], axis=0))
        names.append(name)
    for key in sorted(targets):
        if key.startswith("measure/") and key.endswith("-incr"):
            base = key[: -len("-incr")]
            dirs.append(SLIDER_STD * (targets[key] - targets[base + "-decr"]))
            names.append(base.removeprefix("measure/measure-"))
    return np.stack(dirs), names


def body_height(vertices: np.ndarray) -> float:
    return float(vertices[:, 1].max() - vertices[:, 1].min())


def triangulate(quads: np.ndarray, quad_uvs: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split each quad along its shorter diagonal; winding is kept (fixed to outward by the caller)."""
    d02 = np.linalg.norm(vertices[quads[:, 0]] - vertices[quads[:, 2]], axis=1)
    d13 = np.linalg.norm(vertices[quads[:, 1]] - vertices[quads[:, 3]], axis=1)
    use02 = d02 <= d13
    split02 = np.array([[0, 1, 2], [0, 2, 3]])
    split13 = np.array([[0, 1, 3], [1, 2, 3]])
    idx = np.where(use02[:, None, None], split02[None], split13[None])  # (Q,2,3)
    rows = np.arange(len(quads))[:, None, None]
    faces = quads[rows, idx].reshape(-1, 3)
    face_uvs = quad_uvs[rows, idx].reshape(-1, 3)
    return faces, face_uvs


def fit_regressor(
    joint_rest: np.ndarray, joint_dirs: np.ndarray, v_rest: np.ndarray, v_dirs: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Non-negative vertex weights (sum 1) whose weighted mean reproduces one joint across the shape space."""
    rows = [v_rest[candidates].T] + [d[candidates].T for d in v_dirs]  # each (3,C)
    targets = [joint_rest] + list(joint_dirs)
    a = np.concatenate(rows + [np.full((1, len(candidates)), 10.0)])
    b = np.concatenate(targets + [np.array([10.0])])
    w, _ = nnls(a, b, maxiter=50 * len(candidates))
    return w


def _shape_dirs(reposer: Reposer, skeleton: mh.Skeleton, base: np.ndarray, targets: dict[str, np.ndarray], nv: int,
                v_rest: np.ndarray, j_rest: np.ndarray,
                offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(shapedirs (V,3,10), joint dirs (10,24,3), height scale, number of MakeHuman directions): the shape
    directions reposed to the T-pose (exact: the reposer is affine in the vertices); component 0 = height, the rest
    the PCA of the other directions with height projected out."""
    dirs_a, dir_names = shape_directions(targets)
    v_dirs, j_dirs = [], []
    for d in dirs_a:
        p, h = reposer(base + d)
        v_dirs.append(p[:nv] * DM_TO_M - (v_rest - offset))
        j_dirs.append(smpl_joints_from_heads(skeleton, h) * DM_TO_M - (j_rest - offset))
    v_dirs_arr, j_dirs_arr = np.stack(v_dirs), np.stack(j_dirs)
    h0 = body_height(v_rest)
    height_gain = body_height(v_rest + v_dirs_arr[0] * 1e-3) - h0  # linear regime: scale per unit
    scale = HEIGHT_STD_M / (height_gain / 1e-3)
    v_dirs_arr[0] *= scale
    j_dirs_arr[0] *= scale

    h_vec = v_dirs_arr[0].reshape(-1)
    h_unit = h_vec / np.linalg.norm(h_vec)
    rest = v_dirs_arr[1:].reshape(len(v_dirs_arr) - 1, -1)
    coeff = rest @ h_unit
    rest = rest - coeff[:, None] * h_unit[None]
    h_joints = j_dirs_arr[0].reshape(-1) / np.linalg.norm(h_vec)  # joint motion per unit of h_unit
    rest_j = j_dirs_arr[1:].reshape(len(j_dirs_arr) - 1, -1) - coeff[:, None] * h_joints[None]
    # covariance sum_k d_k d_k^T -> SVD of the (3V, D) matrix; sigma_i u_i is one std along component i
    u, sigma, vt = np.linalg.svd(rest.T, full_matrices=False)
    comps = (u[:, : NUM_BETAS - 1] * sigma[: NUM_BETAS - 1]).T
    # joints move with the same linear combination of the original directions
    comps_j = (vt[: NUM_BETAS - 1] @ rest_j)
    signs = np.sign(comps.sum(axis=1) + 1e-30)  # deterministic sign: SVD's sign is arbitrary
    comps *= signs[:, None]
    comps_j *= signs[:, None]
    shapedirs = np.concatenate([h_vec[None], comps]).reshape(NUM_BETAS, nv, 3).transpose(1, 2, 0)
    joint_dirs = np.concatenate([j_dirs_arr[0].reshape(1, -1), comps_j]).reshape(NUM_BETAS, 24, 3)
    return shapedirs, joint_dirs, float(scale), len(dir_names)


def _joint_regressor(weights: np.ndarray, v_rest: np.ndarray, j_rest: np.ndarray, joint_dirs: np.ndarray,
                     shapedirs: np.ndarray) -> tuple[np.ndarray, float]:
    """(regressor (24,V), max residual in metres): each joint fitted over nearby vertices of its own, its parent's
    and its children's segments."""
    nv = len(v_rest)
    parts = weights.argmax(axis=1)
    regressor = np.zeros((24, nv))
    residual = 0.0
    for j in range(24):
        children = {c for c, p in enumerate(SMPL_PARENTS) if p == j}
        allowed = ({j, SMPL_PARENTS[j]} | children) - {-1}
        mask = np.isin(parts, list(allowed))
        idx = np.flatnonzero(mask)
        dist = np.linalg.norm(v_rest[idx] - j_rest[j], axis=1)
        cand = idx[np.argsort(dist, kind="stable")[:CANDIDATES]]
        w = fit_regressor(j_rest[j], joint_dirs[:, j], v_rest, shapedirs.transpose(2, 0, 1), cand)
        regressor[j, cand] = w
        residual = max(residual, float(np.linalg.norm(regressor[j] @ v_rest - j_rest[j])))
    regressor[regressor < 1e-6] = 0.0
    regressor /= regressor.sum(axis=1, keepdims=True)
    return regressor, residual


def _oriented_faces(mesh: mh.BaseMesh, v_rest: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces (F,3) with outward normals, used uvs, face uv indices into them) of the triangulated quads."""
    faces, face_uv_index = triangulate(mesh.quads, mesh.quad_uvs, v_rest)
    if signed_volume(v_rest, faces) < 0:
        faces = faces[:, ::-1].copy()
        face_uv_index = face_uv_index[:, ::-1].copy()
    used_uv = np.unique(face_uv_index)
    remap = np.full(len(mesh.uvs), -1, dtype=np.int64)
    remap[used_uv] = np.arange(len(used_uv))
    return faces, mesh.uvs[used_uv], remap[face_uv_index]


def build(source: Path) -> DemoBody:
    mesh = mh.read_obj(source / "base.obj", group="body")
    skeleton = mh.read_skeleton(source / "default.mhskel")
    n_all = len(mesh.vertices)
    weights_all = mh.read_weights(source / "default_weights.mhw", skeleton, n_all)
    targets = mh.read_targets(source / "targets_young_subset.npz", n_all)

    body_idx = np.unique(mesh.quads)  # body group vertices, sorted
    if not np.array_equal(body_idx, np.arange(len(body_idx))):
        raise ValueError("expected the body group to use the first base-mesh vertices")
    nv = len(body_idx)

    reposer = Reposer(skeleton, weights_all, mesh.vertices)
    posed_all, heads = reposer(mesh.vertices)
    v_rest = posed_all[:nv] * DM_TO_M
    j_rest = smpl_joints_from_heads(skeleton, heads) * DM_TO_M
    offset = PELVIS_TARGET_M - j_rest[0]
    offset[0] = -0.5 * (j_rest[1, 0] + j_rest[2, 0])  # centre left/right on x = 0
    v_rest = v_rest + offset
    j_rest = j_rest + offset

    shapedirs, joint_dirs, scale, num_dirs = _shape_dirs(reposer, skeleton, mesh.vertices, targets, nv, v_rest,
                                                         j_rest, offset)
    weights = fold_weights(weights_all[:nv], bone_segments(skeleton))  # skinning folded onto SMPL's 24 joints
    regressor, residual = _joint_regressor(weights, v_rest, j_rest, joint_dirs, shapedirs)
    faces, uvs, face_uv_index = _oriented_faces(mesh, v_rest)

    report = {
        "height_m": body_height(v_rest),
        "regressor_max_residual_m": residual,
        "height_scale": scale,
        **{f"shape_rms_m_{i}": float(np.sqrt((shapedirs[:, :, i] ** 2).sum(axis=1).mean())) for i in range(NUM_BETAS)},
    }
    names = ["height"] + [f"pca{i}" for i in range(1, NUM_BETAS)]
    return DemoBody(
        v_template=v_rest,
        shapedirs=shapedirs,
        joint_regressor=regressor,
        weights=weights,
        faces=faces,
        uvs=uvs,
        face_uv_index=face_uv_index,
        shape_names=names,
        report=report | {"directions": float(num_dirs)},
    )


def save(body: DemoBody, out: Path) -> None:
    reg = csr_matrix(body.joint_regressor.astype(np.float32))
    arrays = {
        "format": np.array(FORMAT),
        "name": np.array("demo-body-makehuman-cc0"),
        "v_template": body.v_template.astype(np.float32),
        "shapedirs": body.shapedirs.astype(np.float32),
        "J_regressor_data": reg.data.astype(np.float32),
        "J_regressor_indices": reg.indices.astype(np.int32),
        "J_regressor_indptr": reg.indptr.astype(np.int32),
        "weights": body.weights.astype(np.float32),
        "kintree_table": np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int32),
        "f": body.faces.astype(np.int32),
        "vt": body.uvs.astype(np.float32),
        "ft": body.face_uv_index.astype(np.int32),
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "shape_names": np.array(body.shape_names),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, mode=0o644) as tmp, open(tmp, "wb") as f:  # 0644: the model is a shared asset
        np.savez_compressed(f, **arrays)
