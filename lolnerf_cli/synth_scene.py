"""A procedural object class with known geometry and cameras: the stand-in for a face-photo collection.

Every object is a "head": a union of analytic ellipsoids (cranium, lower face, nose, ears, neck and,
for most objects, a hair cap and sometimes a bun) in the SPEC object frame (+Y up, front towards +Z,
centred at the origin, inside a sphere of radius 0.9). Rays are intersected with the ellipsoids in
closed form (vectorised numpy), so every image comes with exact masks, depth and keypoints.

Colour is a function of the 3D surface point alone (object frame), never of the viewing direction, so
a NeRF can represent it exactly: a skin-like base colour with smooth low-frequency variation, cheeks,
hair above a wavy hairline, brows, eyes (sclera, iris, pupil) around the eye keypoints, a red-ish mouth
between the mouth corners, and Lambertian shading from a per-object light baked into the colour.

The five keypoints (SPEC face5 order: eye on the image's left in a frontal view = the object's -X
side, eye on the image's right, nose tip, mouth corner on the image's left, on the image's right) are
points on the surface, found by casting rays from the front, and vary with the shape.

The writer of dataset folders is synth.py; this module is what is in the pictures: the objects, the
camera distribution and the exact ray-casting renderer (ground truth for tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .cameras import Camera, focal_from_fov, look_at, project, spherical_eye
from .errors import InputError

# Camera distribution of the training photos (and of the holdout query views).
YAW_RANGE_DEG = 40.0
PITCH_RANGE_DEG = 20.0
DISTANCE_RANGE = (2.6, 2.8)
FOV_DEG = 30.0
# Holdout evaluation views.
HOLDOUT_VIEWS = 4
HOLDOUT_YAW_DEG = 45.0
HOLDOUT_PITCH_DEG = 20.0
SUPERSAMPLE = 2
_CHUNK = 2048          # rays per ray-casting batch
_BAND_RAYS = 1 << 18   # rays per band of rows in one render_object pass
MAX_RADIUS = 0.9

# Ellipsoid kinds (what a surface point belongs to; used by the colour function).
CRANIUM, JAW, NOSE, EAR, NECK, HAIR_CAP, BUN = range(7)
_HAIR_KINDS = (HAIR_CAP, BUN)
_PUPIL = np.array([0.03, 0.03, 0.03])

# Independent seed streams (a SeedSequence of [seed, stream, index] each).
(_STREAM_TRAIN, _STREAM_HOLDOUT, _STREAM_CAMERA, _STREAM_BACKGROUND, _STREAM_HOLDOUT_CAMERA,
 _STREAM_HOLDOUT_BACKGROUND) = range(6)


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    seed = int(seed)
    return np.random.default_rng(np.random.SeedSequence([abs(seed), int(seed < 0), stream, int(index)]))


# ----------------------------------------------------------------------------------------- geometry
def _rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def _rot_y(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass
class SynthObject:
    """One procedural head: ellipsoids (world point p is inside ellipsoid e when |M_e (p - c_e)| <= 1),
    the five face5 keypoints on its surface and the parameters of its colour field."""

    centers: np.ndarray           # [E, 3]
    mats: np.ndarray              # [E, 3, 3]  M = diag(1/radii) R^T
    kinds: np.ndarray             # [E] int, one of CRANIUM ... BUN
    keypoints: np.ndarray         # [5, 3] face5 order, on the surface
    colors: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ ray casting
    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First hit of rays o + t d (t > 0) with the union of ellipsoids.

        origins [N, 3] or [3] (outside the object), dirs [N, 3] (any length). Returns t [N] (inf on a
        miss) and the index of the ellipsoid hit [N] (-1 on a miss; `kinds[idx]` says which part)."""
        o = np.asarray(origins, dtype=np.float64)
        d = np.asarray(dirs, dtype=np.float64)
        if o.ndim == 1:
            # one origin (a camera): a = d^T G d and b = (M^T M (o - c)) . d as two small matmuls
            ol = (self.mats @ (o[None, :] - self.centers)[:, :, None])[:, :, 0]     # [E, 3]
            gram = np.transpose(self.mats, (0, 2, 1)) @ self.mats                    # [E, 3, 3]
            dt = d.T
            prods = np.stack([dt[0] * dt[0], dt[1] * dt[1], dt[2] * dt[2],
                              dt[0] * dt[1], dt[0] * dt[2], dt[1] * dt[2]])          # [6, N]
            coef = np.stack([gram[:, 0, 0], gram[:, 1, 1], gram[:, 2, 2],
                             2 * gram[:, 0, 1], 2 * gram[:, 0, 2], 2 * gram[:, 1, 2]], axis=1)
            a = coef @ prods                                                          # [E, N]
            b = (np.einsum("eji,ej->ei", self.mats, ol)) @ dt                         # [E, N]
            c = np.broadcast_to(((ol * ol).sum(axis=1) - 1.0)[:, None], a.shape)
        else:
            ol = self.mats @ (o.T[None, :, :] - self.centers[:, :, None])            # [E, 3, N]
            dl = self.mats @ d.T                                                      # [E, 3, N]
            a = (dl * dl).sum(axis=1)
            b = (ol * dl).sum(axis=1)
            c = (ol * ol).sum(axis=1) - 1.0
        disc = b * b - a * c
        hit = disc > 0
        sq = np.sqrt(np.where(hit, disc, 0.0))
        t = (-b - sq) / a
        t = np.where(hit & (t > 1e-9), t, np.inf)
        idx = np.argmin(t, axis=0)
        tmin = np.take_along_axis(t, idx[None], axis=0)[0]
        idx = np.where(np.isfinite(tmin), idx, -1)
        return tmin, idx

    def normals(self, points: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Unit outward normals [N, 3] at surface points of the ellipsoids idx [N]."""
        g = np.zeros_like(points, dtype=np.float64)
        gram = np.transpose(self.mats, (0, 2, 1)) @ self.mats                        # M^T M
        for e in range(len(self.centers)):
            sel = np.nonzero(idx == e)[0]
            if len(sel):
                g[sel] = (points[sel] - self.centers[e]) @ gram[e].T
        return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Whether world points [N, 3] lie inside the object."""
        local = self.mats @ (np.asarray(points, dtype=np.float64).T[None] - self.centers[:, :, None])
        return ((local * local).sum(axis=1) <= 1.0).any(axis=0)

    # ------------------------------------------------------------------ colour field
    def color(self, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Colour [N, 3] in [0, 1] of surface points p [N, 3] (object frame) on ellipsoids idx [N].

        A function of the surface point only (the ellipsoid index and normal are themselves functions
        of the point), independent of any camera."""
        col = self.colors
        p = np.asarray(p, dtype=np.float64)
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        front_any = z > 0.0

        # skin with smooth low-frequency variation
        wave = np.zeros_like(x)
        for k, phase, amp in col["waves"]:
            wave += amp * np.sin(p @ k + phase)
        rgb = col["skin"][None, :] * (1.0 + wave[:, None] * col["wave_tint"][None, :])

        # Each feature below only touches the points in its bounding box (`sel`), for speed.
        def blend(sel, w, color):
            rgb[sel] = rgb[sel] * (1.0 - w[:, None]) + color * w[:, None]

        def front(sel):
            return _smoothstep(0.0, 0.08, z[sel])

        # cheeks
        rc = col["cheek_r"]
        for sx in (-1.0, 1.0):
            cx, cy = sx * col["cheek_x"], col["cheek_y"]
            sel = np.nonzero(front_any & (np.abs(x - cx) < 3 * rc) & (np.abs(y - cy) < 3 * rc))[0]
            w = np.exp(-((x[sel] - cx) ** 2 + (y[sel] - cy) ** 2) / (2 * rc * rc)) * front(sel) * col["cheek_amt"]
            blend(sel, w, col["cheek"])

        # hair: above a wavy hairline (higher at the front), and everything on the hair cap / bun
        if col["hair_on"]:
            lowest = col["hair_h0"] - col["hair_h1"] - col["hair_wave"] - 0.02
            on_hair = np.isin(self.kinds, _HAIR_KINDS)[idx]
            sel = np.nonzero((y > lowest) | on_hair)[0]
            xs, ys, zs = x[sel], y[sel], z[sel]
            zhat = zs / np.sqrt(xs * xs + zs * zs + 1e-9)
            hairline = col["hair_h0"] + col["hair_h1"] * zhat + col["hair_wave"] * np.sin(
                col["hair_freq"] * np.arctan2(xs, zs) + col["hair_phase"])
            w = np.where(on_hair[sel], 1.0, _smoothstep(-0.015, 0.015, ys - hairline))
            hair = col["hair"][None, :] * (1.0 + 0.5 * wave[sel, None])
            rgb[sel] = rgb[sel] * (1.0 - w[:, None]) + hair * w[:, None]

        # brows: short dark arcs above the eyes
        bw, bh, bdy, barc = col["brow_w"], col["brow_h"], col["brow_dy"], col["brow_arc"]
        for kp in (self.keypoints[0], self.keypoints[1]):
            sel = np.nonzero(front_any & (np.abs(x - kp[0]) < bw)
                             & (np.abs(y - kp[1] - bdy) < bh + abs(barc) + 1e-3))[0]
            dx = (x[sel] - kp[0]) / bw
            dy = (y[sel] - (kp[1] + bdy + barc * (1 - dx * dx))) / bh
            w = (1 - _smoothstep(0.7, 1.0, dx * dx + dy * dy)) * front(sel) * 0.85
            blend(sel, w, col["brow"])

        # eyes: sclera (wider than tall), iris, pupil, centred on the eye keypoints
        er = col["eye_r"]
        for kp in (self.keypoints[0], self.keypoints[1]):
            sel = np.nonzero((np.abs(x - kp[0]) < 1.6 * er) & (np.abs(y - kp[1]) < er)
                             & (np.abs(z - kp[2]) < 1.6 * er))[0]
            d = p[sel] - kp[None, :]
            r_scl = np.sqrt((d[:, 0] / 1.6) ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2)
            r = np.sqrt((d * d).sum(axis=1))
            blend(sel, 1 - _smoothstep(0.85 * er, er, r_scl), col["sclera"])
            blend(sel, 1 - _smoothstep(0.6 * er, 0.75 * er, r), col["iris"])
            blend(sel, 1 - _smoothstep(0.25 * er, 0.35 * er, r), _PUPIL)

        # mouth: a red-ish lens between the two mouth corners, darker along its middle line
        ml, mr = self.keypoints[3], self.keypoints[4]
        mx = 0.5 * (mr[0] - ml[0])
        my = 0.5 * (ml[1] + mr[1])
        sel = np.nonzero(front_any & (np.abs(x) < mx)
                         & (np.abs(y - my) < col["mouth_h"] + abs(col["smile"]) + 1e-3))[0]
        u = x[sel] / mx
        v = (y[sel] - my - col["smile"] * (u * u - 1)) / col["mouth_h"]
        fr = front(sel)
        blend(sel, (1 - _smoothstep(0.75, 1.0, u * u + v * v)) * fr, col["lips"])
        w = (1 - _smoothstep(0.0, 0.22, np.abs(v))) * (1 - _smoothstep(0.6, 1.0, np.abs(u))) * fr
        rgb[sel] *= 1 - 0.6 * w[:, None]

        # baked Lambertian shading from a fixed per-object light (object frame, so view-independent)
        n = self.normals(p, idx)
        lam = np.clip(n @ col["light"], 0.0, 1.0)
        shade = col["ambient"] + (1 - col["ambient"]) * lam
        return np.clip(rgb * shade[:, None], 0.0, 1.0)


def _front_point(center: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """The point of an ellipsoid with the largest z (its front-most point)."""
    g_inv = np.linalg.inv(mat.T @ mat)
    ez = np.array([0.0, 0.0, 1.0])
    return center + g_inv @ ez / math.sqrt(ez @ g_inv @ ez)


def _ellipsoid(center, radii, rot=None) -> tuple[np.ndarray, np.ndarray]:
    rot = np.eye(3) if rot is None else rot
    return np.asarray(center, dtype=np.float64), np.diag(1.0 / np.asarray(radii, dtype=np.float64)) @ rot.T


def _cast_front(parts: SynthObject, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface points hit by rays from z = +3 towards -Z through the (x, y) positions [N, 2]."""
    o = np.concatenate([xy, np.full((len(xy), 1), 3.0)], axis=1)
    d = np.tile([0.0, 0.0, -1.0], (len(xy), 1))
    t, idx = parts.intersect(o, d)
    return o + t[:, None] * d, idx


def _palette(rng: np.random.Generator, colors: list, jitter: float) -> np.ndarray:
    base = np.asarray(colors[rng.integers(len(colors))], dtype=np.float64)
    return np.clip(base + rng.uniform(-jitter, jitter, 3), 0.0, 1.0)


_HAIR_COLORS = [(0.07, 0.05, 0.04), (0.22, 0.13, 0.07), (0.42, 0.27, 0.14), (0.82, 0.66, 0.38),
                (0.58, 0.24, 0.09), (0.68, 0.67, 0.65), (0.12, 0.10, 0.10)]
_IRIS_COLORS = [(0.25, 0.14, 0.06), (0.15, 0.28, 0.45), (0.18, 0.32, 0.18), (0.1, 0.07, 0.05)]


def make_object(rng: np.random.Generator) -> SynthObject:
    """Draw one random head from `rng`."""
    for _ in range(50):
        obj = _try_object(rng)
        if obj is not None:
            return obj
    raise RuntimeError("could not draw a valid synthetic object")  # pragma: no cover - never observed


def _try_object(rng: np.random.Generator) -> SynthObject | None:
    u = rng.uniform
    hx, hy, hz = u(0.43, 0.52), u(0.50, 0.60), u(0.46, 0.54)
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []
    parts.append((*_ellipsoid((0.0, 0.08, -0.02), (hx, hy, hz)), CRANIUM))
    jaw_c = (0.0, u(-0.22, -0.16), u(0.02, 0.08))
    jaw_rx = hx * u(0.84, 0.95)
    parts.append((*_ellipsoid(jaw_c, (jaw_rx, u(0.32, 0.40), u(0.40, 0.48))), JAW))
    parts.append((*_ellipsoid((0.0, u(-0.60, -0.52), u(-0.12, -0.05)), (u(0.18, 0.24), 0.27, u(0.17, 0.22))),
                  NECK))
    ear_y, ear_z, ear_yaw = u(-0.02, 0.06), u(-0.08, -0.02), u(10.0, 25.0)
    ear_r = (u(0.04, 0.06), u(0.11, 0.15), u(0.07, 0.09))
    for s in (-1.0, 1.0):
        parts.append((*_ellipsoid((s * hx * 0.95, ear_y, ear_z), ear_r, _rot_y(-s * ear_yaw)), EAR))
    bald = u() < 0.1
    if not bald and u() < 0.8:
        sc, dy, dz = u(1.0, 1.06), u(0.09, 0.16), u(0.07, 0.14)
        parts.append((*_ellipsoid((0.0, 0.08 + dy, -0.02 - dz), (hx * sc * u(1.0, 1.05), hy * sc, hz * sc)), HAIR_CAP))
    if not bald and u() < 0.2:
        r = u(0.13, 0.19)
        parts.append((*_ellipsoid((0.0, u(0.25, 0.4), u(-0.52, -0.42)), (r, r, r)), BUN))

    def build(extra=()):
        allp = parts + list(extra)
        return SynthObject(np.array([p[0] for p in allp]), np.array([p[1] for p in allp]),
                           np.array([p[2] for p in allp]), np.zeros((5, 3)))

    # nose: a tilted ellipsoid sticking out of the face by a random amount
    base = build()
    ny = u(-0.08, -0.02)
    (zf_pt,), _ = _cast_front(base, np.array([[0.0, ny]]))
    nose_r = (u(0.045, 0.07), u(0.10, 0.14), u(0.08, 0.12))
    nose_rot = _rot_x(-u(12.0, 25.0))
    nc, nm = _ellipsoid((0.0, ny, 0.0), nose_r, nose_rot)
    tip_offset = _front_point(np.zeros(3), nm)
    nc = np.array([0.0, ny, zf_pt[2] + u(0.07, 0.12) - tip_offset[2]])
    obj = build([(nc, nm, NOSE)])

    # fit inside the sphere of radius MAX_RADIUS (conservative bound |c| + largest radius)
    radii_max = 1.0 / np.min(np.abs(np.linalg.svd(obj.mats, compute_uv=False)), axis=1)
    extent = float(np.max(np.linalg.norm(obj.centers, axis=1) + radii_max))
    scale = min(1.0, (MAX_RADIUS - 0.01) / extent)
    obj.centers = obj.centers * scale
    obj.mats = obj.mats / scale

    # keypoints: rays from the front through eye, nose-tip and mouth-corner positions
    ex, ey = hx * u(0.26, 0.34), u(0.04, 0.12)
    mx, my = jaw_rx * u(0.18, 0.25), u(-0.31, -0.24)
    tip = _front_point(obj.centers[-1], obj.mats[-1])
    xy = np.array([[-ex * scale, ey * scale], [ex * scale, ey * scale], [tip[0], tip[1]],
                   [-mx * scale, my * scale], [mx * scale, my * scale]])
    kp, idx = _cast_front(obj, xy)
    want = [(CRANIUM, JAW), (CRANIUM, JAW), (NOSE,), (CRANIUM, JAW), (CRANIUM, JAW)]
    if not all(int(obj.kinds[k]) in w for k, w in zip(idx, want)):
        return None
    if kp[2, 2] < max(kp[0, 2], kp[1, 2], kp[3, 2], kp[4, 2]) + 0.03:
        return None
    obj.keypoints = kp

    # colours
    t = u() ** 1.3
    light, dark = np.array([0.96, 0.80, 0.69]), np.array([0.40, 0.26, 0.18])
    skin = np.clip(light * (1 - t) + dark * t + rng.uniform(-0.04, 0.04, 3), 0.05, 1.0)
    waves = []
    for _ in range(3):
        k = rng.normal(0.0, 2.5, 3)
        waves.append((k, u(0, 2 * math.pi), u(0.02, 0.06)))
    light_dir = np.array([u(-0.7, 0.7), u(0.2, 0.9), 1.0])
    hair = _palette(rng, _HAIR_COLORS, 0.05)
    obj.colors = {
        "skin": skin, "waves": waves, "wave_tint": 1.0 + rng.uniform(-0.3, 0.3, 3),
        "cheek": np.clip(skin * np.array([1.05, 0.7, 0.7]) + np.array([0.08, 0.0, 0.0]), 0, 1),
        "cheek_x": ex * scale * u(1.1, 1.4), "cheek_y": u(-0.16, -0.08) * scale, "cheek_r": u(0.05, 0.08) * scale,
        "cheek_amt": u(0.0, 0.5),
        "hair_on": not bald, "hair": hair, "hair_h0": u(0.10, 0.20) * scale, "hair_h1": u(0.14, 0.24) * scale,
        "hair_wave": u(0.0, 0.04) * scale, "hair_freq": float(rng.integers(2, 7)), "hair_phase": u(0, 2 * math.pi),
        "brow": hair * 0.8 if not bald else skin * 0.5, "brow_w": u(0.06, 0.09) * scale,
        "brow_h": u(0.012, 0.022) * scale, "brow_dy": u(0.06, 0.09) * scale, "brow_arc": u(0.0, 0.02) * scale,
        "eye_r": u(0.035, 0.05) * scale, "sclera": np.array([0.93, 0.92, 0.88]),
        "iris": _palette(rng, _IRIS_COLORS, 0.04),
        "lips": np.clip(skin * np.array([0.75, 0.42, 0.42]) + np.array([0.18, 0.0, 0.02]), 0, 1),
        "mouth_h": u(0.022, 0.04) * scale, "smile": u(-0.015, 0.03) * scale,
        "light": light_dir / np.linalg.norm(light_dir), "ambient": u(0.35, 0.55),
    }
    return obj


def train_object(seed: int, index: int) -> SynthObject:
    """Training object `index` of the dataset made with `seed` (independent of --n)."""
    return make_object(_rng(seed, _STREAM_TRAIN, index))


def holdout_object(seed: int, index: int) -> SynthObject:
    """Holdout object `index` (OUT/holdout/h<index>_*) of the dataset made with `seed`."""
    return make_object(_rng(seed, _STREAM_HOLDOUT, index))


# ----------------------------------------------------------------------------------------- cameras
def make_camera(yaw_deg: float, pitch_deg: float, distance: float, resolution: int,
                fov_deg: float = FOV_DEG) -> Camera:
    """A square pinhole camera on the sphere around the object, looking at the origin."""
    f = focal_from_fov(fov_deg, resolution)
    c2w = look_at(spherical_eye(yaw_deg, pitch_deg, distance))
    return Camera(c2w, f, f, resolution / 2, resolution / 2, resolution, resolution)


def random_camera(rng: np.random.Generator, resolution: int, yaw_range: float = YAW_RANGE_DEG,
                  pitch_range: float = PITCH_RANGE_DEG) -> Camera:
    """A camera of the training distribution: yaw, pitch uniform within the ranges, distance 2.6..2.8."""
    yaw = rng.uniform(-yaw_range, yaw_range)
    pitch = rng.uniform(-pitch_range, pitch_range)
    return make_camera(yaw, pitch, rng.uniform(*DISTANCE_RANGE), resolution)


# ----------------------------------------------------------------------------------------- rendering
@dataclass
class Rendering:
    rgb: np.ndarray      # [H, W, 3] float32 in [0, 1], composited over the background (black if none)
    alpha: np.ndarray    # [H, W] float32 coverage in [0, 1]
    depth: np.ndarray    # [H, W] float32 camera-space z-depth, NaN where coverage < 0.5


def _camera_dirs(cam: Camera, ss: int) -> np.ndarray:
    """World ray directions (camera-space z = -1) of ss x ss sub-pixel samples, [H, W, ss*ss, 3]."""
    offs = (np.arange(ss) + 0.5) / ss
    u = (np.arange(cam.w)[:, None] + offs[None, :]).reshape(-1)            # [W*ss]
    v = (np.arange(cam.h)[:, None] + offs[None, :]).reshape(-1)            # [H*ss]
    dx = (u - cam.cx) / cam.fx
    dy = -(v - cam.cy) / cam.fy
    d_cam = np.empty((cam.h * ss, cam.w * ss, 3))
    d_cam[..., 0] = dx[None, :]
    d_cam[..., 1] = dy[:, None]
    d_cam[..., 2] = -1.0
    d = d_cam @ np.asarray(cam.c2w, dtype=np.float64)[:3, :3].T             # [H*ss, W*ss, 3]
    d = d.reshape(cam.h, ss, cam.w, ss, 3).transpose(0, 2, 1, 3, 4).reshape(cam.h, cam.w, ss * ss, 3)
    return d


def render_object(obj: SynthObject, cam: Camera, background: np.ndarray | None = None,
                  supersample: int = SUPERSAMPLE) -> Rendering:
    """Render `obj` through any pinhole `cam` with ss x ss supersampling: colour, coverage and z-depth.

    background: optional [H, W, 3] float in [0, 1] composited behind the object (else black). Exact
    ground truth for tests: depth is camera-space z (the ray parameter t with the SPEC's unnormalised
    ray directions), averaged over the covered sub-samples, NaN where fewer than half are covered."""
    if supersample < 1:
        raise InputError(None, f"supersample must be at least 1, got {supersample}")
    h, w, s2 = cam.h, cam.w, supersample * supersample
    band = max(1, _BAND_RAYS // (w * s2))
    if h > band:   # large images: render bands of rows (a camera per band, cy shifted) to bound memory
        parts = []
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            sub = Camera(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy - r0, w, r1 - r0)
            parts.append(render_object(obj, sub, None if background is None else background[r0:r1], supersample))
        return Rendering(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("rgb", "alpha", "depth")))
    dirs = _camera_dirs(cam, supersample).reshape(-1, 3)
    origin = np.asarray(cam.c2w, dtype=np.float64)[:3, 3]
    # only rays that meet the bounding sphere can hit the object
    b = dirs @ origin
    a = np.einsum("ni,ni->n", dirs, dirs)
    cand = np.nonzero(b * b - a * (origin @ origin - MAX_RADIUS ** 2) > 0)[0]
    t_all = np.full(len(dirs), np.inf)
    col_all = np.zeros((len(dirs), 3))
    if len(cand):
        t = np.empty(len(cand))
        idx = np.empty(len(cand), dtype=np.int64)
        for start in range(0, len(cand), _CHUNK):   # small chunks keep the [E, chunk] temporaries cheap
            part = slice(start, start + _CHUNK)
            t[part], idx[part] = obj.intersect(origin, dirs[cand[part]])
        hit = np.isfinite(t)
        sel = cand[hit]
        t_all[sel] = t[hit]
        pts = origin[None, :] + t[hit][:, None] * dirs[sel]
        idx = idx[hit]
        for start in range(0, len(sel), 8 * _CHUNK):
            part = slice(start, start + 8 * _CHUNK)
            col_all[sel[part]] = obj.color(pts[part], idx[part])
    t_all = t_all.reshape(h, w, s2)
    covered = np.isfinite(t_all)
    n_cov = covered.sum(axis=-1)
    alpha = (n_cov / s2).astype(np.float32)
    rgb = col_all.reshape(h, w, s2, 3).sum(axis=2) / s2
    if background is not None:
        rgb = rgb + (1.0 - alpha[..., None]) * background
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(covered, t_all, 0.0).sum(axis=-1) / n_cov
    depth = np.where(n_cov * 2 >= s2, depth, np.nan).astype(np.float32)
    return Rendering(np.clip(rgb, 0.0, 1.0).astype(np.float32), alpha, depth)


def keypoint_views(obj: SynthObject, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object's keypoints seen by `cam`: uv [5, 2] pixels, z [5] camera depth, visible [5] bool
    (False where another part of the object is in front of the keypoint)."""
    uv, z = project(obj.keypoints, cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy)
    origin = np.asarray(cam.c2w, dtype=np.float64)[:3, 3]
    dirs = (obj.keypoints - origin[None, :]) / z[:, None]       # camera-space z = -1, so t is z-depth
    t, _ = obj.intersect(origin, dirs)
    visible = t >= z - 1e-4 * np.maximum(z, 1.0)
    return uv, z, visible


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random smooth background [size, size, 3] float32: gradient, soft blobs and smooth noise."""
    g = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(g, g, indexing="ij")
    c1, c2 = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    ang = rng.uniform(0, 2 * math.pi)
    ramp = (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang) + 0.5
    ramp = np.clip(ramp, 0, 1)[..., None]
    bg = c1 * (1 - ramp) + c2 * ramp
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0, 1, 2)
        sig = rng.uniform(0.08, 0.35)
        wgt = rng.uniform(0.3, 0.8) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sig * sig))[..., None]
        bg = bg * (1 - wgt) + rng.uniform(0.0, 1.0, 3) * wgt
    # smooth noise: a coarse random grid, bilinearly upsampled
    n = int(rng.integers(3, 8))
    grid = rng.normal(0.0, rng.uniform(0.02, 0.08), (n, n, 3))
    pos = g * (n - 1)
    i0 = np.minimum(np.floor(pos).astype(int), n - 2)
    fr = pos - i0
    rows = grid[i0] * (1 - fr)[:, None, None] + grid[i0 + 1] * fr[:, None, None]          # [size, n, 3]
    noise = rows[:, i0] * (1 - fr)[None, :, None] + rows[:, i0 + 1] * fr[None, :, None]  # [size, size, 3]
    return np.clip(bg + noise, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------- views
def train_view(seed: int, index: int, resolution: int) -> tuple[SynthObject, Camera, np.ndarray]:
    """Training photo `index` of the dataset made with `seed`: its object, camera and background."""
    return (train_object(seed, index), random_camera(_rng(seed, _STREAM_CAMERA, index), resolution),
            make_background(_rng(seed, _STREAM_BACKGROUND, index), resolution))


def holdout_cameras(seed: int, index: int, resolution: int, views: int = HOLDOUT_VIEWS) -> list[Camera]:
    """Cameras of holdout object `index`: the query view first, then `views` evaluation views."""
    rng = _rng(seed, _STREAM_HOLDOUT_CAMERA, index)
    cams = [random_camera(rng, resolution)]
    yaws = np.linspace(-HOLDOUT_YAW_DEG, HOLDOUT_YAW_DEG, views) if views > 1 else np.zeros(1)
    for yaw in yaws:
        pitch = rng.uniform(-HOLDOUT_PITCH_DEG, HOLDOUT_PITCH_DEG)
        cams.append(make_camera(float(yaw), pitch, rng.uniform(*DISTANCE_RANGE), resolution))
    return cams


def holdout_views(seed: int, index: int, resolution: int,
                  views: int = HOLDOUT_VIEWS) -> Iterator[tuple[Camera, np.ndarray]]:
    """Holdout object `index`'s cameras (the query view first) each with its background."""
    bg_rng = _rng(seed, _STREAM_HOLDOUT_BACKGROUND, index)
    for cam in holdout_cameras(seed, index, resolution, views):
        yield cam, make_background(bg_rng, resolution)
