"""`lolnerf bench --json` prints one JSON object with the SPEC keys (a structure check, not a timing)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_json_has_the_spec_keys():
    r = subprocess.run([sys.executable, "-m", "lolnerf_cli", "bench", "--json", "--preset", "tiny", "--seconds", "0.5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["device"].startswith(("cpu", "cuda", "mps"))
    assert result["matmul_gflops"]["fp32"] > 0 and result["matmul_gflops"]["bf16"] > 0
    tiny = result["presets"]["tiny"]
    for key in ("train_samples_per_s", "render_ms_per_frame_128", "fraction_of_peak", "plain_samples_per_s",
                "speedup_vs_plain", "estimated_training_hours"):
        assert tiny[key] > 0, key
    assert tiny["samples_per_ray"] == 24 and tiny["rays_per_step"] == 8 * 16


def test_bench_rejects_an_unknown_preset():
    r = subprocess.run([sys.executable, "-m", "lolnerf_cli", "bench", "--preset", "huge"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown preset" in r.stderr
