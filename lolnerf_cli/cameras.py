"""Cameras: look-at poses, projection, pixel -> ray, orbits. One ray generator for the whole project.

Conventions (SPEC.md): c2w is camera-to-world with OpenGL axes (camera looks down -Z, +Y up, +X right);
pixel (u, v) has its origin at the image's top-left corner, +u right, +v down, pixel centres at i + 0.5.
Ray directions are *not* normalised: the camera-space z component is -1, so a distance t along a ray
is the camera-space z-depth of that point (what `render --depth` reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # torch is imported where rays are made, so file formats (formats.Frame) load without it
    import torch

WORLD_UP = np.array([0.0, 1.0, 0.0])


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """Camera-to-world [..., 4, 4] for cameras at `eye` [..., 3] looking at `target` (default origin)."""
    eye = np.asarray(eye, dtype=np.float64)
    target = np.zeros_like(eye) if target is None else np.broadcast_to(np.asarray(target, np.float64), eye.shape)
    back = eye - target                       # camera +Z points away from what it looks at
    back = back / np.linalg.norm(back, axis=-1, keepdims=True)
    right = np.cross(np.broadcast_to(up, back.shape), back)
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    true_up = np.cross(back, right)
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = true_up
    c2w[..., :3, 2] = back
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_eye(yaw_deg, pitch_deg, radius) -> np.ndarray:
    """Camera position on a sphere: yaw about +Y from the object's front (+Z), pitch up from the equator."""
    yaw = np.radians(np.asarray(yaw_deg, dtype=np.float64))
    pitch = np.radians(np.asarray(pitch_deg, dtype=np.float64))
    r = np.asarray(radius, dtype=np.float64)
    return np.stack([r * np.cos(pitch) * np.sin(yaw), r * np.sin(pitch), r * np.cos(pitch) * np.cos(yaw)], axis=-1)


def project(points: np.ndarray, c2w: np.ndarray, fx, fy, cx, cy) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [..., N, 3] through cameras c2w [..., 4, 4].

    Returns (uv [..., N, 2] pixel coordinates, z [..., N] camera-space depth, positive in front)."""
    rot = c2w[..., :3, :3]
    t = c2w[..., :3, 3]
    cam = np.einsum("...ji,...nj->...ni", rot, points - t[..., None, :])   # R^T (p - t)
    depth = -cam[..., 2]
    fx, fy, cx, cy = (np.asarray(a, dtype=np.float64)[..., None] for a in (fx, fy, cx, cy))
    u = cx + fx * cam[..., 0] / depth
    v = cy - fy * cam[..., 1] / depth
    return np.stack([u, v], axis=-1), depth


def focal_from_fov(fov_deg: float, size: int) -> float:
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2)


# ----------------------------------------------------------------------------------------- rays (torch)
def pixel_rays(c2w: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor,
               u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel positions.

    c2w [R, 4, 4] (or [R, 3, 4]); fx, fy, cx, cy, u, v [R] (u, v continuous: a pixel centre is i + 0.5).
    Returns origins [R, 3] and directions [R, 3] with camera-space z = -1 (unnormalised)."""
    import torch

    d_cam = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u)], dim=-1)   # [R, 3]
    dirs = torch.einsum("rij,rj->ri", c2w[:, :3, :3], d_cam)
    origins = c2w[:, :3, 3].expand_as(dirs)
    return origins, dirs


