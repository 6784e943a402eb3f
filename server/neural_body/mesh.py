"""Extract a coloured mesh of an actor in one pose and write it as a binary PLY (metres, actor world frame).

The pose is a captured frame of the actor's motion (``--frame``) or any SMPL body from a JSON/npz file
(``--body``: EasyMocap keys poses/shapes/Rh/Th, or AMASS keys global_orient/body_pose/transl/shapes).

Neural Body's mesh recipe (the original's if_mesh_renderer.py) with two deliberate changes: vertices are returned in
metres in the actor's world frame (the original leaves them in padded voxel units), and vertices get colours from
the colour head. The original's visual-hull carving needs the capture's masks, which an arbitrary pose does not
have, so the whole box is evaluated.

- ``extract_mesh(network, sparse_input, latent_index, *, voxel_size=0.005, threshold=5.0, colors=True,
  encode=None) -> Mesh``: raw density (``alpha_fc``, BatchNorm with the frame's batch statistics) on a grid with
  spacing ``voxel_size`` over the posed world box, marching cubes at ``threshold`` (PyMCubes), faces oriented with
  outward normals, and colours = sigmoid of the colour head at each vertex viewed along the inward normal.
  ``encode(sparse_input) -> volumes`` replaces the sparse-conv encode (the server passes its per-pose cache).
- ``extract_mesh_from_density(density_fn, bounds, *, voxel_size, threshold, chunk) -> Mesh``: the grid + marching
  cubes core, for any density function of world points.
- ``write_ply(path, mesh)`` (atomic, binary little-endian) and ``read_ply(path) -> Mesh``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcubes
import numpy as np
import torch

from neural_human_addon.core.atomic_files import write_bytes_atomic
from server.body.model import load_body_model, resolve_body_model
from server.body.params import BodyParamsError, to_easymocap
from server.body.surface import signed_volume
from server.data.zju_reader import DatasetError, ZjuMocapDataset
from server.errors import BodyModelMissing
from server.neural_body.batchnorm_mode import batch_statistics
from server.neural_body.config import MESH_THRESHOLD, MESH_VOXEL_SIZE
from server.neural_body.network import NeuralBodyNetwork
from server.neural_body.sparse_input import SparseInput

VOXEL_SIZE = MESH_VOXEL_SIZE
THRESHOLD = MESH_THRESHOLD
QUERY_CHUNK = 2048 * 64  # points per network call, as the original
MAX_GRID_POINTS = 200_000_000  # refuse grids that would take hours (a wrong voxel size or a broken box)


@dataclass
class Mesh:
    vertices: np.ndarray  # (N,3) float32, metres
    faces: np.ndarray  # (M,3) int32, counter-clockwise seen from outside (outward normals)
    colors: np.ndarray | None = None  # (N,3) uint8
    network_points: int | None = None  # density queries it took (coarse to fine reports them; not on the wire)

    def to_wire(self) -> dict[str, np.ndarray]:
        """Arrays of the HTTP API mesh npz (DESIGN.md §4)."""
        out = {"vertices": self.vertices, "faces": self.faces}
        if self.colors is not None:
            out["colors"] = self.colors
        return out


def grid_axes(bounds: np.ndarray, voxel_size: float) -> list[np.ndarray]:
    """Sample positions per axis covering ``bounds`` (2,3): min, min + vs, ... up to the first one >= max."""
    b = np.asarray(bounds, np.float64).reshape(2, 3)
    if voxel_size <= 0 or not np.all(b[1] >= b[0]):
        raise ValueError(f"need voxel_size > 0 and bounds min <= max; got {voxel_size} and {b.tolist()}")
    counts = np.ceil((b[1] - b[0]) / voxel_size - 1e-6).astype(int) + 1
    total = int(np.prod(counts))
    if total > MAX_GRID_POINTS:
        raise ValueError(f"a {voxel_size} m grid over a box of {np.round(b[1] - b[0], 3).tolist()} m has {total} "
                         f"points (limit {MAX_GRID_POINTS}); use a larger voxel size")
    return [b[0, k] + voxel_size * np.arange(counts[k]) for k in range(3)]


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (N,3) float32 on the tensors' device (zero for unreferenced vertices)."""
    tri = vertices.float()[faces.long()]  # (M,3,3)
    face_n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2·area
    normals = torch.zeros_like(vertices, dtype=torch.float32)
    for corner in range(3):  # each face's normal added to its three vertices
        normals.index_add_(0, faces[:, corner].long(), face_n)
    return normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-20)


