"""Per-image camera refinement while training (camera_refine.py): the SE(3) corrections, the gauge,
RUN/cameras.json, exact resume, when it is on, and eval's training-camera section."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lolnerf_cli.camera_refine import (aligned_rotation_components, aligned_rotation_errors, axis_angle_matrix,
                                      apply_corrections)
from lolnerf_cli.camfit import fit_cameras
from lolnerf_cli.train import Trainer, resolve_config


def _cfg(run, steps=12, refine="auto", **over):
    ov = {"train.steps": steps, "train.precision": "fp32", "train.preview_every": 0, "train.camera_warmup": 0.0}
    if refine is not None:
        ov["train.refine_cameras"] = refine
    ov.update({f"train.{k}": v for k, v in over.items()})
    return resolve_config(run, "tiny", False, ov)


@pytest.fixture(scope="module")
def fitted_data(synth_data, tmp_path_factory):
    """The shared synth set with its cameras fitted from the landmarks (true cameras in true_cameras.json)."""
    root = tmp_path_factory.mktemp("fitted") / "data"
    shutil.copytree(synth_data, root)
    fit_cameras(root)
    return root


def test_axis_angle_matrix_is_rodrigues_and_smooth_at_zero():
    w = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.pi / 2], [0.3, -0.2, 0.1], [1e-6, 0.0, 0.0]],
                     dtype=torch.float64)
    r = axis_angle_matrix(w)
    assert torch.allclose(r[0], torch.eye(3, dtype=torch.float64))
    assert torch.allclose(r[1], torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
                                             dtype=torch.float64), atol=1e-12)
    for m in r:
        assert torch.allclose(m @ m.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert abs(float(torch.det(m)) - 1.0) < 1e-12
    # turning by w then by -w is the identity; the angle is |w|
    assert torch.allclose(r[2] @ axis_angle_matrix(-w[2:3])[0], torch.eye(3, dtype=torch.float64), atol=1e-12)
    angle = math.degrees(math.acos((float(torch.trace(r[2])) - 1) / 2))
    assert abs(angle - math.degrees(float(w[2].norm()))) < 1e-9
    # finite gradient at zero (the corrections start there)
    z = torch.zeros(1, 3, requires_grad=True)
    axis_angle_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_a_correction_turns_the_camera_about_the_object_centre_then_moves_it():
    c2w = torch.eye(4, dtype=torch.float64)[None].clone()
    c2w[0, 2, 3] = 2.7                                        # on the +z axis, looking at the origin
    delta = torch.tensor([[0.0, math.pi / 2, 0.0, 0.1, 0.0, 0.0]], dtype=torch.float64)
    out = apply_corrections(c2w, delta)[0]
    assert torch.allclose(out[:, 3], torch.tensor([2.7 + 0.1, 0.0, 0.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out[:, 2], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-12)  # still faces the origin
    assert torch.equal(apply_corrections(c2w, torch.zeros(1, 6, dtype=torch.float64)), c2w[:, :3])


def test_rotation_errors_ignore_the_frames_global_rotation():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    true = Rotation.random(50, random_state=1).as_matrix()
    g = Rotation.from_rotvec([0.4, -0.3, 0.9]).as_matrix()
    assert np.allclose(aligned_rotation_errors(np.einsum("ij,njk->nik", g, true), true), 0.0, atol=1e-5)
    noise = Rotation.from_rotvec(rng.normal(0, math.radians(5) / math.sqrt(3), (50, 3))).as_matrix()
    est = np.einsum("ij,njk,nkl->nil", g, noise, true)
    err = aligned_rotation_errors(est, true)
    assert 2.0 < np.median(err) < 8.0


def test_rotation_error_components_name_the_axis_turned():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    true = Rotation.from_rotvec(rng.normal(0, 0.4, (40, 3))).as_matrix()
    g = Rotation.from_rotvec([0.2, 0.5, -0.1]).as_matrix()
    # each camera nodded (about the object's X axis) by its own angle, then the whole frame turned by g
    nod = rng.choice([-1.0, 1.0], 40) * rng.uniform(3.0, 9.0, 40)
    turn = Rotation.from_rotvec(np.radians(nod)[:, None] * np.array([[1.0, 0.0, 0.0]])).as_matrix()
    est = np.einsum("ij,njk,nkl->nil", g, turn, true)
    comp = aligned_rotation_components(est, true)
    assert np.median(np.abs(comp[:, 0])) > 4.0 and np.abs(comp[:, 1:]).max() < 0.5
    assert np.allclose(np.linalg.norm(comp, axis=1), aligned_rotation_errors(est, true), atol=1e-6)


def test_refinement_is_on_for_fitted_cameras_and_writes_cameras_json(fitted_data, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(fitted_data, run, _cfg(run, steps=12, camera_lr=0.02))
    assert tr.refiner is not None
    tr.fit()
    assert json.loads((run / "config.json").read_text())["train"]["refine_cameras"] == "on"
    cams = json.loads((run / "cameras.json").read_text())
    data = json.loads((fitted_data / "transforms.json").read_text())
    by_path = {f["file_path"]: f for f in data["frames"]}
    images = json.loads((run / "images.json").read_text())["images"]
    assert [f["file_path"] for f in cams["frames"]] == images
    assert cams["camera_source"] == "fit-cameras" and cams["refined_at_step"] == 12
    moved = []
    for f in cams["frames"]:
        fit = np.array(by_path[f["file_path"]]["transform_matrix"])
        assert np.allclose(np.array(f["landmark_fit_matrix"]), fit)
        ref = np.array(f["transform_matrix"])
        assert np.allclose(ref[:3, :3].T @ ref[:3, :3], np.eye(3), atol=1e-5)
        moved.append(f["refinement"]["rotation_deg"])
    assert max(moved) > 0.1                              # the photos moved their cameras
    # the gauge: the stored corrections' mean was removed at the last recentring (every 100 steps: none yet
    # in 12 steps), so check the recentring itself
    tr.refiner.recentre()
    assert tr.refiner.table.weight.detach().mean(0).abs().max() < 1e-6


def test_refinement_is_off_unless_asked(fitted_data, tmp_path):
    """The shipped default: off, also for landmark-fitted cameras (it lowered every image score at 64 px)."""
    tr = Trainer(fitted_data, tmp_path / "a", _cfg(tmp_path / "a", steps=2, refine=None))
    assert tr.refiner is None and tr.cfg.train.refine_cameras == "off"
    tr.fit()
    assert not (tmp_path / "a" / "cameras.json").exists()


def test_known_cameras_are_not_refined_unless_asked(synth_data, tmp_path):
    tr = Trainer(synth_data, tmp_path / "a", _cfg(tmp_path / "a", steps=2))
    assert tr.refiner is None
    tr.fit()
    assert not (tmp_path / "a" / "cameras.json").exists()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["refine_cameras"] == "off"
    tr = Trainer(synth_data, tmp_path / "b", _cfg(tmp_path / "b", steps=2, refine="on"))
    assert tr.refiner is not None


def test_no_refinement_trains_exactly_as_before(fitted_data, tmp_path):
    """refine_cameras off: the same weights as a run that never had the feature (no extra RNG draws)."""
    a = Trainer(fitted_data, tmp_path / "a", _cfg(tmp_path / "a", steps=6, refine="off", encoding_anneal=0.0))
    a.fit()
    # on, but still in its warm-up and without the coarse-to-fine window: the corrections stay zero
    b = Trainer(fitted_data, tmp_path / "b", _cfg(tmp_path / "b", steps=6, refine="on", camera_warmup=1.0,
                                                  encoding_anneal=0.0))
    b.fit()
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and any(k.startswith("field.") for k in wa)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    cams = json.loads((tmp_path / "b" / "cameras.json").read_text())["frames"]
    assert all(f["refinement"]["rotation_deg"] == 0.0 for f in cams)


def test_the_coarse_to_fine_window_opens_while_cameras_are_refined(fitted_data, tmp_path):
    """NeRF's encoding anneals its octaves (BARF) only when the run refines its cameras."""
    off = Trainer(fitted_data, tmp_path / "a", _cfg(tmp_path / "a", steps=100, refine="off"))
    on = Trainer(fitted_data, tmp_path / "b", _cfg(tmp_path / "b", steps=100, refine="on"))
    assert on.cfg.model.encoding == "pe"
    assert off.encoding_window(0) is None
    w0, w10, w24 = on.encoding_window(0), on.encoding_window(10), on.encoding_window(24)
    assert w0 == pytest.approx(1.0) and w0 < w10 < w24 <= on.cfg.model.pos_freqs
    assert on.encoding_window(25) is None                # train.encoding_anneal 0.25 of 100 steps


