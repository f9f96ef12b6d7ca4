"""Inversion: fit a new latent row to each photo with the network frozen (test-time optimisation).

Every photo starts at the mean of the latent table and is optimised with Adam for a fixed number of
steps on the training losses (RGB L2 on random pixel batches, the mask loss where a mask exists, the
hard-surface loss), all photos of a group together: each ray is paired with its own photo's latent.
Optionally a small rotation/translation correction of each camera is learned too (`refine_camera`; the
camera turns about the object, `invert.camera_pivot`): `lolnerf invert` does so for estimated cameras.

Shapes: N photos, P pixels per photo per step, R = N * P rays, D latent width, H = W = resolution."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .camera_refine import apply_corrections, axis_angle_matrix
from .cameras import Camera, focal_from_fov, pixel_rays
from .config import CAMERA_PIVOTS, InvertConfig
from .device import denormals_flushed, resolve_precision
from .errors import InputError, ParamError
from .formats import first_shared_stem
from .losses import LossWeights, backward_in_micro_batches, compose_loss, psnr_from_mse
from .progress import Progress, or_silent
from .views import NOVEL_YAW_DEG, read_view, turned

_DEFAULTS = InvertConfig()     # the numbers live in config.py
INVERT_STEPS = _DEFAULTS.steps
INVERT_LR = _DEFAULTS.lr
INVERT_LR_FINAL_FACTOR = _DEFAULTS.lr_final_factor
CAMERA_LR = _DEFAULTS.camera_lr
LATENT_BASES = ("pca", "raw")
LATENT_FLOOR = 0.01             # "pca" steps: covariance floor, as a fraction of its mean variance
RAYS_PER_IMAGE = _DEFAULTS.rays_per_image
MAX_RAYS_PER_STEP = _DEFAULTS.max_rays_per_step


@dataclass
class InvertResult:
    latents: torch.Tensor                  # [N, D] fitted latents (CPU)
    psnr: list[float]                      # final reconstruction PSNR per photo (dB, at the fitting resolution)
    loss_history: list[float]              # total loss per step (mean over groups)
    psnr_init: list[float] = field(default_factory=list)      # PSNR of the starting latent, before fitting
    cameras: list[Camera] = field(default_factory=list)       # the (refined) cameras at the fitting resolution
    targets: list[np.ndarray] = field(default_factory=list)   # the photos as fitted, float [H, W, 3]
    renders: list[np.ndarray] = field(default_factory=list)   # final reconstructions, float [H, W, 3]


# ----------------------------------------------------------------------------------------- camera correction
def corrected_c2w(c2w: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor, pivot: str = "object") -> torch.Tensor:
    """c2w [N, 4, 4] with a correction: rotation rot [N, 3] (axis-angle) and translation trans [N, 3].

    pivot "object": the camera turns about the object frame's origin, then moves by trans (object-frame
    axes; camera_refine.apply_corrections, as training's refinement does), the way a landmark fit or an
    encoder errs: the object stays where it was in the image. "camera": it turns about its own centre in
    camera axes (c2w @ [exp(rot) | trans]), which also slides the object across the image. Both build the
    rotation with camera_refine.axis_angle_matrix."""
    if pivot == "object":
        out = apply_corrections(c2w, torch.cat([rot, trans], -1))
        return torch.cat([out, c2w[:, 3:4]], 1)
    delta = torch.zeros_like(c2w)
    delta[:, :3, :3] = axis_angle_matrix(rot)
    delta[:, :3, 3] = trans
    delta[:, 3, 3] = 1.0
    return c2w @ delta


# ----------------------------------------------------------------------------------------- the fit
def _prepare(images, cameras, masks, res: int):
    from .images import resize, resize_mask

    targets, masks_out, cams = [], [], []
    for i, (img, cam) in enumerate(zip(images, cameras)):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image {i} must be uint8 RGB [H, W, 3], got {img.dtype} {list(img.shape)}")
        targets.append(resize(img, res, res).astype(np.float32) / 255.0)
        cams.append(cam.scaled(res, res))
        m = masks[i] if masks is not None and i < len(masks) else None
        masks_out.append(None if m is None else resize_mask(m, res, res))
    return targets, masks_out, cams


def _render_full(loaded, z: torch.Tensor, cam: Camera, precision: str) -> np.ndarray:
    from .render import render_image

    return render_image(loaded.model, z, cam, loaded.cfg.render, precision)["rgb"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def invert_images(loaded, images: list[np.ndarray], cameras: list[Camera], masks: list[np.ndarray | None],
                  steps: int = INVERT_STEPS, resolution: int | None = None, lr: float = INVERT_LR,
                  progress: Progress | None = None, refine_camera: bool = False, seed: int = 0,
                  rays_per_image: int = RAYS_PER_IMAGE, measure_init: bool = True,
                  z_init: torch.Tensor | None = None, camera_lr: float = CAMERA_LR,
                  basis: str = _DEFAULTS.latent_basis, latent_prior: float | None = None,
                  camera_pivot: str | None = None) -> InvertResult:
    """Fit one latent per photo (uint8 RGB [H, W, 3]) seen through `cameras`, network frozen.

    Photos (and masks, float in [0, 1] or uint8) are resized to `resolution` (default: the training
    resolution) square, as in training, and the cameras scaled to match. Deterministic for a seed.
    z_init [N, D]: each photo's starting latent (an encoder's answer; default: the table's mean); with it,
    steps 0 returns the start unchanged (rendered and measured). refine_camera: also learn a rotation and
    translation correction of each camera, at learning rate camera_lr, turning it about camera_pivot
    (corrected_c2w; default: the run's invert.camera_pivot). basis: the coordinates the latent is
    optimised in (latent_steps). latent_prior: weight of the table's Gaussian prior (LatentPrior;
    default: the run's invert.latent_prior)."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to invert")
    if len(cameras) != n:
        raise ValueError("one camera per image")
    if steps < (0 if z_init is not None else 1):
        raise ParamError("steps", "must be at least 1")
    check_latent_basis(basis)
    res = int(resolution or loaded.cfg.train.resolution)
    device = loaded.latents.device
    precision = resolve_precision(loaded.cfg.train.precision, device)
    targets, masks_f, cams = _prepare(images, cameras, masks, res)
    z_mean = loaded.latents.detach().float().mean(0)
    z_start = (z_mean[None].expand(n, -1) if z_init is None else z_init.detach().float().to(device)).clone()
    p = min(int(rays_per_image), res * res)
    group = max(1, MAX_RAYS_PER_STEP // p)
    pr = or_silent(progress)

    step_dirs = latent_steps(loaded.latents, basis).to(device)                                  # [D, D]
    prior_w = latent_prior_weight(loaded, latent_prior)
    pivot = loaded.cfg.invert.camera_pivot if camera_pivot is None else camera_pivot
    if pivot not in CAMERA_PIVOTS:
        raise ParamError("camera_pivot", f"must be one of {', '.join(CAMERA_PIVOTS)}, got '{pivot}'")
    prior = LatentPrior(loaded.latents, prior_w) if prior_w > 0 else None
    z_out = z_start.cpu().clone()
    out_cams: list[Camera] = list(cams)
    history = np.zeros(steps)
    gen = torch.Generator().manual_seed(int(seed))
    total_steps = steps * math.ceil(n / group)
    with pr.task("inverting", total=total_steps) as task, denormals_flushed():
        for g0 in range(0, n if steps > 0 else 0, group):
            idx = list(range(g0, min(n, g0 + group)))
            z_fit, c2w_fit, losses = _fit_group(loaded, [targets[i] for i in idx], [masks_f[i] for i in idx],
                                                [cams[i] for i in idx], z_start[idx], steps, lr, refine_camera, p,
                                                precision, gen, task, camera_lr, step_dirs, prior, pivot)
            z_out[idx] = z_fit.cpu()
            history += np.asarray(losses) * len(idx) / n
            for j, i in enumerate(idx):
                out_cams[i] = cams[i].with_pose(c2w_fit[j])

    psnr_init, psnr, renders = [], [], []
    with pr.task("measuring", total=n) as task:
        for i in range(n):
            if measure_init:
                psnr_init.append(_psnr(_render_full(loaded, z_start[i], cams[i], precision), targets[i]))
            rec = _render_full(loaded, z_out[i].to(device), out_cams[i], precision)
            renders.append(rec)
            psnr.append(_psnr(rec, targets[i]))
            task.advance(1)
    return InvertResult(z_out, psnr, [float(v) for v in history], psnr_init, out_cams, targets, renders)


def check_latent_basis(basis: str) -> None:
    if basis not in LATENT_BASES:
        raise ParamError("latent_basis", f"must be one of {', '.join(LATENT_BASES)}, got '{basis}'")


def latent_steps(table: torch.Tensor, basis: str) -> torch.Tensor:
    """The directions inversion moves a latent along, one row each, scaled to one optimiser unit: [D, D].

    "raw": the identity (each latent coordinate). "pca": the latent table's principal axes, each scaled
    by the table's standard deviation along it relative to the mean of those deviations: Adam moves every
    coordinate by about `lr` per step, so the steps keep their average length but go far along the
    directions in which the training objects differ most and little along the others. The covariance
    gets a small floor (1 % of its mean variance) so that every direction stays reachable, also for
    tables of fewer rows than dimensions. Measured on the 64 px `cpu` model (docs/encoder.md): the same
    result after 200 steps, 0.3-0.7 dB better novel views after 30."""
    d = table.shape[1]
    if basis == "raw" or table.shape[0] < 2:
        return torch.eye(d)
    var, axes = table_spread(table)
    std = var.clamp_min(0).sqrt()
    return (axes * (std / std.mean())).T.flip(0).float()                   # [D, D], largest first


def table_spread(table: torch.Tensor, shrink: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent table's covariance as (variances [D] ascending, principal axes [D, D] as columns), in
    float64 on the CPU: shrunk towards its mean variance by `shrink` (0..1), then floored at LATENT_FLOOR of
    that mean variance so that every direction keeps some spread. Needs at least 2 rows."""
    z = table.detach().double().cpu()
    d = z.shape[1]
    centred = z - z.mean(0)
    cov = centred.T @ centred / (z.shape[0] - 1)
    mean_var = float(cov.diagonal().mean())
    eye = torch.eye(d, dtype=cov.dtype)
    cov = (1 - shrink) * cov + eye * (shrink * mean_var + LATENT_FLOOR * mean_var + 1e-12)
    return torch.linalg.eigh(cov)


def latent_prior_weight(loaded, weight: float | None) -> float:
    """The latent prior's weight an inversion uses: `weight`, or the run's invert.latent_prior when None.
    A negative weight is a ParamError."""
    w = float(loaded.cfg.invert.latent_prior if weight is None else weight)
    if not w >= 0:
        raise ParamError("latent_prior", f"must be 0 or more, got {w:g}")
    return w


class LatentPrior:
    """The latent table's Gaussian as a loss: weight x the mean over dimensions of the squared whitened
    principal coordinates of each latent, summed over latents. A table row scores about weight x 1; the
    gradient pulls a latent towards the mean, least along the directions in which the training objects
    differ most. The covariance is table_spread's, shrunk by D / (K + D) for a table of K rows, so that a
    small table does not confine a latent to the few directions its rows happen to span."""

    def __init__(self, table: torch.Tensor, weight: float):
        k, d = table.shape
        self.mean = table.detach().float().mean(0)
        if k < 2:
            self.whiten = torch.eye(d, device=table.device)
        else:
            var, axes = table_spread(table, shrink=d / (k + d))
            self.whiten = (axes / var.clamp_min(1e-12).sqrt()).float().to(table.device)          # [D, D]
        self.weight = float(weight)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """z [G, D] -> the prior's loss, a scalar."""
        return self.weight * (((z - self.mean) @ self.whiten) ** 2).mean(1).sum()


def _fit_group(loaded, targets, masks, cams, z0, steps, lr, refine_camera, p, precision, gen, task,
               camera_lr: float, step_dirs: torch.Tensor, prior: LatentPrior | None = None, pivot: str = "object"):
    """Optimise the latents of one group of photos together, z = z0 + coef @ step_dirs (latent_steps) with Adam
    on coef. Returns (z [G, D], c2w [G, 4, 4] numpy, losses)."""
    from .render import render_rays

    tc = loaded.cfg.train
    weights = LossWeights.of(tc, interlevel=False)       # the network is frozen: no proposal term
    device = loaded.latents.device
    g = len(targets)
    hw = targets[0].shape[0] * targets[0].shape[1]
    w = targets[0].shape[1]
    target = torch.from_numpy(np.stack(targets)).reshape(g, hw, 3).to(device)                  # [G, HW, 3]
    has_mask = torch.tensor([m is not None for m in masks], device=device)
    mask = torch.from_numpy(np.stack([m if m is not None else np.zeros(targets[0].shape[:2], np.float32)
                                      for m in masks])).reshape(g, hw).to(device)              # [G, HW]
    c2w0 = torch.tensor(np.stack([c.c2w for c in cams]), dtype=torch.float32, device=device)    # [G, 4, 4]
    intr = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cams], dtype=torch.float32, device=device)

    z0 = z0.to(device).float()
    coef = torch.nn.Parameter(torch.zeros_like(z0))                                            # [G, D]
    params = [{"params": [coef], "lr": lr}]
    rot = torch.zeros(g, 3, device=device, requires_grad=refine_camera)
    trans = torch.zeros(g, 3, device=device, requires_grad=refine_camera)
    if refine_camera:
        params.append({"params": [rot, trans], "lr": camera_lr})
    opt = torch.optim.Adam(params)
    base_lrs = [grp["lr"] for grp in opt.param_groups]
    image_of_ray = torch.arange(g, device=device).repeat_interleave(p)                         # [R]
    ray_has_mask = has_mask.float()[image_of_ray]                                              # [R]
    losses = []
    for step in range(steps):
        # cosine decay from lr to lr * INVERT_LR_FINAL_FACTOR
        f = INVERT_LR_FINAL_FACTOR + (1 - INVERT_LR_FINAL_FACTOR) * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
        for grp, base in zip(opt.param_groups, base_lrs):
            grp["lr"] = base * f
        if p >= hw:
            pix = torch.arange(hw).repeat(g, 1)
        else:
            pix = torch.stack([torch.randperm(hw, generator=gen)[:p] for _ in range(g)])           # [G, P]
        pix = pix.to(device)
        u = (pix % w).float().reshape(-1) + 0.5
        v = (pix // w).float().reshape(-1) + 0.5
        tgt = target.gather(1, pix[..., None].expand(g, p, 3)).reshape(-1, 3)
        m = mask.gather(1, pix).reshape(-1)

        def loss_of(sl: slice):
            # per-photo means summed over photos (each photo's gradient does not depend on the group
            # size): every term over this micro-batch's rays / p, so that micro-batches add up
            c2w = corrected_c2w(c2w0, rot, trans, pivot) if refine_camera else c2w0
            img = image_of_ray[sl]
            k = intr[img]
            origins, dirs = pixel_rays(c2w[img], k[:, 0], k[:, 1], k[:, 2], k[:, 3], u[sl], v[sl])
            z = z0 + coef @ step_dirs                                                          # [G, D]
            out = render_rays(loaded.model, origins, dirs, z[img], loaded.cfg.render, perturb=True,
                              precision=precision, generator=gen, pix=1.0 / k[:, 0])
            loss, terms = compose_loss(out, tgt[sl], m[sl], ray_has_mask[sl], weights, p, p)
            return loss, {"loss": loss, "rgb": terms["loss_rgb"]}

        opt.zero_grad(set_to_none=True)
        finite, sums = backward_in_micro_batches(image_of_ray.shape[0], tc.micro_batch_rays, device, loss_of)
        if prior is not None and finite:
            prior_loss = prior(z0 + coef @ step_dirs)
            prior_loss.backward()
            sums["loss"] += float(prior_loss.detach())
        if not finite:
            opt.zero_grad(set_to_none=True)
            losses.append(float("nan"))
            task.advance(1)
            continue
        opt.step()
        losses.append(sums["loss"] / g)
        task.advance(1, loss=losses[-1], psnr=psnr_from_mse(sums["rgb"] / g))
    with torch.no_grad():
        c2w_final = corrected_c2w(c2w0, rot, trans, pivot) if refine_camera else c2w0
        z = z0 + coef @ step_dirs
    return z, c2w_final.detach().cpu().double().numpy(), losses


# ----------------------------------------------------------------------------------------- photos -> inputs
@dataclass
class PhotoInput:
    path: Path
    rgb: np.ndarray                 # uint8 [H, W, 3] as loaded
    camera: Camera                  # at the photo's own size
    mask: np.ndarray | None         # float [H, W] in [0, 1]
    camera_source: str              # "transforms.json" / "landmarks (rmse 1.2 px)"
    mask_source: str | None = None


def cameras_from_transforms(paths: Sequence[Path], transforms_path: str | Path) -> list[Camera]:
    """Each photo's camera from a transforms.json, matched by file name (stem)."""
    from .formats import read_transforms

    transforms_path = Path(transforms_path)
    tf = read_transforms(transforms_path)
    by_stem = tf.by_stem()
    out = []
    for p in paths:
        frame = by_stem.get(Path(p).stem)
        if frame is None:
            raise InputError(p, f"has no frame in {transforms_path} (frames are matched by file name, "
                                f"e.g. images/{Path(p).stem}.png)")
        out.append(Camera.from_frame(frame))
    return out


INVERT_HINT = ("give its 2D landmarks with --landmarks LANDMARKS.json (from any landmarker, docs/landmarks.md) "
               "or its camera with --camera TRANSFORMS.json")


def camera_from_landmarks(loaded, rgb: np.ndarray, path: str | Path, focal: float | None = None,
                          points: np.ndarray | None = None, hint: str = INVERT_HINT) -> tuple[Camera, str]:
    """Find the 5 face landmarks (or take the given `points` [N, 2], in RUN/keypoints.json's order) and fit
    the photo's camera to the run's canonical keypoints (fixed).

    focal: in pixels of this photo; default: the training cameras' median field of view (RUN/view.json).
    hint: what the user can do instead when no face is found (ends the error message)."""
    from .formats import read_keypoints

    path = Path(path)
    kp_path = loaded.run.keypoints
    if not kp_path.is_file():
        raise InputError(kp_path, "not found; this run has no canonical keypoints, so give the photos' cameras "
                                  "with --camera TRANSFORMS")
    keypoints = read_keypoints(kp_path)
    try:
        from . import camfit, landmarks
    except ImportError as exc:
        raise InputError(path, f"cannot place this photo without --camera: landmark support is unavailable ({exc})") \
            from None
    if points is None:
        if not landmarks.mediapipe_installed():
            raise InputError(path, f"finding its face landmarks needs MediaPipe, an optional part of lolnerf "
                                   f"({landmarks.INSTALL_HINT}); or {hint}")
        try:
            points, _ = landmarks.detect_face5(rgb)      # raises LandmarksNotFound ("no face found", ...)
        except InputError as exc:
            raise InputError(path, f"{exc.reason}; {hint}") from None
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if points.shape[0] != keypoints.points.shape[0]:
        raise InputError(kp_path, f"has {keypoints.points.shape[0]} keypoints but the face landmarker finds "
                                  f"{points.shape[0]}; give the photos' cameras with --camera TRANSFORMS")
    h, w = rgb.shape[:2]
    if focal is None:
        # five points in one photo cannot pin down the focal length (it trades off against distance), so
        # the photo is assumed to share the training cameras' (median) field of view, as the model was fitted to it
        focal = focal_from_fov(read_view(loaded.run.root).fov, h)
    try:
        frame = camfit.fit_single_camera(points, keypoints.points, w, h, focal=focal)
    except InputError as exc:
        raise InputError(path, f"camera could not be fitted to its landmarks ({exc.reason})") from None
    rmse = frame.extra.get("landmark_rmse_px")
    note = "landmarks"
    if isinstance(rmse, (int, float)):
        poor = (f", poor fit: {frame.extra.get('flag_reason', 'see docs/landmarks.md')}; the camera may be off, "
                f"check the landmarks or give --camera") if frame.extra.get("flagged") else ""
        note += f" (rmse {rmse:.1f} px{poor})"
    return Camera.from_frame(frame), note


def mask_for_photo(path: Path, rgb: np.ndarray, alpha: np.ndarray | None, segment: bool) -> tuple[np.ndarray | None, str | None]:
    """A photo's foreground mask: DATA/masks/<stem>.png beside DATA/images/, its alpha channel, or (segment)
    a segmentation of the photo. Float [H, W] in [0, 1] or None."""
    from .images import object_mask

    h, w = rgb.shape[:2]
    cand = path.parent.parent / "masks" / (path.stem + ".png")
    if cand.is_file() and cand.resolve() != path.resolve():
        return object_mask(cand, None, (w, h)), str(cand)
    if alpha is not None and alpha.min() < 255:
        return object_mask(None, alpha), "alpha channel"
    if segment:
        try:
            from . import landmarks

            m = landmarks.segment_foreground(rgb) if landmarks.mediapipe_installed() else None
        except (ImportError, AttributeError, InputError, RuntimeError, OSError, ValueError):
            return None, None
        if m is None:
            return None, None
        m = np.asarray(m, dtype=np.float32)
        if m.max() > 1.0:
            m = m / 255.0
        return m, "segmentation"
    return None, None


def points_from_landmarks_file(loaded, paths: Sequence[Path], landmarks_path: str | Path) -> list[np.ndarray]:
    """Each photo's 2D landmarks from a landmarks.json (any landmarker), matched by file name, in the order of
    the run's canonical keypoint names."""
    from .formats import name_order, read_keypoints, read_landmarks

    landmarks_path = Path(landmarks_path)
    lm = read_landmarks(landmarks_path)
    if not loaded.run.keypoints.is_file():
        raise InputError(loaded.run.keypoints, "not found; this run has no canonical keypoints to fit landmarks to")
    names = read_keypoints(loaded.run.keypoints).names
    order = name_order(names, lm.names, landmarks_path, "the model's keypoints")
    by_stem = {Path(f.file_path).stem: f for f in lm.frames}
    out = []
    for p in paths:
        frame = by_stem.get(Path(p).stem)
        if frame is None:
            raise InputError(p, f"has no landmarks in {landmarks_path} (frames are matched by file name)")
        out.append(np.asarray(frame.points, dtype=np.float64)[order])
    return out


def load_photos(loaded, paths: Sequence[str | Path], transforms: str | Path | None = None,
                use_masks: bool = True, focal: float | None = None,
                landmarks_file: str | Path | None = None) -> list[PhotoInput]:
    """Read the photos and give each a camera (from `transforms`, or landmarks — detected, or read from
    `landmarks_file` — fitted to the run's keypoints) and a mask."""
    from .images import load_image

    paths = [Path(p) for p in paths]
    shared = first_shared_stem(paths) if transforms is not None else None
    if shared is not None:
        i, earlier = shared
        raise InputError(paths[i], f"has the same file name as {earlier}; cameras are matched by name")
    loaded_imgs = [load_image(p, with_alpha=True) for p in paths]   # unreadable files fail before any work
    cams = cameras_from_transforms(paths, transforms) if transforms is not None else None
    given = points_from_landmarks_file(loaded, paths, landmarks_file) if landmarks_file is not None else None
    out = []
    for i, (p, (rgb, alpha)) in enumerate(zip(paths, loaded_imgs)):
        if cams is not None:
            cam, src = cams[i], Path(transforms).name
        else:
            cam, src = camera_from_landmarks(loaded, rgb, p, focal, None if given is None else given[i])
        mask, msrc = mask_for_photo(p, rgb, alpha, segment=cams is None) if use_masks else (None, None)
        out.append(PhotoInput(p, rgb, cam, mask, src, msrc))
    return out


# ----------------------------------------------------------------------------------------- preview
def preview_path(latents_path: str | Path) -> Path:
    p = Path(latents_path)
    return p.with_name(p.stem + "_preview.png")


def write_preview(path: str | Path, loaded, result: InvertResult, novel_yaw: float | None = None,
                  names: Sequence[str] | None = None) -> Path:
    """One captioned row per photo: photo | reconstruction (PSNR) | novel view (the photo's camera turned by
    `novel_yaw` degrees about +Y), each enlarged to at least SHEET_MIN_TILE pixels (video.contact_sheet)."""
    from .images import save_png
    from .video import contact_sheet

    yaw = NOVEL_YAW_DEG if novel_yaw is None else novel_yaw
    precision = resolve_precision(loaded.cfg.train.precision, loaded.latents.device)
    tiles, captions = [], []
    for i in range(result.latents.shape[0]):
        z = result.latents[i].to(loaded.latents.device)
        novel = _render_full(loaded, z, turned(result.cameras[i], yaw), precision)
        name = names[i] if names is not None else f"photo {i}"
        tiles += [result.targets[i], result.renders[i], novel]
        captions += [name, f"reconstruction {result.psnr[i]:.1f} dB", f"novel view, turned {yaw:g}°"]
    path = Path(path)
    save_png(path, contact_sheet(tiles, captions, cols=3))
    return path
