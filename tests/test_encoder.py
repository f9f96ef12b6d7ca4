"""The encoder (#14): shapes and camera parameterisation, train-encoder with exact resume, invert through
the encoder (no landmarks, no face) end to end through the CLI, bad encoder files, the eval section."""

from __future__ import annotations

import json

import shutil

import numpy as np
import pytest
import torch

from use_models import error_line, invoke, tiny_run


def _small_training(**kw):
    base = dict(pool=4, refresh_every=2, batch=4, sc_weight=1.0, sc_images=2, sc_rays=16, log_every=1,
                checkpoint_every=100)
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def enc_run(tmp_path_factory):
    """A copy of the shared tiny run with a briefly trained encoder."""
    from lolnerf_cli.encoder_train import train_encoder

    tiny = tiny_run(tmp_path_factory)
    run = tmp_path_factory.mktemp("enc") / "run"
    shutil.copytree(tiny.run, run)
    train_encoder(run, steps=3, device="cpu", **_small_training())
    tiny.enc_run = run
    return tiny


# ----------------------------------------------------------------------------------------- the network
def test_encoder_shapes_rotations_and_mean_start():
    from lolnerf_cli.cameras import look_at, spherical_eye
    from lolnerf_cli.encoder import EncoderConfig, ImageEncoder, c2w_from_params, camera_params

    torch.manual_seed(0)
    enc = ImageEncoder(EncoderConfig(resolution=32, latent_dim=16, width=8, hidden=32)).eval()
    eyes = spherical_eye(np.array([-20.0, 0.0, 25.0]), np.array([5.0, -3.0, 0.0]), np.array([2.5, 2.7, 3.0]))
    c2w = torch.tensor(look_at(eyes))
    latents = torch.randn(10, 16) * 0.3 + 1.0
    enc.set_statistics(latents, c2w)
    z, rot, abd = enc(torch.rand(2, 3, 32, 32))
    assert z.shape == (2, 16) and rot.shape == (2, 3, 3) and abd.shape == (2, 3)
    eye = torch.eye(3).expand(2, 3, 3)
    assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=1e-5)
    assert torch.allclose(torch.det(rot), torch.ones(2), atol=1e-5)
    # the head starts near zero: the answer is close to the table's mean and the mean camera
    assert (z - latents.mean(0)).abs().max() < 0.5 * latents.std(0).max() + 0.1
    # camera parameters are an exact round trip
    r, p = camera_params(c2w)
    assert torch.allclose(c2w_from_params(r, p), c2w, atol=1e-9)
    assert torch.allclose(p[:, :2], torch.zeros(3, 2, dtype=p.dtype), atol=1e-9)    # look-at: origin on axis
    assert torch.allclose(p[:, 2].exp(), torch.tensor([2.5, 2.7, 3.0], dtype=p.dtype))


def test_encode_returns_cameras_at_the_encoder_resolution():
    from lolnerf_cli.encoder import EncoderConfig, ImageEncoder, encode

    enc = ImageEncoder(EncoderConfig(resolution=16, latent_dim=8, width=4, hidden=16, fov=30.0)).eval()
    z, cams = encode(enc, [np.zeros((40, 30, 3), np.uint8), np.full((16, 16, 3), 200, np.uint8)])
    assert z.shape == (2, 8) and len(cams) == 2
    assert cams[0].w == cams[0].h == 16 and cams[0].fx == pytest.approx(8 / np.tan(np.radians(15)))
    with pytest.raises(ValueError):
        encode(enc, [np.zeros((16, 16), np.uint8)])


