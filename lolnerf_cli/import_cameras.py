"""Cameras from other tools -> DATA/transforms.json in SPEC's conventions and object frame.

The files are read by camera_formats.py (conventions documented there and in docs/import-cameras.md).

Normalisation (`normalise`): the object frame of SPEC. The centre is the least-squares point closest
to every optical axis (what the cameras look at); +Y is the cameras' mean up vector, +Z the mean
direction from the centre to the cameras (made orthogonal to +Y); the scale makes the frustum's
cross-section through the centre fit the unit sphere at the median camera: depth of the centre times the
half-diagonal of the image in focal lengths, sqrt((w/2/fx)^2 + (h/2/fy)^2), becomes 1. Everything a camera
sees around the centre then lies within the unit sphere (`lolnerf synth`'s cameras, at distance 2.7 with a
30 degree field of view, see 2.7 * tan(15 deg) * sqrt(2) = 1.02 this way: its frame already is this one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .camera_formats import SourceCamera, camera_label, read_cameras
from .errors import InputError
from .formats import (Frame, Keypoints, Transforms, first_shared_stem, read_landmarks, write_keypoints,
                      write_transforms)
from .folders import dataset, list_images

CAMERA_SOURCE_IMPORTED = "import-cameras"


# ----------------------------------------------------------------------------------------- geometry
def closest_point_to_lines(origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares point nearest to the lines o_i + t d_i: sum_i |(I - d_i d_i^T)(x - o_i)|^2 is minimal.

    Returns (point [3], conditioning): the smallest eigenvalue of the normal matrix over the number of lines
    (0 when every line is parallel, so no single point is defined; 2/3 at best)."""
    d = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]          # [N, 3, 3]
    a = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, origins)
    cond = float(np.linalg.eigvalsh(a)[0]) / len(origins)
    return np.linalg.lstsq(a, b, rcond=None)[0], cond


def optical_axes(c2w: np.ndarray) -> np.ndarray:
    """Unit viewing directions [N, 3] of OpenGL cameras (their -Z axes)."""
    return -c2w[:, :3, 2]


def look_at_errors_deg(c2w: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Angle between each camera's optical axis and the direction to `point`, in degrees."""
    to = point[None] - c2w[:, :3, 3]
    to /= np.linalg.norm(to, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((to * optical_axes(c2w)).sum(1), -1.0, 1.0)))