def marching_cubes(volume: np.ndarray, threshold: float, origin: np.ndarray,
                   voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of ``volume`` (X,Y,Z) sampled at ``origin + voxel_size·(i,j,k)``, where values above
    ``threshold`` are inside: (vertices metres float32, faces int32 with outward normals)."""
    padded = closed_volume(np.asarray(volume, np.float64), threshold)
    verts, faces = mcubes.marching_cubes(padded, float(threshold))
    verts, faces = grid_mesh(torch.from_numpy(verts), torch.from_numpy(faces.astype(np.int64)), volume.shape, origin,
                             voxel_size)
    if len(faces) and signed_volume(verts, faces) < 0:  # the library's own convention: outward normals here
        faces = np.ascontiguousarray(faces[:, ::-1])
    return verts, faces


def closed_volume(volume: Any, threshold: float) -> Any:
    """``volume`` (numpy or torch) with a border of one sample below the threshold: closes the surface where the
    body touches the box."""
    fill = min(float(volume.min()), float(threshold)) - 1.0
    if isinstance(volume, torch.Tensor):
        return torch.nn.functional.pad(volume, (1, 1, 1, 1, 1, 1), value=fill)
    return np.pad(volume, 1, constant_values=fill)


def grid_mesh(verts: torch.Tensor, faces: torch.Tensor, shape: tuple[int, ...], origin: np.ndarray,
              voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes' output on a ``closed_volume`` of a (X,Y,Z) grid (vertices in the padded grid's units, on any
    device) → (vertices metres float32, faces int32) on the host."""
    if len(faces) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    # Vertices of the closing cap lie between the last sample and the border: clamp them onto the grid's faces.
    verts = verts.double() - 1.0
    metres = torch.stack([float(origin[k]) + verts[:, k].clamp(0.0, shape[k] - 1.0) * voxel_size for k in range(3)], 1)
    return metres.float().cpu().numpy(), faces.int().cpu().numpy()


def extract_mesh_from_density(
    density_fn: Callable[[np.ndarray], np.ndarray],
    bounds: np.ndarray,
    *,
    voxel_size: float = VOXEL_SIZE,
    threshold: float = THRESHOLD,
    chunk: int = QUERY_CHUNK,
) -> Mesh:
    """Marching cubes of ``density_fn`` ((P,3) world points → (P,) values, inside above ``threshold``) on a grid
    over ``bounds`` (2,3) with spacing ``voxel_size``; the points are queried in chunks of ``chunk``."""
    axes = grid_axes(bounds, voxel_size)
    shape = tuple(len(a) for a in axes)
    volume = np.empty(int(np.prod(shape)), np.float32)
    # Generate points per chunk from flat indices so the full (P,3) point array never exists.
    for start in range(0, volume.size, chunk):
        idx = np.unravel_index(np.arange(start, min(start + chunk, volume.size)), shape)
        points = np.stack([axes[k][idx[k]] for k in range(3)], axis=1).astype(np.float32)
        volume[start:start + len(points)] = np.asarray(density_fn(points), np.float32).reshape(-1)
    verts, faces = marching_cubes(volume.reshape(shape), threshold, np.array([a[0] for a in axes]), voxel_size)
    return Mesh(vertices=verts, faces=faces)


def extract_mesh(
    network: NeuralBodyNetwork,
    sparse_input: SparseInput,
    latent_index: int,
    *,
    voxel_size: float = VOXEL_SIZE,
    threshold: float = THRESHOLD,
    colors: bool = True,
    chunk: int = QUERY_CHUNK,
    encode: Callable[[SparseInput], Any] | None = None,
    surface: Callable[[Callable[[torch.Tensor], torch.Tensor], SparseInput], Mesh] | None = None,
) -> Mesh:
    """Mesh of the body voxelised in ``sparse_input`` (batch-statistics BatchNorm, no grad), in world metres.
    ``encode`` (default ``network.encode_sparse_voxels``) is called inside the batch-statistics block; ``surface``
    (default: the dense grid over the posed box, ``extract_mesh_from_density``) turns the density function of world
    points ((P,3) float32 tensor on the network's device → (P,)) into the mesh (the fast path passes its
    coarse-to-fine grid)."""
    device = network.c.weight.device
    sparse_input = sparse_input.to(device)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad(), batch_statistics(network):
            volumes = (encode or network.encode_sparse_voxels)(sparse_input)

            def density(points: torch.Tensor) -> torch.Tensor:
                return network.calculate_density(points, volumes, sparse_input)[:, 0].float()

            if surface is None:
                mesh = extract_mesh_from_density(lambda p: density(torch.from_numpy(p).to(device)).cpu().numpy(),
                                                  sparse_input.world_bounds.cpu().numpy(), voxel_size=voxel_size,
                                                  threshold=threshold, chunk=chunk)
            else:
                mesh = surface(density, sparse_input)
            if colors and len(mesh.vertices):
                mesh.colors = _vertex_colors(network, volumes, sparse_input, latent_index, mesh, chunk)
    finally:
        network.train(was_training)
    return mesh


def _vertex_colors(network: NeuralBodyNetwork, volumes: list[torch.Tensor], sparse_input: SparseInput,
                   latent_index: int, mesh: Mesh, chunk: int) -> np.ndarray:
    """sigmoid(colour head) at each vertex, seen from outside along the normal (view direction = −normal), worked
    out on the network's device and read back once."""
    device = network.c.weight.device
    vertices = torch.from_numpy(mesh.vertices).to(device)
    normals = vertex_normals(vertices, torch.from_numpy(mesh.faces).to(device))
    unreferenced = normals.norm(dim=1) < 0.5
    normals[:, 2] += unreferenced.float()  # any unit vector for a vertex no face uses
    out = torch.empty((len(vertices), 3), dtype=torch.uint8, device=device)
    for start in range(0, len(vertices), chunk):
        raw = network.calculate_density_color(vertices[start:start + chunk], -normals[start:start + chunk], volumes,
                                              sparse_input, latent_index)
        out[start:start + len(raw)] = (torch.sigmoid(raw[:, :3]).float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return out.cpu().numpy()


# ---------------------------------------------------------------------------------------------------- PLY


def ply_bytes(mesh: Mesh) -> bytes:
    """Binary little-endian PLY: float x,y,z (+ uchar red,green,blue), faces as uchar count + int indices."""
    verts = np.ascontiguousarray(mesh.vertices, dtype="<f4")
    faces = np.ascontiguousarray(mesh.faces, dtype="<i4")
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"mesh must have vertices (N,3) and faces (M,3); got {verts.shape} and {faces.shape}")
    header = ["ply", "format binary_little_endian 1.0", "comment Neural Human mesh, metres",
              f"element vertex {len(verts)}", "property float x", "property float y", "property float z"]
    fields = [("xyz", "<f4", (3,))]
    if mesh.colors is not None:
        if np.shape(mesh.colors) != verts.shape:
            raise ValueError(f"colors must be (N,3) like the vertices; got {np.shape(mesh.colors)}")
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        fields.append(("rgb", "u1", (3,)))
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    vertex_rows = np.empty(len(verts), dtype=fields)
    vertex_rows["xyz"] = verts
    if mesh.colors is not None:
        vertex_rows["rgb"] = np.asarray(mesh.colors, np.uint8)
    face_rows = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rows["n"] = 3
    face_rows["idx"] = faces
    return ("\n".join(header) + "\n").encode("ascii") + vertex_rows.tobytes() + face_rows.tobytes()


def write_ply(path: str | os.PathLike[str], mesh: Mesh) -> None:
    """Write ``mesh`` as a binary PLY, atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    write_bytes_atomic(path, ply_bytes(mesh))


def read_ply(path: str | os.PathLike[str]) -> Mesh:
    """Read a PLY written by ``write_ply`` (binary little-endian, float xyz, optional uchar rgb, triangles)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY files are read")
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith("element ")}
    has_color = "property uchar red" in header
    vdtype = [("xyz", "<f4", (3,))] + ([("rgb", "u1", (3,))] if has_color else [])
    offset = end + len(b"end_header\n")
    vertex_rows = np.frombuffer(data, dtype=vdtype, count=counts["vertex"], offset=offset)
    offset += vertex_rows.nbytes
    face_rows = np.frombuffer(data, dtype=[("n", "u1"), ("idx", "<i4", (3,))], count=counts["face"], offset=offset)
    if np.any(face_rows["n"] != 3):
        raise ValueError(f"{path}: only triangle faces are read")
    return Mesh(vertices=vertex_rows["xyz"].copy(), faces=face_rows["idx"].copy(),
                colors=vertex_rows["rgb"].copy() if has_color else None)


