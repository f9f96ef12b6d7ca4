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

Initialisation: the canonical keypoints start from a mean frontal face template (face5) or, for other
schemes, from an affine (Tomasi-Kanade) factorisation of all landmarks with a metric upgrade, whose
depth-mirror ambiguity is settled by trying both; each camera starts from a closed-form
weak-perspective fit to the current keypoints.

Gauge (SPEC object frame): for face5 the eye line becomes +X, the eyes-above-mouth direction +Y and the
face normal +Z, and scale and offset best match the template, which puts the face at the front of the
unit sphere with the head inside it. Other schemes are centred on the keypoints, +Z points to the mean
camera, +Y is the cameras' mean up direction, and the keypoints fit a sphere of radius 0.8.

A frame is flagged when its landmark RMSE exceeds FLAG_FRACTION of its landmark spread (10 %: a
wrong detection or a heavily occluded face); training leaves flagged frames out by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from .errors import InputError
from .formats import (FACE5_NAMES, Frame, Keypoints, Landmarks, Transforms, dataset, read_keypoints, read_landmarks,
                      write_keypoints, write_transforms)
from .progress import Progress, or_silent

# Mean frontal face in the object frame (millimetres of an adult head / 140 mm): eyes, nose tip and mouth
# corners at the front of a sphere around the head's centre, so the whole head fits the unit sphere.
FACE5_TEMPLATE = np.array([[-32.0, 5.0, 80.0], [32.0, 5.0, 80.0], [0.0, -35.0, 105.0],
                           [-25.0, -68.0, 78.0], [25.0, -68.0, 78.0]]) / 140.0
DEFAULT_FOV_DEG = 30.0          # focal prior (over the image's longer side) when no focal length is given
FLAG_FRACTION = 0.10            # flagged when landmark RMSE > this fraction of the landmark spread
GENERIC_RADIUS = 0.8            # other schemes: keypoints scaled to fit a sphere of this radius
MIN_FRAMES_FOR_SHAPE = 3        # fitting canonical keypoints needs at least this many frames
ROBUST_SCALE = 3.0              # soft-L1 scale, in percent of the landmark spread
NOISE_UNIT = 2.0                # assumed landmark noise (percent of spread) used to weigh the priors
SIGMA_LOG_FOCAL_IMAGE = 0.25    # prior std of one image's log focal around the shared value
SIGMA_LOG_FOCAL_SHARED = 1.0    # prior std of the shared log focal ratio around the FOV prior
KEYPOINT_GAUGE_WEIGHT = 1.0     # tiny pull of the keypoints to their start: fixes the gauge, no real bias
STAGES = [("linear", 1.0), ("soft_l1", ROBUST_SCALE)]
JOINT_MAX_FRAMES = 3000         # above this, keypoints and g come from a random subset of this size


# ----------------------------------------------------------------------------------------- geometry helpers
def _rotmats(rv: np.ndarray) -> np.ndarray:
    """Rotation matrices [K, 3, 3] from rotation vectors [K, 3] (Rodrigues, vectorised)."""
    theta2 = np.einsum("ki,ki->k", rv, rv)
    theta = np.sqrt(theta2)
    small = theta < 1e-4
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / (safe * safe))
    x, y, z = rv[:, 0], rv[:, 1], rv[:, 2]
    zero = np.zeros_like(x)
    kx = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], 1)
    return np.eye(3)[None] + a[:, None, None] * kx + b[:, None, None] * (kx @ kx)


