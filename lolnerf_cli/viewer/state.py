"""What one browser of `lolnerf view` sees, without the browser: its identity, its camera, its frames.

Render policy (`RenderState`): every change bumps a version; a worker thread draws the newest version
only (a burst of camera messages while dragging gives one frame per render, never a queue of stale
ones). While the camera or the identity changed less than `still_s` ago the frame is drawn at the
preview resolution (`resolution * preview_scale`); once they are still it is drawn at the full
resolution. Frames come from a baked grid of the identity (`bake.bake`, `bake.render_baked`) when that
grid exists; a background thread bakes the identity once it has been still for `still_s` (a new
identity cancels a bake under way), and until the grid is there frames are drawn through the network
at the preview resolution (`render.render_image`). With the `exact` renderer every frame goes through
the network, with the chosen number of samples per ray.

Shapes: D latent width, C principal components, H x W pixels."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from ..cameras import Camera, focal_from_fov, look_at, spherical_eye
from ..model.latents import LatentGaussian
from ..progress import Progress, Task

MODES = ("RGB", "depth", "alpha")
RENDERERS = ("baked", "exact")
STILL_S = 0.3                  # the camera counts as stopped this long after its last move
PREVIEW_SCALE = 0.5            # preview frames have this fraction of the full resolution's pixels per side
DEFAULT_RESOLUTION = 128       # longer side of sharp frames unless the model was trained larger
MIN_SIDE = 8                   # no frame side below this many pixels
PCA_SLIDERS = 5                # sliders for the first principal components of the latent table
PCA_RANGE = 3.0                # each slider spans +-this many standard deviations
BAKES_KEPT = 4                 # grids kept per browser (a few identities to go back to without re-baking)
FPS_WINDOW_S = 2.0             # the frame-rate readout counts the frames of the last this many seconds
# viser's camera frame is OpenCV's (+Z forward, -Y up); lolnerf's is OpenGL's (-Z forward, +Y up)
CV_TO_GL = np.diag([1.0, -1.0, -1.0])


def join_all(threads, seconds: float) -> None:
    """Join the started threads (other than the calling one) within `seconds` in all."""
    end = time.monotonic() + seconds
    for t in threads:
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(max(0.0, end - time.monotonic()))


# ----------------------------------------------------------------------------------------- identity
class Identities:
    """The latent table of a run and the Gaussian fitted to it: rows, samples, principal directions."""

    def __init__(self, loaded):
        self.table = loaded.latents.detach().float().cpu()                 # [K, D]
        self.gauss = LatentGaussian.fit(self.table)
        self.names = loaded.images()
        self.n_pca = min(PCA_SLIDERS, int(self.gauss.stddevs.shape[0]))

    @property
    def count(self) -> int:
        return int(self.table.shape[0])

    def row(self, index: int) -> torch.Tensor:
        return self.table[int(index) % self.count]

    def row_name(self, index: int) -> str:
        i = int(index) % self.count
        return f"index {i}" + (f" ({self.names[i]})" if i < len(self.names) else "")

    def sample(self, seed: int, psi: float) -> torch.Tensor:
        """The same draw as `lolnerf sample --seed SEED --truncation PSI`'s first identity."""
        gen = torch.Generator().manual_seed(int(seed))
        return self.gauss.sample(1, float(psi), gen)[0]

    def pca_offset(self, coeffs) -> torch.Tensor:
        """sum_c coeffs[c] * stddev[c] * component[c] -> [D] (coefficients in standard deviations)."""
        c = torch.zeros(self.n_pca)
        vals = torch.as_tensor(list(coeffs)[: self.n_pca], dtype=torch.float32)
        c[: vals.shape[0]] = vals
        return self.gauss.components[:, : self.n_pca] @ (c * self.gauss.stddevs[: self.n_pca])


