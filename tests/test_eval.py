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

pytestmark = pytest.mark.slow   # trains models or runs whole commands

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
    flat = novel["flat_picture_psnr"]                     # the flat-picture baseline is measured beside it
    assert _finite(flat) and flat["count"] == tiny_run.views
    assert all(r["flat_psnr"] is None or math.isfinite(r["flat_psnr"]) for r in novel["views"])

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
    from lolnerf_cli.eval_scoring import Scorer as _Scorer

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
    from lolnerf_cli.eval_scoring import Scorer as _Scorer

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
    from lolnerf_cli.eval_inputs import novel_objects as _novel_objects, true_depth as _true_depth
    from lolnerf_cli.eval_scoring import nearest_resample as _nearest_resample
    from lolnerf_cli.eval_sections import depth_row
    from lolnerf_cli.synth import synthesize

    synthesize(tmp_path / "d", n=1, resolution=64, holdout=2, views=1, seed=0)
    folder = tmp_path / "d" / "holdout"
    for obj in _novel_objects(folder):
        obj.query.load(folder)
        pred = _nearest_resample(_true_depth(folder, obj.query), 32)
        fake = types.SimpleNamespace(res=32, render_depth=lambda z, cam: pred)
        row = depth_row(fake, folder, folder / "transforms.json", obj, None)
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
    from lolnerf_cli.eval_inputs import heldout_items as _heldout_items
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


def test_frames_not_recognised(tiny_run, no_lpips_env):
    msg = _eval_fails(tiny_run, no_lpips_env, "--frames", "sideways")
    assert "--frames" in msg and "as-given" in msg


def test_true_cameras_are_used_as_given(evaluated):
    """synth's cameras (no fit-cameras marker) train a model in the folder's own frame: auto -> as-given."""
    m = json.loads(evaluated[0][0].read_text())
    assert m["settings"]["frames"] == {"option": "auto", "training_cameras": "given", "novel": "as-given",
                                       "heldout": "as-given"}
    assert m["novel"]["frames"] == "as-given" and "alignment" not in m["novel"]
    assert all(r["depth_scale"] == 1.0 for r in m["depth"]["per_object"])
    tc = m["training_cameras"]          # the dataset's cameras are the true ones: no error, no ratio
    assert tc["dataset_cameras"]["median_deg"] < 1e-3 and tc["median_ratio"] is None
    assert "the dataset's cameras are the true ones: no ratio" in evaluated[0][1].output


