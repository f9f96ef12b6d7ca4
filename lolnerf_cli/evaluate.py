"""`lolnerf eval`: the paper's measurements of a trained model.

Four sections, each written to metrics.json only when its inputs exist:

- train (paper Table 1): every latent of a fixed, seeded subset of the training set rendered through
  its training camera at the training resolution, against the photo resized the way training resized
  it (square, `cfg.train.resolution`). PSNR, SSIM, LPIPS, and PSNR over the mask where masks exist.
- heldout (Table 2): photos the model never saw, inverted (network frozen) with their cameras (known, or
  placed in the model's frame, see below), then rendered back through the same camera and scored like
  the training images.
- novel (Table 3, HUMBI-style): per object of a multi-view folder, ONE query view is inverted and the
  object's other views are rendered and scored on the object's pixels only.
- depth (Table 4, 3DFAW-style): the rendered depth of each query view at the object's 3D keypoints
  against their true depth (Pearson correlation per object), plus dense depth errors where true depth
  maps exist.

Camera frames (`frames` option). A model trained on `lolnerf fit-cameras` cameras lives in the fitted
object frame (gauge of the canonical keypoints), which differs from a calibrated multi-view set's frame
by an unknown similarity. Then ("query" frames) each object's query camera is fitted from its landmarks
to RUN/keypoints.json with the view's own intrinsics, and every other view is placed by its calibrated
pose relative to the query, the relative translation scaled by s = |o_q model| / |o_q true| (the query
camera's distances from the object centre, the origin of both frames). "as-given" uses the folder's
cameras unchanged (right when the model was trained in the folder's frame, e.g. on synth's true
cameras); "auto" picks "query" when DATA/transforms.json is marked as written by fit-cameras and the
folder's transforms.json is not.

Every image is scored at the model's training resolution. Nothing here prints: progress goes through
`progress`, and the caller (the CLI) owns the terminal. Shapes: H, W pixels; N images; D latent width.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .cameras import Camera
from .errors import InputError
from .formats import Frame, dataset, read_transforms, write_json
from .images import load_image, load_mask, resize
from .progress import Progress, or_silent

METRICS_FORMAT = "lolnerf-metrics"
FIGURE_SUFFIX = "_figure.png"       # metrics.json -> metrics_figure.png beside it
FIGURE_TILE = 128                   # figure tiles are at least this many pixels wide (nearest upscaling)
FIGURE_PAD = 4                      # pixels between tiles
FIGURE_CAPTION = 16                 # caption strip above each figure row
FIGURE_COLUMNS = 4                  # input | prediction | ground truth (or error) | depth
MASK_THRESHOLD = 0.5                # a mask pixel >= this is the object's
MIN_KEYPOINTS_FOR_PEARSON = 3       # fewer valid keypoints than this: the object's correlation is undefined
EVAL_LANDMARKS_HINT = ("put the photos' 2D landmarks (landmarks.json, docs/landmarks.md) or cameras "
                       "(transforms.json) in the held-out folder")


@dataclass
class EvalOptions:
    subset: int = 200               # training (and held-out) images scored; 0 = all of them
    invert_steps: int = 200         # optimisation steps per inversion (held-out and novel sections)
    seed: int = 0                   # picks the subset and seeds the inversions
    device: str = "auto"
    precision: str = "fp32"         # fp32 by default: numbers comparable across machines
    figure_rows: int = 3            # novel-view objects and training images shown in the figure (each)
    frames: str = "auto"            # camera frame of held-out / novel cameras: auto, as-given or query
    upsample: int = 0               # >= 2: also score novel views rendered this many times finer (synth data)
    encoder_steps: int = 30         # with RUN/encoder.safetensors: optimisation steps of the "hybrid" answer


@dataclass
class EvalResult:
    metrics: dict                   # what metrics.json holds
    metrics_path: Path
    figure_path: Path | None
    lpips_unavailable: str | None   # one-line reason, or None when LPIPS was measured


# ----------------------------------------------------------------------------------------- small helpers
def _finite_or_none(x: Any) -> Any:
    """JSON has no inf/NaN: non-finite floats become null (recursively)."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _as_float(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.item()
    return float(x)


def _summary(rows: list[dict], key: str) -> dict | None:
    """mean, std, count of rows[key] over the rows that have a value (None when none has one)."""
    from .metrics import mean_std

    values = [r[key] for r in rows if r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
    if not values:
        return None
    out = mean_std(values)
    return {"mean": _as_float(out["mean"]), "std": _as_float(out["std"]), "count": int(out["count"])}


def _pick_subset(n: int, subset: int, seed: int) -> list[int]:
    """A fixed, seeded choice of min(subset, n) indices in ascending order (all of them when subset <= 0)."""
    if subset <= 0 or subset >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=subset, replace=False))


