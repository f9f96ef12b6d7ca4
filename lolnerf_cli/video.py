"""The files camera paths are rendered into (views.py says where the cameras are).

- `FrameSink`: one writer for FILE.mp4 (libx264 through imageio-ffmpeg), FILE.gif (Pillow) or a folder
  of numbered PNG frames, chosen by the output path's suffix. Files appear atomically when closed.
- `colorize_depth`: depth map -> colour-mapped uint8 image (NaN -> black) with a fixed range, so the
  frames of a depth video share one colour scale.
- `render_sequence`: render (latent, camera) pairs into a sink (and optionally a depth sink).
- `contact_sheet`: captioned, enlarged tiles in one image (the sample grid, the inversion preview).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .cameras import Camera
from .config import VideoConfig
from .errors import InputError
from .formats import _UMASK, atomic_write_bytes
from .images import to_uint8
from .progress import Progress, or_silent

if TYPE_CHECKING:
    from .model import LoadedModel

_DEFAULTS = VideoConfig()      # the numbers live in config.py
VIDEO_FPS = _DEFAULTS.fps
DEPTH_COLORMAP = _DEFAULTS.depth_colormap
MP4_CRF_QUALITY = _DEFAULTS.mp4_quality
SHEET_MIN_TILE = _DEFAULTS.sheet_min_tile
SHEET_PAD = _DEFAULTS.sheet_pad


# ----------------------------------------------------------------------------------------- depth colours
def depth_range(camera: Camera, scene_radius: float) -> tuple[float, float]:
    """The z-depths the bounding sphere can span seen from `camera`: a fixed colour scale per camera distance."""
    dist = float(np.linalg.norm(camera.c2w[:3, 3]))
    return max(dist - scene_radius, 0.0), dist + scene_radius


def colorize_depth(depth: np.ndarray, near: float | None = None, far: float | None = None,
                   cmap: str = DEPTH_COLORMAP) -> np.ndarray:
    """depth [H, W] (NaN = no surface) -> uint8 RGB [H, W, 3]; near is the colormap's low end, NaN is black.

    Without near/far the finite values' own range is used."""
    import matplotlib

    d = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(d)
    if near is None or far is None:
        vals = d[finite]
        near = float(vals.min()) if vals.size else 0.0
        far = float(vals.max()) if vals.size else 1.0
    span = max(far - near, 1e-9)
    t = np.clip((np.where(finite, d, near) - near) / span, 0.0, 1.0)
    rgb = matplotlib.colormaps[cmap](t)[..., :3]
    rgb[~finite] = 0.0
    return to_uint8(rgb)


