"""2D landmarks and foreground masks of photos: the first step from photos to cameras.

The built-in landmarker finds the SPEC's five face points with MediaPipe 0.10.21's legacy
`solutions.face_mesh` (models shipped inside the package: no network). Other classes plug in either
by converting any landmarker's output to `landmarks.json` (see docs/landmarks.md) or, from Python,
by passing an object with `scheme`, `names` and `detect(rgb) -> (points [N, 2], confidence)` to
`find_landmarks(..., landmarker=...)`.

Public API
    detect_face5(rgb)            -> (points [5, 2] float64 pixels, confidence)   raises LandmarksNotFound
    segment_foreground(rgb)      -> float32 mask [H, W] in [0, 1] (1 = object)
    landmarks_for_image(path)    -> (points, confidence, w, h)                   raises LandmarksNotFound
    find_landmarks(data, masks=False, progress=None, landmarker=None) -> LandmarkRun
    failure_counts(failed)       -> {reason: count}
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import InputError
from .formats import FACE5_NAMES, LandmarkFrame, Landmarks, write_landmarks
from .folders import dataset, list_images
from .images import load_image, save_png
from .progress import Progress, or_silent

# MediaPipe face-mesh indices. The mesh's "right eye" is the subject's right eye, which is the eye on the
# image's left in a frontal view (SPEC's eye_left); likewise mouth corner 61 is on the image's left.
_NOSE_TIP = 1
_MOUTH_LEFT, _MOUTH_RIGHT = 61, 291
_DETECTION_CONFIDENCE = 0.5     # MediaPipe detector threshold (face detection and face mesh)
_COMPARABLE_FACE_SIDE = 0.5     # a second face at least this fraction of the main face's size -> ambiguous
_MAX_FACES = 4


class LandmarksNotFound(InputError):
    """No usable landmarks in an image; `reason` is a short phrase such as 'no face found'."""

    def __init__(self, reason: str, path: str | Path | None = None):
        super().__init__(path, reason)


class Landmarker(Protocol):
    """What `find_landmarks` needs from a landmark detector (the plug-in point for other classes)."""

    scheme: str
    names: list[str]

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """Points [N, 2] in pixels (SPEC convention) and a confidence in [0, 1]; raise LandmarksNotFound."""
        ...


# ----------------------------------------------------------------------------------------- MediaPipe objects
INSTALL_HINT = "install it with: pip install 'lolnerf[landmarks]'"


def mediapipe_installed() -> bool:
    """Whether MediaPipe, the optional `landmarks` extra, is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("mediapipe") is not None


_LOCK = threading.Lock()
_CACHE: dict[str, object] = {}


_WARM: set[str] = set()


def _quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextmanager
def _native_stderr_silenced(active: bool = True):
    """MediaPipe's native code logs a few harmless warnings straight to file descriptor 2 when a graph
    starts; hide them (only around the first use of each solution, unless LOLNERF_DEBUG is set)."""
    if not active or os.environ.get("LOLNERF_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. captured): nothing to hide
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _process(name: str, img: np.ndarray):
    """Run one cached MediaPipe solution on an image (call under _LOCK)."""
    first = name not in _WARM
    with _native_stderr_silenced(first):
        out = _solution(name).process(img)
    _WARM.add(name)
    return out


def _solution(name: str):
    """MediaPipe solution objects, created once per process (creating them is slow). Call under _LOCK."""
    if name not in _CACHE:
        _quiet_mediapipe()
        try:
            from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation
        except ImportError as exc:  # pragma: no cover - a broken install
            from .errors import LolnerfError

            if not mediapipe_installed():
                raise InputError(None, f"this needs MediaPipe, an optional part of lolnerf; {INSTALL_HINT}") from None
            raise LolnerfError(f"MediaPipe is not usable ({exc}); reinstall it with: pip install --force-reinstall "
                               f"'lolnerf[landmarks]'") from None
        if name == "mesh":
            _CACHE[name] = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=_MAX_FACES, refine_landmarks=True,
                                              min_detection_confidence=_DETECTION_CONFIDENCE)
        elif name == "detect":
            # full-range model: also sees small faces, so a second person in the background is counted
            _CACHE[name] = face_detection.FaceDetection(model_selection=1,
                                                        min_detection_confidence=_DETECTION_CONFIDENCE)
        elif name == "segment":
            _CACHE[name] = selfie_segmentation.SelfieSegmentation(model_selection=0)
        else:  # pragma: no cover
            raise KeyError(name)
    return _CACHE[name]


