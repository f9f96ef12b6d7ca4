"""Mesh export: the density of one latent on a grid -> marching cubes -> a vertex-coloured PLY or OBJ.

Shapes: G grid points per axis, V vertices, F triangles, D latent width."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .device import autocast, resolve_precision
from .errors import InputError, ParamError
from .formats import atomic_write_bytes
from .images import to_uint8
from .progress import Progress, or_silent

if TYPE_CHECKING:
    from .cameras import Camera
    from .model import LoadedModel

MESH_GRID = 128                # grid points per axis
MESH_THRESHOLD = 10.0          # density (per scene unit) of the extracted surface
MESH_POINTS_PER_CHUNK = 1 << 18   # field evaluations per forward pass
SEEN_TRANSMITTANCE = 0.5       # a piece is seen when some camera sees one of its vertices through at least this
SEEN_VERTICES = 256            # vertices of each piece tested for visibility (a seeded sample of larger pieces)
SEEN_STEPS = 192               # density samples along each camera-to-vertex segment


@dataclass
class Mesh:
    vertices: np.ndarray        # [V, 3] float32, object frame
    faces: np.ndarray           # [F, 3] int32, counter-clockwise seen from outside
    colors: np.ndarray          # [V, 3] uint8
    threshold: float = MESH_THRESHOLD   # the density level that was extracted
    cavities_filled: int = 0            # closed hollows inside the object that were filled (fill_cavities)
    unseen_dropped: int = 0             # pieces no given camera sees that were left out (drop_unseen_pieces)


@torch.inference_mode()
def density_grid(loaded: LoadedModel, z: torch.Tensor, grid: int = MESH_GRID, progress: Progress | None = None,
                 chunk: int = MESH_POINTS_PER_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """sigma on a G^3 grid spanning the bounding cube [-r, r]^3 (zero outside the bounding sphere).

    Returns (density [G, G, G] float32 indexed [x, y, z], axis coordinates [G])."""
    model, radius = loaded.model, loaded.cfg.model.scene_radius
    device = z.device
    precision = resolve_precision(loaded.cfg.train.precision, device)
    axis = np.linspace(-radius, radius, grid, dtype=np.float32)
    ax = torch.from_numpy(axis).to(device)
    cell = 2.0 * radius / max(grid - 1, 1)
    out = np.zeros((grid, grid, grid), np.float32)
    # one "ray" = one grid line along z (S = G samples), so the field's per-ray latent terms are shared
    lines_per_chunk = max(1, chunk // grid)
    gx, gy = torch.meshgrid(ax, ax, indexing="ij")            # [G, G]: gx[i, j] = ax[i], gy[i, j] = ax[j]
    xy = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)    # [G*G, 2]: line n: x = ax[n // G], y = ax[n % G]
    n_lines = xy.shape[0]
    with or_silent(progress).task("evaluating density", total=n_lines) as task:
        for s in range(0, n_lines, lines_per_chunk):
            part = xy[s:s + lines_per_chunk]                                       # [L, 2]
            l = part.shape[0]
            pts = torch.empty(l, grid, 3, device=device)
            pts[..., 0] = part[:, None, 0]
            pts[..., 1] = part[:, None, 1]
            pts[..., 2] = ax[None, :]
            with autocast(device, precision):
                sigma, _ = model.field(pts, z[None].expand(l, -1), model.point_var(pts, cell))
            sigma = sigma.float()
            sigma = torch.where((pts * pts).sum(-1) <= radius * radius, sigma, torch.zeros_like(sigma))
            idx = torch.arange(s, s + l)
            xi, yi = (idx // grid).numpy(), (idx % grid).numpy()
            out[xi, yi, :] = sigma.cpu().numpy()
            task.advance(l)
    return out, axis


@torch.inference_mode()
def field_colors(loaded: LoadedModel, z: torch.Tensor, points: np.ndarray, chunk: int = MESH_POINTS_PER_CHUNK) -> np.ndarray:
    """The field's colour c(x | z) at points [V, 3] -> uint8 [V, 3]."""
    device = z.device
    precision = resolve_precision(loaded.cfg.train.precision, device)
    cols = []
    for s in range(0, points.shape[0], chunk):
        p = torch.from_numpy(np.ascontiguousarray(points[s:s + chunk], dtype=np.float32)).to(device)
        with autocast(device, precision):
            _, rgb = loaded.model.field(p[None], z[None], loaded.model.point_var(p[None], 0.0))  # one "ray" of V samples
        cols.append(rgb[0].float().clamp(0, 1).cpu().numpy())
    rgb = np.concatenate(cols) if cols else np.zeros((0, 3), np.float32)
    return to_uint8(rgb)


