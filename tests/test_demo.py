"""`lolnerf demo` (the README's first Quick start command) runs every stage end to end; here shrunk to
a few training steps and tiny images so that it fits in the test budget."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import imageio as iio
import pytest

pytestmark = pytest.mark.slow   # trains models or runs whole commands


def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "lolnerf_cli", "demo", "--out", str(out), "--steps", "4", "--n", "12",
                        "--resolution", "16", "--encoder-steps", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "done" in r.stdout
    # captured (not a terminal): every echoed command is one whole line that can be pasted back
    from lolnerf_cli.commands.demo_cmd import demo_commands

    lines = r.stdout.splitlines()
    for _, args in demo_commands(out, 4, 12, 16, 2):
        assert f"$ lolnerf {shlex.join(args)}" in lines, args
    assert (out / "samples" / "sample_000.png").is_file()
    transforms = json.loads((out / "data" / "transforms.json").read_text())
    assert transforms.get("camera_source") == "fit-cameras"           # trained on fitted, not true, cameras
    assert (out / "run" / "model.safetensors").is_file()
    assert json.loads((out / "run" / "config.json").read_text())["train"]["symmetry_weight"] > 0
    reader = iio.get_reader(out / "orbit.mp4", format="FFMPEG")
    try:
        assert reader.count_frames() == 24 and reader.get_data(0).shape == (96, 96, 3)
    finally:
        reader.close()
    assert (out / "inverted.safetensors").is_file() and (out / "inverted_preview.png").is_file()
    for name in ("inverted_encoder", "inverted_hybrid"):     # the encoder alone and the hybrid, no landmarks
        assert (out / f"{name}.safetensors").is_file() and (out / f"{name}_preview.png").is_file()
    assert (out / "run" / "encoder.safetensors").is_file()
    assert "(encoder only)" in r.stdout and "(encoder) ->" in r.stdout
    assert len(list((out / "novel_views").glob("*.png"))) == 8
    assert len(list((out / "novel_views_depth").glob("*.png"))) == 8
    assert (out / "samples" / "grid.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["count"] > 0 and "novel" in metrics
    assert metrics["encoder"]["novel"]["hybrid"]["psnr"]["count"] > 0
    # at 16 px LPIPS (which needs 31) is reported unavailable with the reason, not an internal error
    assert metrics["lpips"] is None and "LPIPS unavailable" in metrics["lpips_unavailable"]
    # a second run into the same folder is refused with one clear line
    r2 = subprocess.run([sys.executable, "-m", "lolnerf_cli", "demo", "--out", str(out)], capture_output=True, text=True)
    assert r2.returncode == 2 and "not empty" in r2.stderr
