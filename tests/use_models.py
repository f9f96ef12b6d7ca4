"""Models for the tests of the commands that use a trained model (invert, render, sample, interpolate,
export-mesh): a tiny model trained briefly on synthetic data, and a hand-built model whose geometry is
known exactly (a solid, uniformly coloured box of different width, height and depth, so that a swapped
axis shows), both written as ordinary run folders."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import torch

TRAIN_STEPS = 40

BOX_HALF = (0.3, 0.4, 0.5)   # the field's flat-top region is |x_i| <= BOX_HALF[i] ...
CUBE_SHARPNESS = 1000.0      # ... and its density logit falls by this per scene unit outside it
CUBE_PEAK = 100.0        # density inside the cube
CUBE_RGB_LOGITS = (2.0, -2.0, 0.0)
CUBE_RGB = tuple(1 / (1 + np.exp(-v)) for v in CUBE_RGB_LOGITS)   # about (0.88, 0.12, 0.5)
CUBE_VIEW = {"yaw": 0.0, "pitch": 0.0, "radius": 2.7, "fov": 30.0}


def cube_surface(threshold: float) -> np.ndarray:
    """Half-extents [3] (x, y, z) of the box's faces at a density threshold (away from edges and corners)."""
    return np.array(BOX_HALF) + (CUBE_PEAK - threshold) / CUBE_SHARPNESS


def tiny_run(tmp_path_factory) -> types.SimpleNamespace:
    """A `tiny` model trained for a few steps on synthetic data with a multi-view holdout, built once per
    session (in the session's base temp folder) and shared, read only, by every module that asks.

    The dataset is the one conftest's `synth_data` describes (same size, resolution, holdout and seed),
    written here so that the model does not depend on which module asks first."""
    from conftest import SYNTH_HOLDOUT, SYNTH_N, SYNTH_RES, SYNTH_SEED
    from lolnerf_cli.synth import synthesize
    from lolnerf_cli.train import train

    root = tmp_path_factory.getbasetemp() / "use_models_tiny"
    data, run = root / "data", root / "run"
    if not (run / "model.safetensors").is_file():
        synthesize(data, n=SYNTH_N, resolution=SYNTH_RES, holdout=SYNTH_HOLDOUT, seed=SYNTH_SEED)
        train(data, run, "tiny", steps=TRAIN_STEPS, device="cpu", preview_every=0, precision="fp32")
    return types.SimpleNamespace(root=root, data=data, run=run, holdout=data / "holdout")


def cube_run(tmp_path_factory, n_latents: int = 3) -> Path:
    """A run folder whose field is a solid box: sigma = softplus(PEAK - SHARPNESS * sum_i relu(|x_i| - HALF_i))
    (densities well above 10 inside |x_i| <= HALF_i, zero a little outside), colour CUBE_RGB everywhere,
    a blue background, zero latents. Built from the `tiny` preset's network by setting its weights."""
    from lolnerf_cli.config import preset
    from lolnerf_cli.formats import write_json
    from lolnerf_cli.model import GenerativeNeRF, save_model

    run = tmp_path_factory.getbasetemp() / "use_models_box"
    if (run / "model.safetensors").is_file():
        return run
    cfg = preset("tiny")
    cfg.render.n_coarse, cfg.render.n_fine = 48, 48
    cfg.train.precision = "fp32"
    model = GenerativeNeRF(cfg.model)
    f = model.field
    assert cfg.model.scene_radius == 1.0 and not cfg.model.skips
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for i in range(3):                       # units 2i, 2i+1 = relu(+-x_i - HALF_i); x is encoded first
            f.in_x.weight[2 * i, i] = 1.0
            f.in_x.weight[2 * i + 1, i] = -1.0
            f.in_x.bias[2 * i: 2 * i + 2] = -BOX_HALF[i]
        for layer in f.hidden:                   # carry the six (non-negative) units through unchanged
            layer.weight[:6, :6] = torch.eye(6)
        f.out.weight[0, :6] = -CUBE_SHARPNESS
        f.out.bias[0] = CUBE_PEAK - cfg.model.density_bias    # softplus(PEAK) ~ PEAK inside
        f.out.bias[1:] = torch.tensor(CUBE_RGB_LOGITS)
        model.background.net[-1].bias[:] = torch.tensor([-3.0, -3.0, 3.0])
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", cfg.to_dict())
    write_json(run / "view.json", CUBE_VIEW)
    save_model(run / "model.safetensors", model, torch.zeros(n_latents, cfg.model.latent_dim), cfg)
    return run


def invoke(args: list[str]):
    """Run the CLI in-process; returns typer's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from lolnerf_cli import commands  # noqa: F401 - registers the subcommands
    from lolnerf_cli.app import app

    return CliRunner().invoke(app, args)


def error_line(result) -> str:
    """The error of a failed command: exactly one `error:` line on stderr and no traceback."""
    text = result.stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, text
    assert "Traceback" not in text, text
    return errors[0]