def fill_cavities(dens: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """Fill the hollows of a density grid [G, G, G]: regions below `threshold` that no path through
    empty space joins to the grid's edge (face-connected). No ray from outside the object reaches them,
    so they change no image, but marching cubes would give each one an inner surface of its own (a
    separate piece, facing inwards). Their density is raised to 2 x threshold.

    Returns (the filled grid, a copy when anything changed; the number of hollows filled)."""
    from scipy import ndimage

    empty = dens <= threshold
    labels, n = ndimage.label(empty)                      # face-connected empty regions
    if n <= 1:
        return dens, 0
    edge = np.zeros_like(empty)
    edge[[0, -1], :, :] = edge[:, [0, -1], :] = edge[:, :, [0, -1]] = True
    outside = np.unique(labels[edge & empty])
    hollow = np.ones(n + 1, bool)
    hollow[0] = False
    hollow[outside] = False
    count = int(hollow.sum())
    if count == 0:
        return dens, 0
    out = dens.copy()
    out[hollow[labels]] = 2.0 * threshold
    return out, count


def extract_mesh(loaded: LoadedModel, z: torch.Tensor, grid: int = MESH_GRID, threshold: float | None = None,
                 progress: Progress | None = None, cameras: Sequence[Camera] | None = None) -> Mesh:
    """Marching cubes of sigma(x | z) = threshold, coloured by the field's colour at each vertex. Closed
    hollows inside the object are filled first (fill_cavities): the mesh is the surface seen from outside.
    With `cameras` (the training cameras, `views.training_cameras`), the pieces none of them sees are left
    out (drop_unseen_pieces): density there was never checked against a photo.

    threshold None: MESH_THRESHOLD, or half the peak density where the peak is lower than twice that
    (a briefly trained model whose object is still a soft fog)."""
    from skimage import measure

    if grid < 8:
        raise ParamError("grid", "must be at least 8")
    if threshold is not None and not threshold > 0:
        raise ParamError("threshold", "must be a positive density")
    dens, axis = density_grid(loaded, z, grid, progress)
    top = float(dens.max())
    if threshold is None:
        threshold = MESH_THRESHOLD if top >= 2 * MESH_THRESHOLD else 0.5 * top
        if not threshold > 0:
            raise ParamError("threshold", "the density is zero everywhere; there is no surface to extract")
    if top <= threshold:
        raise ParamError("threshold", f"no density reaches {threshold:g} (the highest is {top:.3g}); "
                                        f"try a lower {{threshold}}, e.g. {max(top * 0.5, 1e-3):.3g}")
    if float(dens.min()) >= threshold:
        raise ParamError("threshold", f"the density is above {threshold:g} everywhere; try a higher {{threshold}}")
    dens, hollows = fill_cavities(dens, threshold)
    # zero-pad so that surfaces touching the grid's edge are closed
    padded = np.pad(dens, 1, mode="constant", constant_values=0.0)
    step = float(axis[1] - axis[0])
    # density is higher inside the object: "ascent" winds the triangles counter-clockwise seen from outside
    verts, faces, _, _ = measure.marching_cubes(padded, level=threshold, spacing=(step, step, step),
                                                gradient_direction="ascent")
    verts = verts - step + axis[0]               # undo the padding offset, then move to the object frame
    verts = verts.astype(np.float32)
    mesh = Mesh(verts, faces.astype(np.int32), np.zeros((len(verts), 3), np.uint8), float(threshold), hollows)
    if cameras is not None:
        mesh = drop_unseen_pieces(mesh, dens, axis, cameras)
    mesh.colors = field_colors(loaded, z, mesh.vertices)
    return mesh


def piece_labels(mesh: Mesh) -> np.ndarray:
    """Each vertex's connected piece [V] (0 .. pieces - 1; vertices joined by triangle edges)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(mesh.vertices)
    f = mesh.faces.astype(np.int64)
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def components(mesh: Mesh) -> list[int]:
    """Sizes (in vertices) of the mesh's connected pieces, largest first: one head and no floaters is [V]."""
    if len(mesh.vertices) == 0:
        return []
    return sorted(np.bincount(piece_labels(mesh)).tolist(), reverse=True)


def check_piece_fraction(fraction: float) -> None:
    """`drop_small_pieces`' fraction must lie in [0, 1] (commands check it before any work)."""
    if not 0 <= fraction <= 1:
        raise ParamError("min_piece", f"must be between 0 and 1 (a fraction of the largest piece), got {fraction:g}")


def drop_small_pieces(mesh: Mesh, fraction: float) -> tuple[Mesh, int]:
    """The mesh without its connected pieces of fewer vertices than `fraction` x the largest piece's
    (floaters: specks of density in space no training camera constrained). fraction 0 keeps everything.

    Returns (the kept mesh, vertices renumbered; the number of pieces dropped)."""
    check_piece_fraction(fraction)
    if fraction == 0 or len(mesh.vertices) == 0:
        return mesh, 0
    labels = piece_labels(mesh)
    sizes = np.bincount(labels)
    keep_piece = sizes >= fraction * sizes.max()
    return _keep_pieces(mesh, labels, keep_piece), int((~keep_piece).sum())


def transmittance_to(dens: np.ndarray, axis: np.ndarray, origin: np.ndarray, points: np.ndarray,
                     steps: int = SEEN_STEPS) -> np.ndarray:
    """exp(-integral of the density) along the segment from `origin` [3] to each point [N, 3], stopped 1.5
    grid cells short of the point (so that a point on a surface is not hidden by that surface itself);
    density trilinear in the grid [G, G, G] (indexed [x, y, z] over `axis`, zero outside it). Returns [N]."""
    import torch.nn.functional as F

    if len(points) == 0:
        return np.zeros(0)
    cell = float(axis[1] - axis[0])
    half = float(axis[-1])
    o = torch.as_tensor(np.asarray(origin, np.float64), dtype=torch.float32)
    p = torch.as_tensor(np.asarray(points, np.float64), dtype=torch.float32)
    d = p - o
    length = d.norm(dim=-1, keepdim=True)
    end = (length - 1.5 * cell).clamp_min(0.0)                                   # [N, 1]
    frac = torch.linspace(0.0, 1.0, steps)[None, :, None]                         # [1, S, 1]
    q = o + (d / length.clamp_min(1e-9))[:, None] * (end[:, None] * frac)         # [N, S, 3]
    # grid_sample wants (W, H, D) = (z, y, x) order in [-1, 1] for a volume indexed [x, y, z]
    coords = (q / half)[..., [2, 1, 0]][None, None]                              # [1, 1, N, S, 3]
    vol = torch.from_numpy(np.ascontiguousarray(dens, np.float32))[None, None]
    sigma = F.grid_sample(vol, coords, align_corners=True, padding_mode="zeros")[0, 0, 0]   # [N, S]
    ds = end / (steps - 1)                                                        # [N, 1]
    tau = (sigma.sum(-1) - 0.5 * (sigma[:, 0] + sigma[:, -1])) * ds[:, 0]         # trapezoid rule
    return torch.exp(-tau).numpy()


def seen_pieces(mesh: Mesh, dens: np.ndarray, axis: np.ndarray, cameras: Sequence[Camera],
                labels: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Which connected pieces of `mesh` some camera sees: a piece is seen when one of its vertices (up to
    SEEN_VERTICES of them, a seeded sample) lies inside a camera's image and in front of it, with a
    transmittance of at least SEEN_TRANSMITTANCE from that camera through the density grid. The largest
    piece counts as seen. Returns a bool per piece (piece_labels' numbering)."""
    from .cameras import project

    labels = piece_labels(mesh) if labels is None else labels
    sizes = np.bincount(labels)
    seen = np.zeros(len(sizes), bool)
    seen[int(np.argmax(sizes))] = True
    rng = np.random.default_rng(seed)
    for piece in np.nonzero(~seen)[0]:
        vid = np.nonzero(labels == piece)[0]
        if len(vid) > SEEN_VERTICES:
            vid = rng.choice(vid, SEEN_VERTICES, replace=False)
        pts = mesh.vertices[vid].astype(np.float64)
        for cam in cameras:
            c2w = np.asarray(cam.c2w, np.float64)
            uv, depth = project(pts, c2w, cam.fx, cam.fy, cam.cx, cam.cy)
            inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= cam.w) & (uv[:, 1] >= 0) & (uv[:, 1] <= cam.h)
            if inside.any() and transmittance_to(dens, axis, c2w[:3, 3], pts[inside]).max() >= SEEN_TRANSMITTANCE:
                seen[piece] = True
                break
    return seen


def drop_unseen_pieces(mesh: Mesh, dens: np.ndarray, axis: np.ndarray, cameras: Sequence[Camera]) -> Mesh:
    """The mesh without the pieces that none of `cameras` sees (seen_pieces), its count in `unseen_dropped`.

    Such a piece is density in space that no training photo showed (outside every camera's view, or behind
    the object from every camera): nothing in the training checked it, and no render from the training
    views changes without it."""
    if len(mesh.vertices) == 0 or not cameras:
        return mesh
    labels = piece_labels(mesh)
    seen = seen_pieces(mesh, dens, axis, cameras, labels)
    kept = _keep_pieces(mesh, labels, seen)
    kept.unseen_dropped = mesh.unseen_dropped + int((~seen).sum())
    return kept


def _keep_pieces(mesh: Mesh, labels: np.ndarray, keep_piece: np.ndarray) -> Mesh:
    """The mesh with only the pieces where keep_piece [pieces] is True, vertices renumbered."""
    if keep_piece.all():
        return mesh
    keep = keep_piece[labels]
    new_index = np.cumsum(keep) - 1
    faces = mesh.faces[keep[mesh.faces[:, 0]]]           # a face's three vertices are in one piece
    return Mesh(mesh.vertices[keep], new_index[faces].astype(np.int32), mesh.colors[keep], mesh.threshold,
                mesh.cavities_filled, mesh.unseen_dropped)


# ----------------------------------------------------------------------------------------- writers
def ply_bytes(mesh: Mesh, binary: bool = True) -> bytes:
    v, f = len(mesh.vertices), len(mesh.faces)
    header = ("ply\n" + ("format binary_little_endian 1.0\n" if binary else "format ascii 1.0\n") +
              "comment written by lolnerf export-mesh\n"
              f"element vertex {v}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {f}\nproperty list uchar int vertex_indices\nend_header\n").encode("ascii")
    if binary:
        vtype = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])
        va = np.empty(v, vtype)
        va["xyz"], va["rgb"] = mesh.vertices, mesh.colors
        ftype = np.dtype([("n", "u1"), ("idx", "<i4", 3)])
        fa = np.empty(f, ftype)
        fa["n"], fa["idx"] = 3, mesh.faces
        return header + va.tobytes() + fa.tobytes()
    buf = io.StringIO()
    for (x, y, z), (r, g, b) in zip(mesh.vertices, mesh.colors):
        buf.write(f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}\n")
    for a, b, c in mesh.faces:
        buf.write(f"3 {a} {b} {c}\n")
    return header + buf.getvalue().encode("ascii")


