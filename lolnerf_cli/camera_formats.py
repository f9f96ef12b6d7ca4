"""Readers of other tools' camera files (used by `lolnerf import-cameras`, see import_cameras.py).

Each reader returns `SourceCamera`s: OpenGL camera-to-world in the file's own world frame, pinhole
intrinsics and the image size the file states, if any. How each convention was established is in
docs/import-cameras.md; tests/test_import_cameras.py checks them.
- jax3d / LOLNeRF `*_camera_estimates.json`: `{name: {"camera": {"orientation", "position",
  "focal_length", "principal_point", "image_size", "skew", "pixel_aspect_ratio"}, ...}}`. `orientation`
  is the world-to-camera rotation with OpenCV axes (+X right, +Y down, +Z forward), `position` the camera
  centre: jax3d's ray generator (`camera.pixels_to_rays`, which its training loss uses) turns pixel (x, y)
  into the local direction ((x - cx) / f, (y - cy) / (f * aspect), 1) and that into the world by
  `orientation.T`. So c2w = orientation.T with its Y and Z columns negated (OpenCV -> OpenGL).
- nerfstudio / instant-ngp `transforms.json`: already OpenGL camera-to-world; intrinsics at the top level
  or per frame (`camera_angle_x` alone is accepted too).
- COLMAP text model (`cameras.txt` + `images.txt`): each image's quaternion (w, x, y, z) and translation
  map world to camera with OpenCV axes (COLMAP's documentation); c2w = [R.T | -R.T t] with the Y and Z
  columns negated.

Distortion coefficients are not applied (lolnerf renders pinhole cameras); non-zero ones are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ParamError
from .formats import Transforms, _finite_number, _matrix, _shown, read_json

FORMATS = ("auto", "jax3d", "nerfstudio", "colmap-text")
ROTATION_TOL = 1e-3          # |R^T R - I| allowed in a file's rotations (float round-off of the writer)
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])


@dataclass
class SourceCamera:
    name: str                    # the image name as the file gives it
    c2w: np.ndarray              # [4, 4] camera-to-world, OpenGL axes, the file's world frame
    fx: float
    fy: float
    cx: float
    cy: float
    w: int | None                # the image size the file states (None: take the image's)
    h: int | None
    notes: list[str] = field(default_factory=list)   # e.g. distortion ignored


# ----------------------------------------------------------------------------------------- helpers
def camera_label(name: str) -> str:
    shown = name if len(name) <= 80 else name[:77] + "..."
    return f"camera '{shown}'"


def _rotation(value: Any, path: Path, where: str, what: str) -> np.ndarray:
    """A 3x3 proper rotation from JSON-ish input, re-orthonormalised; anything else is an InputError."""
    mat = _matrix(value, 3, 3, path, f"{where} '{what}'") if not isinstance(value, np.ndarray) else value
    if not np.all(np.isfinite(mat)):
        raise InputError(path, f"{where} '{what}' contains NaN or infinite values")
    err = float(np.abs(mat.T @ mat - np.eye(3)).max())
    if err > ROTATION_TOL:
        raise InputError(path, f"{where} '{what}' is not a rotation matrix (its rows are not orthonormal: "
                               f"|R^T R - I| = {err:.3g})")
    if np.linalg.det(mat) < 0:
        raise InputError(path, f"{where} '{what}' is a reflection (determinant -1), not a rotation")
    u, _, vt = np.linalg.svd(mat)
    return u @ vt


def _number(obj: dict, key: str, path: Path, where: str, default: float | None = None, positive: bool = False,
            index: int = 0) -> float:
    """obj[key] as a finite float; a one-element list (jax3d writes [f]) is accepted."""
    if key not in obj:
        if default is None:
            raise InputError(path, f"{where} is missing '{key}'")
        return default
    value = obj[key]
    if isinstance(value, list) and len(value) > index:
        value = value[index]
    num = _finite_number(value)
    if num is None:
        if isinstance(value, float):
            raise InputError(path, f"{where} '{key}' is NaN or infinite")
        raise InputError(path, f"{where} '{key}' must be a finite number, got {_shown(obj[key])}")
    if positive and num <= 0:
        raise InputError(path, f"{where} '{key}' must be positive, got {num:g}")
    return num


def _vector(value: Any, n: int, path: Path, where: str, what: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != n:
        raise InputError(path, f"{where} '{what}' must be a list of {n} numbers, got {_shown(value)}")
    out = np.empty(n)
    for i, item in enumerate(value):
        num = _finite_number(item)
        if num is None:
            if isinstance(item, float):
                raise InputError(path, f"{where} '{what}' contains NaN or infinite values")
            raise InputError(path, f"{where} '{what}' item {i} must be a number, got {_shown(item)}")
        out[i] = num
    return out


def _whole(obj: dict, key: str, path: Path, where: str) -> int:
    num = _number(obj, key, path, where, positive=True)
    if not num.is_integer() or num > 1 << 20:
        raise InputError(path, f"{where} '{key}' must be a positive whole number of pixels, got {_shown(obj[key])}")
    return int(num)


def _size(value: Any, path: Path, where: str, what: str) -> tuple[int, int]:
    vec = _vector(value, 2, path, where, what)
    if not all(v.is_integer() and 0 < v <= 1 << 20 for v in vec):
        raise InputError(path, f"{where} '{what}' must be two positive whole numbers (width, height), "
                               f"got {_shown(value)}")
    return int(vec[0]), int(vec[1])


def _c2w(rot_c2w_gl: np.ndarray, centre: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rot_c2w_gl
    out[:3, 3] = centre
    return out


def _load_json(path: Path) -> Any:
    """JSON with NaN/Infinity literals let through, so that the frame holding one can be named."""
    return read_json(path, "camera file", allow_nan=True)


# ----------------------------------------------------------------------------------------- format detection
def detect_format(path: Path) -> tuple[str, Any]:
    """(format, parsed JSON or None) of a camera file; an unknown format is an InputError."""
    if path.is_dir() or path.name in ("cameras.txt", "images.txt"):
        return "colmap-text", None
    if not path.exists():
        raise InputError(path, "camera file not found")
    if path.name in ("cameras.bin", "images.bin"):
        raise InputError(path, "is a binary COLMAP model; convert it to text first with "
                               "`colmap model_converter --input_path DIR --output_path DIR --output_type TXT`")
    obj = _load_json(path)
    if isinstance(obj, dict) and isinstance(obj.get("frames"), list):
        return "nerfstudio", obj
    if isinstance(obj, dict) and any(isinstance(v, dict) and isinstance(v.get("camera"), dict)
                                     for v in obj.values()):
        return "jax3d", obj
    raise InputError(path, "is not a camera file lolnerf knows (expected jax3d camera estimates "
                           "{name: {\"camera\": {...}}}, a nerfstudio transforms.json with \"frames\", or a COLMAP "
                           "text model; name the format with --format)")


# ----------------------------------------------------------------------------------------- jax3d
def read_jax3d(path: Path, obj: Any = None) -> list[SourceCamera]:
    obj = _load_json(path) if obj is None else obj
    if not isinstance(obj, dict) or not obj:
        raise InputError(path, "jax3d camera file must hold a non-empty JSON object {image name: {\"camera\": ...}}")
    out = []
    for name, item in obj.items():
        where = camera_label(name)
        cam = item.get("camera") if isinstance(item, dict) else None
        if not isinstance(cam, dict):
            raise InputError(path, f"{where} has no \"camera\" object")
        orient = _rotation(cam.get("orientation"), path, where, "orientation")
        position = _vector(cam.get("position"), 3, path, where, "position")
        f = _number(cam, "focal_length", path, where, positive=True)
        aspect = _number(cam, "pixel_aspect_ratio", path, where, default=1.0, positive=True)
        skew = _number(cam, "skew", path, where, default=0.0)
        if abs(skew) > 1e-6 * f:
            raise InputError(path, f"{where} has skew {skew:g}; lolnerf's cameras have none")
        w, h = _size(cam.get("image_size"), path, where, "image_size")
        pp = _vector(cam.get("principal_point"), 2, path, where, "principal_point") \
            if "principal_point" in cam else np.array([w / 2, h / 2])
        notes = []
        for key in ("radial_distortion", "tangential_distortion"):
            if key in cam:
                size = len(cam[key]) if isinstance(cam[key], list) else 0
                if size == 0:
                    raise InputError(path, f"{where} '{key}' must be a list of numbers, got {_shown(cam[key])}")
                if np.any(_vector(cam[key], size, path, where, key) != 0) and "distortion ignored" not in notes:
                    notes.append("distortion ignored")
        rot = orient.T @ OPENCV_TO_OPENGL            # columns: camera right, up, back in the world
        out.append(SourceCamera(str(name), _c2w(rot, position), f, f * aspect, float(pp[0]), float(pp[1]), w, h,
                                notes))
    return out


def export_jax3d(tf: Transforms) -> dict:
    """The inverse of `read_jax3d`: a Transforms as jax3d camera estimates keyed by image file name."""
    out = {}
    for fr in tf.frames:
        c2w = np.asarray(fr.c2w, np.float64)
        orient = (c2w[:3, :3] @ OPENCV_TO_OPENGL).T
        out[Path(fr.file_path).name] = {"camera": {
            "orientation": orient.tolist(), "position": c2w[:3, 3].tolist(), "focal_length": [float(fr.fx)],
            "principal_point": [float(fr.cx), float(fr.cy)], "image_size": [int(fr.w), int(fr.h)], "skew": [0.0],
            "pixel_aspect_ratio": [float(fr.fy / fr.fx)]}}
    return out


# ----------------------------------------------------------------------------------------- nerfstudio
_NS_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
_NS_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "RADIAL", "SIMPLE_RADIAL")


def read_nerfstudio(path: Path, obj: Any = None) -> list[SourceCamera]:
    obj = _load_json(path) if obj is None else obj
    frames = obj.get("frames") if isinstance(obj, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(path, "transforms file must hold a non-empty \"frames\" list")
    out = []
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise InputError(path, f"frame {i} must be a JSON object")
        name = fr.get("file_path")
        if not isinstance(name, str) or not name:
            raise InputError(path, f"frame {i} 'file_path' must be a non-empty string, got {_shown(name)}")
        where = camera_label(name)
        merged = {**{k: v for k, v in obj.items() if k != "frames"}, **fr}
        model = merged.get("camera_model", "OPENCV")
        if model not in _NS_PINHOLE_MODELS:
            raise InputError(path, f"{where} uses camera model {_shown(model)}; lolnerf needs pinhole cameras "
                                   f"({', '.join(_NS_PINHOLE_MODELS)}), so undistort the images first")
        c2w = _matrix(fr.get("transform_matrix"), 4, 4, path, f"{where} 'transform_matrix'")
        if not np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6):
            raise InputError(path, f"{where} 'transform_matrix' last row must be [0, 0, 0, 1]")
        rot = _rotation(c2w[:3, :3], path, where, "transform_matrix")
        w = _whole(merged, "w", path, where) if "w" in merged else None
        h = _whole(merged, "h", path, where) if "h" in merged else None
        if "fl_x" in merged:
            fx = _number(merged, "fl_x", path, where, positive=True)
            fy = _number(merged, "fl_y", path, where, default=fx, positive=True)
        elif "camera_angle_x" in merged:
            if w is None:
                raise InputError(path, f"{where} gives 'camera_angle_x' but no 'w' to turn it into a focal length")
            ang = _number(merged, "camera_angle_x", path, where, positive=True)
            if ang >= math.pi:
                raise InputError(path, f"{where} 'camera_angle_x' must be below pi radians, got {ang:g}")
            fx = 0.5 * w / math.tan(ang / 2)
            fy = fx if "camera_angle_y" not in merged or h is None else \
                0.5 * h / math.tan(_number(merged, "camera_angle_y", path, where, positive=True) / 2)
        else:
            raise InputError(path, f"{where} has no focal length ('fl_x' or 'camera_angle_x')")
        cx = _number(merged, "cx", path, where) if "cx" in merged else None
        cy = _number(merged, "cy", path, where) if "cy" in merged else None
        if (cx is None or cy is None) and (w is None or h is None):
            raise InputError(path, f"{where} has neither 'cx', 'cy' nor 'w', 'h'")
        cx = w / 2 if cx is None else cx
        cy = h / 2 if cy is None else cy
        notes = ["distortion ignored"] if any(_number(merged, k, path, where, default=0.0) != 0
                                              for k in _NS_DISTORTION) else []
        out.append(SourceCamera(name, _c2w(rot, c2w[:3, 3]), fx, fy, cx, cy, w, h, notes))
    return out


# ----------------------------------------------------------------------------------------- COLMAP text
# model name -> (number of parameters, whether it has distortion terms); params start f | fx fy, cx, cy
_COLMAP_MODELS = {"SIMPLE_PINHOLE": (3, False), "PINHOLE": (4, False), "SIMPLE_RADIAL": (4, True),
                  "RADIAL": (5, True), "OPENCV": (8, True), "FULL_OPENCV": (12, True)}


def _colmap_files(path: Path) -> tuple[Path, Path]:
    folder = path if path.is_dir() else path.parent
    cams, imgs = folder / "cameras.txt", folder / "images.txt"
    for p in (cams, imgs):
        if not p.is_file():
            raise InputError(p, "not found; a COLMAP text model is a folder with cameras.txt and images.txt "
                                "(export a binary model with `colmap model_converter --output_type TXT`)")
    return cams, imgs


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise InputError(path, "is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None


def _floats(tokens: list[str], path: Path, where: str) -> list[float]:
    out = []
    for tok in tokens:
        try:
            val = float(tok)
        except ValueError:
            raise InputError(path, f"{where}: {tok!r} is not a number") from None
        if not math.isfinite(val):
            raise InputError(path, f"{where} contains NaN or infinite values")
        out.append(val)
    return out


def read_colmap_text(path: Path) -> list[SourceCamera]:
    cams_path, imgs_path = _colmap_files(path)
    intr: dict[str, tuple] = {}
    for n, line in enumerate(_text_lines(cams_path), 1):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        where = f"line {n} (camera {tok[0]})"
        if len(tok) < 4 or tok[1] not in _COLMAP_MODELS:
            model = tok[1] if len(tok) > 1 else "?"
            raise InputError(cams_path, f"{where} has camera model {model!r}; lolnerf reads "
                                        f"{', '.join(_COLMAP_MODELS)} (pinhole, distortion ignored)")
        n_par, distorted = _COLMAP_MODELS[tok[1]]
        vals = _floats(tok[2:], cams_path, where)
        if len(vals) != 2 + n_par:
            raise InputError(cams_path, f"{where}: {tok[1]} needs width, height and {n_par} parameters, "
                                        f"got {len(vals)} numbers")
        w, h = vals[0], vals[1]
        if not (w.is_integer() and h.is_integer() and w > 0 and h > 0):
            raise InputError(cams_path, f"{where}: width and height must be positive whole numbers")
        par = vals[2:]
        fx, fy, rest = (par[0], par[0], par[1:]) if tok[1] in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL") \
            else (par[0], par[1], par[2:])
        if fx <= 0 or fy <= 0:
            raise InputError(cams_path, f"{where}: focal length must be positive")
        intr[tok[0]] = (fx, fy, rest[0], rest[1], int(w), int(h), distorted and any(v != 0 for v in rest[2:]))
    out = []
    lines = _text_lines(imgs_path)
    i = 0
    while i < len(lines):
        line, n = lines[i].strip(), i + 1
        i += 1
        if not line or line.startswith("#"):
            continue
        i += 1                                     # the next line lists the image's 2D points: skipped
        tok = line.split()
        if len(tok) < 10:
            raise InputError(imgs_path, f"line {n} must read IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        name = " ".join(tok[9:])
        where = f"line {n} ({camera_label(name)})"
        q = np.array(_floats(tok[1:5], imgs_path, where))
        t = np.array(_floats(tok[5:8], imgs_path, where))
        if tok[8] not in intr:
            raise InputError(imgs_path, f"{where} uses camera {tok[8]}, which {cams_path.name} does not define")
        norm = float(np.linalg.norm(q))
        if abs(norm - 1) > 1e-2:
            raise InputError(imgs_path, f"{where}: the quaternion (QW QX QY QZ) must have unit length, got {norm:.4g}")
        rot_w2c = _quaternion_matrix(q / norm)
        fx, fy, cx, cy, w, h, distorted = intr[tok[8]]
        c2w = _c2w(rot_w2c.T @ OPENCV_TO_OPENGL, -rot_w2c.T @ t)
        out.append(SourceCamera(name, c2w, fx, fy, cx, cy, w, h, ["distortion ignored"] if distorted else []))
    if not out:
        raise InputError(imgs_path, "lists no images")
    return out


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z), Hamilton convention (COLMAP's)."""
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def read_cameras(path: str | Path, fmt: str = "auto") -> tuple[str, list[SourceCamera]]:
    """(format, cameras) of a camera file of any supported format."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ParamError("fmt", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    obj = None
    if fmt == "auto":
        fmt, obj = detect_format(path)
    if fmt == "colmap-text":
        return fmt, read_colmap_text(path)
    if not path.is_file():
        raise InputError(path, "camera file not found" if not path.is_dir() else "is a folder, not a camera file")
    return fmt, (read_jax3d if fmt == "jax3d" else read_nerfstudio)(path, obj)
