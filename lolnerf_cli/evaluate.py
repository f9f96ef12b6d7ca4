"""`lolnerf eval`: the paper's measurements of a trained model.

The sections, each written to metrics.json only when its inputs exist:

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
- training_cameras (when DATA/true_cameras.json exists, as `lolnerf synth` writes it): the rotation error
  of the dataset's cameras and of the cameras the model was trained with (refined ones: RUN/cameras.json)
  against the true cameras, each after aligning the frames. Nothing is rendered.
- encoder (when RUN/encoder.safetensors exists; encoder_eval.py): the held-out and novel-view scores of
  the encoder's answer alone and of it plus `encoder_steps` optimisation steps, camera rotation errors,
  time per photo.

Camera frames (`frames` option): "query" places each object's query camera in the model's frame by
its landmarks and the other views relative to it; "as-given" uses the folder's cameras unchanged (right
when the model was trained in the folder's frame, e.g. on synth's true cameras); "auto" picks "query"
when DATA/transforms.json is marked as written by fit-cameras and the folder's transforms.json is not.

Every image is scored at the model's training resolution. Nothing here prints: progress goes through
`progress`, and the caller (the CLI) owns the terminal. Shapes: H, W pixels; N images; D latent width.

Layout: eval_inputs.py reads and checks the folders (photos, masks, keypoints, depth maps);
eval_align.py puts a folder's cameras in the model's frame; eval_scoring.py holds the metrics and
summaries; eval_sections.py one class per section; eval_figure.py the figure; this module the
`Evaluator` (model, rendering, shared inversions) and `evaluate`, which runs the sections.

Adding a section: subclass `eval_sections.Section` (set `name`; `prepare(ev)` reads and checks its
inputs once and raises InputError on any problem, before anything is rendered; `run(ev)` renders and
scores through `ev.render` / `ev.invert` / `ev.scorer` and returns {metrics.json key: section dict}),
then append an instance to `sections` in `evaluate()` when its inputs are given. Figure rows go
through `ev.wants_figure_row(kind)` / `ev.add_figure_row(kind, caption, four tiles)`; list the new
kind in FIGURE_KINDS (figure order). Document the new keys in docs/evaluation.md.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .cameras import Camera
from .config import EvalConfig
from .errors import InputError, ParamError
from .eval_align import (FRAMES_MODES, FrameAligner, align_views, cameras_fitted, fit_query_camera,  # noqa: F401
                         frames_mode, relative_scale)
from .eval_figure import FIGURE_SUFFIX, figure_path_for, figure_size, write_figure  # noqa: F401
from .eval_inputs import Item, NovelObject, training_items
from .eval_scoring import MASK_THRESHOLD, Scorer, finite_or_none, sample_depth  # noqa: F401
from .eval_sections import HeldoutSection, NovelSection, Section, TrainingCamerasSection, TrainSection
from .synth import TRUE_CAMERAS
from .formats import write_json
from .images import resize
from .progress import Progress, or_silent

METRICS_FORMAT = "lolnerf-metrics"
SECTION_NAMES = ("train", "heldout", "novel", "encoder", "training_cameras")   # --sections; novel brings depth
FIGURE_KINDS = ("novel", "train")   # figure rows by kind, in this order


@dataclass
class EvalOptions(EvalConfig):
    """One eval run's settings: EvalConfig's (defaults in config.py) and the device."""

    device: str = "auto"
    latent_prior: float | None = None   # the inversions' latent prior weight (None: the run's invert.latent_prior)


@dataclass
class EvalResult:
    metrics: dict                   # what metrics.json holds
    metrics_path: Path
    figure_path: Path | None
    lpips_unavailable: str | None   # one-line reason, or None when LPIPS was measured


def _camera_key(cam: Camera) -> tuple:
    """A hashable identity of a camera (pose and intrinsics), for the render and inversion caches."""
    return (np.asarray(cam.c2w, np.float64).tobytes(), cam.fx, cam.fy, cam.cx, cam.cy, cam.w, cam.h)


class Evaluator:
    """The model under evaluation and what sections share: rendering at the training resolution,
    inversions (identical requests answered once), camera alignment (`align`), the scorer and the
    figure rows."""

    def __init__(self, data_dir: str | Path, run_dir: str | Path, options: EvalOptions | None = None,
                 progress: Progress | None = None):
        from .device import pick_device, resolve_precision
        from .model import load_model

        self.opt = options or EvalOptions()
        if self.opt.invert_steps < 1:
            raise ParamError("invert_steps", "must be at least 1")
        frames_mode(self.opt.frames, False, False)            # a bad --frames fails before the model loads
        self.progress = or_silent(progress)
        self.device = pick_device(self.opt.device)
        self.precision = resolve_precision(self.opt.precision, self.device)
        self.data_dir = Path(data_dir)
        self.loaded = load_model(run_dir, self.device)
        self.cfg = self.loaded.cfg
        self.res = int(self.cfg.train.resolution)
        from .invert import latent_prior_weight

        self.latent_prior = latent_prior_weight(self.loaded, self.opt.latent_prior)
        self.train_items, train_extra = training_items(self.data_dir, self.loaded)
        self.training_fitted = cameras_fitted(train_extra)    # DATA/transforms.json written by fit-cameras
        self.align = FrameAligner(self.loaded, self.opt.frames, self.training_fitted)
        self.scorer = Scorer(self.res)
        self._inversions: dict[tuple, torch.Tensor] = {}     # (photo, camera) per image -> latents [N, D]
        self.inversion_s: dict[str, float] = {}               # what ("held-out", "query") -> wall s per photo
        self._depths: dict[tuple, np.ndarray] = {}           # (latent, camera) -> depth map [res, res]
        self.figure_rows: list[dict] = []

    # -------------------------------------------------------------------------- camera frames
    def frames_for(self, folder: Path) -> str:
        return self.align.frames_for(folder)

    def check_frames(self, folder: Path) -> str:
        return self.align.check_frames(folder)

    def align_object(self, folder: Path, obj: NovelObject) -> None:
        self.align.align_object(folder, obj)

    # -------------------------------------------------------------------------- rendering
    def render(self, z: torch.Tensor, cam: Camera, remember_depth: bool = False) -> dict[str, np.ndarray]:
        """Render latent z [D] through cam at the training resolution. remember_depth: keep its depth map,
        so the depth section reuses the held-out section's render of the same query view and latent."""
        from .render import render_image

        cam = cam.scaled(self.res, self.res)
        out = render_image(self.loaded.model, z.to(self.device), cam, self.cfg.render, self.precision)
        if remember_depth:
            self._depths[self._render_key(z, cam)] = out["depth"]
        return out

    def render_depth(self, z: torch.Tensor, cam: Camera) -> np.ndarray:
        """Depth [H, W] of latent z through cam at the training resolution (NaN off the surface)."""
        hit = self._depths.get(self._render_key(z, cam.scaled(self.res, self.res)))
        return hit if hit is not None else self.render(z, cam)["depth"]

    @staticmethod
    def _render_key(z: torch.Tensor, cam: Camera) -> tuple:
        return (z.detach().float().cpu().numpy().tobytes(),) + _camera_key(cam)

    def ground_truth(self, rgb: np.ndarray) -> np.ndarray:
        return resize(rgb, self.res, self.res).astype(np.float32) / 255.0

    def invert(self, items: list[Item], what: str) -> torch.Tensor:
        """Latents [N, D] fitted to the photos (their own cameras and masks). Identical requests are
        answered once, so the held-out and novel sections share the query views' inversions."""
        return self.invert_refining(items, what, False)[0]

    def invert_refining(self, items: list[Item], what: str, refine_camera: bool) -> tuple[torch.Tensor, list[Camera]]:
        """Latents [N, D] and the cameras they were fitted through, at each photo's own size: the items'
        cameras, or with `refine_camera` those cameras corrected by the inversion (invert's camera
        refinement, at invert.camera_lr). Shared between sections like `invert`."""
        from .invert import invert_images

        cams = [it.camera() for it in items]
        key = (bool(refine_camera),) + tuple((str(it.path.resolve()),) + _camera_key(c) for it, c in zip(items, cams))
        if key not in self._inversions:
            torch.manual_seed(self.opt.seed)
            t0 = time.perf_counter()
            result = invert_images(self.loaded, [it.rgb for it in items], cams, [it.mask_full for it in items],
                                   steps=self.opt.invert_steps, resolution=self.res, progress=self.progress,
                                   seed=self.opt.seed, measure_init=False, refine_camera=refine_camera,
                                   camera_lr=self.cfg.invert.camera_lr, latent_prior=self.latent_prior)
            lat = result.latents if isinstance(result.latents, torch.Tensor) else torch.as_tensor(result.latents)
            if lat.shape[0] != len(items):
                raise RuntimeError(f"inversion returned {lat.shape[0]} latents for {len(items)} {what} images")
            self.inversion_s.setdefault(what, (time.perf_counter() - t0) / max(1, len(items)))
            fitted = [c.with_pose(r.c2w) for c, r in zip(cams, result.cameras)] if refine_camera else cams
            self._inversions[key] = (lat.detach().float().to(self.device), fitted)
        return self._inversions[key]

    # -------------------------------------------------------------------------- the figure
    def wants_figure_row(self, kind: str) -> bool:
        """Whether the figure still has room for a row of this kind (EvalOptions.figure_rows per kind)."""
        return sum(1 for r in self.figure_rows if r["kind"] == kind) < self.opt.figure_rows

    def add_figure_row(self, kind: str, caption: str, tiles: list[np.ndarray]) -> None:
        """tiles: input | prediction | ground truth ("train": |error| map [H, W]) | depth [H, W]."""
        self.figure_rows.append({"kind": kind, "caption": caption, "tiles": tiles})


