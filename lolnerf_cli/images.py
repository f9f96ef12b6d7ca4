"""Photo loading: any PNG/JPEG a user may have (EXIF rotation, RGBA, grey, 16-bit, CMYK) -> uint8 RGB.

Every failure is an `InputError` naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import InputError

MAX_PIXELS = 20000 * 20000  # refuse decompression bombs beyond this


def _open(path: Path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise InputError(path, "image not found")
    if path.stat().st_size == 0:
        raise InputError(path, "image file is empty (0 bytes)")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
            img = ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise InputError(path, "is not a readable image (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(path, f"image is too large (more than {MAX_PIXELS:,} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"image is corrupt or truncated ({str(exc).splitlines()[0][:80]})") from None
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 or arr.max(initial=0) > 255:
        return (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    return arr.clip(0, 255).astype(np.uint8)


def load_image(path: str | Path, with_alpha: bool = False):
    """Read a photo as uint8 RGB [H, W, 3] (and, with_alpha, its alpha [H, W] uint8 or None)."""
    from PIL import Image

    path = Path(path)
    img = _open(path)
    alpha = None
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = _to_uint8(np.asarray(img))
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            alpha = np.asarray(rgba)[..., 3].copy()
            rgb = np.asarray(rgba)[..., :3]
        else:
            rgb = np.asarray(img.convert("RGB"))
    rgb = np.ascontiguousarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(path, f"image has an unusable shape {list(rgb.shape)}")
    return (rgb, alpha) if with_alpha else rgb


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A foreground mask as float32 [H, W] in [0, 1] (255 = object). `size` = (w, h) resizes it."""
    from PIL import Image

    path = Path(path)
    img = _open(path)
    arr = np.asarray(img.convert("L"))
    if size is not None and (arr.shape[1], arr.shape[0]) != tuple(size):
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR))
    return arr.astype(np.float32) / 255.0


def resize(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.LANCZOS if w < rgb.shape[1] else Image.BICUBIC))


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write uint8 (or float in [0, 1]) RGB/grey as PNG, atomically."""
    import io

    from PIL import Image

    from .formats import atomic_write_bytes

    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
