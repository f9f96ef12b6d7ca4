"""Read, validate and write every artifact of SPEC.md in one place.

Readers raise `InputError(path, reason)` for anything malformed; writers are atomic (temporary file in
the same folder, fsync, then rename) so a crash never leaves a half-written artifact behind.
Tensors are stored as safetensors and everything else as JSON: nothing that loads may execute code.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .cameras import Camera
from .errors import InputError

FACE5_NAMES = ["eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------------------- atomic I/O
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(path.parent, f"cannot write here ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.chmod(tmp, 0o666 & ~_UMASK)      # mkstemp makes 0600; give the usual permissions
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise InputError(path, f"could not be written ({exc.strerror or exc})") from exc


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8"))


MAX_JSON_BYTES = 1 << 30  # no artifact of SPEC.md comes near this; refuse to read more


def read_json(path: str | Path, what: str = "JSON file", allow_nan: bool = False) -> Any:
    """Parse a UTF-8 JSON file (a leading byte-order mark is allowed). NaN / Infinity literals, deep
    nesting and anything that is not JSON are an `InputError` naming the file; nothing else is raised.
    allow_nan: NaN / Infinity become floats, for readers that name the item holding one."""
    path = Path(path)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False
    if not is_file:
        if path.is_dir():
            raise InputError(path, f"{what} expected here, but this is a folder")
        raise InputError(path, f"{what} not found")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise InputError(path, f"{what} is too large ({path.stat().st_size:,} bytes)")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, f"{what} is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(path, f"{what} cannot be read ({exc.strerror or exc})") from None
    try:
        return json.loads(text, parse_constant=None if allow_nan else _reject_constant)
    except RecursionError:
        raise InputError(path, f"{what} is nested too deeply to be a valid file") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise InputError(path, f"{what} is not valid JSON ({str(exc)[:160]})") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed; write a finite number or null")


def save_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Atomically save a dict of torch tensors (contiguous, CPU) as safetensors."""
    from safetensors.torch import save

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, save(clean, metadata=meta))