def test_an_ensemble_answers_the_mean_of_its_members_and_old_files_still_load(tmp_path):
    from lolnerf_cli.encoder import (EncoderConfig, ImageEncoder, load_encoder, nearest_rotation, save_encoder)
    from lolnerf_cli.formats import load_safetensors, save_safetensors

    torch.manual_seed(0)
    enc = ImageEncoder(EncoderConfig(resolution=16, latent_dim=8, width=4, hidden=16, members=3)).eval()
    with torch.no_grad():                                   # members that disagree
        for m in enc.members:
            m.head[-1].weight.normal_(0, 0.5)
    img = torch.rand(2, 3, 16, 16)
    z, rot, abd = enc(img)
    answers = [enc.member_answer(i, img) for i in range(3)]
    assert torch.allclose(z, torch.stack([a[0] for a in answers]).mean(0), atol=1e-6)
    assert torch.allclose(abd, torch.stack([a[2] for a in answers]).mean(0), atol=1e-6)
    assert not torch.allclose(answers[0][0], answers[1][0], atol=1e-3)
    mean_rot = torch.stack([a[1] for a in answers]).mean(0)
    assert torch.allclose(rot, nearest_rotation(mean_rot), atol=1e-6)
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(rot), torch.ones(2), atol=1e-5)
    path = tmp_path / "encoder.safetensors"
    save_encoder(path, enc)
    back = load_encoder(path)
    assert back.cfg.members == 3 and torch.allclose(back(img)[0], z, atol=1e-6)
    # a file written before ensembles (one network, keys features.* / head.*, no 'members') still loads
    one = ImageEncoder(EncoderConfig(resolution=16, latent_dim=8, width=4, hidden=16)).eval()
    tensors = {k.replace("members.0.", ""): v for k, v in one.state_dict().items()}
    meta = load_safetensors(path)[1]
    cfg = json.loads(meta["encoder_config"])
    cfg.pop("members")
    old = tmp_path / "old.safetensors"
    save_safetensors(old, tensors, {**meta, "encoder_config": json.dumps(cfg)})
    assert any(k.startswith("features.") for k in load_safetensors(old)[0])
    loaded = load_encoder(old)
    assert loaded.cfg.members == 1 and torch.equal(loaded(img)[0], one(img)[0])


def test_nearest_rotation_keeps_rotations_and_fixes_reflections():
    from lolnerf_cli.camera_refine import axis_angle_matrix
    from lolnerf_cli.encoder import nearest_rotation

    r = axis_angle_matrix(torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64))[0]
    assert torch.allclose(nearest_rotation(r), r, atol=1e-12)
    assert torch.allclose(nearest_rotation(1.7 * r), r, atol=1e-12)
    flipped = r @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert torch.det(nearest_rotation(flipped)) == pytest.approx(1.0)


def test_at_focal_keeps_the_object_where_the_photo_shows_it():
    # a fitted camera with a short focal length sits close; at the encoder's focal length the same photo
    # is explained by a camera further back that shows the object's centre plane exactly as the photo does
    from lolnerf_cli.cameras import Camera, look_at, spherical_eye
    from lolnerf_cli.encoder import at_focal

    c2w = look_at(spherical_eye(25.0, -10.0, 1.3))
    c2w[:3, 3] += np.array([0.05, -0.03, 0.02])                 # the origin off the optical axis
    moved = at_focal(torch.tensor(c2w)[None], torch.tensor([40.0]), 120.0)[0].numpy()
    assert np.allclose(moved[:3, :3], c2w[:3, :3])
    assert np.linalg.norm(moved[:3, 3]) > 2.5 * np.linalg.norm(c2w[:3, 3])

    def project(cam: Camera, x: np.ndarray) -> np.ndarray:
        w2c = np.linalg.inv(cam.c2w)
        p = w2c[:3, :3] @ x + w2c[:3, 3]
        return np.array([cam.fx * p[0] / -p[2] + cam.cx, cam.fy * -p[1] / -p[2] + cam.cy])

    near, far = Camera(c2w, 40.0, 40.0, 32, 32, 64, 64), Camera(moved, 120.0, 120.0, 32, 32, 64, 64)
    right, up = c2w[:3, 0], c2w[:3, 1]                          # the plane through the origin facing the camera
    for x in (np.zeros(3), 0.3 * right, -0.2 * right + 0.25 * up):
        assert np.allclose(project(near, x), project(far, x), atol=1e-9)


