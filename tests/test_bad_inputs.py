"""Bad and unusual inputs: every bad image or JSON file is an InputError naming the file; unusual but
valid images (RGBA, 16-bit, grey, palette, CMYK, EXIF-rotated) decode to the right uint8 RGB pixels.

Every file is generated here (PIL / numpy / a tiny PNG writer), nothing is downloaded."""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from lolnerf_cli import images
from lolnerf_cli.config import Config, config_from_dict
from lolnerf_cli.errors import InputError
from lolnerf_cli.formats import (load_latents, read_json, read_keypoints, read_landmarks, read_transforms,
                                 save_safetensors)
from lolnerf_cli.images import load_image, load_mask


# ----------------------------------------------------------------------------------------- generators
def png_bytes(arr: np.ndarray, color_type: int, depth: int, *, width=None, height=None, extra=b"") -> bytes:
    """A minimal PNG writer (no filtering), so the tests control bit depth and colour type exactly.
    color_type: 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA. `width`/`height` override the header only."""
    h, w = arr.shape[:2]
    dtype = ">u2" if depth == 16 else "u1"
    raw = b"".join(b"\x00" + np.ascontiguousarray(arr[i]).astype(dtype).tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w if width is None else width, h if height is None else height, depth,
                       color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def rgb_image(h=32, w=48, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def quadrants(h=64, w=96) -> np.ndarray:
    """Four flat colour blocks (JPEG keeps flat blocks nearly exact): TL red, TR green, BL blue, BR white."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2:] = (0, 255, 0)
    a[h // 2:, : w // 2] = (0, 0, 255)
    a[h // 2:, w // 2:] = (255, 255, 255)
    return a


def _valid_png() -> bytes:
    return pil_bytes(Image.fromarray(rgb_image()), "PNG")


def _valid_jpeg() -> bytes:
    return pil_bytes(Image.fromarray(rgb_image(64, 64)), "JPEG", quality=90)


def _flip_idat(data: bytes) -> bytes:
    i = data.index(b"IDAT") + 8
    out = bytearray(data)
    for k in range(i, min(i + 40, len(out) - 16)):
        out[k] ^= 0xFF
    return bytes(out)


def _bad_ihdr_crc(data: bytes) -> bytes:
    out = bytearray(data)
    out[29] ^= 0xFF  # inside IHDR's CRC
    return bytes(out)


BAD_IMAGES = {
    # name: (file name, bytes, word expected in the message)
    "zero-byte": ("empty.png", b"", "empty"),
    "text named .png": ("notes.png", b"this is a shopping list, not a picture\n", "text"),
    "html named .jpg": ("page.jpg", b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
    "svg named .png": ("vector.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    "pdf named .png": ("doc.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
    "heic named .jpg": ("phone.jpg", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
    "tiff named .png": ("scan.png", None, "TIFF"),
    "random bytes": ("noise.png", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "image"),
    "png signature only": ("sig.png", b"\x89PNG\r\n\x1a\n", "corrupt"),
    "truncated png": ("trunc.png", None, "truncated"),
    "truncated jpeg": ("trunc.jpg", None, "truncated"),
    "jpeg header only": ("head.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "corrupt"),
    "corrupt png data": ("flipped.png", None, "corrupt"),
    "bad png header crc": ("crc.png", None, "corrupt"),
    "zero-width png": ("zero.png", png_bytes(np.zeros((1, 1), np.uint8), 0, 8, width=0), "corrupt"),
    "decompression bomb": ("bomb.png", png_bytes(np.zeros((1, 1), np.uint8), 0, 8, width=100000, height=100000),
                           "too large"),
    "truncated bmp": ("trunc.bmp", None, "truncated"),
}


def _bad_bytes(key: str) -> bytes:
    name, data, _ = BAD_IMAGES[key]
    if data is not None:
        return data
    if key == "tiff named .png":
        return pil_bytes(Image.fromarray(rgb_image()), "TIFF")
    if key == "truncated png":
        d = _valid_png()
        return d[: len(d) // 2]
    if key == "truncated jpeg":
        d = _valid_jpeg()
        return d[: len(d) * 2 // 3]
    if key == "corrupt png data":
        return _flip_idat(_valid_png())
    if key == "bad png header crc":
        return _bad_ihdr_crc(_valid_png())
    if key == "truncated bmp":
        d = pil_bytes(Image.fromarray(rgb_image()), "BMP")
        return d[: len(d) // 2]
    raise KeyError(key)


@pytest.mark.parametrize("key", sorted(BAD_IMAGES))
def test_bad_image_is_input_error_naming_the_file(tmp_path, key):
    name, _, word = BAD_IMAGES[key]
    path = tmp_path / name
    path.write_bytes(_bad_bytes(key))
    with pytest.raises(InputError) as exc:
        load_image(path)
    msg = str(exc.value)
    assert name in msg and exc.value.path == str(path)
    assert word.lower() in msg.lower(), msg
    assert msg.endswith(".") and "\n" not in msg and len(msg) < 300
    with pytest.raises(InputError):  # masks go through the same decoder
        load_mask(path)


def test_missing_folder_and_device_paths(tmp_path):
    cases = [(tmp_path / "missing.png", "not found"), (tmp_path / "folder.png", "folder")]
    (tmp_path / "folder.png").mkdir()
    if os.path.exists("/dev/zero"):
        link = tmp_path / "zero.png"
        link.symlink_to("/dev/zero")
        cases.append((link, "regular file"))
    for path, word in cases:
        with pytest.raises(InputError) as exc:
            load_image(path)
        assert path.name in str(exc.value) and word in str(exc.value)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(_valid_png())
    path.chmod(0)
    try:
        with pytest.raises(InputError) as exc:
            load_image(path)
        assert "locked.png" in str(exc.value)
    finally:
        path.chmod(0o644)


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(pil_bytes(Image.fromarray(rgb_image(40, 50)), "PNG"))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(InputError) as exc:
        load_image(path)
    assert "big.png" in str(exc.value) and "50 x 40" in str(exc.value)
    monkeypatch.undo()
    assert load_image(path).shape == (40, 50, 3)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own global limit is left as it was


# ----------------------------------------------------------------------------------------- unusual but fine
def _save(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _round16(v: np.ndarray) -> np.ndarray:
    return np.floor(v.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def test_rgb_png_and_jpeg_plain(tmp_path):
    a = rgb_image()
    out = load_image(_save(tmp_path, "a.png", pil_bytes(Image.fromarray(a), "PNG")))
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3) and (out == a).all()
    rgb, alpha = load_image(_save(tmp_path, "q.jpg", pil_bytes(Image.fromarray(quadrants()), "JPEG", quality=95)),
                            with_alpha=True)
    # JPEG's chroma subsampling blurs the colour edges: compare away from them
    diff = np.abs(rgb.astype(int) - quadrants())
    diff[24:40], diff[:, 40:56] = 0, 0
    assert alpha is None and diff.max() < 40


def test_rgba_keeps_alpha(tmp_path):
    a = rgb_image()
    al = np.random.default_rng(2).integers(0, 256, a.shape[:2], dtype=np.uint8)
    p = _save(tmp_path, "rgba.png", pil_bytes(Image.fromarray(np.dstack([a, al])), "PNG"))
    rgb, alpha = load_image(p, with_alpha=True)
    assert (rgb == a).all() and (alpha == al).all()
    assert load_image(p).shape == (32, 48, 3)


def test_grey_la_and_bilevel(tmp_path):
    g = rgb_image()[..., 0]
    out = load_image(_save(tmp_path, "g.png", pil_bytes(Image.fromarray(g), "PNG")))
    assert (out == g[..., None]).all()
    al = 255 - g
    rgb, alpha = load_image(_save(tmp_path, "la.png", pil_bytes(Image.fromarray(np.dstack([g, al]), "LA"), "PNG")),
                            with_alpha=True)
    assert (rgb == g[..., None]).all() and (alpha == al).all()
    bits = g > 127
    out = load_image(_save(tmp_path, "b.png", pil_bytes(Image.fromarray(bits), "PNG")))
    assert (out == np.where(bits, 255, 0)[..., None]).all()


def test_palette_with_and_without_transparency(tmp_path):
    a = rgb_image()
    pal = Image.fromarray(a).quantize(16)
    expected = np.asarray(pal.convert("RGB"))
    rgb, alpha = load_image(_save(tmp_path, "p.png", pil_bytes(pal, "PNG")), with_alpha=True)
    assert alpha is None and (rgb == expected).all()
    pal.info["transparency"] = 0  # palette index 0 fully transparent
    rgb, alpha = load_image(_save(tmp_path, "pt.png", pil_bytes(pal, "PNG", transparency=0)), with_alpha=True)
    idx = np.asarray(pal)
    assert (rgb == expected).all() and ((alpha == 0) == (idx == 0)).all() and (alpha[idx != 0] == 255).all()
    gif = load_image(_save(tmp_path, "anim.gif", pil_bytes(pal, "GIF")))
    assert (gif == expected).all()


def test_16bit_grey_png(tmp_path):
    v = np.random.default_rng(3).integers(0, 65536, (20, 30)).astype(np.uint16)
    v[0, :4] = [0, 128, 65535, 257 * 7 + 128]  # include the rounding edges
    out = load_image(_save(tmp_path, "g16.png", png_bytes(v, 0, 16)))
    assert out.dtype == np.uint8 and (out == _round16(v)[..., None]).all()
    dark = np.full((8, 8), 200, np.uint16)  # all values < 256: still 16-bit, so nearly black
    assert (load_image(_save(tmp_path, "dark16.png", png_bytes(dark, 0, 16))) == 1).all()
    m = load_mask(_save(tmp_path, "m16.png", png_bytes(np.where(v > 30000, 65535, 0).astype(np.uint16), 0, 16)))
    assert m.dtype == np.float32 and set(np.unique(m)) <= {0.0, 1.0} and (m == (v > 30000)).all()


@pytest.mark.parametrize("color_type,channels", [(2, 3), (6, 4), (4, 2)])
def test_16bit_colour_png_exact(tmp_path, color_type, channels):
    v = np.random.default_rng(color_type).integers(0, 65536, (12, 17, channels)).astype(np.uint16)
    rgb, alpha = load_image(_save(tmp_path, f"c{color_type}.png", png_bytes(v, color_type, 16)), with_alpha=True)
    want = _round16(v)
    if channels == 2:
        assert (rgb == want[..., :1]).all() and (alpha == want[..., 1]).all()
    else:
        assert (rgb == want[..., :3]).all()
        assert (alpha is None) if channels == 3 else (alpha == want[..., 3]).all()


def test_cmyk_jpeg(tmp_path):
    cmyk = np.zeros((32, 64, 4), np.uint8)
    cmyk[:, :32] = (0, 255, 255, 0)   # cyan 0, magenta + yellow full -> red
    cmyk[:, 32:] = (255, 0, 255, 0)   # -> green
    p = _save(tmp_path, "cmyk.jpg", pil_bytes(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95))
    assert Image.open(p).mode == "CMYK"
    out = load_image(p)
    assert out.shape == (32, 64, 3)
    assert np.abs(out[8:24, 4:28].astype(int) - (255, 0, 0)).max() < 30
    assert np.abs(out[8:24, 36:60].astype(int) - (0, 255, 0)).max() < 30


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    q = quadrants()
    img = Image.fromarray(q)
    exif = img.getexif()
    exif[0x0112] = orientation
    p = _save(tmp_path, f"o{orientation}.jpg", pil_bytes(img, "JPEG", quality=95, exif=exif.tobytes()))
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)))
    out = load_image(p)
    assert out.shape == ref.shape and (out == ref).all()
    assert (images.orient(q, orientation).shape == ref.shape)


@pytest.mark.parametrize("orientation,top_left,top_right", [(6, (0, 0, 255), (255, 0, 0)),
                                                            (8, (0, 255, 0), (255, 255, 255))])
def test_exif_rotation_semantics(tmp_path, orientation, top_left, top_right):
    """6: the camera was turned 90 degrees clockwise -> rotate the stored pixels clockwise to view them;
    8: counter-clockwise. The stored image is 64 x 96 (h x w), so the result is 96 x 64."""
    img = Image.fromarray(quadrants())
    exif = img.getexif()
    exif[0x0112] = orientation
    out = load_image(_save(tmp_path, f"r{orientation}.jpg", pil_bytes(img, "JPEG", quality=95, exif=exif.tobytes())))
    assert out.shape == (96, 64, 3)
    assert np.abs(out[10, 10].astype(int) - top_left).max() < 40
    assert np.abs(out[10, 53].astype(int) - top_right).max() < 40


def test_png_exif_orientation_and_16bit_rotation(tmp_path):
    q = quadrants()
    img = Image.fromarray(q)
    exif = img.getexif()
    exif[0x0112] = 6
    out = load_image(_save(tmp_path, "rot.png", pil_bytes(img, "PNG", exif=exif.tobytes())))
    assert (out == np.rot90(q, -1)).all()
    # 16-bit colour PNG (decoded by OpenCV) with an eXIf chunk: rotated the same way
    v = (q.astype(np.uint16) * 257)
    exif_chunk = exif.tobytes()
    data = exif_chunk[6:] if exif_chunk.startswith(b"Exif\x00\x00") else exif_chunk
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data) & 0xFFFFFFFF)
    out16 = load_image(_save(tmp_path, "rot16.png", png_bytes(v, 2, 16, extra=chunk)))
    assert (out16 == np.rot90(q, -1)).all()


def test_mixed_sizes_and_other_formats(tmp_path):
    shapes = [(16, 16), (31, 47), (200, 3), (1, 1)]
    for i, (h, w) in enumerate(shapes):
        a = rgb_image(h, w, seed=i)
        assert (load_image(_save(tmp_path, f"s{i}.png", pil_bytes(Image.fromarray(a), "PNG"))) == a).all()
    a = rgb_image()
    webp = _save(tmp_path, "really_webp.png", pil_bytes(Image.fromarray(a), "WEBP", lossless=True))
    assert (load_image(webp) == a).all()
    bmp = _save(tmp_path, "x.bmp", pil_bytes(Image.fromarray(a), "BMP"))
    assert (load_image(bmp) == a).all()


def test_load_mask_variants(tmp_path):
    m = np.zeros((20, 30), np.uint8)
    m[5:15, 10:20] = 255
    p = _save(tmp_path, "m.png", pil_bytes(Image.fromarray(m), "PNG"))
    out = load_mask(p)
    assert out.dtype == np.float32 and out.shape == (20, 30) and (out == m / 255).all()
    rgbm = _save(tmp_path, "mrgb.png", pil_bytes(Image.fromarray(np.repeat(m[..., None], 3, 2)), "PNG"))
    assert (load_mask(rgbm) == out).all()
    assert load_mask(p, (15, 10)).shape == (10, 15)
    with pytest.raises(InputError):
        load_mask(p, (0, 10))


# ----------------------------------------------------------------------------------------- JSON readers
FRAME = {"file_path": "images/0001.png", "w": 64, "h": 64,
         "points": [[20.0, 25.0], [44.0, 25.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]], "confidence": 0.9}
NAMES = ["eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right"]


def landmarks_obj(**frame_changes):
    fr = dict(FRAME, **frame_changes)
    return {"scheme": "face5", "names": list(NAMES), "frames": [fr], "failed": []}


def transforms_obj(**frame_changes):
    fr = {"file_path": "images/0001.png",
          "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.5], [0, 0, 0, 1]], **frame_changes}
    return {"fl_x": 80.0, "fl_y": 80.0, "cx": 32.0, "cy": 32.0, "w": 64, "h": 64, "frames": [fr]}


def keypoints_obj(**changes):
    return {"scheme": "face5", "names": list(NAMES),
            "points": [[-0.3, 0.2, 0.5], [0.3, 0.2, 0.5], [0, 0, 0.7], [-0.2, -0.3, 0.5], [0.2, -0.3, 0.5]], **changes}


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "DATA"
    (root / "images").mkdir(parents=True)
    (root / "images" / "0001.png").write_bytes(_valid_png())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_valid_png())
    (root / "images" / "link.png").symlink_to(outside / "secret.png")
    (root / "images" / "linkdir").symlink_to(outside, target_is_directory=True)
    return root


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def test_good_files_read(data_dir):
    lm = read_landmarks(_write(data_dir / "landmarks.json", landmarks_obj()), require_files=True)
    assert lm.frames[0].points.shape == (5, 2)
    tf = read_transforms(_write(data_dir / "transforms.json", transforms_obj()), require_files=True)
    assert tf.frames[0].w == 64 and tf.frames[0].c2w[2, 3] == 2.5
    kp = read_keypoints(_write(data_dir / "keypoints.json", keypoints_obj()))
    assert kp.points.shape == (5, 3)
    # leniencies: a UTF-8 byte-order mark, and integral floats for w / h
    (data_dir / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(transforms_obj(w=64.0)).encode())
    assert read_transforms(data_dir / "bom.json").frames[0].w == 64


LANDMARK_CASES = {
    "NaN literal": ('{"scheme": "face5", "names": [], "frames": NaN}', "NaN"),
    "Infinity in points": (json.dumps(landmarks_obj()).replace("20.0", "Infinity"), "Infinity"),
    "not JSON": ("{scheme: face5", "not valid JSON"),
    "list not object": ([landmarks_obj()], "JSON object"),
    "too few points": (landmarks_obj(points=FRAME["points"][:4]), "5 rows"),
    "point with 3 coords": (landmarks_obj(points=[[1, 2, 3]] * 5), "2 numbers"),
    "string number": (landmarks_obj(points=[["20", 25]] + FRAME["points"][1:]), '"20"'),
    "bool as number": (landmarks_obj(points=[[True, 25]] + FRAME["points"][1:]), "true"),
    "bool as int w": (landmarks_obj(w=True), "'w'"),
    "string w": (landmarks_obj(h="64"), "'h'"),
    "negative w": (landmarks_obj(w=-5), "'w'"),
    "fractional w": (landmarks_obj(w=64.5), "'w'"),
    "huge number": (json.dumps(landmarks_obj()).replace("20.0", "1" + "0" * 400), "out-of-range"),
    "points is object": (landmarks_obj(points={"a": 1}), "list of lists"),
    "null points": (landmarks_obj(points=None), "null"),
    "frame is list": ({"scheme": "face5", "names": NAMES, "frames": [[1, 2]]}, "frame 0"),
    "frames is object": ({"scheme": "face5", "names": NAMES, "frames": {}}, "'frames'"),
    "names too short": ({"scheme": "face5", "names": ["a", "b"], "frames": []}, "names"),
    "duplicate names": ({"scheme": "face5", "names": ["a", "a", "b", "c"], "frames": []}, "duplicates"),
    "scheme not string": (dict(landmarks_obj(), scheme=5), "'scheme'"),
    "confidence NaN-ish string": (landmarks_obj(confidence="high"), "confidence"),
    "failed not list": (dict(landmarks_obj(), failed="none"), "failed"),
    "dotdot path": (landmarks_obj(file_path="../x.png"), "outside"),
    "absolute path": (landmarks_obj(file_path="/etc/passwd"), "relative"),
    "windows path": (landmarks_obj(file_path="C:\\photos\\x.png"), "relative"),
    "symlink file escape": (landmarks_obj(file_path="images/link.png"), "symbolic link"),
    "symlink folder escape": (landmarks_obj(file_path="images/linkdir/secret.png"), "symbolic link"),
    "NUL in path": (landmarks_obj(file_path="images/a\u0000.png"), "control"),
    "path not string": (landmarks_obj(file_path=7), "file_path"),
    "duplicate frames": ({**landmarks_obj(), "frames": [FRAME, FRAME]}, "repeats"),
    "deep nesting": ("[" * 50000 + "]" * 50000, "nested too deeply"),
    "not UTF-8": (b"\xff\xfe{\x00}\x00", "UTF-8"),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(LANDMARK_CASES))
def test_bad_landmarks(data_dir, key):
    content, word = LANDMARK_CASES[key]
    path = data_dir / "landmarks.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _write(path, content)
    with pytest.raises(InputError) as exc:
        read_landmarks(path)
    assert "landmarks.json" in str(exc.value) and word in str(exc.value), str(exc.value)


TRANSFORM_CASES = {
    "missing fl_x": (dict((k, v) for k, v in transforms_obj().items() if k != "fl_x"), "'fl_x'"),
    "string focal": (transforms_obj(fl_x="80"), "'fl_x'"),
    "zero focal": (transforms_obj(fl_x=0), "focal"),
    "3x4 matrix": (transforms_obj(transform_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]), "4 rows"),
    "ragged matrix": (transforms_obj(transform_matrix=[[1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "row 0"),
    "scaled rotation": (transforms_obj(transform_matrix=[[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]),
                        "orthonormal"),
    "reflection": (transforms_obj(transform_matrix=[[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
                   "reflection"),
    "bad last row": (transforms_obj(transform_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]),
                     "last row"),
    "NaN in matrix": (json.dumps(transforms_obj()).replace("2.5", "NaN"), "NaN"),
    "frames missing": ({"fl_x": 1}, "'frames'"),
    "frames is string": ({"frames": "all"}, "'frames'"),
    "top is list": ([], "JSON object"),
    "escape path": (transforms_obj(file_path="images/../../x.png"), "outside"),
    "symlink escape": (transforms_obj(file_path="images/link.png"), "symbolic link"),
    "bool width": (transforms_obj(w=False), "'w'"),
    "duplicate frames": ({**transforms_obj(), "frames": transforms_obj()["frames"] * 2}, "repeats"),
    "same stem": ({**transforms_obj(), "frames": transforms_obj()["frames"]
                   + transforms_obj(file_path="images/0001.jpg")["frames"]}, "same name"),
}


@pytest.mark.parametrize("key", sorted(TRANSFORM_CASES))
def test_bad_transforms(data_dir, key):
    content, word = TRANSFORM_CASES[key]
    path = _write(data_dir / "transforms.json", content)
    with pytest.raises(InputError) as exc:
        read_transforms(path)
    assert "transforms.json" in str(exc.value) and word in str(exc.value), str(exc.value)


def test_images_sharing_a_stem_are_refused(tmp_path):
    from lolnerf_cli.folders import list_images
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "a.jpg", "b.png"):
        (folder / name).write_bytes(b"")
    with pytest.raises(InputError) as exc:
        list_images(folder)
    assert "a.png" in str(exc.value) and "a.jpg" in str(exc.value) and "same name" in str(exc.value)
    (folder / "a.jpg").unlink()
    assert [p.name for p in list_images(folder)] == ["a.png", "b.png"]


def test_files_named_but_missing(data_dir):
    lm = _write(data_dir / "landmarks.json", landmarks_obj(file_path="images/gone.png"))
    assert read_landmarks(lm).frames[0].file_path == "images/gone.png"  # allowed unless asked
    with pytest.raises(InputError) as exc:
        read_landmarks(lm, require_files=True)
    assert "landmarks.json" in str(exc.value) and "images/gone.png" in str(exc.value)
    tf = _write(data_dir / "transforms.json", transforms_obj(file_path="images/gone.png"))
    with pytest.raises(InputError) as exc:
        read_transforms(tf, require_files=True)
    assert "transforms.json" in str(exc.value) and "images/gone.png" in str(exc.value)
    for reader, name in [(read_landmarks, "nope.json"), (read_transforms, "nope.json"), (read_keypoints, "nope.json")]:
        with pytest.raises(InputError) as exc:
            reader(data_dir / name)
        assert "nope.json" in str(exc.value) and "not found" in str(exc.value)
    with pytest.raises(InputError) as exc:
        read_json(data_dir / "images")
    assert "folder" in str(exc.value)


KEYPOINT_CASES = {
    "2D points": (keypoints_obj(points=[[0, 0]] * 5), "3 numbers"),
    "too many points": (keypoints_obj(points=[[0, 0, 0]] * 6), "5 rows"),
    "string coordinate": (keypoints_obj(points=[[0, 0, "1"]] + [[0, 0, 0]] * 4), '"1"'),
    "names not list": (keypoints_obj(names="abcd"), "'names'"),
    "NaN": (json.dumps(keypoints_obj()).replace("0.7", "NaN"), "NaN"),
    "-Infinity": (json.dumps(keypoints_obj()).replace("0.7", "-Infinity"), "Infinity"),
}


@pytest.mark.parametrize("key", sorted(KEYPOINT_CASES))
def test_bad_keypoints(tmp_path, key):
    content, word = KEYPOINT_CASES[key]
    path = _write(tmp_path / "keypoints.json", content)
    with pytest.raises(InputError) as exc:
        read_keypoints(path)
    assert "keypoints.json" in str(exc.value) and word in str(exc.value), str(exc.value)


def test_bad_latent_files(tmp_path):
    cases = {
        "no_latents.safetensors": ({"z": torch.zeros(2, 4)}, "no tensor named"),
        "one_d.safetensors": ({"latents": torch.zeros(4)}, "2-D"),
        "ints.safetensors": ({"latents": torch.zeros(2, 4, dtype=torch.int32)}, "finite floating"),
        "nan.safetensors": ({"latents": torch.full((2, 4), float("nan"))}, "finite floating"),
        "empty.safetensors": ({"latents": torch.zeros(0, 4)}, "empty"),
    }
    for name, (tensors, word) in cases.items():
        save_safetensors(tmp_path / name, tensors)
        with pytest.raises(InputError) as exc:
            load_latents(tmp_path / name)
        assert name in str(exc.value) and word in str(exc.value)
    save_safetensors(tmp_path / "ok.safetensors", {"latents": torch.zeros(2, 4)}, {"sources": "[[[[" * 10000})
    z, sources, _ = load_latents(tmp_path / "ok.safetensors")
    assert z.shape == (2, 4) and sources == ["ok.safetensors#0", "ok.safetensors#1"]
    with pytest.raises(InputError) as exc:
        load_latents(tmp_path / "ok.safetensors", latent_dim=8)
    assert "ok.safetensors" in str(exc.value)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 100)
    with pytest.raises(InputError) as exc:
        load_latents(tmp_path / "junk.safetensors")
    assert "junk.safetensors" in str(exc.value)
    with pytest.raises(InputError):
        load_latents(tmp_path / "absent.safetensors")


def test_bad_config_dicts():
    assert isinstance(config_from_dict({}), Config)
    for bad, word in [([], "JSON object"), ({"model": []}, "JSON object"), ({"model": {"nope": 1}}, "nope"),
                      ({"train": {"skips": 3}}, "skips"), ({"model": {"skips": "3"}}, "skips")]:
        with pytest.raises(InputError) as exc:
            config_from_dict(bad, "RUN/config.json")
        assert "RUN/config.json" in str(exc.value) and word in str(exc.value)


def test_config_rejects_wrong_value_types():
    for bad in [{"model": {"latent_dim": "64"}}, {"model": {"width": True}}, {"train": {"lr": [1]}},
                {"render": {"n_coarse": -3}}, {"train": {"precision": 5}}]:
        with pytest.raises(InputError):
            config_from_dict(bad, "config.json")
