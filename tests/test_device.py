"""Precision selection: `auto` uses bf16 on a CPU only where it measured clearly faster, once per machine."""

import json

import pytest
import torch

from lolnerf_cli import device as dev
from lolnerf_cli.errors import ParamError


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A clean cache folder and no remembered choice; the CPU reports bf16 instructions."""
    monkeypatch.setenv("LOLNERF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dev, "_cpu_info", lambda: ("Test CPU", {"avx512f", "avx512_bf16"}))
    dev.cpu_bf16_choice.cache_clear()
    yield tmp_path / "cache" / "precision.json"
    dev.cpu_bf16_choice.cache_clear()


def _measured(monkeypatch, speedup):
    calls = []
    monkeypatch.setattr(dev, "measure_bf16_speedup", lambda reps=5: calls.append(1) or speedup)
    return calls


@pytest.mark.parametrize("speedup,want", [(0.8, "fp32"), (1.1, "fp32"), (1.6, "bf16")])
def test_auto_follows_the_measurement(fresh, monkeypatch, capsys, speedup, want):
    _measured(monkeypatch, speedup)
    assert dev.resolve_precision("auto", torch.device("cpu")) == want
    err = capsys.readouterr().err
    assert f"{speedup:.2f}x" in err and f"is {want} here" in err and str(fresh) in err


def test_choice_is_measured_once_and_kept(fresh, monkeypatch, capsys):
    calls = _measured(monkeypatch, 0.7)
    assert dev.resolve_precision("auto", torch.device("cpu")) == "fp32"
    kept = json.loads(fresh.read_text())
    (entry,) = kept.values()
    assert entry["speedup"] == 0.7
    assert next(iter(kept)).startswith("Test CPU | avx512_bf16 | torch ")
    # a new process (no in-memory answer) reads the file instead of measuring again, and says nothing
    dev.cpu_bf16_choice.cache_clear()
    capsys.readouterr()
    calls2 = _measured(monkeypatch, 3.0)
    assert dev.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert dev.cpu_bf16_choice()["source"] == "cache"
    assert len(calls) == 1 and not calls2 and capsys.readouterr().err == ""


def test_unreadable_cache_is_measured_again(fresh, monkeypatch):
    fresh.parent.mkdir(parents=True)
    fresh.write_text("{not json")
    calls = _measured(monkeypatch, 2.0)
    assert dev.resolve_precision("auto", torch.device("cpu")) == "bf16"
    assert len(calls) == 1 and json.loads(fresh.read_text())   # rewritten as valid JSON


def test_no_bf16_instructions_means_fp32_without_measuring(fresh, monkeypatch):
    monkeypatch.setattr(dev, "_cpu_info", lambda: ("Old CPU", {"avx2", "fma"}))
    calls = _measured(monkeypatch, 5.0)
    assert dev.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert dev.cpu_bf16_choice()["source"] == "flags" and not calls and not fresh.exists()


def test_explicit_precision_is_kept_and_unknown_refused(fresh, monkeypatch):
    calls = _measured(monkeypatch, 0.5)
    assert dev.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert dev.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert not calls
    with pytest.raises(ParamError):
        dev.resolve_precision("fp16", torch.device("cpu"))


def test_the_probe_measures_this_cpu():
    """The real probe: a positive, finite ratio (which precision wins depends on the machine)."""
    s = dev.measure_bf16_speedup(reps=1)
    assert 0.05 < s < 50


def test_denormals_flush_to_zero_in_every_thread_inside_the_block_only():
    """Inside `denormals_flushed` (training, inversion) denormal inputs read as 0 in elementwise ops and
    matmuls, also in the parts that OpenMP's other thread computes; outside it, and after it, the main
    thread keeps them (Python's floats, MediaPipe and hypothesis need IEEE subnormals)."""
    import subprocess
    import sys
    code = ("import torch; torch.set_num_threads(2); from lolnerf_cli.device import denormals_flushed\n"
            "def probe():\n"
            "    x = torch.full((1 << 22,), 1e-39); a = torch.full((512, 512), 1e-39)\n"
            "    return [int((x * 1.5).count_nonzero()), int((a @ torch.ones(512, 512)).count_nonzero()), 1e-310 * 1.5 != 0]\n"
            "before = probe()\n"
            "with denormals_flushed():\n"
            "    with denormals_flushed():\n"
            "        pass\n"
            "    inside = probe()\n"
            "import json; print(' | '.join(json.dumps(p) for p in (before, inside, probe())))")
    before, inside, after = (json.loads(part) for part in subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip().split(" | "))
    assert inside == [0, 0, False]
    # outside: this thread keeps IEEE subnormals (torch's helper threads flush their share for good)
    assert before[2] is True and after[2] is True
