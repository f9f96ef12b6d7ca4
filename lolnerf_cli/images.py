"""Photo loading: any PNG/JPEG a user may have (EXIF rotation, RGBA, grey, 16-bit, CMYK) -> uint8 RGB.

Every failure is an `InputError` naming the file, with one sentence saying what is wrong; no other
exception type ever leaves `load_image` or `load_mask`. docs/bad-inputs.md lists every case.

Decoding rules:
- formats: PNG, JPEG (also multi-picture MPO), WebP, BMP and GIF (first frame). Anything else (HEIC, TIFF, SVG,
  PDF, text...) is refused with a sentence naming what the file seems to be.
- EXIF orientation (tag 0x0112, values 2-8) is applied, so the pixels come out the way a viewer shows them.
- 8-bit grey, palette, CMYK and YCbCr become RGB; RGBA / LA / palette-with-transparency keep their
  alpha (returned separately with `with_alpha=True`).
- 16-bit PNGs (grey, grey+alpha, RGB, RGBA) are scaled to 8 bits with rounding (v / 257). Pillow
  opens 16-bit colour PNGs as 8-bit by dropping the low byte, so those are decoded with OpenCV
  (IMREAD_UNCHANGED) when it is installed, Pillow's result being the fallback.
- images with more than MAX_PIXELS pixels are refused before any pixel is decoded.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError

MAX_PIXELS = 20000 * 20000  # refuse decompression bombs beyond this many pixels (checked before decoding)

# Pillow plugins we let open a file. Restricting the list keeps exotic decoders (EPS runs Ghostscript,
# for one) out of reach of a file that merely carries a .png name.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # JPEG covers MPO (multi-picture JPEG) too

_HINT = "convert it to PNG or JPEG"


# ----------------------------------------------------------------------------------------- sniffing
def _sniff(head: bytes) -> str | None:
    """What a file looks like from its first bytes, for error messages only."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC/HEIF"
        if brand in (b"avif", b"avis"):
            return "AVIF"
        return "MP4/QuickTime video"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"8BPS"):
        return "Photoshop (PSD)"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG 2000"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL"
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "PostScript/EPS"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg")):
        return "SVG/XML text"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML page"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return None


def _png_depth(head: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG header, or None when the bytes are not a PNG header."""
    if len(head) >= 26 and head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:100]


# ----------------------------------------------------------------------------------------- orientation
def _orientation(img) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": the pixels are still fine
            value = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - corrupt EXIF: treat as unrotated
        return 1
    return value if 1 <= value <= 8 else 1


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation value (1-8) to an [H, W, ...] array, as Pillow's exif_transpose does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


# ----------------------------------------------------------------------------------------- decoding
def _check_file(path: Path) -> bytes:
    """The file's first bytes, after checking it is a non-empty regular file we can read."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        raise InputError(path, "image not found") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(path, "is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, "is not a regular file (a device, pipe or socket?), so it cannot be an image")
    if st.st_size == 0:
        raise InputError(path, "image file is empty (0 bytes)")
    try:
        with open(path, "rb") as fh:
            return fh.read(64)
    except OSError as exc:
        raise InputError(path, f"image cannot be read ({exc.strerror or _first_line(exc)})") from None


def _allowed_formats() -> list[str]:
    from PIL import Image

    if not all(f in Image.OPEN for f in ALLOWED_FORMATS):
        Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]  # e.g. WEBP only when Pillow has libwebp