@dataclass
class IdentityState:
    """Which latent a browser shows: a base (a table row, a sample, an inverted photo or a mix of A and
    B) plus an offset along the first principal components."""

    source: str = "index"                  # index | sample | photo | mix
    index: int = 0
    seed: int = 0
    psi: float = 0.7
    photo: torch.Tensor | None = None
    photo_name: str = ""
    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    a_name: str = "index 0"
    b_name: str = "index 1"
    t: float = 0.0
    pca: list[float] = field(default_factory=lambda: [0.0] * PCA_SLIDERS)

    def base(self, ids: Identities) -> tuple[torch.Tensor, str]:
        if self.source == "sample":
            return ids.sample(self.seed, self.psi), f"sample seed {self.seed}, psi {self.psi:g}"
        if self.source == "photo" and self.photo is not None:
            return self.photo, f"photo {self.photo_name}"
        if self.source == "mix":
            a = self.a if self.a is not None else ids.row(0)
            b = self.b if self.b is not None else ids.row(min(1, ids.count - 1))
            return a * (1 - self.t) + b * self.t, f"{self.a_name} <-> {self.b_name} at {self.t:.2f}"
        return ids.row(self.index), ids.row_name(self.index)

    def current(self, ids: Identities) -> tuple[torch.Tensor, str]:
        """The latent shown [D] and a description of it."""
        z, name = self.base(ids)
        if any(abs(c) > 0 for c in self.pca[: ids.n_pca]):
            z = z + ids.pca_offset(self.pca)
            name += " + PCA [" + ", ".join(f"{c:g}" for c in self.pca[: ids.n_pca]) + "]"
        return z.float(), name


# ----------------------------------------------------------------------------------------- camera
@dataclass(frozen=True)
class Pose:
    """A browser camera as viser reports it: orientation wxyz and position (OpenCV frame), vertical fov
    in radians, canvas aspect (width / height)."""

    wxyz: tuple[float, float, float, float]
    position: tuple[float, float, float]
    fov: float
    aspect: float