@pytest.mark.slow
def test_resume_with_refinement_continues_exactly(fitted_data, tmp_path):
    cfg = _cfg(tmp_path / "a", steps=16, camera_lr=0.02, camera_recentre_every=5)
    Trainer(fitted_data, tmp_path / "a", cfg).fit()
    Trainer(fitted_data, tmp_path / "b", cfg).fit(stop_at=7)
    cfg_b = resolve_config(tmp_path / "b", None, True, {})
    assert cfg_b.train.refine_cameras == "on"
    Trainer(fitted_data, tmp_path / "b", cfg_b, resume=True).fit()
    a, b = load_file(tmp_path / "a" / "trainer.safetensors"), load_file(tmp_path / "b" / "trainer.safetensors")
    assert "camera_delta" in a and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = json.loads((tmp_path / "a" / "cameras.json").read_text())["frames"]
    cb = json.loads((tmp_path / "b" / "cameras.json").read_text())["frames"]
    assert [f["transform_matrix"] for f in ca] == [f["transform_matrix"] for f in cb]


def test_a_resumed_run_from_before_refinement_keeps_its_cameras(fitted_data, tmp_path):
    run = tmp_path / "old"
    Trainer(fitted_data, run, _cfg(run, steps=4, refine="off")).fit(stop_at=2)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["train"]["refine_cameras"]                    # as an older lolnerf wrote it
    (run / "config.json").write_text(json.dumps(cfg))
    tr = Trainer(fitted_data, run, resolve_config(run, None, True, {}), resume=True)
    assert tr.refiner is None
    tr.fit()


