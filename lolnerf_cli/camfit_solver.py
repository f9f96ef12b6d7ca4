"""The numeric core of `fit-cameras`: cameras (and canonical 3D keypoints) from 2D landmarks, arrays in
and out. The model, the steps and the gauge are described in camfit.py's docstring; that module reads and
writes the files and flags poor fits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from .progress import Progress, or_silent


# Mean frontal face in the object frame: millimetres of an adult face measured from the head's centre,
# one scene unit = 220 mm, so a head with hair and some neck fits the unit sphere with the face at its
# front (the proportions of `lolnerf synth`'s heads, whose keypoints it matches within a few hundredths).
FACE5_TEMPLATE = np.array([[-32.0, 15.0, 100.0], [32.0, 15.0, 100.0], [0.0, -25.0, 125.0],
                           [-25.0, -60.0, 102.0], [25.0, -60.0, 102.0]]) / 220.0
DEFAULT_FOV_DEG = 30.0          # focal prior (over the image's longer side) when no focal length is given
GENERIC_RADIUS = 0.8            # other schemes: keypoints scaled to fit a sphere of this radius
MIN_FRAMES_FOR_SHAPE = 3        # fitting canonical keypoints needs at least this many frames
ROBUST_SCALE = 3.0              # soft-L1 scale, in percent of the landmark spread
NOISE_UNIT = 2.0                # assumed landmark noise (percent of spread) used to weigh the priors
SIGMA_LOG_FOCAL_IMAGE = 0.25    # prior std of one image's log focal around the shared value
SIGMA_LOG_FOCAL_SHARED = 1.0    # prior std of the shared log focal ratio around the FOV prior
GAUGE_WEIGHT = 1000.0           # holds the keypoints' centroid, orientation and RMS size at their start
STAGES = [("soft_l1", ROBUST_SCALE)]
OUTLIER_FRACTION = 0.3         # frames whose start fit is worse than this (x spread) stay out of the joint fit
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


def landmark_spread(obs: np.ndarray) -> np.ndarray:
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
    c = c / np.maximum(landmark_spread(obs), 1e-9)[:, None, None]
    k, n, _ = c.shape
    w = c.transpose(0, 2, 1).reshape(2 * k, n)                      # rows: u of frame 0, v of frame 0, ...
    keep = np.ones(k, dtype=bool)
    for it in range(5):                                             # drop frames far from the rank-3 fit:
        u, s, vt = np.linalg.svd(w[np.repeat(keep, 2)], full_matrices=False)     # the best half first,
        off = (w - (w @ vt[:3].T) @ vt[:3]).reshape(k, 2 * n)                    # then all that fit well
        err = np.sqrt((off ** 2).sum(1))
        keep = err <= (np.median(err) if it == 0 else max(3.0 * np.median(err[keep]), 1e-9))
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
class CameraSolution:
    """Keypoints and cameras as the solver sees them (world-to-camera, OpenCV axes: x right, y down,
    z forward); `c2w()` gives the SPEC camera-to-world matrices."""

    X: np.ndarray                   # [N, 3] keypoints in the object frame
    rot: np.ndarray                 # [K, 3, 3] world -> camera rotation
    t: np.ndarray                   # [K, 3] world -> camera translation
    f: np.ndarray                   # [K] focal lengths, pixels
    g: float                        # shared log focal ratio (f = max(w, h) * exp(g + d_k))
    cost: float = 0.0
    nfev: int = 0

    def c2w(self) -> np.ndarray:
        """Camera-to-world [K, 4, 4], OpenGL axes (SPEC / nerfstudio)."""
        return _c2w_opengl(self.rot, self.t)


def _project(X: np.ndarray, rot: np.ndarray, t: np.ndarray, f: np.ndarray, cc: np.ndarray):
    """Pixels [K, N, 2] and depths [K, N] of keypoints X [N, 3] (or per frame [K, N, 3])."""
    if X.ndim == 2:
        p = np.matmul(rot, X.T).transpose(0, 2, 1) + t[:, None, :]
    else:
        p = np.matmul(X, rot.transpose(0, 2, 1)) + t[:, None, :]
    z = p[..., 2]
    zs = np.maximum(z, 1e-6)
    uv = cc[:, None, :] + f[:, None, None] * p[..., :2] / zs[..., None]
    return uv, z


def _solve(prob: _Problem, init: CameraSolution, fit_kp: bool, X_prior: np.ndarray | None = None,
           max_nfev: int = 200, fixed_g: bool = False) -> CameraSolution:
    """One robust joint least-squares solve started from `init`."""
    k, n = prob.k, prob.n
    fit_f = prob.focal is None
    fit_g = fit_f and not fixed_g
    p_cam = 7 if fit_f else 6
    n_kp = 3 * n if fit_kp else 0
    off_cam = n_kp + (1 if fit_g else 0)
    X_prior = init.X if X_prior is None else X_prior
    prior_mean = X_prior.mean(0)
    prior_c = X_prior - prior_mean
    prior_rms = float(np.sqrt((prior_c ** 2).sum() / n))
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
        if fit_kp:                                                  # gauge: keep the start's position,
            xc = X - X.mean(0)                                      # orientation and size (no shape bias)
            res.append(GAUGE_WEIGHT * (X.mean(0) - prior_mean))
            res.append(GAUGE_WEIGHT * np.cross(prior_c, xc).sum(0))
            res.append(np.atleast_1d(GAUGE_WEIGHT * (np.sqrt((xc ** 2).sum() / n) - prior_rms)))
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
        rows.append(np.repeat(r + np.arange(7), 3 * n))
        cols.append(np.tile(np.arange(3 * n), 7))
        r += 7
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
                            ftol=1e-5, xtol=1e-8, gtol=1e-8)
    X, g, cam, f = unpack(sol.x)
    return CameraSolution(X.copy(), _rotmats(cam[:, :3]), cam[:, 3:6].copy(), np.asarray(f, dtype=np.float64).copy(),
                     float(g), float(sol.cost), int(sol.nfev))


def _init_solution(prob: _Problem, X: np.ndarray, g: float | None = None) -> CameraSolution:
    """Closed-form weak-perspective cameras for keypoints X (focal at the shared prior)."""
    g = prob.g0 if g is None else g
    f = prob.focal if prob.focal is not None else prob.size * math.exp(g)
    rot, t = _affine_init(X, prob.obs, f, prob.cc)
    return CameraSolution(X.copy(), rot, t, np.asarray(f, dtype=np.float64), g)


def _spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve many small symmetric positive definite systems a [K, P, P] x = b [K, P] (vectorised Cholesky;
    numpy's batched solve is slow for tiny matrices)."""
    k, p, _ = a.shape
    low = np.zeros_like(a)
    for j in range(p):
        d = a[:, j, j] - (low[:, j, :j] ** 2).sum(1)
        low[:, j, j] = np.sqrt(np.maximum(d, 1e-300))
        if j + 1 < p:
            low[:, j + 1:, j] = (a[:, j + 1:, j] - np.einsum("kim,km->ki", low[:, j + 1:, :j], low[:, j, :j])) \
                / low[:, j, j, None]
    y = np.zeros_like(b)
    for j in range(p):
        y[:, j] = (b[:, j] - (low[:, j, :j] * y[:, :j]).sum(1)) / low[:, j, j]
    x = np.zeros_like(b)
    for j in reversed(range(p)):
        x[:, j] = (y[:, j] - (low[:, j + 1:, j] * x[:, j + 1:]).sum(1)) / low[:, j, j]
    return x