def _rotation(wxyz) -> np.ndarray:
    w, x, y, z = (float(v) for v in wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def frame_size(aspect: float, long_side: int) -> tuple[int, int]:
    """(w, h) of a frame with this aspect whose longer side is `long_side` pixels."""
    aspect = min(max(float(aspect), 1e-3), 1e3) if math.isfinite(aspect) else 1.0
    if aspect >= 1:
        return int(long_side), max(MIN_SIDE, round(long_side / aspect))
    return max(MIN_SIDE, round(long_side * aspect)), int(long_side)


def camera_of(pose: Pose, long_side: int) -> Camera:
    """The lolnerf camera (OpenGL axes, pixel-centred intrinsics) that sees what the browser shows."""
    w, h = frame_size(pose.aspect, long_side)
    c2w = np.eye(4)
    c2w[:3, :3] = _rotation(pose.wxyz) @ CV_TO_GL
    c2w[:3, 3] = np.asarray(pose.position, dtype=np.float64)
    f = focal_from_fov(math.degrees(pose.fov), h)
    return Camera(c2w, f, f, w / 2, h / 2, w, h)


def view_pose(view) -> tuple[np.ndarray, np.ndarray]:
    """(eye, look-at point) of a `video.View`: where a new browser's camera starts."""
    eye = spherical_eye(view.yaw, view.pitch, view.radius)
    return np.asarray(eye, dtype=np.float64), np.zeros(3)


def pose_of_camera(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(eye, look-at point) of a lolnerf camera, looking as far ahead as the origin is."""
    eye = cam.c2w[:3, 3]
    forward = -cam.c2w[:3, 2]
    return eye.copy(), eye + forward * max(float(np.linalg.norm(eye)), 1e-3)


def pose_from_lookat(eye, target, fov: float, aspect: float) -> Pose:
    """The viser pose of a camera at eye looking at target with +Y up (for tests and initial cameras)."""
    gl = look_at(np.asarray(eye, float), np.asarray(target, float))[:3, :3] @ CV_TO_GL      # -> OpenCV axes
    m = gl
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    return Pose(tuple(float(v) for v in q), tuple(float(v) for v in eye), float(fov), float(aspect))


# ----------------------------------------------------------------------------------------- frames
@dataclass
class Settings:
    mode: str = "RGB"
    renderer: str = "baked"
    resolution: int = DEFAULT_RESOLUTION   # longer side of a sharp frame, pixels
    preview_scale: float = PREVIEW_SCALE
    samples: int = 0               # main-network samples per ray of the exact renderer (0: the model's own)
    grid: int = 0                  # bake grid voxels per axis (0: the model's default)


@dataclass
class Frame:
    image: np.ndarray              # uint8 [H, W, 3], what the page shows (RGB, coloured depth or alpha)
    rgb: np.ndarray                # float [H, W, 3]
    alpha: np.ndarray              # float [H, W]
    depth: np.ndarray              # float [H, W], NaN where alpha < 0.5
    camera: Camera
    sharp: bool                    # full resolution (False: a preview drawn while something moves)
    renderer: str                  # "baked" or "exact"
    seconds: float
    number: int = 0
    identity: str = ""
    z: torch.Tensor | None = None


def render_config_with_samples(rc, samples: int):
    """The model's RenderConfig with `samples` main-network samples per ray (0: unchanged, whole-image
    sampling as `render` draws it); the coarse / proposal samples scale by the same factor."""
    if samples <= 0:
        return rc
    if rc.sampler == "proposal":
        f = samples / max(rc.n_samples, 1)
        return replace(rc, n_samples=int(samples), image_sample_factor=1,
                       proposal_samples=tuple(max(2, round(p * f)) for p in rc.proposal_samples))
    coarse = max(2, samples // 2)
    return replace(rc, n_coarse=coarse, n_fine=max(0, samples - coarse), image_sample_factor=1)


def shown_image(r: dict, mode: str, camera: Camera, scene_radius: float) -> np.ndarray:
    """What a render mode shows, as uint8 RGB."""
    from ..images import to_uint8
    from ..video import colorize_depth, depth_range

    if mode == "depth":
        return colorize_depth(r["depth"], *depth_range(camera, scene_radius))
    if mode == "alpha":
        return to_uint8(np.repeat(np.asarray(r["alpha"])[..., None], 3, -1))
    return to_uint8(r["rgb"])


class FpsMeter:
    """Frames per second over the last `window` seconds of delivered frames."""

    def __init__(self, window: float = FPS_WINDOW_S):
        self.window, self.times = window, deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.times.append(now)
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()

    def fps(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if len(self.times) < 2 or now - self.times[-1] > self.window:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


class _Cancelled(Exception):
    pass


class _CancelProgress(Progress):
    """A progress reporter that stops a bake (by raising from `advance`) once it is no longer wanted."""

    def __init__(self, still_wanted: Callable[[], bool]):
        self.still_wanted = still_wanted

    def task(self, description: str, total: int | None = None):
        from contextlib import contextmanager

        outer = self

        class _T(Task):
            def advance(self, n: int = 1, **fields) -> None:
                if not outer.still_wanted():
                    raise _Cancelled()

        @contextmanager
        def cm():
            yield _T()

        return cm()


class RenderState:
    """One browser's render state and its two threads (frames, bakes). `show(frame)` is called from the
    frame thread with every new frame; `on_bake(message)` with bake news (started, done, failed)."""

    def __init__(self, loaded, precision: str, identities: Identities, show: Callable[[Frame], None],
                 on_bake: Callable[[str], None] | None = None, still_s: float = STILL_S):
        from ..bake import default_resolution

        self.loaded, self.precision, self.ids = loaded, precision, identities
        self.show, self._on_bake, self.still_s = show, on_bake or (lambda m: None), still_s
        self.default_grid = default_resolution(loaded.cfg.model)
        self.settings = Settings(resolution=max(loaded.cfg.train.resolution, DEFAULT_RESOLUTION))
        self.identity = IdentityState(index=0)
        self.identity.b_name = identities.row_name(min(1, identities.count - 1))
        self.identity.a_name = identities.row_name(0)
        self.pose: Pose | None = None
        self.fps = FpsMeter()
        self.frames = 0
        self.last: Frame | None = None
        self.last_sharp: Frame | None = None
        self.error: str | None = None
        self._cond = threading.Condition()
        self._version = 0
        self._drawn = -1
        self._sharp_drawn = -1
        self._moved_at = 0.0
        self._identity_at = 0.0
        self._bakes: OrderedDict[tuple, object] = OrderedDict()
        self._closed = False
        self._z, self._z_name = self.identity.current(identities)
        self._threads = [threading.Thread(target=self._frame_loop, name="lolnerf-view-frames", daemon=True),
                         threading.Thread(target=self._bake_loop, name="lolnerf-view-bakes", daemon=True)]

    def start(self) -> "RenderState":
        """Start the frame and bake threads (after whatever `show` and `on_bake` use exists)."""
        for t in self._threads:
            t.start()
        return self

    # ------------------------------------------------------------------ inputs (any thread)
    def set_pose(self, pose: Pose) -> None:
        with self._cond:
            if pose == self.pose:
                return
            self.pose = pose
            self._moved_at = time.monotonic()
            self._version += 1
            self._cond.notify_all()

    def change_identity(self, fn: Callable[[IdentityState], None]) -> None:
        """Apply fn to the identity (e.g. `lambda s: setattr(s, 'index', 3)`) and redraw."""
        with self._cond:
            fn(self.identity)
            self._z, self._z_name = self.identity.current(self.ids)
            self._identity_at = self._moved_at = time.monotonic()
            self._version += 1
            self._cond.notify_all()

    def change_settings(self, **kw) -> None:
        with self._cond:
            self.settings = replace(self.settings, **kw)
            self._version += 1
            self._cond.notify_all()

    def current_identity(self) -> tuple[torch.Tensor, str]:
        with self._cond:
            return self._z.clone(), self._z_name

    def busy(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def close(self, wait: float = 0.0) -> None:
        """Stop the frame and bake threads; wait up to `wait` seconds for them (a bake or a frame in
        progress finishes first). The server waits before it exits: a thread still inside torch when the
        interpreter shuts down aborts the process."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait > 0:
            join_all(self._threads, wait)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until the newest version has a sharp frame (tests; screenshots). True when it has."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._cond:
                if self._sharp_drawn == self._version and self.pose is not None and self._bake_settled():
                    return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ the frame thread
    def _bake_key(self) -> tuple:
        return (self._z.numpy().tobytes(), self.settings.grid or self.default_grid)

    def _bake_settled(self) -> bool:
        return self.settings.renderer == "exact" or self._bake_key() in self._bakes

    def _frame_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    ready = self.pose is not None
                    if ready and self._version != self._drawn:
                        break
                    wait = None
                    if ready and self._sharp_drawn != self._version:
                        left = self.still_s - (time.monotonic() - self._moved_at)
                        if left <= 0:
                            break
                        wait = left
                    self._cond.wait(wait)
                if self._closed:
                    return
                version = self._version
                sharp = time.monotonic() - self._moved_at >= self.still_s
                pose, settings, z, name = self.pose, self.settings, self._z, self._z_name
                grid = self._bakes.get(self._bake_key()) if settings.renderer == "baked" else None
                if grid is not None:
                    self._bakes.move_to_end(self._bake_key())
            try:
                frame = self._draw(pose, settings, z, grid, sharp)
            except Exception as exc:  # noqa: BLE001 - shown in the page; the server keeps running
                self.error = f"{type(exc).__name__}: {exc}"
                with self._cond:
                    self._drawn = self._sharp_drawn = version
                continue
            frame.identity, frame.z = name, z
            with self._cond:
                self._drawn = version
                # the best frame for this version now (without a grid yet, a network preview: the finished
                # bake bumps the version and draws the sharp one)
                if sharp:
                    self._sharp_drawn = version
                self.frames += 1
                frame.number = self.frames
                self.fps.tick()
                self.last = frame
                if frame.sharp:
                    self.last_sharp = frame
                self.error = None
            try:
                self.show(frame)
            except Exception:  # noqa: BLE001 - a browser that went away; the next frame tries again
                pass

    def _draw(self, pose: Pose, settings: Settings, z: torch.Tensor, grid, sharp: bool) -> Frame:
        from ..bake import render_baked
        from ..render import render_image

        full = int(settings.resolution)
        preview = max(MIN_SIDE, round(full * settings.preview_scale))
        dev = self.loaded.latents.device
        t0 = time.perf_counter()
        if settings.renderer == "baked" and grid is not None:
            cam = camera_of(pose, full if sharp else preview)
            r = render_baked(grid, self.loaded.model, cam, self.precision, near_min=self.loaded.cfg.render.near_min)
            used = "baked"
        else:
            exact_only = settings.renderer == "exact"
            # without a grid yet, the network draws previews only: the grid will draw the sharp frame
            cam = camera_of(pose, full if sharp and exact_only else preview)
            sharp = sharp and exact_only
            rc = render_config_with_samples(self.loaded.cfg.render, settings.samples)
            r = render_image(self.loaded.model, z.to(dev), cam, rc, self.precision)
            used = "exact"
        seconds = time.perf_counter() - t0
        image = shown_image(r, settings.mode, cam, self.loaded.cfg.model.scene_radius)
        return Frame(image, r["rgb"], r["alpha"], r["depth"], cam, sharp, used, seconds)

    # ------------------------------------------------------------------ the bake thread
    def _draw_exactly(self, message: str) -> None:
        """Give up on grids for this browser (the bake failed or does not match the network): say why and
        redraw through the network."""
        self.on_bake(message)
        with self._cond:
            self.settings = replace(self.settings, renderer="exact")
            self._version += 1
            self._cond.notify_all()

    def on_bake(self, message: str) -> None:
        try:
            self._on_bake(message)
        except Exception:  # noqa: BLE001 - news only; never stops the bake thread
            pass

    def _bake_loop(self) -> None:
        from ..bake import bake

        while True:
            with self._cond:
                while not self._closed:
                    if self.settings.renderer == "baked" and self._bake_key() not in self._bakes:
                        left = self.still_s - (time.monotonic() - self._identity_at)
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
                key, z, name = self._bake_key(), self._z.clone(), self._z_name

            def wanted() -> bool:
                with self._cond:
                    return not self._closed and self.settings.renderer == "baked" and self._bake_key() == key

            self.on_bake(f"baking {name} ({key[1]}^3 grid)")
            t0 = time.perf_counter()
            try:
                grid = bake(self.loaded.model, z.to(self.loaded.latents.device), self.precision, key[1],
                            source=name, progress=_CancelProgress(wanted))
            except _Cancelled:
                continue
            except Exception as exc:  # noqa: BLE001 - shown in the page; frames go on through the network
                self._draw_exactly(f"bake failed ({type(exc).__name__}: {exc}); drawing through the network")
                continue
            with self._cond:
                pose = self.pose
            if pose is not None:         # the same check as the commands' frames: a grid that cannot hold
                from ..frames import CHECK_MIN_PSNR, CHECK_SIDE, bake_check_psnr   # the field is not used
                check = bake_check_psnr(self.loaded, grid, z.to(self.loaded.latents.device),
                                        camera_of(pose, CHECK_SIDE), self.precision)
                if check < CHECK_MIN_PSNR:
                    self._draw_exactly(f"the baked grid of {name} differs from the network ({check:.1f} dB < "
                                       f"{CHECK_MIN_PSNR:.0f} dB on a check view); drawing through the network")
                    continue
            with self._cond:
                self._bakes[key] = grid
                while len(self._bakes) > BAKES_KEPT:
                    self._bakes.popitem(last=False)
                self._version += 1               # redraw: the sharp frame can now come from the grid
                self._cond.notify_all()
            self.on_bake(f"baked {name} in {time.perf_counter() - t0:.1f} s ({grid.stats.blocks} blocks)")
