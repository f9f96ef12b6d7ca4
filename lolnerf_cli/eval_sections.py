"""The sections of metrics.json, one class each (see `evaluate.py` for how they are run and how to add one).

A section reads and checks its inputs once in `prepare` (before anything is rendered, so a wrong folder
fails in a second, not after an hour), then renders and scores them in `run`, which returns the
metrics.json entries it owns. Rendering, inversion and the figure rows go through the running
`Evaluator` (`ev`), which shares renders and inversions between sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .eval_align import EVAL_LANDMARKS_HINT
from .eval_inputs import NovelObject, heldout_items, mask_for, novel_objects, query_keypoints, true_depth
from .eval_scoring import (MASK_THRESHOLD, as_float, depth_scores, depth_summary, pick_subset, section_summary,
                           summary)
from .images import resize_mask

IMAGE_KEYS = ("psnr", "ssim", "lpips", "psnr_masked")


class Section:
    """One part of metrics.json. Subclasses set `name` and override `prepare` and `run`."""

    name = ""
    frames: str | None = None       # the camera frames its folder was read in, for settings.frames.<name>

    def prepare(self, ev) -> None:
        """Read and check the inputs (InputError on any problem); nothing is rendered here."""

    def run(self, ev) -> dict[str, Any]:
        """Render and score; returns {metrics.json key: section dict} (one or more keys)."""
        raise NotImplementedError


class TrainSection(Section):
    """Paper Table 1: a seeded subset of the training images through their own latents and cameras."""

    name = "train"

    def run(self, ev) -> dict[str, Any]:
        picks = pick_subset(len(ev.train_items), ev.opt.subset, ev.opt.seed)
        rows = []
        with ev.progress.task("eval: training images", total=len(picks)) as task:
            for k in picks:
                it = ev.train_items[k]
                it.load(ev.data_dir)
                gt = ev.ground_truth(it.rgb)
                mask = mask_for(ev.data_dir, it.file_path, ev.res, it.alpha)
                out = ev.render(ev.loaded.latents[k], it.camera())
                row = {"index": k, "file_path": it.file_path, **ev.scorer.full(out["rgb"], gt, mask)}
                rows.append(row)
                if ev.wants_figure_row("train"):
                    caption = (f"train {Path(it.file_path).name}: photo | reconstruction | |error| | depth   "
                               f"PSNR {row['psnr']:.2f}")
                    ev.add_figure_row("train", caption, [gt, out["rgb"], np.abs(out["rgb"] - gt).mean(-1), out["depth"]])
                it.rgb = it.alpha = it.mask_full = None
                task.advance(1, psnr=row["psnr"])
        return {"train": section_summary(rows, IMAGE_KEYS, {"images": rows})}


class HeldoutSection(Section):
    """Paper Table 2: photos the model never saw, inverted with their cameras, rendered back and scored."""

    name = "heldout"

    def __init__(self, folder: Path):
        self.folder = folder

    def prepare(self, ev) -> None:
        self.items, self.camera_source = heldout_items(self.folder, ev.loaded)
        if not self.items:
            raise InputError(self.folder / "transforms.json", "has no held-out photos (no frame with role 'query')")
        if self.camera_source == "transforms.json":
            self.frames = ev.check_frames(self.folder)

    def run(self, ev) -> dict[str, Any]:
        folder, mode, source = self.folder, self.frames, self.camera_source
        if mode == "query":
            source = "transforms.json intrinsics, poses fitted to RUN/keypoints.json (frames: query)"
        picks = pick_subset(len(self.items), ev.opt.subset, ev.opt.seed + 1)
        items = [self.items[i] for i in picks]
        alignment = {}
        for it in items:
            it.load(folder)
            if it.frame is None and it.cam is None:
                from .invert import camera_from_landmarks

                it.cam, _ = camera_from_landmarks(ev.loaded, it.rgb, it.path, hint=EVAL_LANDMARKS_HINT)
            elif mode == "query":
                it.cam, alignment[it.file_path] = ev.align.query_camera(folder, it)
        refine = ev.opt.refine_query_camera and mode == "query"
        lat, cams = ev.invert_refining(items, "held-out", refine)
        rows = []
        with ev.progress.task("eval: held-out images", total=len(items)) as task:
            for it, z, cam in zip(items, lat, cams):
                gt = ev.ground_truth(it.rgb)
                mask = mask_for(folder, it.file_path, ev.res, it.alpha)
                out = ev.render(z, cam, remember_depth=True)
                row = {"file_path": it.file_path, **ev.scorer.full(out["rgb"], gt, mask)}
                if it.file_path in alignment:
                    row["alignment"] = alignment[it.file_path]
                rows.append(row)
                task.advance(1, psnr=row["psnr"])
        return {"heldout": section_summary(rows, IMAGE_KEYS, {"folder": str(folder), "cameras": source,
                                                              "frames": mode, "query_camera_refined": refine,
                                                              "images": rows})}


class NovelSection(Section):
    """Paper Tables 3 and 4: per object of a multi-view folder, ONE query view is inverted; the other views
    are rendered and scored on the object's pixels ("novel"), and the query view's depth against its true
    keypoint depths and depth map ("depth"). With `upsample` >= 2 also "novel_upsampled" (upsampled.py)."""

    name = "novel"

    def __init__(self, folder: Path, upsample: int = 0, upsample_figure: Path | None = None):
        self.folder = folder
        self.upsample = upsample
        self.upsample_figure = upsample_figure

    def prepare(self, ev) -> None:
        self.objects = novel_objects(self.folder)
        tpath = self.folder / "transforms.json"
        for obj in self.objects:
            query_keypoints(obj.query, tpath)
        self.frames = ev.check_frames(self.folder)

    def run(self, ev) -> dict[str, Any]:
        folder, objects, mode = self.folder, self.objects, self.frames
        for obj in objects:                      # read everything first: a bad file fails before any work
            obj.query.load(folder)
            for v in obj.views:
                v.load(folder, mask_required=True)
        if mode == "query":                      # cameras into the model's object frame, via the query view
            for obj in objects:
                ev.align_object(folder, obj)
        refine = ev.opt.refine_query_camera and mode == "query"
        lat, cams = ev.invert_refining([o.query for o in objects], "query", refine)
        if refine:                               # the other views follow the query camera the inversion corrected
            for obj, cam in zip(objects, cams):
                ev.align.place_views(obj, cam)
        rows, depth_rows = [], []
        with ev.progress.task("eval: novel views", total=sum(len(o.views) for o in objects)) as task:
            for obj, z in zip(objects, lat):
                first = None
                flat = ev.ground_truth(obj.query.rgb)    # baseline: the query photo as a flat picture
                for v in obj.views:
                    gt = ev.ground_truth(v.rgb)
                    mask = resize_mask(v.mask_full, ev.res, ev.res)
                    out = ev.render(z, v.camera())
                    row = {"object": obj.name, "file_path": v.file_path, **ev.scorer.masked(out["rgb"], gt, mask)}
                    on = mask >= MASK_THRESHOLD
                    row["flat_psnr"] = as_float(ev.scorer.m.psnr(flat, gt, on)) if on.any() else None
                    rows.append(row)
                    if first is None:
                        first = (v, gt, out, row)
                    task.advance(1, psnr=row["psnr"] if row["psnr"] is not None else float("nan"))
                drow = depth_row(ev, folder, folder / "transforms.json", obj, z)
                if drow is not None:
                    depth_rows.append(drow)
                if ev.wants_figure_row("novel"):
                    v, gt, out, row = first
                    psnr = "n/a" if row["psnr"] is None else f"{row['psnr']:.2f}"
                    caption = (f"novel {obj.name}: query | prediction | {Path(v.file_path).stem} | depth   "
                               f"masked PSNR {psnr}")
                    ev.add_figure_row("novel", caption, [flat, out["rgb"], gt, out["depth"]])
        extra = {"folder": str(folder), "objects": len(objects), "masked": True, "frames": mode,
                 "query_camera_refined": refine,
                 "flat_picture_psnr": summary(rows, "flat_psnr")}
        if mode == "query":
            extra["alignment"] = [o.alignment for o in objects]
        result = {"novel": section_summary(rows, ("psnr", "ssim", "lpips"), {**extra, "views": rows})}
        if depth_rows:
            result["depth"] = depth_summary(depth_rows)
        if self.upsample >= 2:
            from .upsampled import upsampled_section

            up = upsampled_section(ev, folder, objects, self.upsample, self.upsample_figure)
            result["novel_upsampled"] = up if up is not None else {
                "unavailable": "exact ground truth at another resolution exists for lolnerf synth datasets only"}
        return result


def depth_row(ev, folder: Path, tpath: Path, obj: NovelObject, z: torch.Tensor) -> dict | None:
    """The depth section's row of one object (query view loaded), or None when it has neither true
    keypoint depths nor a true depth map. ev needs only `res` and `render_depth`."""
    q = obj.query
    kp = query_keypoints(q, tpath)
    truth = true_depth(folder, q)
    if kp is None and truth is None:
        return None
    # [res, res], NaN off the surface; in the folder's units (model units / s when the frames differ)
    pred = ev.render_depth(z, q.camera()).astype(np.float64) / obj.scale
    scores = depth_scores(pred, kp, truth, (q.rgb.shape[1], q.rgb.shape[0]))
    return {"object": obj.name, "file_path": q.file_path, "depth_scale": obj.scale, **scores}


TRUE_CAMERAS_DEG = 1e-3         # a dataset whose cameras are this close to the true ones has no ratio to report


class TrainingCamerasSection(Section):
    """How far the training cameras are from the true ones, when the dataset keeps them
    (DATA/true_cameras.json, which `lolnerf synth` writes): the rotation error in degrees of the dataset's
    cameras (DATA/transforms.json: e.g. the landmark fit) and of the cameras the model was trained with
    (RUN/cameras.json when training refined them), each after the one rotation that best maps its frame
    onto the true one. Nothing is rendered."""

    name = "training_cameras"

    def __init__(self, true_cameras: Path):
        self.path = Path(true_cameras)

    def prepare(self, ev) -> None:
        from .formats import read_transforms

        true = {f.file_path: f.c2w for f in read_transforms(self.path).frames}
        missing = [it.file_path for it in ev.train_items if it.file_path not in true]
        if missing:
            raise InputError(self.path, f"has no camera for {len(missing)} of the training photos (e.g. "
                                        f"'{missing[0]}')")
        self.true = np.stack([true[it.file_path][:3, :3] for it in ev.train_items])

    def run(self, ev) -> dict[str, Any]:
        from .camera_refine import aligned_rotation_components, aligned_rotation_errors
        from .formats import read_transforms

        by_path = {f.file_path: f.c2w for f in read_transforms(ev.data_dir / "transforms.json").frames}
        dataset = np.stack([by_path[it.file_path][:3, :3] for it in ev.train_items])
        used = np.stack([it.frame.c2w[:3, :3] for it in ev.train_items])
        refined = ev.loaded.run.cameras.is_file()

        def stats(r: np.ndarray) -> dict[str, float]:
            e = aligned_rotation_errors(r, self.true)
            axes = np.median(np.abs(aligned_rotation_components(r, self.true)), axis=0)
            return {"median_deg": float(np.median(e)), "p90_deg": float(np.percentile(e, 90)),
                    "mean_deg": float(e.mean()),
                    "median_abs_axis_deg": {k: float(v) for k, v in zip(("pitch", "yaw", "roll"), axes)}}

        out = {"true_cameras": str(self.path), "images": len(ev.train_items), "refined": refined,
               "dataset_cameras": stats(dataset), "trained_cameras": stats(used)}
        base = out["dataset_cameras"]["median_deg"]
        out["median_ratio"] = out["trained_cameras"]["median_deg"] / base if base > TRUE_CAMERAS_DEG else None
        return {self.name: out}
