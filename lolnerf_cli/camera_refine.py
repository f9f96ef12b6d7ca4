"""Per-image camera refinement while training (BARF-style, for landmark-fitted cameras).

Five landmarks cannot separate a head's pose from its shape, so a camera fitted to them is off by several
degrees; the photo itself (silhouette, shading, the whole face) holds the missing evidence. Each training
image gets a small SE(3) correction delta = (w, tau): an axis-angle rotation w [3] about the object frame's
origin and a translation tau [3], applied to the fitted camera-to-world matrix [R | t] as

    R' = exp(w) R,    t' = exp(w) t + tau

(the camera turns about the object centre, the direction in which a landmark fit errs, then moves).
The corrections are a `RowTable` ("camera_delta", [K, 6], sparse Adam like the latent rows, local to each
rank's images, saved in trainer.safetensors so that --resume stays exact). They start at zero, are frozen
for the first `camera_warmup` of the steps (the field first takes a rough shape), then move with their own
learning rate (`camera_lr`, decayed like the others) against the photo loss plus a prior
`camera_prior * |delta|^2` that pulls them back to the landmark fit. The gauge: a correction shared by every
image only turns the object frame, so every `camera_recentre_every` steps the mean correction is removed
from all rows (under torch.distributed: a global mean). With NeRF's encoding ("pe") the trainer opens the
octaves coarse to fine while the cameras move (train.encoding_anneal), as BARF does, so that early pose
gradients are smooth.

The refined cameras are written to RUN/cameras.json (transforms.json format) at every checkpoint, each
frame with the landmark fit beside it (`landmark_fit_matrix`) and the size of its correction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from .distributed import DistInfo
from .formats import Frame, Transforms, write_transforms
from .row_table import RowTable

CAMERAS_SOURCE = "lolnerf train (refined cameras)"


def axis_angle_matrix(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [N, 3, 3] of axis-angle vectors w [N, 3] (Rodrigues; smooth at w = 0)."""
    theta2 = (w * w).sum(-1, keepdim=True)                                      # [N, 1]
    theta = torch.sqrt(theta2 + 1e-12)
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)       # sin t / t
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta2 + 1e-12))  # (1 - cos t) / t^2
    zero = torch.zeros_like(w[:, 0])
    k = torch.stack([zero, -w[:, 2], w[:, 1], w[:, 2], zero, -w[:, 0], -w[:, 1], w[:, 0], zero], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def apply_corrections(c2w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Cameras [N, 4, 4] (or [N, 3, 4]) with corrections delta [N, 6] = (w, tau) applied -> [N, 3, 4]. The
    rotation turns the camera about the object frame's origin (inversion's correction does the same by
    default: `invert.corrected_c2w`)."""
    rot = axis_angle_matrix(delta[:, :3].to(c2w.dtype))
    r = rot @ c2w[:, :3, :3]
    t = (rot @ c2w[:, :3, 3:4]).squeeze(-1) + delta[:, 3:].to(c2w.dtype)
    return torch.cat([r, t[..., None]], dim=-1)


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Angles in degrees [N] of R_a R_b^T for rotation stacks [N, 3, 3]."""
    rel = np.einsum("nij,nkj->nik", r_a, r_b)
    cos = (np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _aligned(r_est: np.ndarray, r_true: np.ndarray) -> np.ndarray:
    """Estimated camera-to-world rotations [N, 3, 3] turned by the one rotation that best maps the estimated
    frame onto the true one (the chordal mean of R_true R_est^T): a fitted object frame differs from the
    true one by an unknown global rotation."""
    m = np.einsum("nij,nkj->ik", r_true, r_est)              # sum of R_true R_est^T
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    g = u @ np.diag([1.0, 1.0, d]) @ vt
    return np.einsum("ij,njk->nik", g, r_est)


def aligned_rotation_errors(r_est: np.ndarray, r_true: np.ndarray) -> np.ndarray:
    """Rotation errors in degrees [N] of estimated camera-to-world rotations against true ones, the frames
    aligned first (`_aligned`)."""
    return rotation_angle_deg(_aligned(r_est, r_true), r_true)


def aligned_rotation_components(r_est: np.ndarray, r_true: np.ndarray) -> np.ndarray:
    """The same errors split by axis, degrees [N, 3]: the axis-angle vector of the turn about the object that
    takes each aligned estimate to the truth (R_true R_est^T), in the object frame: about X (pitch: nodding),
    Y (yaw: shaking the head) and Z (roll). Their norm is `aligned_rotation_errors`."""
    from scipy.spatial.transform import Rotation

    rel = np.einsum("nij,nkj->nik", r_true, _aligned(r_est, r_true))
    return np.degrees(Rotation.from_matrix(rel).as_rotvec())


class CameraRefiner:
    """The correction table of one training run, and how a step uses it."""

    def __init__(self, k: int, owned: torch.Tensor, lr: float, prior: float, warmup_steps: int, recentre_every: int,
                 device: torch.device, info: DistInfo, momentum: float = 0.9):
        self.table = RowTable("camera_delta", torch.zeros(k, 6), owned, lr, device, info, opt_key="cam_opt",
                              what="camera correction table", betas=(momentum, 0.999))
        self.prior, self.warmup_steps, self.recentre_every = float(prior), int(warmup_steps), int(recentre_every)
        self.info = info

    def active(self, step: int) -> bool:
        return step >= self.warmup_steps

    def cameras(self, c2w: torch.Tensor, local: torch.Tensor, step: int) -> torch.Tensor:
        """Corrected cameras [R, 3, 4] of rays whose images have local rows `local` [R] (no gradient to the
        corrections during the warm-up)."""
        delta = self.table(local)
        if not self.active(step):
            delta = delta.detach()
        return apply_corrections(c2w, delta)

    def prior_loss(self, local_images: torch.Tensor) -> torch.Tensor:
        """camera_prior * mean |delta|^2 over the step's images (local rows)."""
        d = self.table(local_images)
        return self.prior * (d * d).sum(-1).mean()

    def step(self, step: int, lr_factor: float) -> None:
        if self.active(step):
            self.table.step(lr_factor)
        if self.recentre_every and (step + 1) % self.recentre_every == 0 and self.active(step):
            self.recentre()

    @torch.no_grad()
    def recentre(self) -> None:
        """Remove the mean correction over all images (the gauge: a shared turn only turns the object frame)."""
        w = self.table.weight
        total = torch.cat([w.sum(0), torch.tensor([float(w.shape[0])], device=w.device)])
        if self.info.world > 1:
            dist.all_reduce(total)
        w -= total[:6] / total[6].clamp_min(1.0)

    def refined(self, c2w_all: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """All images' refined cameras [K, 4, 4] and corrections [K, 6] (numpy; a collective)."""
        delta = self.table.gather().to(torch.float64)
        c2w = c2w_all.detach().cpu().to(torch.float64)
        out = np.tile(np.eye(4), (c2w.shape[0], 1, 1))
        out[:, :3, :] = apply_corrections(c2w, delta).numpy()
        return out, delta.numpy()


def write_refined_cameras(path: Path, frames: list[Frame], c2w: np.ndarray, delta: np.ndarray, step: int,
                          source_extra: dict) -> None:
    """RUN/cameras.json: the training frames with their refined poses, the landmark fit kept per frame."""
    out = []
    for f, m, d in zip(frames, c2w, delta):
        extra = {k: v for k, v in f.extra.items() if k not in ("landmark_fit_matrix", "refinement")}
        extra["landmark_fit_matrix"] = [[float(c) for c in row] for row in f.c2w]
        extra["refinement"] = {"rotation_deg": round(math.degrees(float(np.linalg.norm(d[:3]))), 4),
                               "translation": round(float(np.linalg.norm(d[3:])), 5)}
        out.append(Frame(m, f.fx, f.fy, f.cx, f.cy, f.w, f.h, f.file_path, extra))
    extra = {k: v for k, v in source_extra.items() if k not in ("refined_by", "refined_at_step")}
    extra.update({"refined_by": CAMERAS_SOURCE, "refined_at_step": int(step)})
    write_transforms(path, Transforms(out, extra))