@dataclass
class Normalisation:
    """x_spec = scale * rotation @ (x_source - centre)."""

    centre: np.ndarray
    rotation: np.ndarray
    scale: float
    notes: list[str] = field(default_factory=list)

    def apply(self, c2w: np.ndarray) -> np.ndarray:
        out = np.array(c2w, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.rotation @ out[..., :3, :3]
        out[..., :3, 3] = self.scale * ((out[..., :3, 3] - self.centre) @ self.rotation.T)
        return out

    def to_json(self) -> dict:
        return {"centre": [round(float(v), 9) for v in self.centre],
                "rotation": [[round(float(v), 9) for v in row] for row in self.rotation],
                "scale": round(float(self.scale), 9),
                "meaning": "x_spec = scale * rotation @ (x_source - centre)"}


IDENTITY = Normalisation(np.zeros(3), np.eye(3), 1.0)


def normalise(c2w: np.ndarray, fx: np.ndarray, fy: np.ndarray, w: np.ndarray, h: np.ndarray,
              path: Path | None = None) -> Normalisation:
    """The similarity that puts cameras [N, 4, 4] (OpenGL c2w) into SPEC's object frame (module docstring)."""
    pos = c2w[:, :3, 3]
    fwd = optical_axes(c2w)
    centre, cond = closest_point_to_lines(pos, fwd)
    if len(pos) < 2 or cond < 1e-6:
        raise InputError(path, "the cameras' optical axes are (nearly) parallel, so they look at no common point; "
                               "lolnerf needs cameras around one object")
    depth = ((centre[None] - pos) * fwd).sum(1)
    if np.median(depth) <= 0:
        raise InputError(path, "most cameras face away from the point nearest to their optical axes; "
                               "check the file's axis conventions (--format)")
    notes = []
    behind = int((depth <= 0).sum())
    if behind:
        notes.append(f"{behind} camera(s) face away from the common look-at point")
    up = c2w[:, :3, 1].mean(0)
    if np.linalg.norm(up) < 0.2:
        raise InputError(path, "the cameras have no common up direction (their up vectors cancel out), so "
                               "+Y of the object frame is undefined")
    y = up / np.linalg.norm(up)
    side = pos - centre[None]
    side = (side / np.linalg.norm(side, axis=1, keepdims=True)).mean(0)
    side = side - (side @ y) * y
    if np.linalg.norm(side) < 0.05:
        side = pos[0] - centre - ((pos[0] - centre) @ y) * y
        notes.append("the cameras surround the object; +Z is the first camera's side")
    z = side / np.linalg.norm(side)
    x = np.cross(y, z)
    rot = np.stack([x, y, z])                       # rows: the new axes in the source frame
    half_diag = np.sqrt((w / 2 / fx) ** 2 + (h / 2 / fy) ** 2)
    seen = np.median(np.abs(depth) * half_diag)
    return Normalisation(centre, rot, 1.0 / float(seen), notes)


# ----------------------------------------------------------------------------------------- images
def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as lolnerf loads it (after EXIF rotation), reading only its header."""
    from PIL import Image

    from .images import _allowed_formats, _check_file, _orientation

    _check_file(path)
    try:
        with Image.open(path, formats=_allowed_formats()) as img:
            w, h = img.size
            turned = _orientation(img) in (5, 6, 7, 8)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for unreadable headers
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
        raise InputError(path, f"is not a readable image ({first})") from None
    return (h, w) if turned else (w, h)


# ----------------------------------------------------------------------------------------- the import
@dataclass
class ImportResult:
    transforms: Transforms
    fmt: str
    n_cameras: int
    images_without_camera: list[str]
    cameras_without_image: list[str]
    normalisation: Normalisation
    look_at_deg: np.ndarray                  # per written frame: optical axis vs the direction to the origin
    rescaled: int                            # frames whose intrinsics were scaled to their image's size
    notes: dict[str, int]                    # note -> number of cameras
    keypoints: str | None = None             # what happened to DATA/keypoints.json
    replaced: bool = False                   # DATA/transforms.json existed before


def _stem_index(cams: list[SourceCamera], path: Path) -> dict[str, SourceCamera]:
    names = [Path(c.name.replace("\\", "/")).name for c in cams]
    shared = first_shared_stem(names)
    if shared is not None:
        i, earlier = shared
        raise InputError(path, f"{camera_label(cams[i].name)} has the same file name (without extension) as "
                               f"'{earlier}'; cameras are matched to images by file name")
    return {Path(n).stem: c for n, c in zip(names, cams)}


def _fit_to_image(cam: SourceCamera, img_w: int, img_h: int, path: Path, image: Path) -> tuple[tuple, bool]:
    """Intrinsics (fx, fy, cx, cy, w, h) for the image on disk: the file's, scaled when the image was
    resized with its aspect ratio kept; a different shape is an InputError naming the camera."""
    if cam.w is None or cam.h is None:
        return (cam.fx, cam.fy, cam.cx, cam.cy, img_w, img_h), False
    if (cam.w, cam.h) == (img_w, img_h):
        return (cam.fx, cam.fy, cam.cx, cam.cy, img_w, img_h), False
    sx, sy = img_w / cam.w, img_h / cam.h
    if abs(sx - sy) > 0.5 / min(cam.w, cam.h) + 1e-9 + 0.5 / min(img_w, img_h):
        raise InputError(path, f"{camera_label(cam.name)} is for a {cam.w}x{cam.h} image but {image} is "
                               f"{img_w}x{img_h}, which is not the same picture resized")
    return (cam.fx * sx, cam.fy * sy, cam.cx * sx, cam.cy * sy, img_w, img_h), True


def import_cameras(file: str | Path, data: str | Path, fmt: str = "auto", keep_frame: bool = False,
                   write: bool = True, progress=None) -> ImportResult:
    """FILE (another tool's cameras) -> DATA/transforms.json, frames matched to DATA/images/ by file name.

    Everything is read and checked before anything is written. DATA/landmarks.json, when present, gives
    DATA/keypoints.json (each landmark triangulated from the imported cameras); otherwise an existing
    DATA/keypoints.json (made for other cameras) is moved aside to keypoints.before-import.json."""
    from .progress import or_silent

    file, ds = Path(file), dataset(data)
    fmt, cams = read_cameras(file, fmt)
    images = list_images(ds.images)
    by_stem = _stem_index(cams, file)
    matched, without_camera = [], []
    for img in images:
        cam = by_stem.get(img.stem)
        (matched.append((img, cam)) if cam is not None else without_camera.append(img.name))
    image_stems = {img.stem for img in images}
    without_image = [c.name for c in cams if Path(c.name.replace("\\", "/")).stem not in image_stems]
    if not matched:
        raise InputError(file, f"none of its {len(cams)} cameras names an image in {ds.images} (cameras are "
                               f"matched by file name: e.g. camera '{cams[0].name}', image '{images[0].name}')")
    rows, rescaled, notes = [], 0, {}
    with or_silent(progress).task("reading image sizes", total=len(matched)) as task:
        for img, cam in matched:
            intr, scaled = _fit_to_image(cam, *image_size(img), file, img)
            rows.append(intr)
            rescaled += scaled
            for note in cam.notes:
                notes[note] = notes.get(note, 0) + 1
            task.advance()
    c2w = np.stack([cam.c2w for _, cam in matched])
    fx, fy, _, _, w, h = (np.array(col, dtype=np.float64) for col in zip(*rows))
    norm = IDENTITY if keep_frame else normalise(c2w, fx, fy, w, h, file)
    for note in norm.notes:
        notes[note] = notes.get(note, 0) + 1
    out_c2w = norm.apply(c2w)
    frames = [Frame(out_c2w[k], *rows[k][:4], int(rows[k][4]), int(rows[k][5]), f"images/{img.name}")
              for k, (img, _) in enumerate(matched)]
    extra = {"camera_source": CAMERA_SOURCE_IMPORTED,
             "imported_from": {"file": os.path.abspath(file), "format": fmt,
                               "normalisation": None if keep_frame else norm.to_json()}}
    tf = Transforms(frames, extra)
    err = look_at_errors_deg(out_c2w, np.zeros(3))
    result = ImportResult(tf, fmt, len(cams), without_camera, without_image, norm, err, rescaled, notes)
    kp = _keypoints_for(ds, tf) if ds.landmarks.is_file() else None
    if write:
        result.replaced = ds.transforms.is_file()
        write_transforms(ds.transforms, tf)
        if kp is not None:
            write_keypoints(ds.keypoints, kp[0])
            result.keypoints = f"triangulated from landmarks.json (reprojection RMSE {kp[1]:.2f} px median)"
        elif ds.keypoints.is_file():
            aside = ds.root / "keypoints.before-import.json"
            os.replace(ds.keypoints, aside)
            result.keypoints = f"moved aside to {aside.name}: it belongs to the previous cameras"
    return result


def _keypoints_for(ds, tf: Transforms) -> tuple[Keypoints, float] | None:
    """Canonical keypoints triangulated from DATA/landmarks.json with the imported cameras: each named point
    is the least-squares point nearest to its rays in every frame that has both landmarks and a camera.
    Returns (keypoints, median reprojection RMSE in pixels), or None when fewer than 2 frames match."""
    from .cameras import project

    lm = read_landmarks(ds.landmarks, ds.root)
    cams = tf.by_stem()
    pairs = [(fr, cams[Path(fr.file_path).stem]) for fr in lm.frames if Path(fr.file_path).stem in cams]
    if len(pairs) < 2:
        return None
    pts, rays_o, rays_d = [], [], []
    for lfr, cfr in pairs:
        sx, sy = cfr.w / lfr.w, cfr.h / lfr.h                       # landmark pixels -> this camera's pixels
        u, v = lfr.points[:, 0] * sx, lfr.points[:, 1] * sy
        d_cam = np.stack([(u - cfr.cx) / cfr.fx, -(v - cfr.cy) / cfr.fy, -np.ones_like(u)], axis=-1)
        rays_d.append(d_cam @ cfr.c2w[:3, :3].T)
        rays_o.append(np.broadcast_to(cfr.c2w[:3, 3], d_cam.shape))
        pts.append(np.stack([u, v], axis=-1))
    rays_o, rays_d, pts = np.stack(rays_o), np.stack(rays_d), np.stack(pts)   # [K, N, 3|2]
    points = np.stack([closest_point_to_lines(rays_o[:, j], rays_d[:, j])[0] for j in range(rays_o.shape[1])])
    rmse = []
    for k, (_, cfr) in enumerate(pairs):
        uv, _ = project(points, cfr.c2w, cfr.fx, cfr.fy, cfr.cx, cfr.cy)
        rmse.append(float(np.sqrt(((uv - pts[k]) ** 2).sum(-1).mean())))
    return Keypoints(lm.scheme, list(lm.names), points), float(np.median(rmse))


# ----------------------------------------------------------------------------------------- figure
def camera_figure(tf: Transforms, out: str | Path, title: str = "", max_frusta: int = 30) -> None:
    """A camera-positions figure (PNG): the camera centres and some frusta with the unit sphere, seen from
    the front (X-Y), from above (X-Z) and from the side (Z-Y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c2w = np.stack([np.asarray(f.c2w) for f in tf.frames])
    pos = c2w[:, :3, 3]
    lim = max(1.2, float(np.abs(pos).max()) * 1.05)
    step = max(1, len(tf.frames) // max_frusta)
    frusta = []
    for fr in tf.frames[::step]:
        m = np.asarray(fr.c2w)
        size = 0.25 * np.linalg.norm(m[:3, 3])
        corners = np.array([m[:3, 3] + size * m[:3, :3] @ np.array([(cu - fr.cx) / fr.fx, -(cv - fr.cy) / fr.fy, -1.0])
                            for cu, cv in [(0, 0), (fr.w, 0), (fr.w, fr.h), (0, fr.h)]])
        frusta.append((m[:3, 3], corners))
    fig, axes = plt.subplots(1, 3, figsize=(14, 5.0))
    views = [(0, 1, "from the front (X right, Y up)", False), (0, 2, "from above (X right, +Z down the page)", True),
             (2, 1, "from the side (Z right, Y up)", False)]
    for ax, (i, j, name, flip) in zip(axes, views):
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.4"))
        ax.scatter(pos[:, i], pos[:, j], s=2, alpha=0.25, color="tab:blue")
        for centre, corners in frusta:
            for c in corners:
                ax.plot([centre[i], c[i]], [centre[j], c[j]], color="crimson", linewidth=0.6)
            ring = np.vstack([corners, corners[:1]])
            ax.plot(ring[:, i], ring[:, j], color="crimson", linewidth=0.6)
        ax.plot([0], [0], "k+")
        ax.set_aspect("equal")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="XYZ"[i], ylabel="XYZ"[j], title=name)
        if flip:
            ax.invert_yaxis()
        ax.grid(alpha=0.3)
    fig.suptitle((title + "\n" if title else "") + "camera centres (blue), every "
                 f"{step}th camera's frustum (red), the unit sphere (grey)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