@dataclass
class Camera:
    """One pinhole camera (numpy, float64)."""

    c2w: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    w: int
    h: int

    def scaled(self, w: int, h: int) -> "Camera":
        """The same camera rendering an image of another size (intrinsics scale with it)."""
        sx, sy = w / self.w, h / self.h
        return Camera(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, w, h)

    def rays(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Rays of every pixel, row-major: origins, dirs [H*W, 3]."""
        import torch

        j, i = torch.meshgrid(torch.arange(self.h, dtype=torch.float32), torch.arange(self.w, dtype=torch.float32),
                              indexing="ij")
        u = (i + 0.5).reshape(-1)
        v = (j + 0.5).reshape(-1)
        n = u.shape[0]
        c2w = torch.as_tensor(self.c2w, dtype=torch.float32)[None].expand(n, 4, 4)
        full = lambda x: torch.full((n,), float(x))  # noqa: E731
        o, d = pixel_rays(c2w, full(self.fx), full(self.fy), full(self.cx), full(self.cy), u, v)
        return o.to(device), d.to(device)

    def with_pose(self, c2w: np.ndarray) -> "Camera":
        """The same intrinsics and image size at another pose (camera-to-world [4, 4])."""
        return Camera(np.asarray(c2w, dtype=np.float64), self.fx, self.fy, self.cx, self.cy, self.w, self.h)

    @staticmethod
    def from_frame(frame: "Camera") -> "Camera":
        """A transforms.json frame (formats.Frame, itself a Camera) as a plain Camera."""
        return frame.with_pose(frame.c2w)


def orbit_cameras(n_frames: int, size: int, radius: float = 2.7, fov_deg: float = 30.0, yaw_amp: float = 35.0,
                  pitch_amp: float = 12.0, center_yaw: float = 0.0, center_pitch: float = 0.0) -> list[Camera]:
    """A closed yaw/pitch orbit (a Lissajous loop) around the class's mean viewing direction."""
    f = focal_from_fov(fov_deg, size)
    cams = []
    for k in range(n_frames):
        phase = 2 * math.pi * k / max(n_frames, 1)
        eye = spherical_eye(center_yaw + yaw_amp * math.sin(phase), center_pitch + pitch_amp * math.sin(2 * phase),
                            radius)
        cams.append(Camera(look_at(eye), f, f, size / 2, size / 2, size, size))
    return cams


def mean_view(frames) -> tuple[float, float, float, float]:
    """(yaw, pitch, radius, fov) of the typical training camera, for orbits, novel views and the encoder.

    Yaw and pitch are those of the mean viewing direction; radius and field of view are medians, not
    means: landmark-fitted cameras (fit-cameras) hold a few photos whose focal length, and with it their
    distance, the five points pinned down badly, and a mean follows those outliers (docs/cameras.md).
    For a calibrated set, whose cameras agree, the two are the same."""
    eyes = np.array([np.asarray(f.c2w)[:3, 3] for f in frames])
    radius = float(np.median(np.linalg.norm(eyes, axis=1)))
    d = eyes.mean(axis=0)
    d = d / max(np.linalg.norm(d), 1e-9)
    yaw = math.degrees(math.atan2(d[0], d[2]))
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, d[1]))))
    fovs = [2 * math.degrees(math.atan(0.5 * f.h / f.fy)) for f in frames]
    return yaw, pitch, radius, float(np.median(fovs))


def sphere_bounds(origins: torch.Tensor, dirs: torch.Tensor, radius: float, near_min: float = 0.05):
    """Entry/exit distances t of rays against the bounding sphere |x| <= radius.

    Returns near [R], far [R], hit [R] bool. Rays that miss get near = far (zero-length)."""
    import torch

    a = (dirs * dirs).sum(-1)
    b = 2 * (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - 4 * a * c
    hit = disc > 0
    # sqrt only where the ray hits: sqrt(clamp(disc, 0)) has the right value but an infinite slope at 0, and
    # inf * 0 made the gradient of a missing ray NaN (it reaches refined or inverted cameras' corrections)
    sq = torch.where(hit, torch.sqrt(torch.where(hit, disc, torch.ones_like(disc))), torch.zeros_like(disc))
    near = ((-b - sq) / (2 * a)).clamp_min(near_min)
    far = ((-b + sq) / (2 * a)).clamp_min(near_min)
    far = torch.where(hit, far, near)
    return near, far, hit