def _rotvecs(rot: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(rot).as_rotvec()


def _spread(obs: np.ndarray) -> np.ndarray:
    """RMS distance of each frame's landmarks from their centroid [K] (pixels)."""
    c = obs - obs.mean(axis=1, keepdims=True)
    return np.sqrt((c ** 2).sum(-1).mean(-1))


def _affine_init(X: np.ndarray, obs: np.ndarray, f: np.ndarray, cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form weak-perspective pose of every frame: rotations [K, 3, 3] and translations [K, 3].

    X [N, 3] keypoints, obs [K, N, 2] pixels, f [K] focal, cc [K, 2] principal points."""
    xm = X.mean(axis=0)
    xc = X - xm
    pinv = xc @ np.linalg.pinv(xc.T @ xc)                           # [N, 3]
    om = obs.mean(axis=1)                                           # [K, 2]
    m = np.einsum("kni,nj->kij", obs - om[:, None], pinv)           # [K, 2, 3] = s * R[:2]
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    r12 = u @ vt                                                    # nearest orthonormal rows
    r3 = np.cross(r12[:, 0], r12[:, 1])
    rot = np.concatenate([r12, r3[:, None]], axis=1)
    scale = np.maximum(s.mean(axis=1), 1e-6)
    z = f / scale
    centre_cam = np.concatenate([(om - cc) * (z / f)[:, None], z[:, None]], axis=1)
    t = centre_cam - np.einsum("kij,j->ki", rot, xm)
    return rot, t


def _factorization_shape(obs: np.ndarray) -> np.ndarray:
    """Canonical keypoints [N, 3] from an affine (Tomasi-Kanade) factorisation with a metric upgrade."""
    c = obs - obs.mean(axis=1, keepdims=True)
    c = c / np.maximum(_spread(obs), 1e-9)[:, None, None]
    k, n, _ = c.shape
    w = c.transpose(0, 2, 1).reshape(2 * k, n)                      # rows: u of frame 0, v of frame 0, ...
    keep = np.ones(k, dtype=bool)
    for _ in range(3):                                              # drop frames far from the rank-3 fit
        u, s, vt = np.linalg.svd(w[np.repeat(keep, 2)], full_matrices=False)
        off = (w - (w @ vt[:3].T) @ vt[:3]).reshape(k, 2 * n)
        err = np.sqrt((off ** 2).sum(1))
        keep = err <= max(3.0 * np.median(err[keep]), 1e-9)
        if keep.sum() < max(3, k // 4):
            keep = err <= np.quantile(err, 0.5)
    u, s, vt = np.linalg.svd(w[np.repeat(keep, 2)], full_matrices=False)
    root = np.sqrt(s[:3])
    mot = u[:, :3] * root
    shape = root[:, None] * vt[:3]                                  # [3, N]
    a, b = mot[0::2], mot[1::2]

    def coeffs(p, q):
        return np.stack([p[:, 0] * q[:, 0], p[:, 0] * q[:, 1] + p[:, 1] * q[:, 0], p[:, 0] * q[:, 2] + p[:, 2] * q[:, 0],
                         p[:, 1] * q[:, 1], p[:, 1] * q[:, 2] + p[:, 2] * q[:, 1], p[:, 2] * q[:, 2]], axis=1)

    system = np.concatenate([coeffs(a, a) - coeffs(b, b), coeffs(a, b)], axis=0)
    ell = np.linalg.svd(system)[2][-1]
    lmat = np.array([[ell[0], ell[1], ell[2]], [ell[1], ell[3], ell[4]], [ell[2], ell[4], ell[5]]])
    if np.trace(lmat) < 0:
        lmat = -lmat
    evals, evecs = np.linalg.eigh(lmat)
    evals = np.maximum(evals, 1e-3 * max(evals.max(), 1e-12))
    q = evecs * np.sqrt(evals)
    pts = (np.linalg.inv(q) @ shape).T
    pts = pts - pts.mean(axis=0)
    return pts / max(np.linalg.norm(pts, axis=1).max(), 1e-9)


# ----------------------------------------------------------------------------------------- the solver
@dataclass
class _Problem:
    obs: np.ndarray                 # [K, N, 2] pixels
    size: np.ndarray                # [K] max(w, h)
    cc: np.ndarray                  # [K, 2] principal points
    norm: np.ndarray                # [K] residual scale: 100 / landmark spread (px -> percent of spread)
    focal: np.ndarray | None        # [K] fixed focal lengths, or None to fit them
    g0: float                       # prior of the shared log focal ratio

    @property
    def k(self) -> int:
        return self.obs.shape[0]

    @property
    def n(self) -> int:
        return self.obs.shape[1]


@dataclass
class _Solution:
    X: np.ndarray                   # [N, 3]
    rot: np.ndarray                 # [K, 3, 3] world -> camera (OpenCV axes)
    t: np.ndarray                   # [K, 3]
    f: np.ndarray                   # [K]
    g: float
    cost: float = 0.0
    nfev: int = 0


def _project(X: np.ndarray, rot: np.ndarray, t: np.ndarray, f: np.ndarray, cc: np.ndarray):
    """Pixels [K, N, 2] and depths [K, N] of keypoints X [N, 3] (or per frame [K, N, 3])."""
    if X.ndim == 2:
        p = np.einsum("kij,nj->kni", rot, X) + t[:, None, :]
    else:
        p = np.einsum("kij,knj->kni", rot, X) + t[:, None, :]
    z = p[..., 2]
    zs = np.maximum(z, 1e-6)
    uv = cc[:, None, :] + f[:, None, None] * p[..., :2] / zs[..., None]
    return uv, z


def _solve(prob: _Problem, init: _Solution, fit_kp: bool, X_prior: np.ndarray | None = None,
           max_nfev: int = 200, fixed_g: bool = False) -> _Solution:
    """One robust joint least-squares solve started from `init`."""
    k, n = prob.k, prob.n
    fit_f = prob.focal is None
    fit_g = fit_f and not fixed_g
    p_cam = 7 if fit_f else 6
    n_kp = 3 * n if fit_kp else 0
    off_cam = n_kp + (1 if fit_g else 0)
    X_prior = init.X if X_prior is None else X_prior
    w_d = NOISE_UNIT / SIGMA_LOG_FOCAL_IMAGE
    w_g = NOISE_UNIT / SIGMA_LOG_FOCAL_SHARED
    d0 = (np.log(init.f / prob.size) - init.g) if fit_f else None

    def unpack(x):
        X = x[:n_kp].reshape(n, 3) if fit_kp else init.X
        g = x[n_kp] if fit_g else init.g
        cam = x[off_cam:].reshape(k, p_cam)
        if fit_f:
            f = prob.size * np.exp(g + cam[:, 6])
        else:
            f = prob.focal
        return X, g, cam, f

    def residuals(x):
        X, g, cam, f = unpack(x)
        uv, _ = _project(X, _rotmats(cam[:, :3]), cam[:, 3:6], f, prob.cc)
        res = [((uv - prob.obs) * prob.norm[:, None, None]).ravel()]
        if fit_f:
            res.append(w_d * cam[:, 6])
        if fit_g:
            res.append(np.atleast_1d(w_g * (g - prob.g0)))
        if fit_kp:
            res.append(KEYPOINT_GAUGE_WEIGHT * (X - X_prior).ravel())
        return np.concatenate(res)

    # ---- sparsity: reprojection row (k, n, c) <- X_n, g, camera k; prior rows <- their own parameter
    n_rows_rep = k * n * 2
    kk, nn, cc_ = np.meshgrid(np.arange(k), np.arange(n), np.arange(2), indexing="ij")
    row_rep = ((kk * n + nn) * 2 + cc_).ravel()
    rows, cols = [], []
    cam_cols = off_cam + kk.ravel()[:, None] * p_cam + np.arange(p_cam)[None]
    rows.append(np.repeat(row_rep, p_cam))
    cols.append(cam_cols.ravel())
    if fit_kp:
        kp_cols = nn.ravel()[:, None] * 3 + np.arange(3)[None]
        rows.append(np.repeat(row_rep, 3))
        cols.append(kp_cols.ravel())
    if fit_g:
        rows.append(row_rep)
        cols.append(np.full(row_rep.size, n_kp))
    r = n_rows_rep
    if fit_f:
        rows.append(r + np.arange(k))
        cols.append(off_cam + np.arange(k) * p_cam + 6)
        r += k
    if fit_g:
        rows.append(np.array([r]))
        cols.append(np.array([n_kp]))
        r += 1
    if fit_kp:
        rows.append(r + np.arange(3 * n))
        cols.append(np.arange(3 * n))
        r += 3 * n
    n_par = off_cam + k * p_cam
    pattern = sp.coo_matrix((np.ones(sum(a.size for a in rows), dtype=np.int8),
                             (np.concatenate(rows), np.concatenate(cols))), shape=(r, n_par)).tocsr()

    x0 = []
    if fit_kp:
        x0.append(init.X.ravel())
    if fit_g:
        x0.append([init.g])
    cam0 = [_rotvecs(init.rot), init.t]
    if fit_f:
        cam0.append(d0[:, None])
    x0.append(np.concatenate(cam0, axis=1).ravel())
    x0 = np.concatenate([np.asarray(a, dtype=np.float64) for a in x0])

    # a plain least-squares pass converges in a few steps from the closed-form start; the robust pass
    # that follows (soft-L1: bad landmarks lose their pull) then needs only a few more
    sol = None
    for loss, scale in STAGES:
        sol = least_squares(residuals, x0 if sol is None else sol.x, jac_sparsity=pattern, method="trf",
                            tr_solver="lsmr", loss=loss, f_scale=scale, x_scale="jac", max_nfev=max_nfev,
                            ftol=1e-7, xtol=1e-9, gtol=1e-9)
    X, g, cam, f = unpack(sol.x)
    return _Solution(X.copy(), _rotmats(cam[:, :3]), cam[:, 3:6].copy(), np.asarray(f, dtype=np.float64).copy(),
                     float(g), float(sol.cost), int(sol.nfev))


def _init_solution(prob: _Problem, X: np.ndarray) -> _Solution:
    f = prob.focal if prob.focal is not None else prob.size * math.exp(prob.g0)
    rot, t = _affine_init(X, prob.obs, f, prob.cc)
    return _Solution(X.copy(), rot, t, np.asarray(f, dtype=np.float64), prob.g0)


def _subset(prob: _Problem, idx: np.ndarray) -> _Problem:
    return _Problem(prob.obs[idx], prob.size[idx], prob.cc[idx], prob.norm[idx],
                    None if prob.focal is None else prob.focal[idx], prob.g0)


# ----------------------------------------------------------------------------------------- gauge
def _apply_similarity(sol: _Solution, s: float, a: np.ndarray, b: np.ndarray) -> _Solution:
    """New object frame X' = s A X + b; cameras follow so every projection is unchanged."""
    rot = sol.rot @ a.T
    t = s * sol.t - np.einsum("kij,j->ki", rot, b)
    return _Solution(s * sol.X @ a.T + b, rot, t, sol.f, sol.g, sol.cost, sol.nfev)


def _face5_gauge(sol: _Solution) -> _Solution:
    X = sol.X
    x = X[1] - X[0]
    x = x / np.linalg.norm(x)
    up = (X[0] + X[1]) / 2 - (X[3] + X[4]) / 2
    y = up - (up @ x) * x
    y = y / np.linalg.norm(y)
    a = np.stack([x, y, np.cross(x, y)])
    xr = X @ a.T
    xc, tc = xr - xr.mean(0), FACE5_TEMPLATE - FACE5_TEMPLATE.mean(0)
    s = float((xc * tc).sum() / max((xc * xc).sum(), 1e-12))
    b = FACE5_TEMPLATE.mean(0) - s * xr.mean(0)
    return _apply_similarity(sol, s, a, b)


def _generic_gauge(sol: _Solution) -> _Solution:
    X = sol.X
    centre = X.mean(0)
    cam_pos = -np.einsum("kji,kj->ki", sol.rot, sol.t)              # camera centres in the object frame
    dirs = cam_pos - centre
    dirs = dirs / np.maximum(np.linalg.norm(dirs, axis=1, keepdims=True), 1e-12)
    z = dirs.mean(0)
    z = z / max(np.linalg.norm(z), 1e-12)
    up = -sol.rot[:, 1, :].mean(0)                                  # OpenCV y is down
    y = up - (up @ z) * z
    if np.linalg.norm(y) < 1e-6:
        y = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    y = y / np.linalg.norm(y)
    a = np.stack([np.cross(y, z), y, z])
    radius = np.linalg.norm((X - centre), axis=1).max()
    s = GENERIC_RADIUS / max(radius, 1e-12)
    return _apply_similarity(sol, s, a, -s * (a @ centre))


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


def _c2w_opengl(rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera-to-world [K, 4, 4] OpenGL axes from world-to-camera OpenCV R [K, 3, 3], t [K, 3]."""
    k = rot.shape[0]
    c2w = np.zeros((k, 4, 4))
    c2w[:, :3, :3] = rot.transpose(0, 2, 1) * np.array([1.0, -1.0, -1.0])[None, None, :]
    c2w[:, :3, 3] = -np.einsum("kji,kj->ki", rot, t)
    c2w[:, 3, 3] = 1.0
    return c2w


def _problem(obs, w, h, focal, g0=None) -> _Problem:
    obs = np.asarray(obs, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    size = np.maximum(w, h)
    if g0 is None:
        g0 = math.log(0.5 / math.tan(math.radians(DEFAULT_FOV_DEG) / 2))
    norm = 100.0 / np.maximum(_spread(obs), 1.0)
    foc = None if focal is None else np.broadcast_to(np.asarray(focal, dtype=np.float64), size.shape).copy()
    return _Problem(obs, size, np.stack([w / 2, h / 2], axis=1), norm, foc, g0)


def _rmse(sol: _Solution, prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
    uv, z = _project(sol.X, sol.rot, sol.t, sol.f, prob.cc)
    rmse = np.sqrt(((uv - prob.obs) ** 2).sum(-1).mean(-1))
    return rmse, (z > 0).all(axis=1)


def solve_cameras(obs: np.ndarray, w, h, keypoints: np.ndarray | None = None, focal=None,
                  face5: bool = False, init_keypoints: np.ndarray | None = None, seed: int = 0,
                  progress: Progress | None = None) -> _Solution:
    """The numeric core: cameras (and keypoints unless given) for landmarks obs [K, N, 2] of images w, h [K].

    Returns the solution in the SPEC object frame (gauge fixed) unless `keypoints` are given, which are
    used unchanged. focal: None (fit per image), a number or [K] pixels."""
    prob = _problem(obs, w, h, focal)
    prog = or_silent(progress)
    k, n = prob.k, prob.n
    with prog.task("fit cameras", total=3) as task:
        if keypoints is not None:
            sol = _solve(prob, _init_solution(prob, np.asarray(keypoints, np.float64)), fit_kp=False)
            task.advance(3)
            return sol
        rng = np.random.default_rng(seed)
        joint = np.sort(rng.choice(k, JOINT_MAX_FRAMES, replace=False)) if k > JOINT_MAX_FRAMES else np.arange(k)
        sub = _subset(prob, joint)
        if init_keypoints is not None:
            starts = [np.asarray(init_keypoints, np.float64)]
        elif face5:
            starts = [FACE5_TEMPLATE]
        else:
            shape = _factorization_shape(sub.obs[: min(sub.k, 2000)])
            starts = [shape, shape * np.array([1.0, 1.0, -1.0])]     # the affine depth-mirror ambiguity
        if len(starts) > 1:                                           # settle it with a short perspective fit
            probe = _subset(sub, np.arange(min(sub.k, 300)))
            costs = [_solve(probe, _init_solution(probe, s), fit_kp=True, max_nfev=10).cost for s in starts]
            starts = [starts[int(np.argmin(costs))]]
        task.advance(1)
        sol = _solve(sub, _init_solution(sub, starts[0]), fit_kp=True)
        task.advance(1)
        if k > sub.k:                                                 # every frame against the fitted keypoints
            prob.g0 = sol.g
            init = _init_solution(prob, sol.X)
            if prob.focal is None:
                init.f = prob.size * math.exp(sol.g)
            sol_all = _solve(prob, init, fit_kp=False, fixed_g=True)
            sol_all.g = sol.g
            sol = sol_all
        task.advance(1)
    return _face5_gauge(sol) if face5 else _generic_gauge(sol)


def fit_single_camera(points2d: np.ndarray, keypoints3d: np.ndarray, w: int, h: int, focal: float | None = None,
                      file_path: str = "", focal_prior: float | None = None) -> Frame:
    """Place one photo against fixed canonical keypoints (for `invert`).

    points2d [N, 2] pixels, keypoints3d [N, 3] object frame. focal: fixed focal length in pixels, or None
    to fit it with a weak prior (focal_prior pixels, default a 30-degree field of view over max(w, h)).
    Returns a formats.Frame (c2w OpenGL axes, cx = w/2, cy = h/2) with extra "landmark_rmse_px"."""
    pts = np.asarray(points2d, dtype=np.float64)
    kp = np.asarray(keypoints3d, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or kp.shape != (pts.shape[0], 3) or pts.shape[0] < 4:
        raise InputError(None, f"need matching points2d [N, 2] and keypoints3d [N, 3] with N >= 4, "
                               f"got {list(pts.shape)} and {list(kp.shape)}")
    if not (np.isfinite(pts).all() and np.isfinite(kp).all()):
        raise InputError(None, "landmarks or keypoints contain NaN or infinite values")
    g0 = None if focal_prior is None else math.log(focal_prior / max(w, h))
    prob = _problem(pts[None], [w], [h], focal, g0)
    sol = _solve(prob, _init_solution(prob, kp), fit_kp=False)
    rmse, in_front = _rmse(sol, prob)
    c2w = _c2w_opengl(sol.rot, sol.t)[0]
    extra = {"landmark_rmse_px": round(float(rmse[0]), 4)}
    if not in_front[0] or rmse[0] > FLAG_FRACTION * _spread(prob.obs)[0]:
        extra["flagged"] = True
    return Frame(file_path, c2w, float(sol.f[0]), float(sol.f[0]), w / 2, h / 2, int(w), int(h), extra)


def fit_cameras(data: str | Path, keypoints: str | Path | None = None, focal: float | None = None,
                flag_fraction: float = FLAG_FRACTION, init_keypoints: str | Path | None = None,
                progress: Progress | None = None, write: bool = True) -> CameraFit:
    """DATA/landmarks.json -> DATA/transforms.json (+ DATA/keypoints.json). See the module docstring."""
    ds = dataset(data)
    if not ds.landmarks.is_file():
        raise InputError(ds.landmarks, "not found; run `lolnerf landmarks DATA` first or supply a landmarks.json")
    lm = read_landmarks(ds.landmarks, ds.root)
    if focal is not None and not (math.isfinite(focal) and focal > 0):
        raise InputError("--focal", f"must be a positive focal length in pixels, got {focal}")
    if not (0 < flag_fraction):
        raise InputError("--flag-threshold", f"must be positive, got {flag_fraction}")
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
                                       f"needs at least {MIN_FRAMES_FOR_SHAPE} (or pass --keypoints)")
    if not frames:
        raise InputError(ds.landmarks, "has no frames with landmarks")
    obs = np.stack([f.points for f in frames])
    w = np.array([f.w for f in frames])
    h = np.array([f.h for f in frames])
    face5 = list(lm.names) == FACE5_NAMES
    sol = solve_cameras(obs, w, h, keypoints=kp_fixed, focal=focal, face5=face5, init_keypoints=kp_init,
                        progress=progress)
    prob = _problem(obs, w, h, focal)
    rmse, in_front = _rmse(sol, prob)
    bad = (rmse > flag_fraction * _spread(obs)) | ~in_front
    c2w = _c2w_opengl(sol.rot, sol.t)
    out_frames, flagged = [], []
    for i, fr in enumerate(frames):
        extra = {"landmark_rmse_px": round(float(rmse[i]), 4), "flagged": bool(bad[i])}
        if bad[i]:
            flagged.append(fr.file_path)
        out_frames.append(Frame(fr.file_path, c2w[i], float(sol.f[i]), float(sol.f[i]), fr.w / 2, fr.h / 2,
                                fr.w, fr.h, extra))
    if len(flagged) == len(frames):
        raise InputError(ds.landmarks, f"no frame fits the landmarks well (all {len(frames)} flagged, median RMSE "
                                       f"{np.median(rmse):.1f} px); check the landmarks")
    kp_out = Keypoints(lm.scheme, list(lm.names), sol.X)
    tf = Transforms(out_frames, {"keypoints_scheme": lm.scheme})
    if write:
        write_transforms(ds.transforms, tf)
        write_keypoints(ds.keypoints, kp_out)
    return CameraFit(tf, kp_out, rmse, flagged, list(lm.failed), kp_fixed is None, focal is None)


def _match_names(kp: Keypoints, lm: Landmarks, path: Path) -> np.ndarray:
    """Keypoints reordered to the landmarks' point names."""
    if set(kp.names) != set(lm.names) or len(kp.names) != len(lm.names):
        raise InputError(path, f"names {kp.names} do not match the landmarks' names {lm.names}")
    order = [kp.names.index(name) for name in lm.names]
    return kp.points[order]
