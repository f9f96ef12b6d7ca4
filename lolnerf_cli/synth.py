"""Synthetic dataset folders: photos of the procedural heads of synth_scene.py with exact cameras,
masks, landmarks and (for holdout objects) depth: the stand-in for a face-photo collection.

Dataset written by `synthesize(out, ...)` (`lolnerf synth OUT`)::

    OUT/images/0000.png ...        one photo per training object (random camera, random background)
    OUT/masks/0000.png ...         8-bit coverage masks, 255 = object (anti-aliased edges)
    OUT/landmarks.json             face5 landmarks: the true keypoints projected, confidence 1.0
    OUT/transforms.json            the true cameras (nerfstudio conventions, shared intrinsics)
    OUT/true_cameras.json          the same cameras again, kept when `fit-cameras` rewrites transforms.json
                                   (`lolnerf eval` measures the training cameras' rotation error with it)
    OUT/keypoints.json             class-mean canonical 3D keypoints (mean over the training objects)
    OUT/synth.json                 generation parameters; marks the folder as written by synth
    OUT/holdout/...                only with holdout > 0, see below

Holdout layout (unseen objects drawn from a seed stream disjoint from the training objects; a real
multi-view set brought by a user can use the same layout for `lolnerf eval`)::

    OUT/holdout/images/h0000_q.png     the query view of object h0000 (random camera, like training)
    OUT/holdout/images/h0000_v00.png   V other views (default 4), yaw spread evenly over +-45 degrees,
    ...                                pitch random within +-20 degrees
    OUT/holdout/masks/<stem>.png       coverage masks as above
    OUT/holdout/depth/<stem>.npy       float32 [H, W] camera-space z-depth (positive, scene units):
                                       the mean depth of the covered sub-pixel samples, NaN where the
                                       coverage is below 0.5 (the `render --depth` convention)
    OUT/holdout/transforms.json        every view's camera; each frame has the extra keys
                                       "object": "h0000", "role": "query" | "view",
                                       "keypoints_uv": [[u, v] x 5] (projected 3D keypoints),
                                       "keypoints_z": [z x 5] (their camera z-depths) and
                                       "keypoints_visible": [bool x 5] (not hidden by the object)
    OUT/holdout/landmarks.json         face5 landmarks of the query views only

Everything is deterministic for a seed: the same arguments give byte-identical files. Training object
i depends only on (seed, i), so a smaller --n gives a prefix of a larger one.

Overwriting: an OUT that does not exist or is empty is written; an OUT holding a previous synth output
(it has synth.json) is cleaned of the files synth writes (other files are left alone) and rewritten;
anything else is refused with an InputError, so synth never deletes a user's data.
"""

from __future__ import annotations

import io
import numbers
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import folders, formats
from .cameras import Camera, project
from .errors import InputError, ParamError
from .images import save_png
from .progress import Progress, or_silent
from .synth_scene import (DISTANCE_RANGE, FOV_DEG, HOLDOUT_PITCH_DEG, HOLDOUT_VIEWS, HOLDOUT_YAW_DEG, MAX_RADIUS,
                          PITCH_RANGE_DEG, SUPERSAMPLE, YAW_RANGE_DEG, holdout_object, holdout_views, keypoint_views,
                          render_object, train_view)

GENERATOR = "lolnerf synth"
VERSION = 1


@dataclass
class SynthSummary:
    out: Path
    n: int
    resolution: int
    holdout: int
    views: int
    seed: int
    seconds: float
    mean_coverage: float


TRUE_CAMERAS = "true_cameras.json"
_OWNED_FILES = ("landmarks.json", "transforms.json", "true_cameras.json", "keypoints.json", "synth.json")
_OWNED_IMAGE = re.compile(r"^\d{4,}\.png$")
_OWNED_HOLDOUT = re.compile(r"^h\d{4,}_(q|v\d{2,})\.(png|npy)$")


