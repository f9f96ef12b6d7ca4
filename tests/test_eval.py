"""`lolnerf eval`: metrics.json contents, determinism, the figure, LPIPS without weights, bad inputs.

One tiny model trained briefly on a small synthetic dataset with a multi-view holdout (the session's
from tests/use_models.py when it exists, else one trained here in a few seconds) is evaluated twice
with the same seed; the measurements themselves are checked on known inputs."""

from __future__ import annotations

import json
import math
import shutil
import types

import numpy as np
import pytest
from typer.testing import CliRunner

from lolnerf_cli import commands  # noqa: F401 - registers the subcommands
from lolnerf_cli.app import app

SUBSET = 3          # training (and held-out) images scored


def _invoke(args: list[str], env: dict | None = None):
    return CliRunner().invoke(app, args, env=env)


def _err(result) -> str:
    try:
        return result.stderr
    except (ValueError, AttributeError):
        return result.output


def _own_run(tmp_path_factory) -> types.SimpleNamespace:
    from lolnerf_cli.synth import synthesize
    from lolnerf_cli.train import train

    root = tmp_path_factory.mktemp("eval_model")
    data, run = root / "data", root / "run"
    synthesize(data, n=8, resolution=24, holdout=2, views=2, seed=0)
    train(data, run, "tiny", steps=20, device="cpu", resolution=24)
    return types.SimpleNamespace(data=data, run=run)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny trained model on synthetic data with a multi-view holdout: the one tests/use_models.py
    builds for the session when that module is there (read only), else one of our own."""
    run = None
    try:
        from use_models import tiny_run as shared_tiny_run
    except ImportError:
        shared_tiny_run = None
    if shared_tiny_run is not None:
        shared = shared_tiny_run(tmp_path_factory)
        if (shared.data / "holdout" / "transforms.json").is_file() and (shared.run / "model.safetensors").is_file():
            run = types.SimpleNamespace(data=shared.data, run=shared.run)
    run = run or _own_run(tmp_path_factory)
    run.root = tmp_path_factory.mktemp("eval")          # everything this module writes goes here
    run.res = json.loads((run.run / "config.json").read_text())["train"]["resolution"]
    run.n_train = len(json.loads((run.run / "images.json").read_text())["images"])
    frames = json.loads((run.data / "holdout" / "transforms.json").read_text())["frames"]
    run.objects = len({f["object"] for f in frames})
    run.views = sum(f["role"] == "view" for f in frames)
    return run


@pytest.fixture(scope="module")
def no_lpips_env(tiny_run):
    return {"LOLNERF_LPIPS_WEIGHTS": str(tiny_run.root / "no_such_weights.safetensors")}


@pytest.fixture(scope="module")
def evaluated(tiny_run, no_lpips_env):
    """Two evaluations with the same seed (outputs a/ and b/)."""
    outs = []
    for name in ("a", "b"):
        out = tiny_run.root / name / "metrics.json"
        res = _invoke(["eval", str(tiny_run.data), "--model", str(tiny_run.run), "--out", str(out),
                       "--subset", str(SUBSET), "--invert-steps", "3", "--seed", "0", "--device", "cpu"],
                      env=no_lpips_env)
        assert res.exit_code == 0, res.output
        outs.append((out, res))
    return outs


def _finite(stat) -> bool:
    return stat is not None and all(math.isfinite(stat[k]) for k in ("mean", "std")) and stat["count"] > 0


# ----------------------------------------------------------------------------------------- the run
def test_metrics_json_has_spec_keys_and_counts(evaluated, tiny_run):
    m = json.loads(evaluated[0][0].read_text())
    assert m["model"] == str(tiny_run.run.resolve()) and m["dataset"] == str(tiny_run.data.resolve())
    assert m["preset"] == "tiny" and m["step"] > 0 and m["seed"] == 0 and m["lolnerf_version"]
    assert len(m["model_hash"]) == 16 and m["latents"] == tiny_run.n_train
    assert m["settings"]["subset"] == SUBSET and m["settings"]["invert_steps"] == 3
    assert m["settings"]["resolution"] == tiny_run.res

    train = m["train"]
    assert train["count"] == SUBSET and len(train["images"]) == SUBSET
    for key in ("psnr", "ssim", "psnr_masked"):          # synth writes masks, so masked PSNR exists
        assert _finite(train[key]) and train[key]["count"] == SUBSET, key
    assert 5 < train["psnr"]["mean"] < 60 and -1 <= train["ssim"]["mean"] <= 1

    assert m["heldout"]["count"] == min(SUBSET, tiny_run.objects) and _finite(m["heldout"]["psnr"])
    assert all(r["file_path"].endswith("_q.png") for r in m["heldout"]["images"])

    novel = m["novel"]
    assert novel["objects"] == tiny_run.objects and novel["count"] == tiny_run.views and novel["masked"] is True
    assert _finite(novel["psnr"]) and _finite(novel["ssim"])
    assert not any(r["file_path"].endswith("_q.png") for r in novel["views"])   # the query view is never scored

    depth = m["depth"]
    assert depth["objects"] == tiny_run.objects and len(depth["per_object"]) == tiny_run.objects
    assert "keypoint_pearson" in depth and "dense" in depth
    for row in depth["per_object"]:
        assert 0 <= row["keypoints_valid"] <= 5 and 0.0 <= row["dense_coverage"] <= 1.0
    for stat in [depth["keypoint_pearson"], *depth["dense"].values()]:
        assert stat is None or _finite(stat)


def test_lpips_reported_unavailable_with_reason(evaluated):
    out, res = evaluated[0]
    m = json.loads(out.read_text())
    assert m["lpips"] is None and "no weights" in m["lpips_unavailable"]
    assert m["train"]["lpips"] is None and m["novel"]["lpips"] is None
    assert res.output.count("LPIPS unavailable") == 1          # said once, not once per image


def test_same_seed_gives_identical_numbers(evaluated):
    a, b = (json.loads(out.read_text()) for out, _ in evaluated)
    a.pop("date"), b.pop("date")
    assert a == b


def test_figure_png_exists_with_expected_size(evaluated, tiny_run):
    from PIL import Image

    from lolnerf_cli.evaluate import figure_size

    out, _ = evaluated[0]
    m = json.loads(out.read_text())
    fig = out.with_name("metrics_figure.png")
    assert fig.is_file() and m["figure"]["file"] == fig.name
    rows = min(3, tiny_run.objects) + min(3, SUBSET)          # novel objects and training images, 3 at most
    assert len(m["figure"]["rows"]) == rows
    with Image.open(fig) as img:
        assert img.size == figure_size(rows, tiny_run.res) == (m["figure"]["width"], m["figure"]["height"])
        arr = np.asarray(img.convert("RGB"))
    assert arr.std() > 10                                       # not a blank canvas


def test_table_printed(evaluated):
    _, res = evaluated[0]
    for word in ("train", "held-out", "novel", "PSNR", "depth"):
        assert word in res.output


# ----------------------------------------------------------------------------------------- the measurements
def test_perfect_prediction_scores_maximal():
    from lolnerf_cli import metrics
    from lolnerf_cli.evaluate import _Scorer

    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1
    s = _Scorer()
    full, masked = s.full(img, img, mask), s.masked(img, img, mask)
    assert full["psnr"] >= metrics.PSNR_MAX_DB and full["psnr_masked"] >= metrics.PSNR_MAX_DB
    assert masked["psnr"] >= metrics.PSNR_MAX_DB and abs(full["ssim"] - 1) < 1e-9 and abs(masked["ssim"] - 1) < 1e-9
    worse = s.full(np.clip(img + 0.1, 0, 1), img, mask)
    assert worse["psnr"] < 30 and worse["ssim"] < 1


def test_lpips_measured_when_a_weights_file_exists(tmp_path, monkeypatch):
    """The LPIPS code path (with a structurally valid weights file made here; never used for reporting)."""
    import torch
    from safetensors.torch import save_file

    from lolnerf_cli import metrics
    from lolnerf_cli.evaluate import _Scorer

    gen = torch.Generator().manual_seed(0)
    weights = {k: torch.rand(shape, generator=gen) * 0.1 for k, shape in metrics.LPIPS_TENSORS.items()}
    path = tmp_path / "lpips.safetensors"
    save_file(weights, str(path))
    monkeypatch.setenv(metrics.LPIPS_ENV, str(path))
    s = _Scorer()
    assert s.lpips_reason is None
    img = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), np.float32)
    mask[4:28, 4:28] = 1
    assert s.full(img, img, mask)["lpips"] == pytest.approx(0.0, abs=1e-6)
    other = np.clip(img[::-1] * 0.5, 0, 1)
    assert s.full(other, img, mask)["lpips"] > 0 and s.masked(other, img, mask)["lpips"] > 0


def test_sample_depth_bilinear_and_nan_aware():
    from lolnerf_cli.evaluate import sample_depth

    ys, xs = np.mgrid[0:8, 0:8].astype(np.float64)
    plane = 2.0 + 0.1 * xs + 0.2 * ys                          # depth at pixel centre (x + 0.5, y + 0.5)
    uv = np.array([[0.5, 0.5], [3.0, 4.0], [7.5, 7.5]])
    np.testing.assert_allclose(sample_depth(plane, uv), 2.0 + 0.1 * (uv[:, 0] - 0.5) + 0.2 * (uv[:, 1] - 0.5))
    holes = plane.copy()
    holes[:, 4:] = np.nan
    got = sample_depth(holes, np.array([[4.0, 2.5], [6.5, 2.5], [20.0, 2.0]]))
    assert got[0] == pytest.approx(plane[2, 3]) and np.isnan(got[1]) and np.isnan(got[2])


def test_depth_of_a_perfect_prediction(tmp_path):
    """The true depth map fed in as the prediction (64 px truth, model at 32 px, so the keypoints are
    rescaled): keypoint depths are the map's bilinear values at the rescaled keypoints (checked against
    scipy), they follow the true keypoint depths, and the dense error is zero with full coverage."""
    from scipy.ndimage import map_coordinates

    from lolnerf_cli import metrics
    from lolnerf_cli.evaluate import Evaluator, _nearest_resample, _novel_objects, _true_depth
    from lolnerf_cli.synth import synthesize

    synthesize(tmp_path / "d", n=1, resolution=64, holdout=2, views=1, seed=0)
    folder = tmp_path / "d" / "holdout"
    for obj in _novel_objects(folder):
        obj.query.load(folder)
        pred = _nearest_resample(_true_depth(folder, obj.query), 32)
        fake = types.SimpleNamespace(res=32, render_depth=lambda z, cam: pred)
        row = Evaluator._depth_row(fake, folder, folder / "transforms.json", obj, None)
        uv = np.asarray(obj.query.frame.extra["keypoints_uv"]) * 0.5          # 64 px -> 32 px
        z_true = np.asarray(obj.query.frame.extra["keypoints_z"])
        expect = map_coordinates(pred, [uv[:, 1] - 0.5, uv[:, 0] - 0.5], order=1)
        got = np.array(row["keypoints_pred_z"], dtype=np.float64)
        inner = np.isfinite(expect)                  # scipy: no NaN among the 4 neighbours
        assert inner.sum() >= 3 and row["keypoints_valid"] >= inner.sum()
        np.testing.assert_allclose(got[inner], expect[inner], rtol=1e-6)
        visible = np.asarray(obj.query.frame.extra.get("keypoints_visible", [True] * 5), bool)
        assert row["keypoint_pearson"] == pytest.approx(metrics.pearson(got[visible], z_true[visible]), abs=1e-9)
        assert row["keypoint_pearson"] > 0.8
        assert row["dense_abs_median"] == 0 and row["dense_pearson"] == pytest.approx(1.0)
        assert row["dense_coverage"] == 1


def test_heldout_cameras_from_landmarks(tiny_run, tmp_path):
    """A held-out folder with landmarks.json but no transforms.json: cameras are fitted to RUN/keypoints.json."""
    from lolnerf_cli.evaluate import _heldout_items
    from lolnerf_cli.model import load_model

    folder = tmp_path / "held"
    shutil.copytree(tiny_run.data / "holdout", folder)
    (folder / "transforms.json").unlink()
    items, source = _heldout_items(folder, load_model(tiny_run.run))
    assert source.startswith("landmarks.json") and len(items) == tiny_run.objects
    assert all(it.frame is not None and np.isfinite(it.frame.c2w).all() for it in items)


# ----------------------------------------------------------------------------------------- bad inputs
def _eval_fails(tiny_run, env, *extra, data=None, model=None):
    out = tiny_run.root / "bad" / "metrics.json"
    res = _invoke(["eval", str(data or tiny_run.data), "--model", str(model or tiny_run.run), "--out", str(out),
                   "--subset", "2", "--invert-steps", "1", "--device", "cpu", *extra], env=env)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    return " ".join(_err(res).split())


def test_missing_run_folder(tiny_run, no_lpips_env):
    msg = _eval_fails(tiny_run, no_lpips_env, model=tiny_run.root / "nope")
    assert "nope" in msg and "run folder not found" in msg


def test_run_folder_without_a_model(tiny_run, no_lpips_env, tmp_path):
    msg = _eval_fails(tiny_run, no_lpips_env, model=tmp_path)
    assert "config.json" in msg


def test_dataset_without_transforms(tiny_run, no_lpips_env, tmp_path):
    shutil.copytree(tiny_run.data / "images", tmp_path / "images")
    msg = _eval_fails(tiny_run, no_lpips_env, data=tmp_path)
    assert str(tmp_path / "transforms.json") in msg


def test_model_from_another_dataset(tiny_run, no_lpips_env, tmp_path):
    from lolnerf_cli.synth import synthesize

    other = tmp_path / "other"
    synthesize(other, n=3, resolution=tiny_run.res, seed=0)               # a prefix: images 0003.. are missing
    msg = _eval_fails(tiny_run, no_lpips_env, data=other)
    assert "images.json" in msg and "different dataset" in msg


def test_novel_folder_without_transforms(tiny_run, no_lpips_env, tmp_path):
    shutil.copytree(tiny_run.data / "holdout" / "images", tmp_path / "images")
    msg = _eval_fails(tiny_run, no_lpips_env, "--novel", str(tmp_path))
    assert str(tmp_path / "transforms.json") in msg


def test_novel_folder_missing_a_mask(tiny_run, no_lpips_env, tmp_path):
    folder = tmp_path / "novel"
    shutil.copytree(tiny_run.data / "holdout", folder)
    (folder / "masks" / "h0000_v01.png").unlink()
    msg = _eval_fails(tiny_run, no_lpips_env, "--novel", str(folder))
    assert str(folder / "masks" / "h0000_v01.png") in msg


def test_novel_frames_without_object_key(tiny_run, no_lpips_env, tmp_path):
    folder = tmp_path / "novel"
    shutil.copytree(tiny_run.data / "holdout", folder)
    tf = json.loads((folder / "transforms.json").read_text())
    del tf["frames"][1]["object"]
    (folder / "transforms.json").write_text(json.dumps(tf))
    msg = _eval_fails(tiny_run, no_lpips_env, "--novel", str(folder))
    assert "transforms.json" in msg and "'object'" in msg
