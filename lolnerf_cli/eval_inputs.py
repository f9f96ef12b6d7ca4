"""The inputs of `lolnerf eval`: the training photos in latent-table order, a held-out folder's photos
and where their cameras come from, a multi-view folder's objects (one query view, other views), and
each photo's mask, keypoints and true depth. Every layout problem is an InputError raised here, before
any rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .cameras import Camera
from .errors import InputError
from .formats import Frame, read_transforms, with_run_cameras
from .folders import dataset
from .images import load_image, object_mask

if TYPE_CHECKING:
    from .model import LoadedModel

def mask_for(root: Path, file_path: str, size: int, alpha: np.ndarray | None) -> np.ndarray | None:
    """The object mask at size x size, float [H, W] in [0, 1], the way training reads it:
    masks/<stem>.png, else the photo's alpha channel, else None."""
    return object_mask(dataset(root, must_exist=False).mask_for(file_path), alpha, (size, size))


@dataclass
class Item:
    """One photo with its camera (full size), optional mask (full size) and bookkeeping."""

    file_path: str
    path: Path
    frame: Frame | None                    # None: the camera comes from `cam` (landmark detection)
    cam: Camera | None = None
    rgb: np.ndarray | None = None          # uint8 [H, W, 3]
    alpha: np.ndarray | None = None
    mask_full: np.ndarray | None = None    # float [H, W] in [0, 1]
    extra: dict = field(default_factory=dict)

    def load(self, root: Path, mask_required: bool = False) -> "Item":
        self.rgb, self.alpha = load_image(self.path, with_alpha=True)
        h, w = self.rgb.shape[:2]
        mpath = dataset(root, must_exist=False).mask_for(self.file_path)
        self.mask_full = object_mask(mpath, self.alpha, (w, h))
        if self.mask_full is None and mask_required:
            raise InputError(mpath, "not found; novel views are scored on the object's pixels only, so every view "
                                    "needs a mask (masks/<stem>.png, 255 = object)")
        return self

    def camera(self) -> Camera:
        """The frame's camera for the image as it is on disk."""
        cam = self.cam if self.cam is not None else Camera.from_frame(self.frame)
        if self.rgb is not None and (self.rgb.shape[1], self.rgb.shape[0]) != (cam.w, cam.h):
            cam = cam.scaled(self.rgb.shape[1], self.rgb.shape[0])
        return cam


def training_items(data_dir: Path, loaded: LoadedModel) -> tuple[list[Item], dict]:
    """The training photos in latent-table order, each with its frame from DATA/transforms.json (its pose
    from RUN/cameras.json when training refined the cameras), and that file's other top-level keys (they
    tell whether fit-cameras wrote it)."""
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
    frames, _ = with_run_cameras([by_path[f] for f in files], loaded.run.root)   # refined while training, if so
    return [Item(f, ds.root / f, fr) for f, fr in zip(files, frames)], dict(tf.extra)


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


def heldout_items(folder: Path, loaded: LoadedModel) -> tuple[list[Item], str]:
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
        return [Item(f.file_path, folder / f.file_path, f) for f in frames], "transforms.json"
    if (folder / "landmarks.json").is_file():
        return _items_from_landmarks(folder, loaded), "landmarks.json fitted to RUN/keypoints.json"
    if (folder / "images").is_dir():
        from .folders import list_images

        files = list_images(folder / "images")
        return [Item(f"images/{p.name}", p, None) for p in files], "landmarks found in each photo"
    raise InputError(folder / "transforms.json", "not found, nor landmarks.json or images/; a held-out folder needs "
                                                 "photos in images/ and, best, their cameras in transforms.json")


def _items_from_landmarks(folder: Path, loaded: LoadedModel) -> list[Item]:
    from .camfit import fit_single_camera
    from .formats import name_order, read_keypoints, read_landmarks

    lpath = folder / "landmarks.json"
    lm = read_landmarks(lpath, folder)
    if not loaded.run.keypoints.is_file():
        raise InputError(loaded.run.keypoints, "not found; without canonical keypoints the held-out photos' cameras "
                                               f"cannot be fitted from {lpath} (give transforms.json instead)")
    kp = read_keypoints(loaded.run.keypoints)
    order = name_order(kp.names, lm.names, lpath, str(loaded.run.keypoints))
    items = []
    for fr in lm.frames:
        if not (folder / fr.file_path).is_file():
            raise InputError(folder / fr.file_path, f"not found (listed in {lpath})")
        frame = fit_single_camera(fr.points[order], kp.points, fr.w, fr.h, file_path=fr.file_path)
        items.append(Item(fr.file_path, folder / fr.file_path, frame))
    if not items:
        raise InputError(lpath, "lists no photos")
    return items


@dataclass
class NovelObject:
    name: str
    query: Item
    views: list[Item]
    scale: float = 1.0              # model units per unit of the folder's frame (1 unless aligned)
    alignment: dict | None = None   # how the query camera was placed ("query" frames), for metrics.json


def novel_objects(folder: Path) -> list[NovelObject]:
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
        out.append(NovelObject(name, Item(q.file_path, folder / q.file_path, q),
                                [Item(v.file_path, folder / v.file_path, v) for v in views]))
    return out


def _has_alpha(path: Path) -> bool:
    """Whether an image file has an alpha channel (reads only its header)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    except (OSError, ValueError):
        return False


def query_keypoints(item: Item, tpath: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
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


def true_depth(folder: Path, item: Item) -> np.ndarray | None:
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