def _prepare_out(out: Path) -> None:
    """Refuse to overwrite anything that is not a previous synth output; clean a previous one."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder; choose another output folder")
    if not out.exists():
        return
    entries = [p for p in out.iterdir()]
    if not entries:
        return
    marker = out / "synth.json"
    ok = False
    if marker.is_file():
        try:
            ok = formats.read_json(marker, "synth parameters").get("generator") == GENERATOR
        except (InputError, AttributeError):
            ok = False
    if not ok:
        raise InputError(out, "folder exists, is not empty and was not written by `lolnerf synth`; "
                              "choose a new folder or empty this one (synth only overwrites its own output)")
    for sub, pattern in (("images", _OWNED_IMAGE), ("masks", _OWNED_IMAGE)):
        _remove_matching(out / sub, pattern)
    for sub in ("images", "masks", "depth"):
        _remove_matching(out / "holdout" / sub, _OWNED_HOLDOUT)
    for name in ("transforms.json", "landmarks.json"):
        (out / "holdout" / name).unlink(missing_ok=True)
    _rmdir_if_empty(out / "holdout")
    for name in _OWNED_FILES:
        if name != "synth.json":
            (out / name).unlink(missing_ok=True)


def _remove_matching(folder: Path, pattern: re.Pattern) -> None:
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.is_file() and pattern.match(p.name):
            p.unlink()
    _rmdir_if_empty(folder)


def _rmdir_if_empty(folder: Path) -> None:
    if folder.is_dir():
        for sub in folder.iterdir():
            if sub.is_dir():
                _rmdir_if_empty(sub)
        if not any(folder.iterdir()):
            folder.rmdir()


class _Writer:
    """Writes files on a few threads (atomic writes fsync, which would otherwise dominate the run time).

    At most `depth` writes are pending; the first failure is raised to the caller."""

    def __init__(self, workers: int = 4, depth: int = 64):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth-write")
        self.pending: deque = deque()
        self.depth = depth

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                while self.pending:
                    self.pending.popleft().result()
            else:
                for fut in self.pending:
                    fut.cancel()
        finally:
            self.pool.shutdown(wait=True)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    formats.atomic_write_bytes(path, buf.getvalue())


def _params(n, resolution, holdout, views, seed, complete) -> dict:
    return {"generator": GENERATOR, "version": VERSION, "n": n, "resolution": resolution, "seed": seed,
            "holdout": holdout, "holdout_views": views, "supersample": SUPERSAMPLE, "fov_deg": FOV_DEG,
            "yaw_range_deg": YAW_RANGE_DEG, "pitch_range_deg": PITCH_RANGE_DEG,
            "distance_range": list(DISTANCE_RANGE), "holdout_yaw_deg": HOLDOUT_YAW_DEG,
            "holdout_pitch_deg": HOLDOUT_PITCH_DEG, "max_radius": MAX_RADIUS, "complete": complete}


def _frame(rel: str, cam: Camera, extra: dict | None = None) -> formats.Frame:
    return formats.Frame(np.asarray(cam.c2w), float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy),
                         int(cam.w), int(cam.h), rel, dict(extra or {}))


def synthesize(out: str | Path, n: int = 200, resolution: int = 64, holdout: int = 0, seed: int = 0,
               views: int = HOLDOUT_VIEWS, progress: Progress | None = None) -> SynthSummary:
    """Write a synthetic dataset folder (see the module docstring for the layout) and return a summary."""
    out = Path(out)
    for name, value, lo in (("n", n, 1), ("resolution", resolution, 8), ("holdout", holdout, 0),
                            ("views", views, 1), ("seed", seed, None)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (lo is not None and value < lo):
            rule = "an integer" if lo is None else f"an integer of at least {lo}"
            raise ParamError(name, f"must be {rule}, got {value!r}")
    n, resolution, holdout, views, seed = (int(v) for v in (n, resolution, holdout, views, seed))
    if resolution > 4096:
        raise ParamError("resolution", f"must be at most 4096, got {resolution}")
    t0 = time.perf_counter()
    _prepare_out(out)
    formats.write_json(out / "synth.json", _params(n, resolution, holdout, views, seed, False))
    prog = or_silent(progress)
    width = max(4, len(str(n - 1)))
    ds = folders.dataset(out, must_exist=False)
    frames, lm_frames, kps = [], [], []
    coverage = 0.0
    with _Writer() as writer, prog.task("synth: training images", total=n) as task:
        for i in range(n):
            obj, cam, bg = train_view(seed, i, resolution)
            r = render_object(obj, cam, background=bg)
            rel = f"images/{i:0{width}d}.png"
            writer.submit(save_png, out / rel, r.rgb)
            writer.submit(save_png, ds.mask_for(rel), r.alpha)
            uv, _ = project(obj.keypoints, cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy)
            frames.append(_frame(rel, cam))
            lm_frames.append(formats.LandmarkFrame(rel, resolution, resolution, uv, 1.0))
            kps.append(obj.keypoints)
            coverage += float(r.alpha.mean())
            task.advance(1)
    cam_extra = {"camera_model": "OPENCV"}
    formats.write_transforms(ds.transforms, formats.Transforms(frames, dict(cam_extra)))
    formats.write_transforms(out / TRUE_CAMERAS, formats.Transforms(frames, dict(cam_extra)))
    formats.write_landmarks(ds.landmarks, formats.Landmarks("face5", list(formats.FACE5_NAMES), lm_frames, []))
    formats.write_keypoints(ds.keypoints, formats.Keypoints("face5", list(formats.FACE5_NAMES),
                                                            np.mean(np.array(kps), axis=0)))
    if holdout > 0:
        _write_holdout(out / "holdout", holdout, views, resolution, seed, prog, cam_extra)
    formats.write_json(out / "synth.json", _params(n, resolution, holdout, views, seed, True))
    return SynthSummary(out, n, resolution, holdout, views, seed, time.perf_counter() - t0, coverage / n)




def _write_holdout(root: Path, m: int, views: int, resolution: int, seed: int, prog: Progress,
                   cam_extra: dict) -> None:
    frames, lm_frames = [], []
    width = max(4, len(str(m - 1)))
    with _Writer() as writer, prog.task("synth: holdout views", total=m * (views + 1)) as task:
        for j in range(m):
            obj = holdout_object(seed, j)
            name = f"h{j:0{width}d}"
            for k, (cam, bg) in enumerate(holdout_views(seed, j, resolution, views)):
                stem = f"{name}_q" if k == 0 else f"{name}_v{k - 1:02d}"
                rel = f"images/{stem}.png"
                r = render_object(obj, cam, background=bg)
                writer.submit(save_png, root / rel, r.rgb)
                writer.submit(save_png, root / "masks" / f"{stem}.png", r.alpha)
                writer.submit(_save_npy, root / "depth" / f"{stem}.npy", r.depth)
                uv, z, vis = keypoint_views(obj, cam)
                frames.append(_frame(rel, cam, {
                    "object": name, "role": "query" if k == 0 else "view",
                    "keypoints_uv": [[round(float(a), 4), round(float(b), 4)] for a, b in uv],
                    "keypoints_z": [round(float(a), 6) for a in z],
                    "keypoints_visible": [bool(a) for a in vis]}))
                if k == 0:
                    lm_frames.append(formats.LandmarkFrame(rel, resolution, resolution, uv, 1.0))
                task.advance(1)
    formats.write_transforms(root / "transforms.json", formats.Transforms(frames, dict(cam_extra)))
    formats.write_landmarks(root / "landmarks.json",
                            formats.Landmarks("face5", list(formats.FACE5_NAMES), lm_frames, []))