# ----------------------------------------------------------------------------------------- writers
def output_kind(path: str | Path) -> str:
    """'mp4', 'gif' or 'frames' (a folder of numbered PNGs) from an output path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return "mp4"
    if suffix == ".gif":
        return "gif"
    if suffix in (".png", ".jpg", ".jpeg", ".avi", ".mov", ".webm", ".mkv"):
        raise InputError(path, f"unsupported output type '{suffix}'; use FILE.mp4, FILE.gif or a folder")
    return "frames"


def sibling(path: str | Path, tag: str) -> Path:
    """FILE.mp4 -> FILE_<tag>.mp4; DIR -> DIR_<tag> (where depth videos and frames go)."""
    path = Path(path)
    if output_kind(path) == "frames":
        return path.with_name(path.name + f"_{tag}")
    return path.with_name(f"{path.stem}_{tag}{path.suffix}")


class FrameSink:
    """Collects uint8 RGB frames into FILE.mp4, FILE.gif or DIR/frame_0000.png ... (atomic on close)."""

    def __init__(self, path: str | Path, fps: int = VIDEO_FPS):
        self.path = Path(path)
        self.kind = output_kind(self.path)
        self.fps = fps
        self.count = 0
        self.size: tuple[int, int] | None = None
        self._gif: list[np.ndarray] = []
        self._writer = None
        self._tmp: str | None = None
        try:
            if self.kind == "frames":
                if self.path.exists() and not self.path.is_dir():
                    raise InputError(self.path, "exists and is not a folder")
                self.path.mkdir(parents=True, exist_ok=True)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(self.path, f"cannot be created ({exc.strerror or exc})") from None

    def append(self, frame: np.ndarray) -> None:
        frame = to_uint8(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        if self.size is None:
            self.size = (frame.shape[1], frame.shape[0])
        elif (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError("all frames of a video must have the same size")
        if self.kind == "frames":
            from .images import save_png

            save_png(self.path / f"frame_{self.count:04d}.png", frame)
        elif self.kind == "gif":
            self._gif.append(frame)
        else:
            self._append_mp4(frame)
        self.count += 1

    def _append_mp4(self, frame: np.ndarray) -> None:
        # libx264 with yuv420p needs an even width and height: pad the last row/column by repetition
        ph, pw = frame.shape[0] % 2, frame.shape[1] % 2
        if ph or pw:
            frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
        if self._writer is None:
            import imageio.v2 as iio

            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".mp4", dir=self.path.parent)
            os.close(fd)
            self._writer = iio.get_writer(self._tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                                          quality=MP4_CRF_QUALITY, pixelformat="yuv420p", macro_block_size=1,
                                          ffmpeg_log_level="error")
        self._writer.append_data(frame)

    def close(self) -> None:
        if self.count == 0:
            raise ValueError("no frames were written")
        if self.kind == "gif":
            from PIL import Image

            imgs = [Image.fromarray(f) for f in self._gif]
            buf = io.BytesIO()
            imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], loop=0,
                         duration=max(int(round(1000 / self.fps)), 20), disposal=2)
            atomic_write_bytes(self.path, buf.getvalue())
            self._gif = []
        elif self.kind == "mp4" and self._writer is not None:
            self._writer.close()
            self._writer = None
            os.chmod(self._tmp, 0o666 & ~_UMASK)      # mkstemp makes 0600; give the usual file mode
            os.replace(self._tmp, self.path)
            self._tmp = None

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - cleaning up after another error
                pass
            self._writer = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None

    def __enter__(self) -> "FrameSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def describe(self) -> str:
        if self.kind == "frames":
            return f"{self.path}/frame_0000.png .. frame_{self.count - 1:04d}.png"
        return str(self.path)


# ----------------------------------------------------------------------------------------- rendering
@dataclass
class SequenceStats:
    frames: int
    seconds: float
    width: int
    height: int

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.seconds / max(self.frames, 1)


def render_sequence(loaded: LoadedModel, latents: torch.Tensor | Sequence[torch.Tensor], cameras: Sequence[Camera],
                    sink: FrameSink, depth_sink: FrameSink | None = None, precision: str = "fp32",
                    progress: Progress | None = None, description: str = "rendering frames",
                    renderer=None) -> SequenceStats:
    """Render frame i = (latents[i] [D], cameras[i]) into `sink` (and its depth into `depth_sink`).

    `latents` may also be a single [D] latent used for every camera. `renderer` (a
    `frames.FrameRenderer`) chooses exact or baked frames; without one every frame is exact. The time
    per frame includes any bake."""
    from .frames import FrameRenderer

    if isinstance(latents, torch.Tensor) and latents.ndim == 1:
        latents = [latents] * len(cameras)
    if len(latents) != len(cameras):
        raise ValueError("one latent per camera")
    renderer = renderer or FrameRenderer(loaded, precision, "exact")
    radius = loaded.cfg.model.scene_radius
    render_s = 0.0
    with or_silent(progress).task(description, total=len(cameras)) as task:
        t0 = time.perf_counter()
        plan = renderer.plan(list(latents), list(cameras))
        render_s += time.perf_counter() - t0
        for z, cam, baked in zip(latents, cameras, plan):
            t0 = time.perf_counter()
            out = renderer.render(z, cam, baked)
            render_s += time.perf_counter() - t0
            sink.append(out["rgb"])
            if depth_sink is not None:
                depth_sink.append(colorize_depth(out["depth"], *depth_range(cam, radius)))
            task.advance(1, ms_per_frame=1000.0 * render_s / (sink.count or 1))
    return SequenceStats(len(cameras), render_s, cameras[0].w if cameras else 0, cameras[0].h if cameras else 0)


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], cols: int | None = None,
                  min_tile: int = SHEET_MIN_TILE, pad: int = SHEET_PAD) -> np.ndarray:
    """Equally sized images [H, W, 3] in a grid (cols = ceil(sqrt(n)) unless given) on white, each shown at
    least `min_tile` pixels on its longer side (enlarged by a whole factor, nearest neighbour, so every
    rendered pixel stays a sharp square) with its caption above it (wrapped to the tile's width). uint8."""
    from PIL import Image, ImageDraw, ImageFont

    imgs = [to_uint8(im) for im in images]
    n = len(imgs)
    if n == 0 or len(captions) != n:
        raise ValueError(f"need one caption per image, got {n} images and {len(captions)} captions")
    h, w = imgs[0].shape[:2]
    k = max(1, math.ceil(min_tile / max(h, w)))
    th, tw = h * k, w * k
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = measure.textbbox((0, 0), "Ag°", font=font)[3] + 2
    wrapped = [_wrap(str(c), tw, lambda t: measure.textlength(t, font=font)) for c in captions]
    cap_h = [max(len(lines) for lines in wrapped[r * cols:(r + 1) * cols]) * line_h + 2 for r in range(rows)]
    top = np.cumsum([pad] + [c + th + pad for c in cap_h])          # y of each row's caption
    sheet = Image.new("RGB", (cols * tw + (cols + 1) * pad, int(top[-1])), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (im, lines) in enumerate(zip(imgs, wrapped)):
        r, c = divmod(i, cols)
        x, y = pad + c * (tw + pad), int(top[r])
        for j, line in enumerate(lines):
            draw.text((x, y + j * line_h), line, fill=(0, 0, 0), font=font)
        sheet.paste(Image.fromarray(np.repeat(np.repeat(im, k, axis=0), k, axis=1)), (x, y + cap_h[r]))
    return np.asarray(sheet)


def _wrap(text: str, width: float, length) -> list[str]:
    """Greedy word wrap to `width` pixels (length(text) -> pixels); a word wider than a line is broken."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            candidate = f"{line} {word}" if line else word
            if length(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word
            while length(line) > width and len(line) > 1:
                cut = len(line) - 1
                while cut > 1 and length(line[:cut]) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines
