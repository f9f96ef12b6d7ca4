"""Cameras from landmarks: a joint least-squares fit of canonical 3D keypoints and per-image cameras.

Model (OpenCV axes inside the solver: x right, y down, z forward): a keypoint X_n of the class seen by
image k lands at
    (u, v) = (cx_k, cy_k) + f_k * (p_x, p_y) / p_z,   p = R_k X_n + t_k,
with cx, cy = w/2, h/2 and, unless a focal length is given, f_k = max(w_k, h_k) * exp(g + d_k): g is a log
focal ratio shared by all images and d_k a per-image deviation held to 0 by a weak prior (one image's
5 points barely tell focal length from distance; the whole set does).

The unknowns (keypoints [N, 3], g, and per image a rotation vector, translation and d_k) minimise the
robust (soft-L1) reprojection error with `scipy.optimize.least_squares`; residuals are computed for all
images at once and the Jacobian's sparsity pattern is given explicitly (each image's residuals touch
only its own camera, the keypoints and g). Residuals are measured in percent of each image's landmark
spread (RMS distance of the landmarks from their centroid) so that big and small photos count alike.

Steps: the canonical keypoints start from a mean frontal face template (face5) or, for other schemes,
from an affine (Tomasi-Kanade) factorisation of all landmarks with a metric upgrade, whose depth-mirror
ambiguity is settled by trying both. Each camera starts from a closed-form weak-perspective fit, refined
by a batched per-frame Levenberg-Marquardt (the "PnP" step; frames are independent given the
keypoints). A few rounds of keypoints-given-cameras (linear triangulation) / cameras-given-keypoints
bring the shape close, then the joint `least_squares` solve runs on the frames that are not gross
outliers (at most JOINT_MAX_FRAMES of them), and finally every frame is refined against the fitted
keypoints and shared focal ratio.

Public: `fit_cameras` (the command), `fit_single_camera` (one photo against fixed keypoints, for
`invert`). The solver itself (`solve_cameras`: arrays in, CameraSolution out; `FACE5_TEMPLATE`) is
camfit_solver.py.

Gauge (SPEC object frame): for face5 the eye line becomes +X, the eyes-above-mouth direction +Y and the
face normal +Z, and scale and offset best match the template, which puts the face at the front of the
unit sphere with the head inside it. Other schemes are centred on the keypoints, +Z points to the mean
camera, +Y is the cameras' mean up direction, and the keypoints fit a sphere of radius 0.8.

A frame is flagged when its landmark RMSE exceeds 15 % of its landmark spread (or 3x the median ratio
over the dataset, if larger, up to 35 %), or a keypoint lands behind its camera: a wrong detection, a
heavily occluded or distorted face. Training leaves flagged frames out by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .camfit_solver import MIN_FRAMES_FOR_SHAPE, landmark_spread, reprojection_errors, solve_cameras, solve_single
from .errors import InputError, ParamError
from .formats import (FACE5_NAMES, Frame, Keypoints, Landmarks, Transforms, name_order, read_keypoints,
                      read_landmarks, write_keypoints, write_transforms)
from .folders import dataset
from .progress import Progress

FLAG_FRACTION = 0.15            # flagged when landmark RMSE > this fraction of the landmark spread ...
FLAG_MEDIAN_FACTOR = 3.0        # ... or this many times the median such ratio, whichever is larger,
FLAG_MAX_FRACTION = 0.35        # ... capped here (random points give 0.2 - 0.7)
# top-level key + value marking a transforms.json written by fit_cameras (its cameras live in the fitted
# object frame, not a calibration frame); `lolnerf eval --frames auto` reads it
CAMERA_SOURCE_KEY, CAMERA_SOURCE_FITTED = "camera_source", "fit-cameras"


# ----------------------------------------------------------------------------------------- public API
@dataclass
class CameraFit:
    """Everything `fit_cameras` found."""

    transforms: Transforms
    keypoints: Keypoints
    rmse_px: np.ndarray                    # [K] per fitted frame, in landmarks order
    flagged: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)       # failed landmark frames, not fitted
    fitted_keypoints: bool = True
    fitted_focal: bool = True

    @property
    def median_rmse_px(self) -> float:
        return float(np.median(self.rmse_px)) if self.rmse_px.size else float("nan")

    @property
    def p90_rmse_px(self) -> float:
        return float(np.percentile(self.rmse_px, 90)) if self.rmse_px.size else float("nan")


def fit_single_camera(points2d: np.ndarray, keypoints3d: np.ndarray, w: int, h: int, focal: float | None = None,
                      file_path: str = "", focal_prior: float | None = None) -> Frame:
    """Place one photo against fixed canonical keypoints (for `invert`).

    points2d [N, 2] pixels, keypoints3d [N, 3] object frame. focal: fixed focal length in pixels, or None
    to fit it with a weak prior (focal_prior pixels, default a 30-degree field of view over max(w, h)).
    Returns a formats.Frame (c2w OpenGL axes, cx = w/2, cy = h/2) with extra "landmark_rmse_px" and
    "landmark_spread_px" (RMS distance of the points from their centre), and, for a poor fit, "flagged" and
    "flag_reason" (a phrase saying which test failed)."""
    pts = np.asarray(points2d, dtype=np.float64)
    kp = np.asarray(keypoints3d, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or kp.shape != (pts.shape[0], 3) or pts.shape[0] < 4:
        raise InputError(None, f"need matching points2d [N, 2] and keypoints3d [N, 3] with N >= 4, "
                               f"got {list(pts.shape)} and {list(kp.shape)}")
    if not (np.isfinite(pts).all() and np.isfinite(kp).all()):
        raise InputError(None, "landmarks or keypoints contain NaN or infinite values")
    sol = solve_single(pts, kp, w, h, focal, focal_prior)
    rmse, in_front = reprojection_errors(sol, pts[None], [w], [h], focal)
    c2w = sol.c2w()[0]
    spread = float(landmark_spread(pts[None])[0])
    extra = {"landmark_rmse_px": round(float(rmse[0]), 4), "landmark_spread_px": round(spread, 4)}
    if not in_front[0]:
        extra["flagged"], extra["flag_reason"] = True, "a keypoint lands behind the fitted camera"
    elif rmse[0] > FLAG_FRACTION * spread:
        extra["flagged"] = True
        extra["flag_reason"] = (f"the error is over {FLAG_FRACTION:.0%} of the landmarks' own spread "
                                f"({spread:.1f} px RMS from their centre), so the landmarks do not match the "
                                f"class's 3D keypoints well")
    return Frame(c2w, float(sol.f[0]), float(sol.f[0]), w / 2, h / 2, int(w), int(h), file_path, extra)


def fit_cameras(data: str | Path, keypoints: str | Path | None = None, focal: float | None = None,
                flag_fraction: float = FLAG_FRACTION, init_keypoints: str | Path | None = None,
                progress: Progress | None = None, write: bool = True) -> CameraFit:
    """DATA/landmarks.json -> DATA/transforms.json (+ DATA/keypoints.json). See the module docstring."""
    if focal is not None and not (math.isfinite(focal) and focal > 0):
        raise ParamError("focal", f"must be a positive focal length in pixels, got {focal}")
    if not (0 < flag_fraction < math.inf):
        raise ParamError("flag_fraction", f"must be a positive fraction, got {flag_fraction}")
    ds = dataset(data)
    if not ds.landmarks.is_file():
        raise InputError(ds.landmarks, "not found; run `lolnerf landmarks DATA` first or supply a landmarks.json")
    lm = read_landmarks(ds.landmarks, ds.root)
    kp_fixed = None
    if keypoints is not None:
        kp = read_keypoints(keypoints)
        kp_fixed = _match_names(kp, lm, Path(keypoints))
    kp_init = None
    if init_keypoints is not None and kp_fixed is None:
        kp_init = _match_names(read_keypoints(init_keypoints), lm, Path(init_keypoints))
    frames = lm.frames
    if kp_fixed is None and len(frames) < MIN_FRAMES_FOR_SHAPE:
        raise InputError(ds.landmarks, f"has {len(frames)} frame(s) with landmarks; fitting canonical keypoints "
                                       f"needs at least {MIN_FRAMES_FOR_SHAPE} (or give canonical keypoints)")
    if not frames:
        raise InputError(ds.landmarks, "has no frames with landmarks")
    obs = np.stack([f.points for f in frames])
    w = np.array([f.w for f in frames])
    h = np.array([f.h for f in frames])
    face5 = list(lm.names) == FACE5_NAMES
    sol = solve_cameras(obs, w, h, keypoints=kp_fixed, focal=focal, face5=face5, init_keypoints=kp_init,
                        progress=progress)
    rmse, in_front = reprojection_errors(sol, obs, w, h, focal)
    rel = rmse / np.maximum(landmark_spread(obs), 1e-9)
    bad = (rel > flag_threshold(rel, flag_fraction)) | ~in_front
    c2w = sol.c2w()
    out_frames, flagged = [], []
    for i, fr in enumerate(frames):
        extra = {"landmark_rmse_px": round(float(rmse[i]), 4), "flagged": bool(bad[i])}
        if bad[i]:
            flagged.append(fr.file_path)
        out_frames.append(Frame(c2w[i], float(sol.f[i]), float(sol.f[i]), fr.w / 2, fr.h / 2, fr.w, fr.h,
                                fr.file_path, extra))
    if len(flagged) == len(frames):
        raise InputError(ds.landmarks, f"no frame fits the landmarks well (all {len(frames)} flagged, median RMSE "
                                       f"{np.median(rmse):.1f} px); check the landmarks")
    kp_out = Keypoints(lm.scheme, list(lm.names), sol.X)
    tf = Transforms(out_frames, {"keypoints_scheme": lm.scheme, CAMERA_SOURCE_KEY: CAMERA_SOURCE_FITTED})
    if write:
        write_transforms(ds.transforms, tf)
        write_keypoints(ds.keypoints, kp_out)
    return CameraFit(tf, kp_out, rmse, flagged, list(lm.failed), kp_fixed is None, focal is None)


def flag_threshold(rel: np.ndarray, fraction: float = FLAG_FRACTION) -> float:
    """Relative landmark RMSE (RMSE / landmark spread) above which a frame is flagged: `fraction`, or
    FLAG_MEDIAN_FACTOR times the median over all frames when that is larger (a class whose shapes vary
    a lot fits every frame less well; only frames far worse than typical are flagged), but never more
    than FLAG_MAX_FRACTION (so a set of mostly wrong landmarks is still flagged)."""
    med = float(np.median(rel)) if np.size(rel) else 0.0
    return max(fraction, min(FLAG_MEDIAN_FACTOR * med, FLAG_MAX_FRACTION))


def _match_names(kp: Keypoints, lm: Landmarks, path: Path) -> np.ndarray:
    """Keypoints reordered to the landmarks' point names."""
    if set(kp.names) != set(lm.names) or len(kp.names) != len(lm.names):
        raise InputError(path, f"names {kp.names} do not match the landmarks' names {lm.names}")
    return kp.points[name_order(lm.names, kp.names, path, "the landmarks")]