# ----------------------------------------------------------------------------------------- training
def test_train_encoder_resumes_exactly(tmp_path, tmp_path_factory):
    from lolnerf_cli.encoder_train import train_encoder
    from lolnerf_cli.formats import load_safetensors
    from lolnerf_cli.run_log import read_log

    tiny = tiny_run(tmp_path_factory)
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny.run, a)
    shutil.copytree(tiny.run, b)
    train_encoder(a, steps=4, device="cpu", **_small_training())
    from lolnerf_cli.encoder_train import EncoderTrainConfig, EncoderTrainer

    EncoderTrainer(b, EncoderTrainConfig(steps=4, **_small_training()), device="cpu").fit(stop_at=2)
    assert load_safetensors(b / "encoder.safetensors")[1]["step"] == "2"
    train_encoder(b, resume=True, device="cpu")
    ta, ma = load_safetensors(a / "encoder.safetensors")
    tb, mb = load_safetensors(b / "encoder.safetensors")
    assert ma["step"] == mb["step"] == "4"
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    # the render pool was refreshed on the way (refresh_every=2) and travels in the checkpoint
    pa, _ = load_safetensors(a / "encoder_trainer.safetensors")
    pb, _ = load_safetensors(b / "encoder_trainer.safetensors")
    assert torch.equal(pa["pool.fg"], pb["pool.fg"]) and pa["pool.z"].shape[0] == 4
    assert [r["step"] for r in read_log(b / "encoder_log.jsonl")] == [1, 2, 3, 4]
    rec = read_log(a / "encoder_log.jsonl")[-1]
    for key in ("loss", "loss_latent", "loss_rotation", "loss_position", "loss_self", "rotation_error_deg"):
        assert np.isfinite(rec[key]), key


def test_train_encoder_takes_the_training_cameras_median_field_of_view(tmp_path, tmp_path_factory):
    # a run trained before view.json held the median keeps its mean there; the encoder reads the cameras
    from lolnerf_cli.cameras import mean_view
    from lolnerf_cli.data import camera_tensors, select_frames
    from lolnerf_cli.encoder_train import EncoderTrainConfig, EncoderTrainer
    from lolnerf_cli.formats import write_json

    tiny = tiny_run(tmp_path_factory)
    run = tmp_path / "run"
    shutil.copytree(tiny.run, run)
    view = json.loads((run / "view.json").read_text())
    write_json(run / "view.json", {**view, "fov": view["fov"] + 20.0})
    trainer = EncoderTrainer(run, EncoderTrainConfig(steps=1, **_small_training()), device="cpu")
    frames = select_frames(tiny.data).frames
    assert trainer.ecfg.fov == pytest.approx(mean_view(frames)[3]) == pytest.approx(view["fov"])
    # calibrated cameras share that focal length: at_focal leaves every target where it was
    c2w = camera_tensors(frames, trainer.res)["c2w"]
    assert torch.allclose(trainer.cam_c2w.cpu(), c2w, atol=1e-5)


def test_train_encoder_cli_refuses_to_overwrite_and_bad_mix(enc_run):
    r = invoke(["train-encoder", "--model", str(enc_run.enc_run), "--steps", "1"])
    assert r.exit_code == 2 and "--resume" in error_line(r)
    r = invoke(["train-encoder", "--model", str(enc_run.enc_run), "--mix", "photos,bogus"])
    assert r.exit_code == 2 and "--mix" in error_line(r) and "bogus" in error_line(r)
    r = invoke(["train-encoder", "--model", str(enc_run.enc_run), "--resume", "--members", "2"])
    assert r.exit_code == 2 and "members" in error_line(r)
    from lolnerf_cli.encoder_train import DEFAULT_MEMBERS

    saved = json.loads((enc_run.enc_run / "encoder.json").read_text())
    assert saved["encoder"]["members"] == DEFAULT_MEMBERS > 1


