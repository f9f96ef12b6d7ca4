"""The `encoder` section of `lolnerf eval` (written when RUN/encoder.safetensors exists).

For each held-out query photo the encoder predicts a latent and a camera (no landmarks, no known
camera). Two answers are scored: "encoder" (that latent at that camera, nothing else) and "hybrid"
(the same start, then `hybrid_steps` steps of the usual inversion at the encoder's camera):

- heldout: the photo rendered back through the encoder's camera, against the photo (PSNR, SSIM, LPIPS,
  PSNR over the mask), as the held-out section scores the optimisation path;
- novel: each object's other views, placed relative to the encoder's query camera by their calibrated
  relative poses and the distance ratio (evaluate.align_views / relative_scale, the alignment the
  novel section uses for landmark-fitted query cameras), scored on the object's pixels;
- camera: the rotation error (degrees) of the encoder's camera against the query's known camera, and,
  beside it, of the camera fitted to the same photo's landmarks (RUN/keypoints.json, the query's own
  intrinsics). Only when the folder's cameras are in the model's frame (a model trained on them or on
  cameras in their frame, whatever --frames places the query by); with fitted training cameras and a
  calibrated folder the two frames differ by an unknown rotation and no error is reported;
- ms_per_photo: wall time of one encoder pass (batch of one, warm: the first pass is not counted),
  median and mean over the photos, the process CPU time of a pass (all threads; steadier than wall
  time on a shared machine), and the hybrid's optimisation time per photo.

The optimisation path's own figures are in the heldout and novel sections (their --invert-steps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cameras import Camera
from .encoder import encode, encoder_paths, load_encoder, rotation_error_deg
from .config import InvertConfig
from .errors import InputError

HYBRID_STEPS = 30


class EncoderSection:
    """The "encoder" entry of metrics.json (an eval_sections.Section: prepare, then run)."""

    name = "encoder"
    frames = None

    def __init__(self, heldout: Path | None, novel: Path | None, hybrid_steps: int = HYBRID_STEPS,
                 refine_camera: bool = True, lr: float = InvertConfig.lr, camera_lr: float = InvertConfig.encoder_camera_lr):
        self.heldout, self.novel, self.hybrid_steps = heldout, novel, int(hybrid_steps)
        self.refine_camera, self.lr, self.camera_lr = bool(refine_camera), float(lr), float(camera_lr)

    def prepare(self, ev) -> None:
        """Load and check RUN/encoder.safetensors and list the photos (InputError before any rendering)."""
        from .eval_inputs import heldout_items, novel_objects

        if self.hybrid_steps < 1:
            raise InputError("--encoder-steps", "must be at least 1")
        self.path = encoder_paths(ev.loaded.run.root)[0]
        self.enc = load_encoder(self.path, ev.loaded, ev.device)
        self.objects = novel_objects(self.novel) if self.novel is not None else []
        self.items = heldout_items(self.heldout, ev.loaded)[0] if self.heldout is not None else []

    def run(self, ev) -> dict[str, Any]:
        return {"encoder": encoder_section(ev, self.heldout, self.novel, self.hybrid_steps, self)}


def encoder_section(ev, heldout: Path | None, novel: Path | None, hybrid_steps: int = HYBRID_STEPS,
                    prepared: EncoderSection | None = None) -> dict:
    """ev: an evaluate.Evaluator (model loaded, scorer ready). Returns the section's dict."""
    from .eval_inputs import mask_for
    from .images import resize_mask
    from .eval_align import align_views, relative_scale
    from .eval_scoring import pick_subset
    from .invert import invert_images

    if prepared is None:
        prepared = EncoderSection(heldout, novel, hybrid_steps)
        prepared.prepare(ev)
    path, enc = prepared.path, prepared.enc
    out: dict[str, Any] = {"encoder": str(path), "hybrid_steps": hybrid_steps, "resolution": enc.cfg.resolution,
                           "hybrid_refines_camera": prepared.refine_camera}
    # ---------------------------------------------------------------- the query photos
    objects = prepared.objects
    for obj in objects:
        obj.query.load(novel)
        for v in obj.views:
            v.load(novel, mask_required=True)
    queries = [(novel, o.query, o) for o in objects]
    held_items: list = []
    if heldout is not None:
        picks = pick_subset(len(prepared.items), ev.opt.subset, ev.opt.seed + 1)
        held_items = [prepared.items[i] for i in picks]
        for it in held_items:
            it.load(heldout)
    if not held_items and not queries:
        return {**out, "unavailable": "no held-out or novel-view folder to score"}

    # ---------------------------------------------------------------- encoder pass, timed one by one
    # held-out photos and novel-view queries are often the same files: each photo is answered once
    all_items = held_items + [q[1] for q in queries]
    keys = [str(it.path.resolve()) for it in all_items]
    unique = list(dict.fromkeys(keys))
    first = {k: keys.index(k) for k in unique}
    photos = [all_items[first[k]].rgb for k in unique]
    encode(enc, photos[:1])                                   # warm-up, not counted
    times, cpu, z_u, cam_u = [], [], [], []
    for rgb in photos:
        t0, c0 = time.perf_counter(), time.process_time()
        z, cam = encode(enc, [rgb])
        times.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
        z_u.append(z[0])
        cam_u.append(cam[0])
    # ---------------------------------------------------------------- hybrid: a few steps from there
    t0 = time.perf_counter()
    torch.manual_seed(ev.opt.seed)
    hyb = invert_images(ev.loaded, photos, cam_u, [all_items[first[k]].mask_full for k in unique],
                        steps=hybrid_steps, resolution=ev.res, progress=ev.progress, seed=ev.opt.seed,
                        measure_init=False, z_init=torch.stack(z_u).to(ev.device),
                        refine_camera=prepared.refine_camera, lr=prepared.lr, camera_lr=prepared.camera_lr,
                        latent_prior=ev.latent_prior)
    hybrid_s = time.perf_counter() - t0
    where = [unique.index(k) for k in keys]
    zs = [z_u[j] for j in where]
    cams = [cam_u[j] for j in where]
    cams_hyb = [cam_u[j].with_pose(hyb.cameras[j].c2w) for j in where]
    z_hyb = hyb.latents.float()[where]
    n_held = len(held_items)
    out["ms_per_photo"] = {"encoder_median": float(np.median(times)), "encoder_mean": float(np.mean(times)),
                           "encoder_cpu_median": float(np.median(cpu)),
                           "photos": len(times), "batch": 1,
                           "hybrid_optimisation_mean": 1000.0 * hybrid_s / len(photos),
                           "optimisation_path_mean": {what: 1000.0 * s for what, s in ev.inversion_s.items()},
                           "optimisation_path_steps": ev.opt.invert_steps,
                           "note": "hybrid and the optimisation path: the photos are optimised together; "
                                   "each time is the mean share per photo (the optimisation path's per inversion "
                                   "it ran: held-out photos, novel-view queries)",
                           "threads": torch.get_num_threads()}

    # ---------------------------------------------------------------- held-out reconstructions
    if held_items:
        rows = []
        for i, it in enumerate(held_items):
            gt = ev.ground_truth(it.rgb)
            mask = mask_for(heldout, it.file_path, ev.res, it.alpha)
            row: dict[str, Any] = {"file_path": it.file_path}
            for name, z, cam in (("encoder", zs[i], cams[i]), ("hybrid", z_hyb[i], cams_hyb[i])):
                r = ev.render(z, cam)
                row[name] = ev.scorer.full(r["rgb"], gt, mask)
            row.update(_camera_errors(ev, heldout, it, cams[i], cams_hyb[i] if prepared.refine_camera else None))
            rows.append(row)
        out["heldout"] = _two_way(rows, ("psnr", "ssim", "lpips", "psnr_masked"))
        out["heldout"]["images"] = rows

    # ---------------------------------------------------------------- novel views around the encoder's camera
    if queries:
        rows, cam_rows = [], []
        for j, (folder, q, obj) in enumerate(queries):
            k = n_held + j
            known = np.stack([v.frame.c2w for v in obj.views])
            views, scales = {}, {}
            for name, cam in (("encoder", cams[k]), ("hybrid", cams_hyb[k])):   # each around its own query camera
                c2w_q = cam.scaled(q.rgb.shape[1], q.rgb.shape[0]).c2w
                scales[name] = relative_scale(c2w_q, q.frame.c2w)
                views[name] = align_views(c2w_q, q.frame.c2w, known, scales[name])
            for i, v in enumerate(obj.views):
                gt = ev.ground_truth(v.rgb)
                mask = resize_mask(v.mask_full, ev.res, ev.res)
                row = {"object": obj.name, "file_path": v.file_path}
                for name, z in (("encoder", zs[k]), ("hybrid", z_hyb[k])):
                    row[name] = ev.scorer.masked(ev.render(z, v.frame.with_pose(views[name][i]))["rgb"], gt, mask)
                rows.append(row)
            cam_rows.append({"object": obj.name, "file_path": q.file_path, "scale": scales["encoder"],
                             **_camera_errors(ev, folder, q, cams[k], cams_hyb[k] if prepared.refine_camera else None)})
        out["novel"] = _two_way(rows, ("psnr", "ssim", "lpips"))
        out["novel"].update(objects=len(queries), masked=True, views=rows)
        out["camera"] = _camera_summary(cam_rows)
        out["camera"]["per_object"] = cam_rows
    elif held_items:
        out["camera"] = _camera_summary(out["heldout"]["images"])
    return out