def _refine_frames(prob: _Problem, sol: CameraSolution, iters: int = 40) -> CameraSolution:
    """Perspective refinement of every frame's camera against fixed keypoints and shared focal ratio.

    The frames are independent, so this is a batched Levenberg-Marquardt (one damping per frame, 7x7
    normal equations solved for all frames at once, converged frames dropped from the batch) with the
    same robust soft-L1 cost and focal prior as the joint solve: the per-image "PnP" start of the joint
    solve, and the final per-frame pass."""
    k, n = prob.k, prob.n
    fit_f = prob.focal is None
    w_d = NOISE_UNIT / SIGMA_LOG_FOCAL_IMAGE
    cam = [_rotvecs(sol.rot), sol.t]
    if fit_f:
        cam.append((np.log(sol.f / prob.size) - sol.g)[:, None])
    cam = np.concatenate(cam, axis=1)
    p_cam = cam.shape[1]

    def res(c, idx):                                                # [k', 2N (+1)] normalised residuals
        f = prob.size[idx] * np.exp(sol.g + c[:, 6]) if fit_f else prob.focal[idx]
        uv, _ = _project(sol.X, _rotmats(c[:, :3]), c[:, 3:6], f, prob.cc[idx])
        r = ((uv - prob.obs[idx]) * prob.norm[idx, None, None]).reshape(len(idx), 2 * n)
        return np.concatenate([r, w_d * c[:, 6:7]], axis=1) if fit_f else r

    def cost(r):
        return (2 * ROBUST_SCALE ** 2 * (np.sqrt(1 + (r / ROBUST_SCALE) ** 2) - 1)).sum(1)

    every = np.arange(k)
    r_all = res(cam, every)
    c_all = cost(r_all)
    lam = np.full(k, 1e-3)
    active = every
    eye = np.eye(p_cam)[None]
    for _ in range(iters):
        if active.size == 0:
            break
        c_act, r = cam[active], r_all[active]
        step_h = 1e-6 * np.maximum(1.0, np.abs(c_act))
        jac = np.empty(r.shape + (p_cam,))
        for j in range(p_cam):                                      # one pass per parameter, all frames at once
            cp = c_act.copy()
            cp[:, j] += step_h[:, j]
            jac[:, :, j] = (res(cp, active) - r) / step_h[:, j, None]
        wgt = 1.0 / np.sqrt(1 + (r / ROBUST_SCALE) ** 2)            # soft-L1 IRLS weights
        jw = jac * wgt[..., None]
        a = np.matmul(jw.transpose(0, 2, 1), jac)
        b = np.einsum("kmi,km->ki", jw, r)
        a_damped = a + lam[active, None, None] * (a * eye) + 1e-9 * eye
        new = c_act + _spd_solve(a_damped, -b)
        rn = res(new, active)
        cn = cost(rn)
        better = np.isfinite(cn) & (cn < c_all[active])
        gain = np.where(better, (c_all[active] - cn) / np.maximum(c_all[active], 1e-12), 0.0)
        upd = active[better]
        cam[upd], r_all[upd], c_all[upd] = new[better], rn[better], cn[better]
        lam[active] = np.clip(np.where(better, lam[active] * 0.3, lam[active] * 10.0), 1e-9, 1e9)
        done = (better & (gain < 1e-9)) | (lam[active] > 1e6)
        active = active[~done]
    f = prob.size * np.exp(sol.g + cam[:, 6]) if fit_f else prob.focal
    return CameraSolution(sol.X.copy(), _rotmats(cam[:, :3]), cam[:, 3:6].copy(), np.asarray(f, np.float64).copy(),
                     sol.g, float(c_all.sum() / 2), sol.nfev)


