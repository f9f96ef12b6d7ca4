"""`lolnerf bench --json` prints one JSON object with the SPEC keys (a structure check, not a timing)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # trains models or runs whole commands


def test_bench_json_has_the_spec_keys():
    r = subprocess.run([sys.executable, "-m", "lolnerf_cli", "bench", "--json", "--preset", "tiny", "--seconds", "0.5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["device"].startswith(("cpu", "cuda", "mps"))
    assert result["matmul_gflops"]["fp32"] > 0 and result["matmul_gflops"]["bf16"] > 0
    tiny = result["presets"]["tiny"]
    for key in ("train_samples_per_s", "train_rays_per_s", "render_ms_per_frame_128", "fraction_of_peak",
                "plain_samples_per_s", "plain_rays_per_s", "rays_speedup_vs_plain", "estimated_training_hours"):
        assert tiny[key] > 0, key
    assert tiny["sampler"] == "hierarchical" and tiny["main_field_evals_per_ray"] == 24
    assert tiny["samples_per_ray"] == 24 and tiny["rays_per_step"] == 8 * 16 and tiny["plain_samples_per_ray"] == 128
    # samples/s counts main-field evaluations: rays/s times the main samples of each ray
    assert abs(tiny["train_samples_per_s"] / tiny["train_rays_per_s"] - 24) < 0.5
    # baked rendering of the random network (a fog: nothing is culled), measured against exact renders
    assert tiny["baked_ms_per_frame_128"] > 0 and tiny["bake_seconds"] > 0 and tiny["bake_resolution"] == 64
    assert tiny["bake_blocks"] == tiny["bake_blocks_in_sphere"] > 0
    assert tiny["baked_vs_exact_psnr"] >= 35
    # on a CPU with bf16 instructions, the measurement `auto` precision decided by is reported with it
    from lolnerf_cli.device import cpu_has_bf16_instructions
    if result["device"].startswith("cpu") and cpu_has_bf16_instructions():
        ap = result["auto_precision"]
        assert ap["speedup"] > 0 and ap["speedup_now"] > 0 and ap["source"] in ("cache", "measured")
        assert result["precision"] == ("bf16" if ap["bf16"] else "fp32") == \
            ("bf16" if ap["speedup"] >= ap["bf16_min_speedup"] else "fp32")
    else:
        assert "auto_precision" not in result


def test_bench_set_measures_a_changed_preset_and_checks_it_first():
    r = subprocess.run([sys.executable, "-m", "lolnerf_cli", "bench", "--json", "--preset", "tiny", "--seconds", "0.5",
                        "--no-plain", "--no-bake", "--set", "render.n_coarse=4", "--set", "render.n_fine=6"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["settings"] == {"render.n_coarse": 4, "render.n_fine": 6}
    tiny = result["presets"]["tiny"]
    assert tiny["main_field_evals_per_ray"] == 10 and abs(tiny["train_samples_per_s"] / tiny["train_rays_per_s"] - 10) < 0.5
    r = subprocess.run([sys.executable, "-m", "lolnerf_cli", "bench", "--preset", "tiny", "--set", "render.n_corse=4"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "render.n_corse" in r.stderr and "matmul" not in r.stdout


def test_bench_rejects_an_unknown_preset():
    r = subprocess.run([sys.executable, "-m", "lolnerf_cli", "bench", "--preset", "huge"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown preset" in r.stderr


def test_openmp_wait_policy_spins_only_on_an_idle_machine(monkeypatch):
    import lolnerf_cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(lolnerf_cli.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def policy(busy, load=0.0):
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr(lolnerf_cli, "_busy_cores", lambda window_s=0.1: busy)
        monkeypatch.setattr(lolnerf_cli.os, "getloadavg", lambda: (load, load, load))
        return lolnerf_cli._omp_wait_policy()

    assert policy(0.05) == "ACTIVE"
    assert policy(0.05, load=1.8) == "ACTIVE"     # the last minute's load (the command before) does not count
    assert policy(1.0) == "PASSIVE"               # another job keeps a core busy now
    assert policy(None, load=0.2) == "ACTIVE"     # no /proc/stat: the load average decides
    assert policy(None, load=1.5) == "PASSIVE"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")   # ranks share the cores
    assert policy(0.0) == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")                               # the user's choice wins
    assert lolnerf_cli._omp_wait_policy() == "ACTIVE"


def test_busy_cores_reads_this_machine():
    import lolnerf_cli

    busy = lolnerf_cli._busy_cores(0.05)
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    assert 0.0 <= busy <= (lolnerf_cli.os.cpu_count() or 1) + 1e-6