# ---------------------------------------------------------------------------------------------------- CLI


@dataclass
class ActorPose:
    vertices: np.ndarray  # (V,3) world metres
    Rh: np.ndarray  # (3,)
    Th: np.ndarray  # (3,)
    latent_index: int


def read_body_file(path: Path) -> dict[str, Any]:
    """A body from a .json (object of lists) or .npz file (arrays); keys as in server.body.params."""
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON body ({err})") from err
    if isinstance(body, dict) and isinstance(body.get("body"), dict):  # an API request body {"body": {...}}
        body = body["body"]
    if not isinstance(body, dict):
        raise ValueError(f"{path}: expected a JSON object with SMPL fields (poses/shapes/Rh/Th or "
                         "global_orient/body_pose/transl)")
    return body


def _body_model_for(actor: Any, override: Path | None) -> Any:
    if override is not None:
        return load_body_model(override)
    try:
        return resolve_body_model(actor.manifest.body_model)
    except BodyModelMissing as err:
        raise BodyModelMissing(f"the actor was trained with {actor.manifest.body_model!r}: {err}, or pass your SMPL "
                               "model file with --body-model PATH", "body_model") from None


def _captured_vertices(actor: Any, frame: int) -> np.ndarray | None:
    """The captured vertices of training frame ``frame`` when the actor's training dataset is still readable."""
    root = actor.manifest.training_data.get("root")
    if not root or not Path(root).is_dir():
        return None
    try:
        dataset = ZjuMocapDataset(root)
        if len(dataset.train_frames) != actor.motion.num_frames:
            return None
        return dataset.vertices(dataset.train_frames[frame])
    except (DatasetError, IndexError):
        return None