def obj_bytes(mesh: Mesh) -> bytes:
    """Wavefront OBJ with vertex colours as extra `v x y z r g b` columns (r, g, b in [0, 1])."""
    buf = io.StringIO()
    buf.write("# written by lolnerf export-mesh; vertex colours as v x y z r g b\n")
    cols = mesh.colors.astype(np.float32) / 255.0
    for (x, y, z), (r, g, b) in zip(mesh.vertices, cols):
        buf.write(f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}\n")
    for a, b, c in mesh.faces + 1:
        buf.write(f"f {a} {b} {c}\n")
    return buf.getvalue().encode("ascii")


def write_mesh(path: str | Path, mesh: Mesh, ascii: bool = False) -> Path:
    """Write FILE.ply (binary little-endian unless `ascii`) or FILE.obj, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        data = ply_bytes(mesh, binary=not ascii)
    elif suffix == ".obj":
        data = obj_bytes(mesh)
    else:
        raise InputError(path, "mesh file must end in .ply or .obj")
    atomic_write_bytes(path, data)
    return path


def read_ply(path: str | Path) -> Mesh:
    """Read back a PLY written by `write_mesh` (ascii or binary little-endian; float xyz, uchar rgb, int faces)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if header[0] != "ply":
        raise InputError(path, "is not a PLY file")
    fmt = header[1].split()[1]
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[2])
    nf = int(next(h for h in header if h.startswith("element face")).split()[2])
    body = data[end:]
    if fmt == "binary_little_endian":
        vtype = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])
        va = np.frombuffer(body, vtype, count=nv)
        ftype = np.dtype([("n", "u1"), ("idx", "<i4", 3)])
        fa = np.frombuffer(body, ftype, count=nf, offset=nv * vtype.itemsize)
        if not (fa["n"] == 3).all():
            raise InputError(path, "has non-triangle faces")
        return Mesh(va["xyz"].copy(), fa["idx"].copy(), va["rgb"].copy())
    if fmt != "ascii":
        raise InputError(path, f"unsupported PLY format {fmt}")
    lines = body.decode("ascii").splitlines()
    v = np.array([[float(t) for t in ln.split()] for ln in lines[:nv]]).reshape(nv, 6)
    f = np.array([[int(t) for t in ln.split()] for ln in lines[nv:nv + nf]]).reshape(nf, 4)
    if not (f[:, 0] == 3).all():
        raise InputError(path, "has non-triangle faces")
    return Mesh(v[:, :3].astype(np.float32), f[:, 1:].astype(np.int32), v[:, 3:].astype(np.uint8))