# ----------------------------------------------------------------------------------------- camera frames
def _rot_angle_deg(r: np.ndarray) -> float:
    """Rotation angle of r [3, 3] in degrees, accurate near 0 (atan2 of sin and cos, not arccos)."""
    sin = np.linalg.norm([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2
    return math.degrees(math.atan2(sin, (np.trace(r) - 1) / 2))


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_alignment_recovers_a_known_similarity():
    """True cameras moved into another frame by a random similarity X' = s A X + b: given the query's
    camera in that frame exactly, the relative-pose alignment gives every other camera exactly."""
    from lolnerf_cli.cameras import look_at, spherical_eye
    from lolnerf_cli.evaluate import align_views, relative_scale

    rng = np.random.default_rng(3)
    eyes = spherical_eye(rng.uniform(-60, 60, 6), rng.uniform(-25, 25, 6), rng.uniform(2.0, 3.5, 6))
    true = look_at(eyes, target=rng.normal(scale=0.1, size=3))                # [6, 4, 4], object at the origin
    for trial in range(5):
        a, s, b = _random_rotation(rng), float(np.exp(rng.uniform(-1.5, 1.5))), rng.normal(scale=2.0, size=3)
        sim = np.eye(4)
        sim[:3, :3], sim[:3, 3] = a, b
        model = sim @ true                                                   # rotate and move, then scale distances:
        model[:, :3, 3] = (s * (true[:, :3, 3] @ a.T)) + b                   # o' = s A o + b
        q = trial % len(true)
        scale = relative_scale(model[q], true[q], centre_model=b)           # the object centre maps 0 -> b
        assert scale == pytest.approx(s, rel=1e-12)
        got = align_views(model[q], true[q], true, scale)
        np.testing.assert_allclose(got, model, atol=1e-10)
        # centred similarity (b = 0): the default centres (both origins) give the exact scale as well
        model0 = model.copy()
        model0[:, :3, 3] -= b
        assert relative_scale(model0[q], true[q]) == pytest.approx(s, rel=1e-12)


def test_frames_mode_rule():
    from lolnerf_cli.errors import InputError
    from lolnerf_cli.evaluate import cameras_fitted, frames_mode

    assert frames_mode("auto", True, False) == "query"
    assert frames_mode("auto", True, True) == "as-given"
    assert frames_mode("auto", False, False) == "as-given"
    assert frames_mode("query", False, True) == "query" and frames_mode("as-given", True, False) == "as-given"
    with pytest.raises(InputError):
        frames_mode("both", True, False)
    assert cameras_fitted({"camera_source": "fit-cameras"}) and not cameras_fitted({"camera_model": "OPENCV"})


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """The real pipeline: synth photos (32 px, 2 holdout objects), cameras from `fit-cameras` (the fitted
    object frame), a tiny model trained briefly on them. The holdout keeps synth's true cameras."""
    from lolnerf_cli.camfit import fit_cameras
    from lolnerf_cli.synth import synthesize
    from lolnerf_cli.train import train

    root = tmp_path_factory.mktemp("eval_fitted")
    data, run = root / "data", root / "run"
    synthesize(data, n=8, resolution=32, holdout=2, views=2, seed=1)
    fit_cameras(data)
    train(data, run, "tiny", steps=3, device="cpu", resolution=32, preview_every=0, precision="fp32")
    return types.SimpleNamespace(root=root, data=data, run=run, holdout=data / "holdout")


def _aligned_objects(fitted_run, folder=None, frames="auto"):
    from lolnerf_cli.eval_inputs import novel_objects as _novel_objects
    from lolnerf_cli.evaluate import EvalOptions, Evaluator

    folder = folder or fitted_run.holdout
    ev = Evaluator(fitted_run.data, fitted_run.run, EvalOptions(device="cpu", frames=frames))
    objects = _novel_objects(folder)
    for obj in objects:
        obj.query.load(folder)
        for v in obj.views:
            v.load(folder)
    assert ev.check_frames(folder) == "query"
    for obj in objects:
        ev.align_object(folder, obj)
    return objects


def test_fitted_transforms_are_marked(fitted_run):
    from lolnerf_cli.formats import read_transforms

    assert read_transforms(fitted_run.data / "transforms.json").extra["camera_source"] == "fit-cameras"
    assert "camera_source" not in read_transforms(fitted_run.holdout / "transforms.json").extra


def test_aligned_cameras(fitted_run):
    """The query camera in the model frame reprojects RUN/keypoints.json onto the query's landmarks; the
    other views keep their true rotation relative to the query and their relative position, scaled by s."""
    from lolnerf_cli.cameras import project
    from lolnerf_cli.formats import read_keypoints, read_landmarks

    kp = read_keypoints(fitted_run.run / "keypoints.json").points
    lms = {f.file_path: f.points for f in read_landmarks(fitted_run.holdout / "landmarks.json").frames}
    for obj in _aligned_objects(fitted_run):
        q = obj.query
        assert obj.alignment["landmarks"] == "landmarks.json"     # (a 32 px face may be flagged: 0.5 px > 10 %)
        cam = q.camera()
        assert (cam.fx, cam.fy, cam.cx, cam.cy) == (q.frame.fx, q.frame.fy, q.frame.cx, q.frame.cy)
        uv, z = project(kp, cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy)
        err = np.linalg.norm(uv - lms[q.file_path], axis=1)
        assert (z > 0).all() and err.max() < 2.0, err
        assert obj.alignment["landmark_rmse_px"] == pytest.approx(np.sqrt((err ** 2).mean()), abs=1e-3)
        s = obj.scale
        assert s == pytest.approx(np.linalg.norm(cam.c2w[:3, 3]) / np.linalg.norm(q.frame.c2w[:3, 3]))
        for v in obj.views:
            rel_true = np.linalg.inv(q.frame.c2w) @ v.frame.c2w
            rel_model = np.linalg.inv(cam.c2w) @ v.camera().c2w
            assert _rot_angle_deg(rel_true[:3, :3].T @ rel_model[:3, :3]) < 1e-6
            np.testing.assert_allclose(rel_model[:3, 3], s * rel_true[:3, 3], atol=1e-9)
            vc = v.camera()
            assert (vc.fx, vc.fy, vc.cx, vc.cy, vc.w, vc.h) == (v.frame.fx, v.frame.fy, v.frame.cx, v.frame.cy,
                                                                v.frame.w, v.frame.h)


def test_query_landmarks_fall_back_to_keypoints_uv(fitted_run, tmp_path):
    """Without DIR/landmarks.json the query frame's keypoints_uv (same points, here) place the query."""
    folder = tmp_path / "holdout"
    shutil.copytree(fitted_run.holdout, folder)
    (folder / "landmarks.json").unlink()
    ref = {o.name: o for o in _aligned_objects(fitted_run)}
    for obj in _aligned_objects(fitted_run, folder):
        assert obj.alignment["landmarks"] == "keypoints_uv"
        np.testing.assert_allclose(obj.query.camera().c2w, ref[obj.name].query.camera().c2w, atol=1e-3)


def test_eval_aligns_a_model_trained_on_fitted_cameras(fitted_run, no_lpips_env):
    out = fitted_run.root / "m" / "metrics.json"
    res = _invoke(["eval", str(fitted_run.data), "--model", str(fitted_run.run), "--out", str(out), "--subset", "1",
                   "--invert-steps", "2", "--device", "cpu", "--no-figure"], env=no_lpips_env)
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert m["settings"]["frames"] == {"option": "auto", "training_cameras": "fit-cameras", "novel": "query",
                                       "heldout": "query"}
    novel = m["novel"]
    assert novel["frames"] == "query" and novel["count"] == 4 and _finite(novel["psnr"])
    align = {a["object"]: a for a in novel["alignment"]}
    assert sorted(align) == ["h0000", "h0001"]
    for a in align.values():
        assert a["landmarks"] == "landmarks.json" and a["landmark_rmse_px"] < 2.0 and a["scale"] > 0
    for row in m["depth"]["per_object"]:
        assert row["depth_scale"] == pytest.approx(align[row["object"]]["scale"])
    held = m["heldout"]
    assert held["frames"] == "query" and "fitted" in held["cameras"]
    for row in held["images"]:                          # the same query cameras as the novel section's
        assert row["alignment"]["scale"] == pytest.approx(align[row["file_path"][7:12]]["scale"])


def test_upsampled_novel_views_are_scored_against_exact_ground_truth(tiny_run, no_lpips_env):
    """--upsample 2 renders every novel view at twice the training size and scores it, and a bicubic
    upsample of the training-size render, against synth's ground truth at that size."""
    from lolnerf_cli.upsampled import bicubic

    out = tiny_run.root / "up" / "metrics.json"
    res = _invoke(["eval", str(tiny_run.data), "--model", str(tiny_run.run), "--out", str(out),
                   "--subset", "1", "--invert-steps", "2", "--upsample", "2"], env=no_lpips_env)
    assert res.exit_code == 0, _err(res)
    up = json.loads(out.read_text())["novel_upsampled"]
    assert up["scale"] == 2 and up["resolution"] == 2 * tiny_run.res and up["views"] == tiny_run.views
    for row in up["per_view"]:
        assert math.isfinite(row["render_psnr"]) and math.isfinite(row["bicubic_psnr"])
        assert row["gain_db"] == pytest.approx(row["render_psnr"] - row["bicubic_psnr"])
    assert up["render_at_least_bicubic"] == (up["render_psnr"]["mean"] >= up["bicubic_psnr"]["mean"])
    assert (out.parent / up["figure"]["file"]).is_file()
    assert "at 2x: render" in res.output and "at 2x: bicubic" in res.output
    # the bicubic baseline keeps a constant image constant and a smooth ramp close to itself
    flat = np.full((8, 8, 3), 0.25, np.float32)
    assert np.allclose(bicubic(flat, 16), 0.25, atol=1e-6)


def test_upsample_of_one_is_refused(tiny_run, no_lpips_env):
    res = _invoke(["eval", str(tiny_run.data), "--model", str(tiny_run.run), "--out",
                   str(tiny_run.root / "u1.json"), "--upsample", "1"], env=no_lpips_env)
    assert res.exit_code == 2 and "--upsample" in _err(res)