def _triangulate(prob: _Problem, sol: CameraSolution) -> np.ndarray:
    """Keypoints [N, 3] that best fit every frame's current camera (linear, robustly weighted)."""
    p = np.einsum("kij,nj->kni", sol.rot, sol.X) + sol.t[:, None, :]
    z = np.maximum(p[..., 2], 1e-6)                                  # [K, N]
    uv = prob.cc[:, None, :] + sol.f[:, None, None] * p[..., :2] / z[..., None]
    err = np.linalg.norm((uv - prob.obs) * prob.norm[:, None, None], axis=-1)
    wgt = (prob.norm[:, None] / z) / np.sqrt(1 + (err / ROBUST_SCALE) ** 2)  # px per unit, soft-L1 weights
    # f * (R X + t)_xy - (obs - c) * (R X + t)_z = 0: two linear equations per frame and point
    ob = prob.obs - prob.cc[:, None, :]                             # [K, N, 2]
    rows = sol.f[:, None, None, None] * sol.rot[:, None, :2, :] - ob[..., None] * sol.rot[:, None, None, 2, :]
    rhs = ob * sol.t[:, None, None, 2] - sol.f[:, None, None] * sol.t[:, None, :2]   # [K, N, 2]
    rows = rows * wgt[..., None, None]
    rhs = rhs * wgt[..., None]
    a = np.einsum("knci,kncj->nij", rows, rows)
    b = np.einsum("knci,knc->ni", rows, rhs)
    return np.linalg.solve(a + 1e-9 * np.eye(3)[None], b[..., None])[..., 0]


def _alternate(prob: _Problem, sol: CameraSolution, rounds: int = 6) -> CameraSolution:
    """A few rounds of keypoints-given-cameras / cameras-given-keypoints: brings the shape close cheaply."""
    for _ in range(rounds):
        new = _refine_frames(prob, CameraSolution(_triangulate(prob, sol), sol.rot, sol.t, sol.f, sol.g), iters=10)
        if not new.cost < sol.cost * (1 - 1e-4):                   # a descent method: stop when it stalls
            break
        sol = new
    return sol


def _take(sol: CameraSolution, idx: np.ndarray) -> CameraSolution:
    return CameraSolution(sol.X, sol.rot[idx], sol.t[idx], sol.f[idx], sol.g, sol.cost, sol.nfev)


def _subset(prob: _Problem, idx: np.ndarray) -> _Problem:
    return _Problem(prob.obs[idx], prob.size[idx], prob.cc[idx], prob.norm[idx],
                    None if prob.focal is None else prob.focal[idx], prob.g0)


# ----------------------------------------------------------------------------------------- gauge
def _apply_similarity(sol: CameraSolution, s: float, a: np.ndarray, b: np.ndarray) -> CameraSolution:
    """New object frame X' = s A X + b; cameras follow so every projection is unchanged."""
    rot = sol.rot @ a.T
    t = s * sol.t - np.einsum("kij,j->ki", rot, b)
    return CameraSolution(s * sol.X @ a.T + b, rot, t, sol.f, sol.g, sol.cost, sol.nfev)