def _eye_indices() -> tuple[list[int], list[int]]:
    from mediapipe.python.solutions import face_mesh_connections as conn

    def idx(edges):
        return sorted({i for edge in edges for i in edge})

    return idx(conn.FACEMESH_RIGHT_EYE), idx(conn.FACEMESH_LEFT_EYE)   # image-left eye, image-right eye


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {list(arr.shape)}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(arr.dtype, np.floating) and float(arr.max(initial=0)) <= 1.0 else 1.0
        arr = np.clip(arr.astype(np.float64) * scale + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


# ----------------------------------------------------------------------------------------- face5
def detect_face5(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The five SPEC face landmarks of one photo.

    rgb: uint8 [H, W, 3] (grey, RGBA or float in [0, 1] are converted). Returns points [5, 2] (pixel
    coordinates, origin top-left, centres at i + 0.5) in SPEC order — eye on the image's left, eye on
    the image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right —
    and a confidence in [0, 1] (MediaPipe's face-detection score). Eyes are the mean of the eye-contour
    points (stable when the gaze moves). Raises LandmarksNotFound('no face found') or
    LandmarksNotFound('N faces found') when several faces of comparable size are visible.
    """
    img = _as_rgb(rgb)
    h, w = img.shape[:2]
    with _LOCK:
        det_res = _process("detect", img)
        mesh_res = _process("mesh", img)
    det_boxes = []
    for d in det_res.detections or []:
        bb = d.location_data.relative_bounding_box
        det_boxes.append((bb.xmin * w, bb.ymin * h, bb.width * w, bb.height * h, float(d.score[0])))
    det_side = np.array([max(b[2], b[3]) for b in det_boxes]) if det_boxes else np.zeros(0)

    # each mesh as [478, 2] pixel coordinates; MediaPipe's normalised x, y are relative to the full image
    # extent, so pixel = x * w (the top-left corner is 0, matching the SPEC convention).
    mesh_px = [_mesh_pixels(m, w, h) for m in mesh_res.multi_face_landmarks or []]
    if not mesh_px and len(det_boxes) >= 1:
        # the mesh's own (short-range) detector misses small faces: retry on a crop around the largest one
        x0, y0, bw, bh, _ = det_boxes[int(np.argmax(det_side))]
        mesh_px = _mesh_on_crop(img, x0 + bw / 2, y0 + bh / 2, 2.5 * max(bw, bh))
    mesh_side = np.array([max(np.ptp(m[:, 0]), np.ptp(m[:, 1])) for m in mesh_px])
    biggest = max(mesh_side.max(initial=0), det_side.max(initial=0))
    n_mesh = int((mesh_side >= _COMPARABLE_FACE_SIDE * biggest).sum())
    n_det = int((det_side >= _COMPARABLE_FACE_SIDE * biggest).sum())
    n_faces = max(n_mesh, n_det)
    if n_faces >= 2:
        raise LandmarksNotFound(f"{n_faces} faces found")
    if not mesh_px:
        raise LandmarksNotFound("no face found")
    main = int(np.argmax(mesh_side))

    pts_all = mesh_px[main]
    left_eye, right_eye = _eye_indices()
    points = np.stack([pts_all[left_eye].mean(axis=0), pts_all[right_eye].mean(axis=0), pts_all[_NOSE_TIP],
                       pts_all[_MOUTH_LEFT], pts_all[_MOUTH_RIGHT]])

    # confidence: the detector's score for the box that holds this face's nose; the threshold if none does
    nose = points[2]
    scores = [score for x0, y0, bw, bh, score in det_boxes
              if x0 <= nose[0] <= x0 + bw and y0 <= nose[1] <= y0 + bh]
    conf = max(scores) if scores else _DETECTION_CONFIDENCE
    if not np.isfinite(points).all():
        raise LandmarksNotFound("no face found")
    return points, float(np.clip(conf, 0.0, 1.0))


def _mesh_pixels(face, w: int, h: int, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    return np.array([(x0 + p.x * w, y0 + p.y * h) for p in face.landmark], dtype=np.float64)


def _mesh_on_crop(img: np.ndarray, cu: float, cv: float, side: float) -> list[np.ndarray]:
    """Face meshes found in a square crop centred on (cu, cv), in full-image pixels."""
    h, w = img.shape[:2]
    half = max(side / 2, 8.0)
    x0, y0 = int(max(0, np.floor(cu - half))), int(max(0, np.floor(cv - half)))
    x1, y1 = int(min(w, np.ceil(cu + half))), int(min(h, np.ceil(cv + half)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return []
    crop = np.ascontiguousarray(img[y0:y1, x0:x1])
    with _LOCK:
        res = _process("mesh", crop)
    return [_mesh_pixels(m, x1 - x0, y1 - y0, x0, y0) for m in res.multi_face_landmarks or []]


class MediaPipeFace5:
    """The built-in landmarker: five face points with MediaPipe."""

    scheme = "face5"
    names = list(FACE5_NAMES)

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        return detect_face5(rgb)


# ----------------------------------------------------------------------------------------- masks
def segment_foreground(rgb: np.ndarray) -> np.ndarray:
    """Foreground (person) probability per pixel with MediaPipe selfie segmentation: float32 [H, W] in [0, 1]."""
    img = _as_rgb(rgb)
    with _LOCK:
        res = _process("segment", img)
    mask = res.segmentation_mask
    if mask is None:  # pragma: no cover - MediaPipe always returns one for a valid image
        return np.zeros(img.shape[:2], dtype=np.float32)
    return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------------------- whole dataset
def landmarks_for_image(path: str | Path, landmarker: Landmarker | None = None):
    """Load one photo and find its landmarks: (points [N, 2], confidence, w, h).

    Raises LandmarksNotFound naming the file (unreadable image, no face, several faces)."""
    path = Path(path)
    try:
        rgb = load_image(path)
    except InputError as exc:
        raise LandmarksNotFound(exc.reason, path) from None
    pts, conf = _detect(landmarker or MediaPipeFace5(), rgb, path)
    return pts, conf, rgb.shape[1], rgb.shape[0]


def _detect(landmarker: Landmarker, rgb: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """Run a landmarker on one photo; anything it cannot deliver becomes LandmarksNotFound naming the file."""
    try:
        pts, conf = landmarker.detect(rgb)
    except LandmarksNotFound as exc:
        raise LandmarksNotFound(exc.reason, path) from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - one photo must not stop a dataset-wide run
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise LandmarksNotFound(f"landmarker error ({type(exc).__name__}: {first})", path) from None
    try:
        pts = np.asarray(pts, dtype=np.float64)
        conf = float(conf)
    except (TypeError, ValueError):
        raise LandmarksNotFound("landmarker returned unusable points", path) from None
    if pts.shape != (len(landmarker.names), 2) or not np.isfinite(pts).all():
        raise LandmarksNotFound(f"landmarker returned unusable points (shape {list(pts.shape)})", path)
    return pts, float(np.clip(conf, 0.0, 1.0)) if np.isfinite(conf) else 0.0


@dataclass
class LandmarkRun:
    """What `find_landmarks` did: the landmarks it wrote and how many masks."""

    landmarks: Landmarks
    path: Path
    masks_written: int = 0
    mask_failed: list[dict] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return failure_counts(self.landmarks.failed)


def failure_counts(failed: list[dict]) -> dict[str, int]:
    """Failed frames grouped by reason (details in parentheses dropped), most common first."""
    counts: dict[str, int] = {}
    for item in failed:
        reason = str(item.get("reason", "unknown")).split(" (")[0]
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def find_landmarks(data: str | Path, masks: bool = False, progress: Progress | None = None,
                   landmarker: Landmarker | None = None, out: str | Path | None = None) -> LandmarkRun:
    """Landmarks of every photo in DATA/images -> DATA/landmarks.json (and DATA/masks/<stem>.png with masks).

    A photo that cannot be read, shows no face or several faces is listed under "failed" with its reason;
    the run continues. Masks are written for every readable photo (MediaPipe selfie segmentation)."""
    ds = dataset(data)
    if (landmarker is None or masks) and not mediapipe_installed():
        raise InputError(ds.root, f"finding face landmarks{' and masks' if masks else ''} needs MediaPipe, an "
                                  f"optional part of lolnerf ({INSTALL_HINT}); for other landmarkers write "
                                  f"landmarks.json yourself (docs/landmarks.md)")
    files = list_images(ds.images)
    lmk = landmarker or MediaPipeFace5()
    names = list(lmk.names)
    if len(names) < 4 or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"a landmarker needs 4 or more distinct point names, got {names!r}")
    result = Landmarks(scheme=str(lmk.scheme), names=names)
    run = LandmarkRun(result, Path(out) if out is not None else ds.landmarks)
    prog = or_silent(progress)
    with prog.task("landmarks", total=len(files)) as task:
        for path in files:
            rel = path.relative_to(ds.root).as_posix()
            try:
                rgb = load_image(path)
            except InputError as exc:
                result.failed.append({"file_path": rel, "reason": exc.reason})
                task.advance(found=len(result.frames), failed=len(result.failed))
                continue
            try:
                pts, conf = _detect(lmk, rgb, path)
                result.frames.append(LandmarkFrame(rel, rgb.shape[1], rgb.shape[0], pts, conf))
            except LandmarksNotFound as exc:
                result.failed.append({"file_path": rel, "reason": exc.reason})
            if masks:
                try:
                    m = segment_foreground(rgb)
                    save_png(ds.mask_for(rel), m)
                    run.masks_written += 1
                except InputError as exc:
                    run.mask_failed.append({"file_path": rel, "reason": exc.reason})
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as exc:  # noqa: BLE001 - a mask failure must not stop the run
                    run.mask_failed.append({"file_path": rel, "reason": f"segmentation error ({type(exc).__name__})"})
            task.advance(found=len(result.frames), failed=len(result.failed))
    write_landmarks(run.path, result)
    return run