def resolve_pose(actor: Any, *, frame: int | None = None, body_path: Path | None = None,
                 body_model_path: Path | None = None, appearance_frame: int | None = None) -> ActorPose:
    """The posed body to mesh: captured frame ``frame`` of the actor's motion (its own appearance code; vertices
    from the training dataset when it is readable, else posed by the body model) or the body in ``body_path``
    (appearance code ``appearance_frame``, default the last trained one, as Neural Body for unseen poses)."""
    last = actor.network.num_train_frames - 1
    if appearance_frame is not None and not 0 <= appearance_frame <= last:
        raise ValueError(f"--appearance-frame must be in 0..{last}; got {appearance_frame}")
    if frame is not None:
        count = actor.motion.num_frames
        if not 0 <= frame < count:
            raise ValueError(f"--frame must be in 0..{count - 1} (the actor's captured frames); got {frame}")
        m = actor.motion
        body = {"poses": m.poses[frame], "shapes": m.shapes[frame], "Rh": m.Rh[frame], "Th": m.Th[frame]}
        latent = min(frame, last) if appearance_frame is None else appearance_frame
        vertices = _captured_vertices(actor, frame)
        if vertices is not None:
            return ActorPose(vertices, m.Rh[frame].copy(), m.Th[frame].copy(), latent)
    elif body_path is not None:
        body = read_body_file(body_path)
        latent = last if appearance_frame is None else appearance_frame
    else:
        raise ValueError("give --frame N or --body FILE")
    model = _body_model_for(actor, body_model_path)
    try:
        params = to_easymocap(body, model.pelvis_rest)
        if params["poses"].shape[0] != 1:
            raise ValueError(f"the body holds {params['poses'].shape[0]} frames; pass a single frame")
        posed = model.pose(body)
    except BodyParamsError as err:
        raise ValueError(str(err)) from err
    vertices = posed.vertices[0].cpu().numpy()
    if vertices.shape[0] != actor.network.num_vertices:
        raise ValueError(f"the body model has {vertices.shape[0]} vertices but the actor was trained on "
                         f"{actor.network.num_vertices}; use the body model the actor was trained with (--body-model)")
    return ActorPose(vertices, params["Rh"][0], params["Th"][0], latent)