def _mask_for(root: Path, file_path: str, size: int, alpha: np.ndarray | None) -> np.ndarray | None:
    """The object mask at size x size, float [H, W] in [0, 1], the way training reads it:
    masks/<stem>.png, else the photo's alpha channel, else None."""
    mpath = dataset(root, must_exist=False).mask_for(file_path)
    if mpath.is_file():
        return load_mask(mpath, (size, size))
    if alpha is not None:
        return resize(np.repeat(alpha[..., None], 3, 2), size, size)[..., 0].astype(np.float32) / 255.0
    return None


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """float [H, W] in [0, 1] -> [size, size], bilinear like training's mask cache."""
    from PIL import Image

    if mask.shape == (size, size):
        return mask.astype(np.float32)
    u8 = Image.fromarray((np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(u8.resize((size, size), Image.BILINEAR)).astype(np.float32) / 255.0


def sample_depth(depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of a depth map [H, W] (NaN = no surface) at pixel positions uv [N, 2]
    (pixel centres at i + 0.5). Missing neighbours are left out and the others re-weighted; NaN where
    none of the four neighbours has a depth or the point lies outside the image."""
    h, w = depth.shape
    x = uv[:, 0] - 0.5
    y = uv[:, 1] - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    total = np.zeros(len(uv))
    acc = np.zeros(len(uv))
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        vals = np.full(len(uv), np.nan)
        vals[inside] = depth[yi[inside], xi[inside]]
        ok = np.isfinite(vals) & (wt > 0)
        acc[ok] += wt[ok] * vals[ok]
        total[ok] += wt[ok]
    outside = (uv[:, 0] < 0) | (uv[:, 0] > w) | (uv[:, 1] < 0) | (uv[:, 1] > h)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((total > 1e-6) & ~outside, acc / np.maximum(total, 1e-12), np.nan)
    return out


def _nearest_resample(arr: np.ndarray, size: int) -> np.ndarray:
    """[H, W] -> [size, size] by nearest pixel centres (keeps NaN backgrounds NaN, never mixes them)."""
    h, w = arr.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return arr[rows][:, cols]


# ----------------------------------------------------------------------------------------- scoring
class _Scorer:
    """PSNR / SSIM / LPIPS of one prediction against one ground truth (float [H, W, 3] in [0, 1])."""

    def __init__(self, size: int | None = None):
        """size: the images' side in pixels, when known (SSIM and LPIPS need a minimum size)."""
        from . import metrics

        self.m = metrics
        self.ssim_ok = size is None or size >= metrics.SSIM_WIN
        self.lpips_net, reason = metrics.lpips_model()
        self.lpips_weights = None
        if self.lpips_net is None:
            self.lpips_reason = str(reason or "LPIPS unavailable: no weights").strip().splitlines()[0]
        elif size is not None and size < metrics.LPIPS_MIN_SIDE:
            self.lpips_net = None
            self.lpips_reason = (f"LPIPS unavailable: the model's {size} px images are smaller than LPIPS' "
                                 f"{metrics.LPIPS_MIN_SIDE} px minimum")
        else:
            self.lpips_reason = None
            self.lpips_weights = str(reason)

    def _ssim(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float | None:
        return _as_float(self.m.ssim(pred, gt, mask)) if self.ssim_ok else None

    def _lpips(self, pred: np.ndarray, gt: np.ndarray) -> float | None:
        if self.lpips_net is None:
            return None
        return _as_float(self.m.lpips(pred, gt, self.lpips_net))

    def full(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> dict:
        """Whole-image metrics, plus PSNR over the object's pixels when a mask exists."""
        row = {"psnr": _as_float(self.m.psnr(pred, gt)), "ssim": self._ssim(pred, gt),
               "lpips": self._lpips(pred, gt), "psnr_masked": None}
        if mask is not None and (mask >= MASK_THRESHOLD).any():
            row["psnr_masked"] = _as_float(self.m.psnr(pred, gt, mask >= MASK_THRESHOLD))
        return row

    def masked(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict:
        """Metrics on the object's pixels only. LPIPS (a patch metric) sees both images with everything
        outside the mask set to black."""
        m = mask >= MASK_THRESHOLD
        if not m.any():
            return {"psnr": None, "ssim": None, "lpips": None}
        black = m[..., None].astype(np.float32)
        return {"psnr": _as_float(self.m.psnr(pred, gt, m)), "ssim": self._ssim(pred, gt, m),
                "lpips": self._lpips(pred * black, gt * black)}


# ----------------------------------------------------------------------------------------- inputs
@dataclass
class _Item:
    """One photo with its camera (full size), optional mask (full size) and bookkeeping."""

    file_path: str
    path: Path
    frame: Frame | None                    # None: the camera comes from `cam` (landmark detection)
    cam: Camera | None = None
    rgb: np.ndarray | None = None          # uint8 [H, W, 3]
    alpha: np.ndarray | None = None
    mask_full: np.ndarray | None = None    # float [H, W] in [0, 1]
    extra: dict = field(default_factory=dict)

    def load(self, root: Path, mask_required: bool = False) -> "_Item":
        self.rgb, self.alpha = load_image(self.path, with_alpha=True)
        h, w = self.rgb.shape[:2]
        mpath = dataset(root, must_exist=False).mask_for(self.file_path)
        if mpath.is_file():
            self.mask_full = load_mask(mpath, (w, h))
        elif self.alpha is not None:
            self.mask_full = self.alpha.astype(np.float32) / 255.0
        elif mask_required:
            raise InputError(mpath, "not found; novel views are scored on the object's pixels only, so every view "
                                    "needs a mask (masks/<stem>.png, 255 = object)")
        return self

    def camera(self) -> Camera:
        """The frame's camera for the image as it is on disk."""
        cam = self.cam if self.cam is not None else Camera.from_frame(self.frame)
        if self.rgb is not None and (self.rgb.shape[1], self.rgb.shape[0]) != (cam.w, cam.h):
            cam = cam.scaled(self.rgb.shape[1], self.rgb.shape[0])
        return cam


def _training_items(data_dir: Path, loaded) -> tuple[list[_Item], dict]:
    """The training photos in latent-table order, each with its frame from DATA/transforms.json, and
    that file's other top-level keys (they tell whether fit-cameras wrote it)."""
    ds = dataset(data_dir)
    if not ds.transforms.is_file():
        raise InputError(ds.transforms, "not found; evaluation needs the dataset's cameras (the DATA folder the "
                                        "model was trained on)")
    tf = read_transforms(ds.transforms, ds.root)
    files = loaded.images()
    if not files:
        raise InputError(loaded.run.images, "not found or empty; cannot tell which photo each latent belongs to")
    k = int(loaded.latents.shape[0])
    if len(files) != k:
        raise InputError(loaded.run.images, f"lists {len(files)} images but the model has {k} latents")
    by_path = {f.file_path: f for f in tf.frames}
    missing = [f for f in files if f not in by_path or not (ds.root / f).is_file()]
    if missing:
        raise InputError(ds.root, f"does not hold {len(missing)} of the {k} images the model was trained on "
                                  f"(e.g. '{missing[0]}', named in {loaded.run.images}); was the model trained on a "
                                  "different dataset?")
    return [_Item(f, ds.root / f, by_path[f]) for f in files], dict(tf.extra)


def _folder_frames(folder: Path, what: str) -> tuple[Path, list[Frame]]:
    if not folder.is_dir():
        raise InputError(folder, f"{what} folder not found")
    tpath = folder / "transforms.json"
    if not tpath.is_file():
        raise InputError(tpath, f"not found; a {what} folder needs transforms.json with each photo's camera "
                                "(see docs/evaluation.md)")
    tf = read_transforms(tpath, folder)
    if not tf.frames:
        raise InputError(tpath, "lists no frames")
    for f in tf.frames:
        if not (folder / f.file_path).is_file():
            raise InputError(folder / f.file_path, f"not found (listed in {tpath})")
    return tpath, tf.frames


def _heldout_items(folder: Path, loaded) -> tuple[list[_Item], str]:
    """Held-out photos and where their cameras come from, in this order of preference:
    transforms.json (the frames whose role is 'query' when frames carry roles, else every frame);
    landmarks.json (each photo's camera fitted to the run's canonical keypoints); images/ alone (the
    landmarks are found by the face landmarker at evaluation time, as `lolnerf invert` does)."""
    if not folder.is_dir():
        raise InputError(folder, "held-out folder not found")
    if (folder / "transforms.json").is_file():
        _, frames = _folder_frames(folder, "held-out")
        if any("role" in f.extra for f in frames):
            frames = [f for f in frames if f.extra.get("role") == "query"]
        return [_Item(f.file_path, folder / f.file_path, f) for f in frames], "transforms.json"
    if (folder / "landmarks.json").is_file():
        return _items_from_landmarks(folder, loaded), "landmarks.json fitted to RUN/keypoints.json"
    if (folder / "images").is_dir():
        from .formats import list_images

        files = list_images(folder / "images")
        return [_Item(f"images/{p.name}", p, None) for p in files], "landmarks found in each photo"
    raise InputError(folder / "transforms.json", "not found, nor landmarks.json or images/; a held-out folder needs "
                                                 "photos in images/ and, best, their cameras in transforms.json")


def _items_from_landmarks(folder: Path, loaded) -> list[_Item]:
    from .camfit import fit_single_camera
    from .formats import read_keypoints, read_landmarks

    lpath = folder / "landmarks.json"
    lm = read_landmarks(lpath, folder)
    if not loaded.run.keypoints.is_file():
        raise InputError(loaded.run.keypoints, "not found; without canonical keypoints the held-out photos' cameras "
                                               f"cannot be fitted from {lpath} (give transforms.json instead)")
    kp = read_keypoints(loaded.run.keypoints)
    missing = [n for n in kp.names if n not in lm.names]
    if missing:
        raise InputError(lpath, f"has no landmark '{missing[0]}', which {loaded.run.keypoints} needs")
    order = [lm.names.index(n) for n in kp.names]
    items = []
    for fr in lm.frames:
        if not (folder / fr.file_path).is_file():
            raise InputError(folder / fr.file_path, f"not found (listed in {lpath})")
        frame = fit_single_camera(fr.points[order], kp.points, fr.w, fr.h, file_path=fr.file_path)
        items.append(_Item(fr.file_path, folder / fr.file_path, frame))
    if not items:
        raise InputError(lpath, "lists no photos")
    return items


@dataclass
class _NovelObject:
    name: str
    query: _Item
    views: list[_Item]
    scale: float = 1.0              # model units per unit of the folder's frame (1 unless aligned)
    alignment: dict | None = None   # how the query camera was placed ("query" frames), for metrics.json


def _novel_objects(folder: Path) -> list[_NovelObject]:
    """Group a multi-view folder's frames by 'object': one 'query' view and at least one other 'view'."""
    tpath, frames = _folder_frames(folder, "novel-view")
    groups: dict[str, dict[str, list[Frame]]] = {}
    for i, f in enumerate(frames):
        obj, role = f.extra.get("object"), f.extra.get("role")
        if not isinstance(obj, str) or not obj:
            raise InputError(tpath, f"frame {i} ('{f.file_path}') has no 'object' key naming the object it shows "
                                    "(see docs/evaluation.md)")
        if role not in ("query", "view"):
            raise InputError(tpath, f"frame {i} ('{f.file_path}') must have \"role\": \"query\" or \"view\", "
                                    f"got {role!r}")
        groups.setdefault(obj, {"query": [], "view": []})[role].append(f)
    out = []
    for name in sorted(groups):
        g = groups[name]
        if len(g["query"]) != 1:
            raise InputError(tpath, f"object '{name}' has {len(g['query'])} query views; exactly one is needed")
        if not g["view"]:
            raise InputError(tpath, f"object '{name}' has no other views (role 'view') to score")
        q = g["query"][0]
        views = sorted(g["view"], key=lambda f: f.file_path)
        for v in views:
            mpath = dataset(folder, must_exist=False).mask_for(v.file_path)
            if not mpath.is_file() and not _has_alpha(folder / v.file_path):
                raise InputError(mpath, "not found; novel views are scored on the object's pixels only, so every "
                                        "view needs a mask (masks/<stem>.png, 255 = object)")
        out.append(_NovelObject(name, _Item(q.file_path, folder / q.file_path, q),
                                [_Item(v.file_path, folder / v.file_path, v) for v in views]))
    return out


def _has_alpha(path: Path) -> bool:
    """Whether an image file has an alpha channel (reads only its header)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    except (OSError, ValueError):
        return False


def _keypoints(item: _Item, tpath: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(uv [N, 2], z [N], visible [N] bool) of a query frame, or None when it carries no keypoints.
    'keypoints_visible' is optional (all visible when absent)."""
    ex = item.frame.extra if item.frame is not None else {}
    uv, z, vis = ex.get("keypoints_uv"), ex.get("keypoints_z"), ex.get("keypoints_visible")
    if uv is None and z is None:
        return None
    where = f"frame '{item.file_path}'"
    try:
        uv_a = np.asarray(uv, dtype=np.float64)
        z_a = np.asarray(z, dtype=np.float64)
        vis_a = np.ones(len(z_a), dtype=bool) if vis is None else np.asarray(vis, dtype=bool)
    except (TypeError, ValueError):
        raise InputError(tpath, f"{where} 'keypoints_uv'/'keypoints_z' must be arrays of numbers") from None
    if uv_a.ndim != 2 or uv_a.shape[1] != 2 or z_a.shape != (uv_a.shape[0],) or uv_a.shape[0] < 2:
        raise InputError(tpath, f"{where} needs 'keypoints_uv' [[u, v], ...] and 'keypoints_z' [z, ...] of the "
                                "same length")
    if vis_a.shape != z_a.shape:
        raise InputError(tpath, f"{where} 'keypoints_visible' must have one entry per keypoint")
    if not (np.isfinite(uv_a).all() and np.isfinite(z_a).all()):
        raise InputError(tpath, f"{where} keypoints contain NaN or infinite values")
    return uv_a, z_a, vis_a


def _true_depth(folder: Path, item: _Item) -> np.ndarray | None:
    """folder/depth/<stem>.npy (float32 [H, W], NaN on background) at the image's size, or None."""
    path = folder / "depth" / (Path(item.file_path).stem + ".npy")
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(path, f"is not a readable .npy depth map ({str(exc).splitlines()[0][:80]})") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise InputError(path, f"depth map must be a 2-D float array, got {arr.dtype} {list(arr.shape)}")
    h, w = item.rgb.shape[:2]
    if arr.shape != (h, w):
        raise InputError(path, f"depth map is {arr.shape[1]}x{arr.shape[0]} but its image is {w}x{h}")
    return arr.astype(np.float64)


# ----------------------------------------------------------------------------------------- camera frames
FRAMES_MODES = ("auto", "as-given", "query")


def cameras_fitted(transforms_extra: dict) -> bool:
    """Whether a transforms.json (its top-level keys other than frames and intrinsics) was written by
    `lolnerf fit-cameras`, i.e. its cameras live in the fitted object frame."""
    from .camfit import CAMERA_SOURCE_FITTED, CAMERA_SOURCE_KEY

    return transforms_extra.get(CAMERA_SOURCE_KEY) == CAMERA_SOURCE_FITTED


def frames_mode(option: str, training_fitted: bool, folder_fitted: bool) -> str:
    """The frames actually used for a folder: "query" (align to the model through the query view) or
    "as-given". auto: "query" exactly when the training cameras were fitted and the folder's are not."""
    if option not in FRAMES_MODES:
        raise InputError("--frames", f"must be one of {', '.join(FRAMES_MODES)}, got {option!r}")
    if option == "auto":
        return "query" if training_fitted and not folder_fitted else "as-given"
    return option


def relative_scale(c2w_q_model: np.ndarray, c2w_q_true: np.ndarray, centre_model: np.ndarray | None = None,
                   centre_true: np.ndarray | None = None) -> float:
    """s = |o_q_model - centre_model| / |o_q_true - centre_true|: model units per unit of the folder's frame,
    from the query camera's distance to the object centre in both frames (default: both origins)."""
    cm = np.zeros(3) if centre_model is None else np.asarray(centre_model, np.float64)
    ct = np.zeros(3) if centre_true is None else np.asarray(centre_true, np.float64)
    d_model = float(np.linalg.norm(np.asarray(c2w_q_model, np.float64)[:3, 3] - cm))
    d_true = float(np.linalg.norm(np.asarray(c2w_q_true, np.float64)[:3, 3] - ct))
    if not (math.isfinite(d_model) and math.isfinite(d_true) and d_model > 1e-9 and d_true > 1e-9):
        raise ValueError(f"the query camera sits at the object centre (distances {d_model:g} model, {d_true:g} "
                         "true); the scale between the frames is undefined")
    return d_model / d_true


def align_views(c2w_q_model: np.ndarray, c2w_q_true: np.ndarray, c2w_views_true: np.ndarray,
                scale: float) -> np.ndarray:
    """Other views' cameras in the model frame from their calibrated poses relative to the query:
    c2w_v_model = c2w_q_model @ S(scale) @ inv(c2w_q_true) @ c2w_v_true, where S scales the relative
    pose's translation only (rotations are unchanged by a change of frame, distances scale).

    c2w_q_model, c2w_q_true [4, 4]; c2w_views_true [V, 4, 4] -> [V, 4, 4]. Exact whenever the two frames
    differ by a similarity of that scale and c2w_q_model is the query's true camera in the model frame."""
    views = np.asarray(c2w_views_true, np.float64)
    rel = np.linalg.inv(np.asarray(c2w_q_true, np.float64))[None] @ views          # query camera <- view camera
    rel[:, :3, 3] *= scale
    out = np.asarray(c2w_q_model, np.float64)[None] @ rel
    out[:, 3] = [0.0, 0.0, 0.0, 1.0]
    return out


def fit_query_camera(points2d: np.ndarray, keypoints3d: np.ndarray, frame: Frame) -> tuple[Camera, float, bool]:
    """The query view's camera in the model frame: its pose fitted so that the canonical keypoints
    keypoints3d [N, 3] project onto its landmarks points2d [N, 2] (pixels of a frame.w x frame.h image),
    with the frame's own calibrated intrinsics (focal, principal point) held fixed.

    Returns (camera, landmark RMSE in pixels, flagged: the fit is poor or a keypoint is behind it)."""
    from .cameras import project
    from .camfit import fit_single_camera

    pts = np.asarray(points2d, np.float64)
    kp = np.asarray(keypoints3d, np.float64)
    # the single-camera solver has its principal point at the image centre and square pixels: move the
    # landmarks into that camera (an exact change of intrinsics, the pose is unchanged)
    moved = np.stack([frame.w / 2 + (pts[:, 0] - frame.cx),
                      frame.h / 2 + (pts[:, 1] - frame.cy) * (frame.fl_x / frame.fl_y)], axis=1)
    fit = fit_single_camera(moved, kp, frame.w, frame.h, focal=frame.fl_x, file_path=frame.file_path)
    cam = Camera(np.asarray(fit.c2w, np.float64), frame.fl_x, frame.fl_y, frame.cx, frame.cy, frame.w, frame.h)
    uv, z = project(kp, cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy)
    rmse = float(np.sqrt(((uv - pts) ** 2).sum(-1).mean()))
    return cam, rmse, bool(fit.extra.get("flagged", False)) or bool((z <= 0).any())


def _with_intrinsics(c2w: np.ndarray, frame: Frame) -> Camera:
    return Camera(np.asarray(c2w, np.float64), frame.fl_x, frame.fl_y, frame.cx, frame.cy, frame.w, frame.h)


# ----------------------------------------------------------------------------------------- the evaluator
class Evaluator:
    def __init__(self, data_dir: str | Path, run_dir: str | Path, options: EvalOptions | None = None,
                 progress: Progress | None = None):
        from .device import pick_device, resolve_precision
        from .model import load_model

        self.opt = options or EvalOptions()
        if self.opt.invert_steps < 1:
            raise InputError("--invert-steps", "must be at least 1")
        frames_mode(self.opt.frames, False, False)            # a bad --frames fails before the model loads
        self.progress = or_silent(progress)
        self.device = pick_device(self.opt.device)
        self.precision = resolve_precision(self.opt.precision, self.device)
        self.data_dir = Path(data_dir)
        self.loaded = load_model(run_dir, self.device)
        self.cfg = self.loaded.cfg
        self.res = int(self.cfg.train.resolution)
        self.train_items, train_extra = _training_items(self.data_dir, self.loaded)
        self.training_fitted = cameras_fitted(train_extra)    # DATA/transforms.json written by fit-cameras
        self.scorer = _Scorer(self.res)
        self._frames: dict[str, str] = {}                     # folder -> "query" | "as-given"
        self._aligned: dict[tuple[str, str], tuple[Camera, dict]] = {}
        self._landmarks: dict[str, dict[str, tuple[np.ndarray, int, int]]] = {}
        self._canonical = None
        self._inversions: dict[tuple, torch.Tensor] = {}
        self._depths: dict[tuple, np.ndarray] = {}     # depth maps of held-out renders, [res, res] float32
        self.figure_rows: list[dict] = []

    # -------------------------------------------------------------------------- camera frames
    def frames_for(self, folder: Path) -> str:
        """"query" or "as-given" for the cameras in folder/transforms.json (see frames_mode)."""
        key = str(folder.resolve())
        if key not in self._frames:
            tpath = folder / "transforms.json"
            fitted = cameras_fitted(read_transforms(tpath, folder).extra) if tpath.is_file() else False
            self._frames[key] = frames_mode(self.opt.frames, self.training_fitted, fitted)
        return self._frames[key]

    def canonical_keypoints(self):
        """RUN/keypoints.json (formats.Keypoints): the model frame's keypoints the query views are fitted to."""
        from .formats import read_keypoints

        if self._canonical is None:
            path = self.loaded.run.keypoints
            if not path.is_file():
                raise InputError(path, "not found; placing the query views in the model's object frame "
                                       "(--frames query, or auto with fitted training cameras) needs the model's "
                                       "canonical keypoints (use --frames as-given when the folder's cameras "
                                       "already are in the model's frame)")
            self._canonical = read_keypoints(path)
        return self._canonical

    def folder_landmarks(self, folder: Path) -> dict[str, tuple[np.ndarray, int, int]]:
        """file_path -> (landmarks [N, 2] in RUN/keypoints.json order, w, h of the image they are in
        pixels of) from folder/landmarks.json; empty when the folder has none."""
        from .formats import read_landmarks

        key = str(folder.resolve())
        if key not in self._landmarks:
            lpath = folder / "landmarks.json"
            found: dict[str, tuple[np.ndarray, int, int]] = {}
            if lpath.is_file():
                kp = self.canonical_keypoints()
                lm = read_landmarks(lpath, folder)
                missing = [n for n in kp.names if n not in lm.names]
                if missing:
                    raise InputError(lpath, f"has no landmark '{missing[0]}', which {self.loaded.run.keypoints} "
                                            "needs to place the query views")
                order = [lm.names.index(n) for n in kp.names]
                for fr in lm.frames:
                    found[fr.file_path] = (np.asarray(fr.points, np.float64)[order], fr.w, fr.h)
            self._landmarks[key] = found
        return self._landmarks[key]

    def check_frames(self, folder: Path) -> str:
        """Validate what aligning a folder needs (before any rendering); returns its frames mode."""
        mode = self.frames_for(folder)
        if mode == "query":
            self.canonical_keypoints()
            self.folder_landmarks(folder)
        return mode

    def query_camera(self, folder: Path, item: _Item) -> tuple[Camera, dict]:
        """A query view's camera in the model frame (item loaded, item.frame its calibrated frame) and how
        it was found. Landmarks from folder/landmarks.json, else the frame's keypoints_uv (when there are
        as many as canonical keypoints, same order), else found in the photo by the face landmarker."""
        key = (str(folder.resolve()), item.file_path)
        if key in self._aligned:
            return self._aligned[key]
        kp = self.canonical_keypoints()
        frame = item.frame
        img_h, img_w = item.rgb.shape[:2]
        n = len(kp.points)
        try:
            uv = np.asarray(frame.extra.get("keypoints_uv"), np.float64)
        except (TypeError, ValueError):
            uv = None                                          # not a usable [N, 2] list: not a landmark source
        lms = self.folder_landmarks(folder)
        rmse, flagged = None, False
        if item.file_path in lms:
            pts, lw, lh = lms[item.file_path]
            source = "landmarks.json"
            pts = pts * np.array([frame.w / lw, frame.h / lh])
        elif uv is not None and uv.shape == (n, 2) and np.isfinite(uv).all():
            source = "keypoints_uv"
            pts = uv * np.array([frame.w / img_w, frame.h / img_h])
        else:
            from .invert import camera_from_landmarks

            source = "landmark detector"
            det, _ = camera_from_landmarks(self.loaded, item.rgb, item.path, focal=frame.fl_x * img_w / frame.w,
                                           hint=EVAL_LANDMARKS_HINT)
            pts = None
            cam = _with_intrinsics(det.c2w, frame)
        if pts is not None:
            cam, rmse, flagged = fit_query_camera(pts, kp.points, frame)
        try:
            scale = relative_scale(cam.c2w, frame.c2w)
        except ValueError as exc:
            raise InputError(folder / "transforms.json", f"frame '{item.file_path}': {exc}") from None
        info = {"query": item.file_path, "landmarks": source,
                "landmark_rmse_px": None if rmse is None else round(rmse, 4), "flagged": flagged,
                "scale": scale}
        self._aligned[key] = (cam, info)
        return cam, info

    def align_object(self, folder: Path, obj: _NovelObject) -> None:
        """Put an object's query and view cameras in the model frame ("query" frames); views and query
        loaded first."""
        cam, info = self.query_camera(folder, obj.query)
        obj.query.cam = cam
        obj.scale = info["scale"]
        obj.alignment = {"object": obj.name, **info}
        views = align_views(cam.c2w, obj.query.frame.c2w, np.stack([v.frame.c2w for v in obj.views]), obj.scale)
        for v, c2w in zip(obj.views, views):
            v.cam = _with_intrinsics(c2w, v.frame)

    # -------------------------------------------------------------------------- rendering
    def render(self, z: torch.Tensor, cam: Camera, remember_depth: bool = False) -> dict[str, np.ndarray]:
        """Render latent z [D] through cam at the training resolution. remember_depth: keep its depth map,
        so the depth section reuses the held-out section's render of the same query view and latent."""
        from .render import render_image

        cam = cam.scaled(self.res, self.res)
        out = render_image(self.loaded.model, z.to(self.device), cam, self.cfg.render, self.precision)
        if remember_depth:
            self._depths[self._key(z, cam)] = out["depth"]
        return out

    def render_depth(self, z: torch.Tensor, cam: Camera) -> np.ndarray:
        """Depth [H, W] of latent z through cam at the training resolution (NaN off the surface)."""
        hit = self._depths.get(self._key(z, cam.scaled(self.res, self.res)))
        return hit if hit is not None else self.render(z, cam)["depth"]

    @staticmethod
    def _key(z: torch.Tensor, cam: Camera) -> tuple:
        return (z.detach().float().cpu().numpy().tobytes(), np.asarray(cam.c2w, np.float64).tobytes(),
                cam.fx, cam.fy, cam.cx, cam.cy, cam.w, cam.h)

    def ground_truth(self, rgb: np.ndarray) -> np.ndarray:
        return resize(rgb, self.res, self.res).astype(np.float32) / 255.0

    def invert(self, items: list[_Item], what: str) -> torch.Tensor:
        """Latents [N, D] fitted to the photos (their own cameras and masks). Identical requests are
        answered once, so the held-out and novel sections share the query views' inversions."""
        from .invert import invert_images

        cams = [it.camera() for it in items]
        key = tuple((str(it.path.resolve()), c.c2w.tobytes(), c.fx, c.fy, c.cx, c.cy) for it, c in zip(items, cams))
        if key not in self._inversions:
            torch.manual_seed(self.opt.seed)
            result = invert_images(self.loaded, [it.rgb for it in items], cams, [it.mask_full for it in items],
                                   steps=self.opt.invert_steps, resolution=self.res, progress=self.progress,
                                   seed=self.opt.seed, measure_init=False)
            lat = result.latents if isinstance(result.latents, torch.Tensor) else torch.as_tensor(result.latents)
            if lat.shape[0] != len(items):
                raise RuntimeError(f"inversion returned {lat.shape[0]} latents for {len(items)} {what} images")
            self._inversions[key] = lat.detach().float().to(self.device)
        return self._inversions[key]

    # -------------------------------------------------------------------------- sections
    def train_section(self) -> dict:
        picks = _pick_subset(len(self.train_items), self.opt.subset, self.opt.seed)
        rows = []
        with self.progress.task("eval: training images", total=len(picks)) as task:
            for k in picks:
                it = self.train_items[k]
                it.load(self.data_dir)
                gt = self.ground_truth(it.rgb)
                mask = _mask_for(self.data_dir, it.file_path, self.res, it.alpha)
                out = self.render(self.loaded.latents[k], it.camera())
                row = {"index": k, "file_path": it.file_path, **self.scorer.full(out["rgb"], gt, mask)}
                rows.append(row)
                if len([r for r in self.figure_rows if r["kind"] == "train"]) < self.opt.figure_rows:
                    caption = (f"train {Path(it.file_path).name}: photo | reconstruction | |error| | depth   "
                               f"PSNR {row['psnr']:.2f}")
                    self.figure_rows.append({"kind": "train", "caption": caption,
                                             "tiles": [gt, out["rgb"], np.abs(out["rgb"] - gt).mean(-1),
                                                       out["depth"]]})
                it.rgb = it.alpha = it.mask_full = None
                task.advance(1, psnr=row["psnr"])
        return self._section(rows, ("psnr", "ssim", "lpips", "psnr_masked"), {"images": rows})

    def heldout_section(self, folder: Path) -> dict:
        items, camera_source = _heldout_items(folder, self.loaded)
        if not items:
            raise InputError(folder / "transforms.json", "has no held-out photos (no frame with role 'query')")
        mode = self.frames_for(folder) if camera_source == "transforms.json" else None
        if mode == "query":
            camera_source = "transforms.json intrinsics, poses fitted to RUN/keypoints.json (frames: query)"
        picks = _pick_subset(len(items), self.opt.subset, self.opt.seed + 1)
        items = [items[i] for i in picks]
        alignment = {}
        for it in items:
            it.load(folder)
            if it.frame is None and it.cam is None:
                from .invert import camera_from_landmarks

                it.cam, _ = camera_from_landmarks(self.loaded, it.rgb, it.path, hint=EVAL_LANDMARKS_HINT)
            elif mode == "query":
                it.cam, alignment[it.file_path] = self.query_camera(folder, it)
        lat = self.invert(items, "held-out")
        rows = []
        with self.progress.task("eval: held-out images", total=len(items)) as task:
            for it, z in zip(items, lat):
                gt = self.ground_truth(it.rgb)
                mask = _mask_for(folder, it.file_path, self.res, it.alpha)
                out = self.render(z, it.camera(), remember_depth=True)
                row = {"file_path": it.file_path, **self.scorer.full(out["rgb"], gt, mask)}
                if it.file_path in alignment:
                    row["alignment"] = alignment[it.file_path]
                rows.append(row)
                task.advance(1, psnr=row["psnr"])
        return self._section(rows, ("psnr", "ssim", "lpips", "psnr_masked"),
                             {"folder": str(folder), "cameras": camera_source, "frames": mode, "images": rows})

    def novel_and_depth_sections(self, folder: Path) -> tuple[dict, dict | None]:
        objects = _novel_objects(folder)
        tpath = folder / "transforms.json"
        for obj in objects:                      # read everything first: a bad file fails before any work
            obj.query.load(folder)
            for v in obj.views:
                v.load(folder, mask_required=True)
        mode = self.frames_for(folder)
        if mode == "query":                      # cameras into the model's object frame, via the query view
            for obj in objects:
                self.align_object(folder, obj)
        lat = self.invert([o.query for o in objects], "query")
        rows, depth_rows = [], []
        n_views = sum(len(o.views) for o in objects)
        with self.progress.task("eval: novel views", total=n_views) as task:
            for obj, z in zip(objects, lat):
                first = None
                flat = self.ground_truth(obj.query.rgb)   # baseline: the query photo as a flat picture
                for v in obj.views:
                    gt = self.ground_truth(v.rgb)
                    mask = _resize_mask(v.mask_full, self.res)
                    out = self.render(z, v.camera())
                    row = {"object": obj.name, "file_path": v.file_path, **self.scorer.masked(out["rgb"], gt, mask)}
                    on = mask >= MASK_THRESHOLD
                    row["flat_psnr"] = _as_float(self.scorer.m.psnr(flat, gt, on)) if on.any() else None
                    rows.append(row)
                    if first is None:
                        first = (v, gt, out, row)
                    task.advance(1, psnr=row["psnr"] if row["psnr"] is not None else float("nan"))
                drow = self._depth_row(folder, tpath, obj, z)
                if drow is not None:
                    depth_rows.append(drow)
                if len([r for r in self.figure_rows if r["kind"] == "novel"]) < self.opt.figure_rows:
                    v, gt, out, row = first
                    psnr = "n/a" if row["psnr"] is None else f"{row['psnr']:.2f}"
                    view = Path(v.file_path).stem
                    caption = f"novel {obj.name}: query | prediction | {view} | depth   masked PSNR {psnr}"
                    self.figure_rows.append({"kind": "novel", "caption": caption,
                                             "tiles": [self.ground_truth(obj.query.rgb), out["rgb"], gt, out["depth"]]})
        extra = {"folder": str(folder), "objects": len(objects), "masked": True, "frames": mode,
                 "flat_picture_psnr": _summary(rows, "flat_psnr")}
        if mode == "query":
            extra["alignment"] = [o.alignment for o in objects]
        novel = self._section(rows, ("psnr", "ssim", "lpips"), {**extra, "views": rows})
        depth = self._depth_section(depth_rows) if depth_rows else None
        return novel, depth

    def _depth_row(self, folder: Path, tpath: Path, obj: _NovelObject, z: torch.Tensor) -> dict | None:
        from .metrics import pearson

        q = obj.query
        kp = _keypoints(q, tpath)
        true_depth = _true_depth(folder, q)
        if kp is None and true_depth is None:
            return None
        # [res, res], NaN off the surface; in the folder's units (model units / s when the frames differ)
        pred = self.render_depth(z, q.camera()).astype(np.float64) / obj.scale
        row: dict[str, Any] = {"object": obj.name, "file_path": q.file_path, "depth_scale": obj.scale}
        if kp is not None:
            uv, z_true, visible = kp
            h, w = q.rgb.shape[:2]
            uv_r = uv * np.array([self.res / w, self.res / h])
            z_pred = sample_depth(pred, uv_r)
            ok = np.isfinite(z_pred) & visible           # hidden keypoints have no surface to compare
            row["keypoints_valid"] = int(ok.sum())
            row["keypoints_pred_z"] = [None if not math.isfinite(v) else float(v) for v in z_pred]
            r = None
            if ok.sum() >= MIN_KEYPOINTS_FOR_PEARSON and np.ptp(z_true[ok]) > 0 and np.ptp(z_pred[ok]) > 0:
                r = _as_float(pearson(z_pred[ok], z_true[ok]))
            row["keypoint_pearson"] = r
        if true_depth is not None:
            t = _nearest_resample(true_depth, self.res)
            has_true = np.isfinite(t)
            ok = has_true & np.isfinite(pred)
            row["dense_coverage"] = float(ok.sum() / max(has_true.sum(), 1))
            if ok.sum() >= 2:
                p_v, t_v = pred[ok], t[ok]
                row["dense_abs_median"] = float(np.median(np.abs(p_v - t_v)))
                row["dense_abs_median_centered"] = float(np.median(np.abs((p_v - p_v.mean()) - (t_v - t_v.mean()))))
                row["dense_pearson"] = _as_float(pearson(p_v, t_v)) if np.ptp(p_v) > 0 and np.ptp(t_v) > 0 else None
            else:
                row.update(dense_abs_median=None, dense_abs_median_centered=None, dense_pearson=None)
        return row

    def _depth_section(self, rows: list[dict]) -> dict:
        out: dict[str, Any] = {"objects": len(rows)}
        if any("keypoint_pearson" in r for r in rows):
            out["keypoint_pearson"] = _summary(rows, "keypoint_pearson")
            out["keypoint_undefined"] = sum(1 for r in rows
                                            if "keypoint_pearson" in r and r["keypoint_pearson"] is None)
        if any("dense_coverage" in r for r in rows):
            out["dense"] = {k: _summary(rows, "dense_" + k) for k in ("abs_median", "abs_median_centered", "pearson",
                                                                      "coverage")}
        out["per_object"] = rows
        return out

    def _section(self, rows: list[dict], keys: tuple[str, ...], extra: dict) -> dict:
        sec: dict[str, Any] = {"count": len(rows)}
        for k in keys:
            sec[k] = _summary(rows, k)
        sec.update(extra)
        return sec


# ----------------------------------------------------------------------------------------- the figure
def _colour_tile(tile: np.ndarray, kind: str) -> np.ndarray:
    """float [H, W, 3] images pass through; [H, W] error / depth maps are colour-mapped (NaN -> black)."""
    if tile.ndim == 3:
        return np.clip(tile, 0, 1)
    from matplotlib import colormaps

    finite = np.isfinite(tile)
    if kind == "error":
        norm = np.clip(tile / 0.25, 0, 1)          # 0.25 mean absolute error saturates
        cmap = colormaps["magma"]
    else:
        norm = np.zeros_like(tile)
        if finite.any():
            lo, hi = np.nanmin(tile), np.nanmax(tile)
            norm = np.where(finite, (tile - lo) / max(hi - lo, 1e-9), 0)
            norm = 1.0 - norm                       # near = bright
        cmap = colormaps["viridis"]
    rgb = cmap(np.nan_to_num(norm))[..., :3]
    return np.where(finite[..., None], rgb, 0.0)


def figure_size(n_rows: int, res: int) -> tuple[int, int]:
    """(width, height) in pixels of the figure for n_rows rows of tiles rendered at res."""
    tile = max(res, FIGURE_TILE)
    width = FIGURE_COLUMNS * tile + (FIGURE_COLUMNS + 1) * FIGURE_PAD
    height = n_rows * (FIGURE_CAPTION + tile + FIGURE_PAD) + FIGURE_PAD
    return width, height


def write_figure(path: Path, rows: list[dict], res: int) -> tuple[int, int]:
    """rows of tiles (each row: caption + 4 tiles) -> one PNG. Returns its (width, height)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    from .formats import atomic_write_bytes

    tile = max(res, FIGURE_TILE)
    width, height = figure_size(len(rows), res)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    y = FIGURE_PAD
    for row in rows:
        draw.text((FIGURE_PAD, y + 2), row["caption"], fill=(0, 0, 0), font=font)
        y += FIGURE_CAPTION
        kinds = ["image", "image", "error" if row["kind"] == "train" else "image", "depth"]
        for c, (t, kind) in enumerate(zip(row["tiles"], kinds)):
            arr = (_colour_tile(np.asarray(t, dtype=np.float64), kind) * 255 + 0.5).astype(np.uint8)
            img = Image.fromarray(arr).resize((tile, tile), Image.NEAREST)
            canvas.paste(img, (FIGURE_PAD + c * (tile + FIGURE_PAD), y))
        y += tile + FIGURE_PAD
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return width, height


# ----------------------------------------------------------------------------------------- entry point
def figure_path_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + FIGURE_SUFFIX)


def evaluate(data_dir: str | Path, run_dir: str | Path, out: str | Path, novel_dir: str | Path | None = None,
             heldout_dir: str | Path | None = None, options: EvalOptions | None = None,
             progress: Progress | None = None, figure: bool = True) -> EvalResult:
    """Measure a trained model; write metrics.json (and <stem>_figure.png beside it).

    heldout_dir defaults to DATA/holdout when that folder exists (its query views are the held-out
    photos), novel_dir to DATA/holdout when it has a transforms.json (each object's other views are
    the novel views)."""
    opt = options or EvalOptions()
    data_dir, run_dir, out = Path(data_dir), Path(run_dir), Path(out)
    if out.exists() and out.is_dir():
        raise InputError(out, "is a folder; --out names the metrics .json file to write")
    default_holdout = data_dir / "holdout"
    has_views = (default_holdout / "transforms.json").is_file()     # a multi-view folder, not loose photos
    novel = Path(novel_dir) if novel_dir is not None else (default_holdout if has_views else None)
    heldout = Path(heldout_dir) if heldout_dir is not None else (default_holdout if default_holdout.is_dir() else None)

    ev = Evaluator(data_dir, run_dir, opt, progress)
    # layouts are checked before any rendering: a wrong folder fails in a second, not after an hour
    frames = {"option": opt.frames, "training_cameras": "fit-cameras" if ev.training_fitted else "given",
              "novel": None, "heldout": None}
    if novel is not None:
        tpath = novel / "transforms.json"
        for obj in _novel_objects(novel):
            _keypoints(obj.query, tpath)
        frames["novel"] = ev.check_frames(novel)
    if heldout is not None:
        _, source = _heldout_items(heldout, ev.loaded)
        if source == "transforms.json":
            frames["heldout"] = ev.check_frames(heldout)

    loaded = ev.loaded
    metrics: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "model": str(run_dir.resolve()),
        "dataset": str(data_dir.resolve()),
        "model_hash": loaded.model_hash,
        "preset": loaded.cfg.preset,
        "step": int(loaded.meta["step"]) if str(loaded.meta.get("step", "")).isdigit() else None,
        "latents": int(loaded.latents.shape[0]),
        "seed": opt.seed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lolnerf_version": __version__,
        "settings": {"subset": opt.subset, "invert_steps": opt.invert_steps, "seed": opt.seed,
                     "resolution": ev.res, "precision": ev.precision, "device": str(ev.device),
                     "novel": None if novel is None else str(novel.resolve()),
                     "heldout": None if heldout is None else str(heldout.resolve()),
                     "mask_threshold": MASK_THRESHOLD, "frames": frames, "render": asdict(loaded.cfg.render)},
        "lpips": ev.scorer.lpips_weights,     # where the weights came from, or null (see lpips_unavailable)
    }
    if ev.scorer.lpips_reason:
        metrics["lpips_unavailable"] = ev.scorer.lpips_reason
    metrics["train"] = ev.train_section()
    if heldout is not None:
        metrics["heldout"] = ev.heldout_section(heldout)
    if novel is not None:
        metrics["novel"], depth = ev.novel_and_depth_sections(novel)
        if depth is not None:
            metrics["depth"] = depth
        if opt.upsample >= 2:
            from .upsampled import upsampled_section

            fig = Path(str(figure_path_for(out)).replace(FIGURE_SUFFIX, f"_upsampled{FIGURE_SUFFIX}")) if figure else None
            up = upsampled_section(ev, novel, opt.upsample, fig)
            metrics["novel_upsampled"] = up if up is not None else {
                "unavailable": "exact ground truth at another resolution exists for lolnerf synth datasets only"}

    from .encoder import has_encoder

    if has_encoder(run_dir) and (heldout is not None or novel is not None):
        from .encoder_eval import encoder_section

        metrics["encoder"] = encoder_section(ev, heldout, novel, opt.encoder_steps)

    fig_path = None
    if figure:
        fig_path = figure_path_for(out)
        rows = [r for r in ev.figure_rows if r["kind"] == "novel"] + [r for r in ev.figure_rows if r["kind"] == "train"]
        w, h = write_figure(fig_path, rows, ev.res)
        metrics["figure"] = {"file": fig_path.name, "width": w, "height": h, "rows": [r["caption"] for r in rows],
                             "columns": "query/photo | prediction | ground truth (novel) or |error| (train) | "
                                        "predicted depth"}
    metrics = _finite_or_none(metrics)
    write_json(out, metrics)
    return EvalResult(metrics, out, fig_path, ev.scorer.lpips_reason)