def _open(path: Path):
    """Open, size-check and decode with Pillow. Returns (image, head bytes, EXIF orientation 1-8)."""
    from PIL import Image, UnidentifiedImageError

    head = _check_file(path)
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        # our own size check below replaces Pillow's global decompression-bomb limit (and its warning)
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "malformed MPO file": decoding decides below
                img = Image.open(path, formats=_allowed_formats())
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    except UnidentifiedImageError:
        kind = _sniff(head)
        if kind in ("PNG", "JPEG", "GIF", "WebP", "BMP"):
            raise InputError(path, f"looks like a {kind} file but is corrupt (its header cannot be decoded)") from None
        if kind in ("text", "HTML page", "SVG/XML text"):
            raise InputError(path, f"is a {kind} file, not an image") from None
        if kind is not None:
            raise InputError(path, f"is a {kind} file, not a supported image; {_HINT}") from None
        raise InputError(path, f"is not a readable image (unknown or unsupported format); {_HINT}") from None
    except Image.DecompressionBombError:  # pragma: no cover - Pillow's limit is off while opening
        raise InputError(path, f"image is too large (more than {MAX_PIXELS:,} pixels)") from None
    except MemoryError:
        raise InputError(path, "image is too large to open in memory") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt headers
        raise InputError(path, f"image is corrupt or truncated ({_first_line(exc)})") from None
    try:
        w, h = img.size
        if w < 1 or h < 1:
            raise InputError(path, f"image has no pixels (size {w} x {h})")
        if w * h > MAX_PIXELS:
            raise InputError(path, f"image is too large ({w} x {h} pixels; the limit is {MAX_PIXELS:,} pixels)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
        except MemoryError:
            raise InputError(path, f"image is too large to decode in memory ({w} x {h} pixels)") from None
        except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, zlib.error, struct.error, ...
            raise InputError(path, f"image is corrupt or truncated ({_first_line(exc)})") from None
        orientation = _orientation(img)
        return img, head, orientation
    except InputError:
        img.close()
        raise


def _scale16(arr: np.ndarray) -> np.ndarray:
    """16-bit samples -> 8-bit with rounding (v * 255 / 65535)."""
    wide = np.clip(arr, 0, 65535).astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _decode_16bit_cv2(path: Path, ctype: int):
    """A 16-bit colour PNG decoded exactly with OpenCV: (rgb uint8, alpha uint8 or None), or None."""
    try:
        import cv2
    except Exception:  # noqa: BLE001 - OpenCV is optional here
        return None
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except Exception:  # noqa: BLE001
        return None
    if arr is None or arr.dtype != np.uint16:
        return None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        rgb16, a16 = np.repeat(arr, 3, axis=2), None
    elif arr.shape[2] == 2:
        rgb16, a16 = np.repeat(arr[..., :1], 3, axis=2), arr[..., 1]
    elif arr.shape[2] == 3:
        rgb16, a16 = arr[..., ::-1], None
    elif arr.shape[2] == 4:
        rgb16, a16 = arr[..., 2::-1], arr[..., 3]
    else:
        return None
    if ctype in (0, 2):  # no alpha channel in the file (OpenCV may add an opaque one)
        a16 = None
    return _scale16(rgb16), None if a16 is None else _scale16(a16)


def _pil_to_arrays(img, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(img)
        if mode == "I" and (grey.min(initial=0) < 0 or grey.max(initial=0) > 65535):
            raise InputError(path, "image holds 32-bit integer pixels, which are not supported; " + _HINT)
        grey = _scale16(grey)
        return np.repeat(grey[..., None], 3, axis=2), None
    if mode == "F":
        raise InputError(path, "image holds floating-point pixels, which are not supported; " + _HINT)
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Palette images with Transparency expressed in bytes..."
                rgba = np.asarray(img.convert("RGBA"))
            return rgba[..., :3], rgba[..., 3].copy()
        return np.asarray(img.convert("RGB")), None
    except (ValueError, OSError) as exc:
        raise InputError(path, f"image has an unsupported pixel format '{mode}' ({_first_line(exc)}); {_HINT}") from None


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    img, head, orientation = _open(path)
    try:
        rgb, alpha = _pil_to_arrays(img, path)
        depth = _png_depth(head)
        if depth is not None and depth[0] == 16 and depth[1] in (2, 4, 6):
            exact = _decode_16bit_cv2(path, depth[1])
            if exact is not None and exact[0].shape == rgb.shape:
                rgb, alpha = exact
        rgb = orient(rgb, orientation)
        alpha = None if alpha is None else orient(alpha, orientation)
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, "image is too large to convert in memory") from None
    except Exception as exc:  # noqa: BLE001 - never anything but InputError from here
        raise InputError(path, f"image cannot be converted to RGB ({_first_line(exc)})") from None
    finally:
        img.close()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(path, f"image has an unusable shape {list(rgb.shape)}")
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha, dtype=np.uint8)
    return rgb, alpha


# ----------------------------------------------------------------------------------------- public API
def load_image(path: str | Path, with_alpha: bool = False):
    """Read a photo as uint8 RGB [H, W, 3] (and, with_alpha, its alpha [H, W] uint8 or None).

    Raises `InputError(path, reason)` for anything that is not a readable image, and nothing else."""
    path = Path(os.fspath(path))
    rgb, alpha = _decode(path)
    return (rgb, alpha) if with_alpha else rgb


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A foreground mask as float32 [H, W] in [0, 1] (255 = object). `size` = (w, h) resizes it.

    Any image `load_image` reads is accepted: 8- or 16-bit grey, RGB (its luma is used) and so on."""
    path = Path(os.fspath(path))
    rgb, _ = _decode(path)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        grey = rgb[..., 0]
    else:  # ITU-R 601 luma, as Pillow's "L" conversion
        grey = ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)
    grey = np.ascontiguousarray(grey)
    if size is not None:
        try:
            w, h = int(size[0]), int(size[1])
        except (TypeError, ValueError, IndexError):
            raise InputError(path, f"mask size must be (width, height), got {size!r}") from None
        if w < 1 or h < 1:
            raise InputError(path, f"mask size must be positive, got {w} x {h}")
        return resize_mask(grey, w, h)
    return grey.astype(np.float32) / 255.0


def resize_mask(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    """A mask (uint8 0..255, or float in [0, 1]; [H, W] or [H, W, C], whose first channel is used) as float32
    [h, w] in [0, 1], resized bilinearly: the one way masks are resized for training, inversion and eval."""
    from PIL import Image

    m8 = to_uint8(np.asarray(mask))
    if m8.ndim == 3:
        m8 = m8[..., 0]
    if (m8.shape[1], m8.shape[0]) != (w, h):
        m8 = np.asarray(Image.fromarray(np.ascontiguousarray(m8)).resize((w, h), Image.BILINEAR))
    return m8.astype(np.float32) / 255.0


def object_mask(mask_path: Path | None, alpha: np.ndarray | None,
                size: tuple[int, int] | None = None) -> np.ndarray | None:
    """A photo's object mask, float32 [H, W] in [0, 1]: the mask file when it exists, else the photo's alpha
    channel (uint8), else None; resized to size = (w, h) when given."""
    if mask_path is not None and Path(mask_path).is_file():
        return load_mask(mask_path, size)
    if alpha is None:
        return None
    return resize_mask(alpha, *size) if size is not None else np.asarray(alpha).astype(np.float32) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float values in [0, 1] (clipped; NaN -> 0) -> uint8 0..255 rounded to nearest; uint8 passes through."""
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


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

    arr = to_uint8(rgb)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["load_image", "load_mask", "object_mask", "resize", "resize_mask", "save_png", "to_uint8", "orient", "MAX_PIXELS", "ALLOWED_FORMATS"]