def _camera_errors(ev, folder: Path, item, cam: Camera, hybrid_cam: Camera | None = None) -> dict:
    """Rotation errors (degrees) against the item's known camera, when it has one in the model's frame: of
    `cam`, of the landmark fit and, when given, of the hybrid's corrected camera."""
    row = {"rotation_error_deg": None, "landmark_rotation_error_deg": None}
    if hybrid_cam is not None:
        row["hybrid_rotation_error_deg"] = None
    if item.frame is None:
        return row
    if not ev.align.frames_agree(folder):
        return row
    true_rot = np.asarray(item.frame.c2w)[:3, :3]
    row["rotation_error_deg"] = rotation_error_deg(cam.c2w[:3, :3], true_rot)
    if hybrid_cam is not None:
        row["hybrid_rotation_error_deg"] = rotation_error_deg(hybrid_cam.c2w[:3, :3], true_rot)
    try:
        lcam, _ = _landmark_camera(ev, folder, item)
        row["landmark_rotation_error_deg"] = rotation_error_deg(lcam.c2w[:3, :3], true_rot)
    except (InputError, ValueError):
        pass
    return row


def _landmark_camera(ev, folder: Path, item):
    """The camera fitted to the photo's landmarks (folder/landmarks.json or the frame's keypoints_uv) with the
    query's own intrinsics: the query-frame fit of evaluate.Evaluator.query_camera."""
    return getattr(ev, "align", ev).query_camera(folder, item)


def _two_way(rows: list[dict], keys: tuple[str, ...]) -> dict:
    from .eval_scoring import summary as _summary

    sec: dict[str, Any] = {"count": len(rows)}
    for name in ("encoder", "hybrid"):
        flat = [r[name] for r in rows]
        sec[name] = {k: _summary(flat, k) for k in keys}
    return sec


def _camera_summary(rows: list[dict]) -> dict:
    def stats(key):
        v = [r[key] for r in rows if r.get(key) is not None]
        if not v:
            return None
        return {"median": float(np.median(v)), "mean": float(np.mean(v)), "count": len(v)}

    return {"rotation_error_deg": stats("rotation_error_deg"),
            "hybrid_rotation_error_deg": stats("hybrid_rotation_error_deg"),
            "landmark_rotation_error_deg": stats("landmark_rotation_error_deg"),
            "note": "against the known cameras; reported only when the folder's cameras are in the model's frame"}
