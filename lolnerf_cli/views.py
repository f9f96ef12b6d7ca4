"""Where cameras look from around a trained model: `View` / `read_view`, the mean training camera of a
run (RUN/view.json), the centre of every orbit and of every "mean view" image (sample grids,
interpolation videos), and `turned`, a camera carried around the object's vertical axis."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cameras import Camera, focal_from_fov, look_at, orbit_cameras, spherical_eye
from .config import InvertConfig, VideoConfig
from .errors import InputError
from .formats import read_json

ORBIT_YAW_DEG = VideoConfig.orbit_yaw_deg      # the numbers live in config.py
ORBIT_PITCH_DEG = VideoConfig.orbit_pitch_deg
NOVEL_YAW_DEG = InvertConfig.novel_yaw_deg
DEFAULT_VIEW = (0.0, 0.0, 2.7, 30.0)   # (yaw, pitch, radius, fov) when a run has no view.json


# ----------------------------------------------------------------------------------------- views
@dataclass
class View:
    """A camera on a sphere around the object, looking at the origin."""

    yaw: float
    pitch: float
    radius: float
    fov: float

    def camera(self, size: int, yaw_offset: float = 0.0, pitch_offset: float = 0.0) -> Camera:
        """A square `size` px camera at this view (turned by the offsets, in degrees)."""
        f = focal_from_fov(self.fov, size)
        eye = spherical_eye(self.yaw + yaw_offset, self.pitch + pitch_offset, self.radius)
        return Camera(look_at(eye), f, f, size / 2, size / 2, size, size)

    def orbit(self, n_frames: int, size: int) -> list[Camera]:
        """A closed yaw/pitch loop of `n_frames` square cameras around this view."""
        return orbit_cameras(n_frames, size, radius=self.radius, fov_deg=self.fov, yaw_amp=ORBIT_YAW_DEG,
                             pitch_amp=ORBIT_PITCH_DEG, center_yaw=self.yaw, center_pitch=self.pitch)


def read_view(run_root: str | Path) -> View:
    """The mean training view of a run (RUN/view.json); a frontal default for runs without one."""
    path = Path(run_root) / "view.json"
    if not path.is_file():
        return View(*DEFAULT_VIEW)
    obj = read_json(path, "view file")
    try:
        vals = [float(obj[k]) for k in ("yaw", "pitch", "radius", "fov")]
    except (KeyError, TypeError, ValueError):
        raise InputError(path, "must hold numbers 'yaw', 'pitch', 'radius' and 'fov'") from None
    if not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or not 0 < vals[3] < 180:
        raise InputError(path, "has an invalid radius or field of view")
    return View(*vals)


def turned(camera: Camera, yaw_deg: float) -> Camera:
    """The same camera carried around the object's vertical axis (+Y through the origin) by yaw_deg."""
    a = math.radians(yaw_deg)
    rot = np.eye(4)
    rot[0, 0], rot[0, 2], rot[2, 0], rot[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
    return camera.with_pose(rot @ camera.c2w)


VISIBILITY_CAMERAS = 48          # training cameras that decide which mesh pieces are seen (evenly spaced)


def training_cameras(run_root: str | Path, size: int, count: int = VISIBILITY_CAMERAS) -> tuple[list[Camera], str]:
    """Up to `count` of a run's training cameras (evenly spaced through its image list), and where they
    came from, in words. They are read from the dataset named in RUN/images.json (DATA/transforms.json);
    when that is gone or unreadable, the views the run's orbits cover stand in: a 5 x 3 grid of yaw and
    pitch around the mean training view (RUN/view.json), as far out as `render --orbit` goes, at `size` px."""
    from .formats import read_image_list, read_transforms, with_run_cameras

    run_root = Path(run_root)
    why = "the run has no images.json"
    images = run_root / "images.json"
    if images.is_file():
        try:
            files, data = read_image_list(images)
            if data is None:
                why = f"{images} names no dataset"
            elif not (data / "transforms.json").is_file():
                why = f"{data / 'transforms.json'} is not there"
            else:
                in_run = set(files)
                frames = [f for f in read_transforms(data / "transforms.json").frames if f.file_path in in_run]
                frames, refined = with_run_cameras(frames, run_root)
                if frames:
                    pick = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
                    where = run_root / "cameras.json" if refined else data / "transforms.json"
                    return [Camera.from_frame(frames[i]) for i in pick], f"{len(pick)} training cameras from {where}"
                why = f"{data / 'transforms.json'} has none of the run's images"
        except InputError as e:
            why = str(e).rstrip(".")
    view = read_view(run_root)
    cams = [view.camera(size, yaw, pitch) for yaw in np.linspace(-ORBIT_YAW_DEG, ORBIT_YAW_DEG, 5)
            for pitch in np.linspace(-ORBIT_PITCH_DEG, ORBIT_PITCH_DEG, 3)]
    return cams, f"{len(cams)} views around the mean training view ({why})"