def test_bad_refine_setting_is_one_clear_error(tmp_path):
    from lolnerf_cli.errors import InputError

    with pytest.raises(InputError, match="refine_cameras"):
        resolve_config(tmp_path / "r", "tiny", False, {"train.refine_cameras": "maybe"})


def test_eval_and_the_encoder_use_the_refined_cameras(fitted_data, tmp_path):
    from lolnerf_cli.eval_inputs import training_items
    from lolnerf_cli.model import load_model
    from lolnerf_cli.views import training_cameras

    run = tmp_path / "run"
    Trainer(fitted_data, run, _cfg(run, steps=8, camera_lr=0.05)).fit()
    loaded = load_model(run)
    items, extra = training_items(fitted_data, loaded)
    cams = {f["file_path"]: np.array(f["transform_matrix"]) for f in json.loads((run / "cameras.json").read_text())["frames"]}
    for it in items:
        assert np.allclose(it.frame.c2w, cams[it.file_path])
    _, where = training_cameras(run, 32)
    assert "cameras.json" in where


@pytest.mark.slow
def test_eval_reports_the_training_cameras_rotation_error(fitted_data, tmp_path):
    from lolnerf_cli.evaluate import EvalOptions, evaluate

    run = tmp_path / "run"
    Trainer(fitted_data, run, _cfg(run, steps=8, camera_lr=0.05)).fit()
    res = evaluate(fitted_data, run, tmp_path / "m.json", options=EvalOptions(subset=2, invert_steps=2),
                   figure=False)
    tc = res.metrics["training_cameras"]
    assert tc["refined"] is True and tc["images"] == len(json.loads((run / "images.json").read_text())["images"])
    # the landmark fit is several degrees off on synth heads; the trained cameras are the refined ones
    assert tc["dataset_cameras"]["median_deg"] > 1.0
    assert tc["trained_cameras"]["median_deg"] != tc["dataset_cameras"]["median_deg"]
    assert tc["median_ratio"] == pytest.approx(tc["trained_cameras"]["median_deg"] / tc["dataset_cameras"]["median_deg"])
    axes = tc["dataset_cameras"]["median_abs_axis_deg"]
    assert set(axes) == {"pitch", "yaw", "roll"} and max(axes.values()) <= tc["dataset_cameras"]["p90_deg"]


def test_windowed_nerf_encoding_scales_each_octave():
    from lolnerf_cli.model.encoding import octave_weights, posenc

    x = torch.rand(5, 3)
    w = octave_weights(4, 2.5)
    assert w.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0])
    full, win = posenc(x, 4), posenc(x, 4, w)
    assert torch.equal(win[:, :3], x)
    sin_f, sin_w = full[:, 3:15].view(5, 4, 3), win[:, 3:15].view(5, 4, 3)
    assert torch.allclose(sin_w, sin_f * w[None, :, None])


@pytest.mark.slow
def test_eval_refines_the_query_camera_by_default_and_the_views_follow_it(fitted_data, tmp_path):
    from lolnerf_cli.evaluate import EvalOptions, evaluate

    run = tmp_path / "run"
    Trainer(fitted_data, run, _cfg(run, steps=8)).fit()
    base = evaluate(fitted_data, run, tmp_path / "a.json",
                    options=EvalOptions(subset=2, invert_steps=3, refine_query_camera=False), figure=False)
    ref = evaluate(fitted_data, run, tmp_path / "b.json", options=EvalOptions(subset=2, invert_steps=3), figure=False)
    assert base.metrics["novel"]["query_camera_refined"] is False
    assert ref.metrics["novel"]["query_camera_refined"] is True and ref.metrics["heldout"]["query_camera_refined"]
    assert base.metrics["novel"]["frames"] == "query"
    # the corrected query cameras move every novel view of the object: other renders, other scores
    pa = [v["psnr"] for v in base.metrics["novel"]["views"]]
    pb = [v["psnr"] for v in ref.metrics["novel"]["views"]]
    assert len(pa) == len(pb) and pa != pb


def test_a_non_finite_row_gradient_is_reported_before_the_table_steps():
    from lolnerf_cli.distributed import DistInfo
    from lolnerf_cli.row_table import RowTable

    table = RowTable("camera_delta", torch.zeros(4, 6), torch.arange(4), 1e-2, torch.device("cpu"), DistInfo())
    assert table.grad_finite()                                    # no gradient yet
    table(torch.tensor([0, 2])).sum().backward()
    assert table.grad_finite()
    table.zero_grad()
    (table(torch.tensor([1])) * float("nan")).sum().backward()  # what a NaN pose gradient looks like
    assert not table.grad_finite()