def test_train_encoder_members_option(tmp_path, tmp_path_factory):
    from lolnerf_cli.encoder import load_encoder

    tiny = tiny_run(tmp_path_factory)
    run = tmp_path / "run"
    shutil.copytree(tiny.run, run)
    r = invoke(["train-encoder", "--model", str(run), "--steps", "1", "--members", "1", "--pool", "2", "--batch", "2"])
    assert r.exit_code == 0, r.output
    assert load_encoder(run / "encoder.safetensors").cfg.members == 1
    assert len(load_encoder(run / "encoder.safetensors").members) == 1


def test_self_consistency_alone_is_refused():
    from lolnerf_cli.encoder_train import EncoderTrainConfig, parse_mix
    from lolnerf_cli.errors import InputError

    cfg = EncoderTrainConfig(**{k: v for k, v in parse_mix("self-consistency").items() if v is not None})
    with pytest.raises(InputError, match="--mix"):
        cfg.check()


# ----------------------------------------------------------------------------------------- invert
def _faceless_photo(tmp_path, enc_run) -> "Path":
    """A held-out synth photo in a folder of its own: no landmarks, no masks, no cameras, no face to find."""
    folder = tmp_path / "photos"
    folder.mkdir()
    src = enc_run.holdout / "images" / "h0000_q.png"
    dst = folder / "thing.png"
    shutil.copy(src, dst)
    return dst


def test_invert_with_encoder_only_needs_no_landmarks(tmp_path, enc_run):
    from lolnerf_cli.formats import load_latents

    photo = _faceless_photo(tmp_path, enc_run)
    out = tmp_path / "z.safetensors"
    r = invoke(["invert", str(photo), "--model", str(enc_run.enc_run), "--out", str(out), "--steps", "0"])
    assert r.exit_code == 0, r.stderr
    z, sources, meta = load_latents(out)
    assert z.shape[0] == 1 and sources == [str(photo)]
    assert (tmp_path / "z_preview.png").is_file()
    assert "camera: encoder" in r.stdout and "PSNR" in r.stdout and "encoder" in r.stdout
    # hybrid: a few steps from the encoder's answer
    out2 = tmp_path / "z2.safetensors"
    r = invoke(["invert", str(photo), "--model", str(enc_run.enc_run), "--out", str(out2), "--steps", "3"])
    assert r.exit_code == 0, r.stderr
    z2, _, meta2 = load_latents(out2)
    assert not torch.equal(z, z2)
    # the encoder's camera is optimised with the latent by default (and kept when asked)
    pose = lambda meta: json.loads(meta["cameras"])[0]["transform_matrix"]    # noqa: E731
    assert json.loads(meta2["refine_camera"]) is True
    assert pose(meta2) != pose(load_latents(out)[2])
    out3 = tmp_path / "z3.safetensors"
    r = invoke(["invert", str(photo), "--model", str(enc_run.enc_run), "--out", str(out3), "--steps", "3",
                "--no-refine-camera"])
    assert r.exit_code == 0, r.stderr
    meta3 = load_latents(out3)[2]
    assert json.loads(meta3["refine_camera"]) is False
    assert pose(meta3) == pose(load_latents(out)[2])


def test_steps_zero_without_an_encoder_is_refused(tmp_path, enc_run):
    photo = _faceless_photo(tmp_path, enc_run)
    r = invoke(["invert", str(photo), "--model", str(enc_run.run), "--out", str(tmp_path / "z.safetensors"),
                "--steps", "0", "--camera", str(enc_run.holdout / "transforms.json")])
    assert r.exit_code == 2 and "--steps" in error_line(r)