def load_safetensors(path: str | Path, what: str = "tensor file") -> tuple[dict, dict[str, str]]:
    """Load every tensor of a safetensors file (CPU) plus its string metadata."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            for key in fh.keys():
                tensors[key] = fh.get_tensor(key)
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise InputError(path, f"{what} is not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None
    return tensors, meta


# ----------------------------------------------------------------------------------------- validation
MAX_IMAGE_SIDE = 1 << 20  # a width or height beyond this is a typo, not a photo


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: Any) -> str:
    """A value as JSON spells it, cut short, for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = _json_type(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _finite_number(value: Any) -> float | None:
    """float(value) for a JSON number that is finite (booleans are not numbers), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def _req(obj: Any, key: str, kind, path: Path, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(path, f"{where} is missing '{key}'")
    value = obj[key]
    if kind is float:
        out = _finite_number(value)
        if out is None:
            raise InputError(path, f"{where} '{key}' must be a finite number, got {_shown(value)}")
        return out
    if kind is int:
        num = _finite_number(value)
        if num is None or not num.is_integer() or num <= 0 or num > MAX_IMAGE_SIDE:
            raise InputError(path, f"{where} '{key}' must be a positive integer up to {MAX_IMAGE_SIDE}, "
                                   f"got {_shown(value)}")
        return int(num)
    if not isinstance(value, kind):
        raise InputError(path, f"{where} '{key}' must be {_json_type(kind())}, got {_json_type(value)}")
    return value


def _matrix(value: Any, rows: int, cols: int, path: Path, where: str) -> np.ndarray:
    """A [rows, cols] float64 array from a JSON list of lists of finite numbers (rows <= 0: any count)."""
    want = f"{rows}x{cols}" if rows > 0 else f"Nx{cols}"
    if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
        raise InputError(path, f"{where} must be a {want} list of lists of numbers, got {_json_type(value)}")
    if rows > 0 and len(value) != rows:
        raise InputError(path, f"{where} must have {rows} rows of {cols} numbers, got {len(value)} rows")
    out = np.empty((len(value), cols), dtype=np.float64)
    for i, row in enumerate(value):
        if len(row) != cols:
            raise InputError(path, f"{where} row {i} must hold {cols} numbers, got {len(row)}")
        for j, item in enumerate(row):
            num = _finite_number(item)
            if num is None:
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    raise InputError(path, f"{where} contains NaN, infinite or out-of-range values")
                raise InputError(path, f"{where} row {i} item {j} must be a number, got {_shown(item)}")
            out[i, j] = num
    return out


def safe_relpath(root: Path, rel: Any, path: Path, where: str) -> str:
    """Check that a file path from a JSON file stays inside the dataset folder `root`.

    Refused: non-strings, empty strings, NUL bytes, absolute paths, Windows drive or backslash paths,
    and anything that resolves outside `root`, through '..' or through a symbolic link."""
    if not isinstance(rel, str) or not rel:
        raise InputError(path, f"{where} 'file_path' must be a non-empty string, got {_json_type(rel)}")
    shown = rel if len(rel) <= 80 else rel[:77] + "..."
    if any(ord(c) < 32 for c in rel):
        raise InputError(path, f"{where} file_path {shown!r} contains control characters")
    if os.path.isabs(rel) or "\\" in rel or (len(rel) >= 2 and rel[1] == ":" and rel[0].isalpha()):
        raise InputError(path, f"{where} file_path '{shown}' must be relative to the dataset folder")
    try:
        base = Path(root).resolve()
        full = (Path(root) / rel).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, names too long, ...
        raise InputError(path, f"{where} file_path '{shown}' cannot be resolved ({str(exc)[:80]})") from None
    if not full.is_relative_to(base):
        lexical = os.path.normpath(os.path.join(str(base), rel))
        how = "through a symbolic link " if Path(lexical).is_relative_to(base) else ""
        raise InputError(path, f"{where} file_path '{shown}' points outside the dataset folder {how}".rstrip())
    return rel


def _check_exists(root: Path, rel: str, path: Path, where: str) -> None:
    if not (Path(root) / rel).is_file():
        raise InputError(path, f"{where} names '{rel}', which does not exist in the dataset folder {root}")


def first_shared_stem(names: Sequence[str | Path]) -> tuple[int, str | Path] | None:
    """(index, earlier name) of the first name whose stem (file name without extension) an earlier name
    already has, else None. Masks (masks/<stem>.png), depth maps, cameras and rendered frames are matched
    by stem, so a.png and a.jpg would silently share them."""
    seen: dict[str, str | Path] = {}
    for i, name in enumerate(names):
        stem = Path(name).stem
        if stem in seen:
            return i, seen[stem]
        seen[stem] = name
    return None


def _no_duplicates(paths: list[str], path: Path) -> None:
    """Each image once, and no two images sharing a name stem."""
    shared = first_shared_stem(paths)
    if shared is None:
        return
    i, earlier = shared
    rel = paths[i]
    if os.path.normpath(rel) == os.path.normpath(earlier):
        raise InputError(path, f"frame {i} repeats file_path '{rel}' (each image may appear once)")
    raise InputError(path, f"frame {i} '{rel}' has the same name as '{earlier}'; masks and cameras "
                           "are matched by file name without extension, so rename one")


def _names(obj: dict, path: Path, n_min: int) -> list[str]:
    names = _req(obj, "names", list, path, "file")
    if len(names) < n_min or not all(isinstance(n, str) and n for n in names):
        raise InputError(path, f"'names' must list at least {n_min} point names")
    if len(set(names)) != len(names):
        raise InputError(path, "'names' has duplicates")
    return names


# ----------------------------------------------------------------------------------------- landmarks
@dataclass
class LandmarkFrame:
    file_path: str
    w: int
    h: int
    points: np.ndarray          # [N, 2] pixel coordinates (u right, v down, centres at i + 0.5)
    confidence: float = 1.0


@dataclass
class Landmarks:
    scheme: str
    names: list[str]
    frames: list[LandmarkFrame] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "scheme": self.scheme,
            "names": list(self.names),
            "frames": [
                {"file_path": f.file_path, "w": int(f.w), "h": int(f.h),
                 "points": [[round(float(u), 3), round(float(v), 3)] for u, v in f.points],
                 "confidence": round(float(f.confidence), 4)}
                for f in self.frames
            ],
            "failed": list(self.failed),
        }


def read_landmarks(path: str | Path, data_root: str | Path | None = None, require_files: bool = False) -> Landmarks:
    """Read and validate `landmarks.json`. `require_files`: every frame's image must exist."""
    path = Path(path)
    root = Path(data_root) if data_root is not None else path.parent
    obj = read_json(path, "landmarks file")
    if not isinstance(obj, dict):
        raise InputError(path, "landmarks file must hold a JSON object")
    scheme = _req(obj, "scheme", str, path, "file")
    names = _names(obj, path, 4)
    frames_in = _req(obj, "frames", list, path, "file")
    frames = []
    for i, fr in enumerate(frames_in):
        where = f"frame {i}"
        if not isinstance(fr, dict):
            raise InputError(path, f"{where} must be a JSON object")
        rel = safe_relpath(root, fr.get("file_path"), path, where)
        if require_files:
            _check_exists(root, rel, path, where)
        w = _req(fr, "w", int, path, where)
        h = _req(fr, "h", int, path, where)
        pts = _matrix(fr.get("points"), len(names), 2, path, f"{where} 'points'")
        conf = float(_req(fr, "confidence", float, path, where)) if "confidence" in fr else 1.0
        frames.append(LandmarkFrame(rel, w, h, pts, conf))
    _no_duplicates([f.file_path for f in frames], path)
    failed = obj.get("failed", [])
    if not isinstance(failed, list) or not all(isinstance(f, dict) for f in failed):
        raise InputError(path, "'failed' must be a list of objects")
    return Landmarks(scheme, names, frames, failed)


def write_landmarks(path: str | Path, lm: Landmarks) -> None:
    write_json(path, lm.to_json())


# ----------------------------------------------------------------------------------------- keypoints
@dataclass
class Keypoints:
    scheme: str
    names: list[str]
    points: np.ndarray          # [N, 3] in the object frame

    def to_json(self) -> dict:
        return {"scheme": self.scheme, "names": list(self.names),
                "points": [[round(float(c), 6) for c in p] for p in self.points]}


def read_keypoints(path: str | Path) -> Keypoints:
    path = Path(path)
    obj = read_json(path, "keypoints file")
    if not isinstance(obj, dict):
        raise InputError(path, "keypoints file must hold a JSON object")
    scheme = _req(obj, "scheme", str, path, "file")
    names = _names(obj, path, 4)
    pts = _matrix(obj.get("points"), len(names), 3, path, "'points'")
    return Keypoints(scheme, names, pts)


def write_keypoints(path: str | Path, kp: Keypoints) -> None:
    write_json(path, kp.to_json())


def name_order(names: Sequence[str], available: Sequence[str], where: str | Path, needed_by: str) -> list[int]:
    """Indices into `available` of each of `names`, in order: points listed under `available` names, indexed
    with it, come out in `names` order (landmarks in the order of the canonical keypoints, or back). An
    InputError naming `where` when one of `names` is not available."""
    available = list(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise InputError(where, f"has no point named '{missing[0]}', which {needed_by} needs "
                                f"(its names are {available})")
    return [available.index(n) for n in names]


# ----------------------------------------------------------------------------------------- transforms
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_INTRINSIC_FIELDS = dict(zip(INTRINSIC_KEYS, ("fx", "fy", "cx", "cy", "w", "h")))   # JSON key -> Camera field


@dataclass
class Frame(Camera):
    """One frame of transforms.json: a Camera (c2w [4, 4] OpenGL axes; fx, fy are the file's fl_x, fl_y) with
    its photo's path and any other keys the file gives it."""

    file_path: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Transforms:
    frames: list[Frame]
    extra: dict = field(default_factory=dict)   # other top-level keys, kept on rewrite

    def to_json(self) -> dict:
        out: dict[str, Any] = dict(self.extra)
        if self.frames:
            f0 = self.frames[0]
            shared = {k: getattr(f0, _INTRINSIC_FIELDS[k]) for k in INTRINSIC_KEYS}
            for k in INTRINSIC_KEYS:
                if any(getattr(f, _INTRINSIC_FIELDS[k]) != shared[k] for f in self.frames):
                    shared.pop(k)
            for k, v in shared.items():
                out[k] = int(v) if k in ("w", "h") else float(v)
        else:
            shared = {}
        frames = []
        for f in self.frames:
            item: dict[str, Any] = {"file_path": f.file_path,
                                    "transform_matrix": [[float(c) for c in row] for row in f.c2w]}
            for k in INTRINSIC_KEYS:
                if k not in shared:
                    v = getattr(f, _INTRINSIC_FIELDS[k])
                    item[k] = int(v) if k in ("w", "h") else float(v)
            item.update(f.extra)
            frames.append(item)
        out["frames"] = frames
        return out

    def by_stem(self) -> dict[str, Frame]:
        return {Path(f.file_path).stem: f for f in self.frames}


def read_transforms(path: str | Path, data_root: str | Path | None = None,
                    require_files: bool = False) -> Transforms:
    """Read and validate `transforms.json`. `require_files`: every frame's image must exist."""
    path = Path(path)
    root = Path(data_root) if data_root is not None else path.parent
    obj = read_json(path, "transforms file")
    if not isinstance(obj, dict):
        raise InputError(path, "transforms file must hold a JSON object")
    frames_in = _req(obj, "frames", list, path, "file")
    top = {k: obj[k] for k in INTRINSIC_KEYS if k in obj}
    frames = []
    for i, fr in enumerate(frames_in):
        where = f"frame {i}"
        if not isinstance(fr, dict):
            raise InputError(path, f"{where} must be a JSON object")
        rel = safe_relpath(root, fr.get("file_path"), path, where)
        if require_files:
            _check_exists(root, rel, path, where)
        c2w = _matrix(fr.get("transform_matrix"), 4, 4, path, f"{where} 'transform_matrix'")
        merged = {**top, **{k: fr[k] for k in INTRINSIC_KEYS if k in fr}}
        intr = {}
        for k in INTRINSIC_KEYS:
            if k not in merged:
                raise InputError(path, f"{where} has no '{k}' (neither per frame nor at the top level)")
            intr[k] = _req(merged, k, int if k in ("w", "h") else float, path, where)
        if intr["fl_x"] <= 0 or intr["fl_y"] <= 0:
            raise InputError(path, f"{where} focal length must be positive")
        rot = c2w[:3, :3]
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-3):
            raise InputError(path, f"{where} 'transform_matrix' rotation is not orthonormal")
        if np.linalg.det(rot) < 0:
            raise InputError(path, f"{where} 'transform_matrix' is a reflection (determinant -1), not a camera pose")
        if not np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
            raise InputError(path, f"{where} 'transform_matrix' last row must be [0, 0, 0, 1]")
        extra = {k: v for k, v in fr.items() if k not in ("file_path", "transform_matrix", *INTRINSIC_KEYS)}
        frames.append(Frame(c2w, intr["fl_x"], intr["fl_y"], intr["cx"], intr["cy"], intr["w"], intr["h"], rel, extra))
    _no_duplicates([f.file_path for f in frames], path)
    extra = {k: v for k, v in obj.items() if k not in ("frames", *INTRINSIC_KEYS)}
    return Transforms(frames, extra)


def write_transforms(path: str | Path, tf: Transforms) -> None:
    write_json(path, tf.to_json())


def with_run_cameras(frames: list[Frame], run_root: str | Path) -> tuple[list[Frame], bool]:
    """The training frames with the poses the run trained them with: RUN/cameras.json's (the cameras
    `lolnerf train` refined) for the frames it lists, the dataset's otherwise. Returns (frames, whether
    RUN/cameras.json was used)."""
    path = Path(run_root) / "cameras.json"
    if not path.is_file():
        return frames, False
    by_path = {f.file_path: f for f in read_transforms(path).frames}
    return [by_path.get(f.file_path, f) for f in frames], True


# ----------------------------------------------------------------------------------------- run folder files
def read_images_json(path: str | Path) -> list[str]:
    return read_image_list(path)[0]


def read_image_list(path: str | Path) -> tuple[list[str], Path | None]:
    """RUN/images.json -> (the training photos in latent-table order, the dataset folder they came from, or
    None when the file names none)."""
    path = Path(path)
    obj = read_json(path, "image list")
    files = obj.get("images") if isinstance(obj, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise InputError(path, "must hold {\"images\": [file paths in latent-table order]}")
    dataset = obj.get("dataset")
    return files, Path(dataset) if isinstance(dataset, str) else None


def write_images_json(path: str | Path, files: Iterable[str], dataset_root: str | Path) -> None:
    write_json(path, {"dataset": str(Path(dataset_root).resolve()), "images": list(files)})


# ----------------------------------------------------------------------------------------- latent files
def save_latents(path: str | Path, latents, model_hash: str, sources: list[str], extra: dict | None = None) -> None:
    """A latent file: tensor `latents` [N, D] plus metadata naming the model and each row's source."""
    if latents.ndim != 2 or latents.shape[0] != len(sources):
        raise ValueError("latents must be [N, D] with one source per row")
    meta = {"format": "lolnerf-latents", "model_hash": model_hash, "sources": json.dumps(sources)}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    save_safetensors(path, {"latents": latents.float()}, meta)


def load_latents(path: str | Path, model_hash: str | None = None, latent_dim: int | None = None):
    """Returns (latents [N, D] float32 tensor, sources list, metadata). Checks it belongs to the model."""
    path = Path(path)
    tensors, meta = load_safetensors(path, "latent file")
    if "latents" not in tensors:
        raise InputError(path, "latent file has no tensor named 'latents'")
    z = tensors["latents"]
    if z.ndim != 2:
        raise InputError(path, f"'latents' must be 2-D [N, D], got shape {list(z.shape)}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise InputError(path, f"'latents' is empty (shape {list(z.shape)})")
    if not z.dtype.is_floating_point or not bool(z.isfinite().all()):
        raise InputError(path, "'latents' must hold finite floating-point values")
    if latent_dim is not None and z.shape[1] != latent_dim:
        raise InputError(path, f"latents have {z.shape[1]} dimensions but the model expects {latent_dim}; "
                               "it was made for a different model")
    if model_hash is not None and meta.get("model_hash") not in (None, model_hash):
        raise InputError(path, f"latent file was made for model {meta.get('model_hash')}, not {model_hash}")
    try:
        sources = json.loads(meta.get("sources", "[]"))
    except (ValueError, RecursionError):
        sources = []
    if not isinstance(sources, list) or len(sources) != z.shape[0] or not all(isinstance(s, str) for s in sources):
        sources = [f"{path.name}#{i}" for i in range(z.shape[0])]
    return z.float(), sources, meta