def parse_sections(text: str) -> tuple[str, ...] | None:
    """--sections: "all" (None: every section whose inputs exist) or comma-separated SECTION_NAMES."""
    names = tuple(dict.fromkeys(s.strip() for s in str(text).split(",") if s.strip()))
    if not names or names == ("all",):
        return None
    bad = [n for n in names if n not in SECTION_NAMES]
    if bad:
        raise InputError("--sections", f"has unknown section '{bad[0]}'; choose from {', '.join(SECTION_NAMES)} or all")
    return names


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
    fig_path = figure_path_for(out) if figure else None

    wanted = parse_sections(opt.sections)
    from .encoder import encoder_paths, has_encoder

    missing = {}            # section -> why it has nothing to score here
    if heldout is None:
        missing["heldout"] = f"{default_holdout} does not exist and --heldout was not given"
    if novel is None:
        missing["novel"] = f"{default_holdout / 'transforms.json'} does not exist and --novel was not given"
    if not has_encoder(run_dir):
        missing["encoder"] = f"{encoder_paths(run_dir)[0]} does not exist"
    elif heldout is None and novel is None:
        missing["encoder"] = "there is no held-out or novel-view folder"
    if not (data_dir / TRUE_CAMERAS).is_file():
        missing["training_cameras"] = f"{data_dir / TRUE_CAMERAS} does not exist"
    for name in wanted or ():
        if name in missing:
            raise InputError("--sections", f"asks for '{name}', which has nothing to score: {missing[name]}")
    ev = Evaluator(data_dir, run_dir, opt, progress)

    def on(name: str) -> bool:          # asked for (or "all") and its inputs exist
        return name not in missing and (wanted is None or name in wanted)

    sections: list[Section] = [TrainSection()] if on("train") else []
    if on("heldout"):
        sections.append(HeldoutSection(heldout))
    if on("novel"):
        up_fig = fig_path.with_name(fig_path.name.replace(FIGURE_SUFFIX, f"_upsampled{FIGURE_SUFFIX}")) \
            if fig_path is not None else None
        sections.append(NovelSection(novel, opt.upsample, up_fig))
    if on("encoder"):
        from .encoder_eval import EncoderSection

        sections.append(EncoderSection(heldout, novel, opt.encoder_steps, opt.encoder_refine_camera))
    if on("training_cameras"):
        sections.append(TrainingCamerasSection(data_dir / TRUE_CAMERAS))
    # every section's inputs are read and checked before any rendering: a wrong folder fails in a second
    frames = {"option": opt.frames, "training_cameras": "fit-cameras" if ev.training_fitted else "given",
              "novel": None, "heldout": None}
    for sec in sections:
        sec.prepare(ev)
        if sec.frames is not None:
            frames[sec.name] = sec.frames

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
                     "latent_prior": ev.latent_prior,
                     "resolution": ev.res, "precision": ev.precision, "device": str(ev.device),
                     "novel": None if novel is None else str(novel.resolve()),
                     "heldout": None if heldout is None else str(heldout.resolve()),
                     "mask_threshold": MASK_THRESHOLD, "frames": frames, "render": asdict(loaded.cfg.render),
                     "sections": [sec.name for sec in sections]},
        "lpips": ev.scorer.lpips_weights,     # where the weights came from, or null (see lpips_unavailable)
    }
    if ev.scorer.lpips_reason:
        metrics["lpips_unavailable"] = ev.scorer.lpips_reason
    for sec in sections:
        metrics.update(sec.run(ev))

    rows = [r for kind in FIGURE_KINDS for r in ev.figure_rows if r["kind"] == kind]
    if not rows:            # sections chosen without pictures (--sections encoder): no figure to write
        fig_path = None
    if fig_path is not None:
        w, h = write_figure(fig_path, rows, ev.res)
        metrics["figure"] = {"file": fig_path.name, "width": w, "height": h, "rows": [r["caption"] for r in rows],
                             "columns": "query/photo | prediction | ground truth (novel) or |error| (train) | "
                                        "predicted depth"}
    metrics = finite_or_none(metrics)
    write_json(out, metrics)
    return EvalResult(metrics, out, fig_path, ev.scorer.lpips_reason)