@pytest.mark.parametrize("damage", ["hash", "truncated", "foreign", "not-an-image"])
def test_bad_encoder_files_and_photos_are_one_line_exit_2(tmp_path, enc_run, damage):
    from lolnerf_cli.formats import load_safetensors, save_safetensors

    run = tmp_path / "run"
    shutil.copytree(enc_run.enc_run, run)
    photo = _faceless_photo(tmp_path, enc_run)
    enc = run / "encoder.safetensors"
    if damage == "hash":
        t, m = load_safetensors(enc)
        save_safetensors(enc, t, {**m, "model_hash": "0123456789abcdef"})
        expect = "0123456789abcdef"
    elif damage == "truncated":
        data = enc.read_bytes()
        enc.write_bytes(data[: len(data) // 2])
        expect = "safetensors"
    elif damage == "foreign":
        shutil.copy(run / "model.safetensors", enc)
        expect = "not a lolnerf encoder"
    else:
        photo.write_text("this is not a picture")
        expect = str(photo)
    r = invoke(["invert", str(photo), "--model", str(run), "--out", str(tmp_path / "z.safetensors"), "--steps", "0"])
    assert r.exit_code == 2, r.stdout + r.stderr
    line = error_line(r)
    assert expect in line
    if damage != "not-an-image":
        assert str(enc) in line


# ----------------------------------------------------------------------------------------- eval
def test_eval_sections_runs_only_the_ones_asked_for(tmp_path, tmp_path_factory, enc_run):
    from lolnerf_cli.evaluate import EvalOptions, evaluate

    res = evaluate(enc_run.data, enc_run.enc_run, tmp_path / "m.json",
                   options=EvalOptions(subset=2, invert_steps=2, device="cpu", encoder_steps=2, sections="encoder"))
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["settings"]["sections"] == ["encoder"] and np.isfinite(m["encoder"]["novel"]["hybrid"]["psnr"]["mean"])
    assert not any(k in m for k in ("train", "heldout", "novel", "depth", "figure"))
    assert res.figure_path is None and not (tmp_path / "m_figure.png").exists()     # no pictures were made
    r = invoke(["eval", str(enc_run.data), "--model", str(enc_run.enc_run), "--out", str(tmp_path / "b.json"),
                "--sections", "train,bogus"])
    assert r.exit_code == 2 and "--sections" in error_line(r) and "bogus" in error_line(r)
    tiny = tiny_run(tmp_path_factory)                                            # a run without an encoder
    r = invoke(["eval", str(tiny.data), "--model", str(tiny.run), "--out", str(tmp_path / "c.json"),
                "--sections", "encoder"])
    assert r.exit_code == 2 and "encoder.safetensors" in error_line(r) and not (tmp_path / "c.json").exists()


def test_eval_has_an_encoder_section(tmp_path, enc_run):
    from lolnerf_cli.evaluate import EvalOptions, evaluate

    res = evaluate(enc_run.data, enc_run.enc_run, tmp_path / "m.json",
                   options=EvalOptions(subset=2, invert_steps=2, device="cpu", encoder_steps=2), figure=False)
    sec = res.metrics["encoder"]
    assert sec["hybrid_steps"] == 2
    for part in ("heldout", "novel"):
        for way in ("encoder", "hybrid"):
            assert np.isfinite(sec[part][way]["psnr"]["mean"]), (part, way)
            assert sec[part][way]["ssim"] is not None
    assert sec["novel"]["count"] == sum(1 for _ in sec["novel"]["views"]) > 0
    assert sec["ms_per_photo"]["encoder_median"] > 0 and sec["ms_per_photo"]["photos"] == 2   # queries = held-out
    # synth's held-out cameras are in the model's frame (true cameras): the rotation error is reported
    assert sec["camera"]["rotation_error_deg"]["count"] == 2
    assert 0 <= sec["camera"]["rotation_error_deg"]["median"] <= 180
    # the hybrid also corrects the encoder's camera, and its error is reported beside the encoder's
    assert sec["hybrid_refines_camera"] is True
    assert sec["camera"]["hybrid_rotation_error_deg"]["count"] == 2
