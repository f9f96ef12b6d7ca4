"""The training set: frames with cameras, and a uint8 memory-mapped pixel cache built once.

The cache lives in RUN/cache/: `pixels.u8` [K, H, W, 3], `masks.u8` [K, H, W] and `cache.json`
(resolution, file list hash, which frames have masks). Pixels are read by fancy indexing of the
memory map, so 70,000 photos at 256 px train on a 24 GB machine: only the pages that a step touches
are read, and the OS keeps or drops them as memory allows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cameras import Camera
from .errors import InputError
from .formats import Frame, read_json, read_transforms, write_json
from .folders import dataset
from .images import load_image, object_mask, resize, to_uint8
from .progress import Progress, or_silent


@dataclass
class TrainFrames:
    root: Path
    frames: list[Frame]            # in latent-table order
    excluded: list[dict]           # {"file_path", "reason"} left out (flagged, unreadable, ...)


def select_frames(data_dir: str | Path, include_flagged: bool = False) -> TrainFrames:
    """Frames of DATA/transforms.json that exist on disk; flagged frames are left out by default."""
    ds = dataset(data_dir)
    if not ds.transforms.is_file():
        hint = ("run `lolnerf fit-cameras DATA` first" if ds.landmarks.is_file()
                else "run `lolnerf landmarks DATA` and `lolnerf fit-cameras DATA` first, or import known cameras "
                     "with `lolnerf import-cameras FILE DATA`")
        raise InputError(ds.transforms, f"not found; {hint}")
    tf = read_transforms(ds.transforms, ds.root)
    frames, excluded = [], []
    for f in tf.frames:
        if f.extra.get("flagged") and not include_flagged:
            excluded.append({"file_path": f.file_path, "reason": "flagged by fit-cameras (poor landmark fit)"})
        elif not (ds.root / f.file_path).is_file():
            excluded.append({"file_path": f.file_path, "reason": "image file is missing"})
        else:
            frames.append(f)
    if not frames:
        raise InputError(ds.transforms, "lists no usable frames (all missing or flagged)")
    return TrainFrames(ds.root, frames, excluded)


class PixelCache:
    """uint8 memory maps of every training image at one square resolution, plus masks."""

    def __init__(self, folder: Path, files: list[str], resolution: int, has_mask: np.ndarray):
        k, r = len(files), resolution
        self.folder, self.files, self.resolution = folder, files, resolution
        self.pixels = np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="r", shape=(k, r, r, 3))
        self.masks = np.memmap(folder / "masks.u8", dtype=np.uint8, mode="r", shape=(k, r, r))
        self.has_mask = has_mask

    def __len__(self) -> int:
        return len(self.files)

    def gather(self, img: np.ndarray, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [N, 3] and mask uint8 [N] at (image, row, column) index arrays [N]."""
        return self.pixels[img, row, col], self.masks[img, row, col]

    def image(self, k: int) -> np.ndarray:
        return np.asarray(self.pixels[k])


def _files_hash(files: list[str], resolution: int) -> str:
    h = hashlib.sha256(f"{resolution}\n".encode())
    for f in files:
        h.update(f.encode() + b"\n")
    return h.hexdigest()[:16]


def build_cache(tf: TrainFrames, folder: Path, resolution: int, progress: Progress | None = None) -> tuple[PixelCache, TrainFrames]:
    """Build (or reuse) the pixel cache. Unreadable images are dropped and reported in tf.excluded."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "cache.json"
    files = [f.file_path for f in tf.frames]
    if meta_path.is_file():
        try:
            meta = read_json(meta_path, "pixel cache index")
            if meta.get("hash") == _files_hash(meta.get("files", []), resolution) and meta.get("resolution") == resolution \
                    and set(meta["files"]) <= set(files):
                keep = {f: fr for f, fr in zip(files, tf.frames)}
                frames = [keep[f] for f in meta["files"]]
                dropped = [{"file_path": f, "reason": r} for f, r in meta.get("dropped", [])]
                out = TrainFrames(tf.root, frames, tf.excluded + dropped)
                return PixelCache(folder, meta["files"], resolution, np.array(meta["has_mask"], dtype=bool)), out
        except (InputError, KeyError, TypeError, ValueError):
            pass  # rebuild
    k, r = len(files), resolution
    pixels = np.memmap(folder / "pixels.u8.tmp", dtype=np.uint8, mode="w+", shape=(k, r, r, 3))
    masks = np.memmap(folder / "masks.u8.tmp", dtype=np.uint8, mode="w+", shape=(k, r, r))
    has_mask = np.zeros(k, dtype=bool)
    good: list[int] = []
    dropped: list[tuple[str, str]] = []
    ds = dataset(tf.root)
    with or_silent(progress).task("caching images", total=k) as task:
        for i, fr in enumerate(tf.frames):
            try:
                rgb, alpha = load_image(tf.root / fr.file_path, with_alpha=True)
                mf = object_mask(ds.mask_for(fr.file_path), alpha, (r, r))
                has_mask[len(good)] = mf is not None
                m = np.zeros((r, r), np.uint8) if mf is None else to_uint8(mf)
                j = len(good)
                pixels[j] = resize(rgb, r, r)
                masks[j] = m
                good.append(i)
            except InputError as exc:
                dropped.append((fr.file_path, exc.reason))
            task.advance()
    pixels.flush()
    masks.flush()
    del pixels, masks
    if not good:
        raise InputError(tf.root / "images", "no training image could be read")
    n = len(good)
    # shrink the files to the readable images (they were written in order, so this is a truncate)
    for name, per in (("pixels.u8", r * r * 3), ("masks.u8", r * r)):
        with open(folder / f"{name}.tmp", "r+b") as fh:
            fh.truncate(n * per)
        (folder / f"{name}.tmp").replace(folder / name)
    frames = [tf.frames[i] for i in good]
    kept_files = [f.file_path for f in frames]
    write_json(meta_path, {"resolution": r, "files": kept_files, "hash": _files_hash(kept_files, r),
                           "has_mask": has_mask[:n].tolist(), "dropped": dropped})
    out = TrainFrames(tf.root, frames, tf.excluded + [{"file_path": f, "reason": why} for f, why in dropped])
    return PixelCache(folder, kept_files, r, has_mask[:n]), out


def camera_tensors(frames: list[Frame], resolution: int) -> dict[str, torch.Tensor]:
    """Cameras of the cached (square, `resolution` px) images: c2w [K, 4, 4], fx, fy, cx, cy [K]."""
    cams = [Camera.from_frame(f).scaled(resolution, resolution) for f in frames]
    return {
        "c2w": torch.tensor(np.stack([c.c2w for c in cams]), dtype=torch.float32),
        "fx": torch.tensor([c.fx for c in cams], dtype=torch.float32),
        "fy": torch.tensor([c.fy for c in cams], dtype=torch.float32),
        "cx": torch.tensor([c.cx for c in cams], dtype=torch.float32),
        "cy": torch.tensor([c.cy for c in cams], dtype=torch.float32),
    }