def _face5_gauge(sol: CameraSolution) -> CameraSolution:
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


def _generic_gauge(sol: CameraSolution) -> CameraSolution:
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
    norm = 100.0 / np.maximum(landmark_spread(obs), 1.0)
    foc = None if focal is None else np.broadcast_to(np.asarray(focal, dtype=np.float64), size.shape).copy()
    return _Problem(obs, size, np.stack([w / 2, h / 2], axis=1), norm, foc, g0)


def _rmse(sol: CameraSolution, prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
    uv, z = _project(sol.X, sol.rot, sol.t, sol.f, prob.cc)
    rmse = np.sqrt(((uv - prob.obs) ** 2).sum(-1).mean(-1))
    return rmse, (z > 0).all(axis=1)


def solve_cameras(obs: np.ndarray, w, h, keypoints: np.ndarray | None = None, focal=None,
                  face5: bool = False, init_keypoints: np.ndarray | None = None, seed: int = 0,
                  progress: Progress | None = None) -> CameraSolution:
    """The numeric core: cameras (and keypoints unless given) for landmarks obs [K, N, 2] of images w, h [K].

    Returns the solution in the SPEC object frame (gauge fixed) unless `keypoints` are given, which are
    used unchanged. focal: None (fit per image), a number or [K] pixels."""
    prob = _problem(obs, w, h, focal)
    prog = or_silent(progress)
    k = prob.k
    with prog.task("fit cameras", total=3) as task:
        if keypoints is not None:                                     # cameras only, keypoints as given
            sol = _refine_frames(prob, _init_solution(prob, np.asarray(keypoints, np.float64)))
            task.advance(3)
            return sol
        if init_keypoints is not None:
            starts = [np.asarray(init_keypoints, np.float64)]
        elif face5:
            starts = [FACE5_TEMPLATE]
        else:
            shape = _factorization_shape(prob.obs[: min(k, 2000)])
            starts = [shape, shape * np.array([1.0, 1.0, -1.0])]     # the affine depth-mirror ambiguity
        if len(starts) > 1:                                           # settle it with a short perspective fit
            probe = _subset(prob, np.arange(min(k, 300)))
            scores = []
            for s in starts:                                          # median landmark error after a rough fit
                rough = _alternate(probe, _refine_frames(probe, _init_solution(probe, s), iters=15), rounds=4)
                scores.append(float(np.median(_rmse(rough, probe)[0] / np.maximum(landmark_spread(probe.obs), 1.0))))
            starts = [starts[int(np.argmin(scores))]]
        start = _refine_frames(prob, _init_solution(prob, starts[0]))
        task.advance(1)
        # joint solve of keypoints, shared focal and cameras on the frames that are not gross outliers
        # (at most JOINT_MAX_FRAMES of them: more adds time, not accuracy)
        rel = _rmse(start, prob)[0] / np.maximum(landmark_spread(prob.obs), 1.0)
        inlier = np.flatnonzero(rel <= max(OUTLIER_FRACTION, 3.0 * float(np.median(rel))))
        if inlier.size < MIN_FRAMES_FOR_SHAPE:
            inlier = np.arange(k)
        if inlier.size > JOINT_MAX_FRAMES:
            inlier = np.sort(np.random.default_rng(seed).choice(inlier, JOINT_MAX_FRAMES, replace=False))
        sub = _subset(prob, inlier)
        joint = _solve(sub, _alternate(sub, _take(start, inlier)), fit_kp=True)
        task.advance(1)
        # every frame against the fitted keypoints and focal ratio (the joint frames barely move)
        init = CameraSolution(joint.X, start.rot.copy(), start.t.copy(), start.f.copy(), joint.g)
        init.rot[inlier], init.t[inlier], init.f[inlier] = joint.rot, joint.t, joint.f
        sol = _refine_frames(prob, init)
        sol.nfev = joint.nfev
        task.advance(1)
    return _face5_gauge(sol) if face5 else _generic_gauge(sol)


def reprojection_errors(sol: CameraSolution, obs: np.ndarray, w, h, focal=None) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: landmark RMSE [K] in pixels, and whether every keypoint lies in front of the camera [K]."""
    return _rmse(sol, _problem(obs, w, h, focal))


def solve_single(points2d: np.ndarray, keypoints3d: np.ndarray, w: int, h: int, focal: float | None = None,
                 focal_prior: float | None = None) -> CameraSolution:
    """One camera for points2d [N, 2] against fixed keypoints3d [N, 3] (focal fixed, or fitted with a weak
    prior of focal_prior pixels, default a 30-degree field of view over max(w, h))."""
    g0 = None if focal_prior is None else math.log(focal_prior / max(w, h))
    prob = _problem(points2d[None], [w], [h], focal, g0)
    return _refine_frames(prob, _init_solution(prob, keypoints3d), iters=100)
