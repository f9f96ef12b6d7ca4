"""`lolnerf invert`: fitting a latent to an unseen photo improves its reconstruction over the mean latent,
is deterministic, refines cameras on request, places photos from landmarks against RUN/keypoints.json,
writes a latent file and a preview; bad inputs are exit 2 with one line naming the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SYNTH_RES as RES
from use_models import error_line, invoke

from lolnerf_cli.images import load_image
from lolnerf_cli.video import SHEET_MIN_TILE, SHEET_PAD


@pytest.fixture(scope="module")
def loaded(tiny):
    from lolnerf_cli.model import load_model

    return load_model(tiny.run)


def _query(tiny, index: int = 0):
    """A holdout query photo, its true camera and mask."""
    from lolnerf_cli.invert import cameras_from_transforms
    from lolnerf_cli.images import load_mask

    path = tiny.holdout / "images" / f"h{index:04d}_q.png"
    cam = cameras_from_transforms([path], tiny.holdout / "transforms.json")[0]
    return path, load_image(path), cam, load_mask(tiny.holdout / "masks" / path.name)


def _psnr(a, b) -> float:
    return -10 * np.log10(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.mark.slow
def test_inversion_beats_the_mean_latent_on_an_unseen_photo(tiny, loaded):
    from lolnerf_cli.invert import invert_images
    from lolnerf_cli.render import render_image

    photos = [_query(tiny, 0), _query(tiny, 1)]
    # no latent prior: this 50-step model's table has hardly spread yet, so its Gaussian would hold the
    # latent near the mean (the prior's own test is below)
    result = invert_images(loaded, [p[1] for p in photos], [p[2] for p in photos], [p[3] for p in photos],
                           steps=40, seed=0, latent_prior=0.0)
    assert result.latents.shape == (2, loaded.latents.shape[1])
    assert len(result.psnr) == 2 and len(result.loss_history) == 40
    assert np.mean(result.loss_history[-5:]) < np.mean(result.loss_history[:5])
    mean = loaded.latents.mean(0)
    for i, (_, rgb, cam, _) in enumerate(photos):
        # measured independently of invert.py: a render of each latent through the true camera
        gt = rgb.astype(np.float32) / 255
        before = _psnr(render_image(loaded.model, mean, cam, loaded.cfg.render)["rgb"], gt)
        after = _psnr(render_image(loaded.model, result.latents[i], cam, loaded.cfg.render)["rgb"], gt)
        assert after > before + 0.2, (before, after)
        assert result.psnr[i] == pytest.approx(after, abs=0.05)
        assert result.psnr_init[i] == pytest.approx(before, abs=0.05)
    # each photo got its own latent
    assert not torch.allclose(result.latents[0], result.latents[1])


@pytest.mark.slow
def test_inversion_is_deterministic_and_batch_independent(tiny, loaded):
    from lolnerf_cli.invert import invert_images

    (_, a, ca, ma), (_, b, cb, mb) = _query(tiny, 0), _query(tiny, 1)
    r1 = invert_images(loaded, [a, b], [ca, cb], [ma, mb], steps=4, seed=7, measure_init=False)
    r2 = invert_images(loaded, [a, b], [ca, cb], [ma, mb], steps=4, seed=7, measure_init=False)
    assert torch.equal(r1.latents, r2.latents)
    r3 = invert_images(loaded, [a, b], [ca, cb], [ma, mb], steps=4, seed=8, measure_init=False)
    assert not torch.equal(r1.latents, r3.latents)


def test_object_pivot_turns_the_camera_about_the_origin():
    """invert.camera_pivot: "object" orbits the camera about the object frame's origin (the origin stays at
    the same pixel, the camera stays as far from it); "camera" turns it about its own centre."""
    from lolnerf_cli.cameras import look_at
    from lolnerf_cli.invert import corrected_c2w

    c2w = torch.tensor(look_at(np.array([0.4, 0.3, 2.6]), np.zeros(3)), dtype=torch.float32)[None]
    rot = torch.tensor([[0.02, -0.05, 0.01]])
    zero = torch.zeros(1, 3)

    def origin_in_camera(m):                      # the object frame's origin in camera coordinates
        r, t = m[0, :3, :3], m[0, :3, 3]
        return r.T @ (-t)

    orbit = corrected_c2w(c2w, rot, zero, "object")
    assert orbit.shape == (1, 4, 4) and torch.allclose(orbit[0, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(origin_in_camera(orbit), origin_in_camera(c2w), atol=1e-5)    # same pixel, same depth
    assert not torch.allclose(orbit, c2w, atol=1e-3)
    turned = corrected_c2w(c2w, rot, zero, "camera")
    assert torch.allclose(turned[0, :3, 3], c2w[0, :3, 3])                              # the centre stays
    assert not torch.allclose(origin_in_camera(turned), origin_in_camera(c2w), atol=1e-3)
    moved = corrected_c2w(c2w, zero, torch.tensor([[0.0, 0.0, 0.1]]), "object")
    assert torch.allclose(moved[0, :3, 3] - c2w[0, :3, 3], torch.tensor([0.0, 0.0, 0.1]), atol=1e-6)


@pytest.mark.slow
def test_refine_camera_learns_a_small_correction(tiny, loaded):
    from lolnerf_cli.invert import invert_images

    _, rgb, cam, mask = _query(tiny, 0)
    res = invert_images(loaded, [rgb], [cam], [mask], steps=10, refine_camera=True)
    c2w = res.cameras[0].c2w
    assert not np.allclose(c2w, cam.c2w)                                  # the camera did move ...
    rot = c2w[:3, :3]
    assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-4)                  # ... by a rigid motion ...
    cos = (np.trace(cam.c2w[:3, :3].T @ rot) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 3.0                # ... that is small
    assert np.linalg.norm(c2w[:3, 3] - cam.c2w[:3, 3]) < 0.1
    assert np.isfinite(res.psnr[0])


@pytest.mark.slow
def test_cli_invert_with_cameras_writes_latents_and_preview(tiny, loaded, tmp_path):
    from lolnerf_cli.formats import load_latents
    from lolnerf_cli.invert import cameras_from_transforms

    paths = [tiny.holdout / "images" / "h0000_q.png", tiny.holdout / "images" / "h0001_v00.png"]
    out = tmp_path / "inv" / "faces.safetensors"
    res = invoke(["invert", *map(str, paths), "--model", str(tiny.run), "--camera",
                  str(tiny.holdout / "transforms.json"), "--steps", "3", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    z, sources, meta = load_latents(out, loaded.model_hash, loaded.latents.shape[1])
    assert z.shape == (2, loaded.latents.shape[1]) and sources == [str(p) for p in paths]
    assert len(json.loads(meta["psnr"])) == 2
    assert json.loads(meta["refine_camera"]) is False and "camera_pivot" not in meta   # given cameras are kept
    cams = json.loads(meta["cameras"])
    given = cameras_from_transforms(paths, tiny.holdout / "transforms.json")
    assert np.allclose(np.asarray(cams[0]["transform_matrix"]), given[0].c2w, atol=1e-5)
    preview = np.asarray(Image.open(tmp_path / "inv" / "faces_preview.png").convert("RGB"))
    k = -(-SHEET_MIN_TILE // RES)                  # each tile enlarged by a whole factor to >= SHEET_MIN_TILE px
    assert preview.shape[1] == 3 * k * RES + 4 * SHEET_PAD                # columns: photo | reconstruction | novel
    assert preview.shape[0] > 2 * k * RES + 3 * SHEET_PAD                 # two rows, each under its captions
    photo = np.repeat(np.repeat(load_image(paths[0]), k, axis=0), k, axis=1).astype(float)
    x = SHEET_PAD
    tops = [y for y in range(0, 60) if np.abs(preview[y:y + k * RES, x:x + k * RES] - photo).max() <= 1]
    assert tops, "the first photo, enlarged, is the preview's first tile"
    assert preview[:tops[0], x:x + k * RES].min() < 100                   # dark caption text above it
    assert "h0000_q.png: PSNR" in res.stdout and "masks/h0000_q.png" in res.stdout
    assert "corrected by" not in res.stdout                                # a given camera is not refined
    # the file works with `render`
    res = invoke(["render", "--model", str(tiny.run), "--latent", str(out), "--row", "1", "--camera",
                  str(tiny.holdout / "transforms.json"), "--out", str(tmp_path / "r"), "--resolution", "8"])
    assert res.exit_code == 0, res.output


def test_cli_invert_photo_without_a_camera_frame_names_both_files(tiny, tmp_path):
    stray = tmp_path / "stray.png"
    Image.open(tiny.holdout / "images" / "h0000_q.png").save(stray)
    tf = tiny.holdout / "transforms.json"
    res = invoke(["invert", str(stray), "--model", str(tiny.run), "--camera", str(tf), "--out",
                  str(tmp_path / "z.safetensors")])
    assert res.exit_code == 2
    line = error_line(res)
    assert "stray.png" in line and str(tf) in line
    assert not (tmp_path / "z.safetensors").exists()


def test_cli_invert_bad_inputs(tiny, tmp_path):
    tf = str(tiny.holdout / "transforms.json")
    good = str(tiny.holdout / "images" / "h0000_q.png")
    broken = tmp_path / "h0001_q.png"                              # a name that has a frame, but not an image
    broken.write_bytes(b"not a png at all")
    cases = [
        (["invert", str(broken), "--model", str(tiny.run), "--camera", tf], "h0001_q.png"),
        (["invert", str(tmp_path / "missing.png"), "--model", str(tiny.run), "--camera", tf], "missing.png"),
        (["invert", good, "--model", str(tmp_path / "norun"), "--camera", tf], "norun"),
        (["invert", good, "--model", str(tiny.data), "--camera", tf], "config.json"),      # a dataset, not a run
        (["invert", good, "--model", str(tiny.run), "--camera", str(tmp_path / "t.json")], "t.json"),
    ]
    for args, needle in cases:
        res = invoke(args + ["--out", str(tmp_path / "z.safetensors"), "--steps", "2"])
        assert res.exit_code == 2, (args, res.output)
        assert needle in error_line(res)
    res = invoke(["invert", good, "--model", str(tiny.run), "--camera", tf, "--out", str(tmp_path / "z.npy")])
    assert res.exit_code == 2 and "z.npy" in error_line(res)
    res = invoke(["invert", good, "--model", str(tiny.run), "--camera", tf, "--out", str(tmp_path / "z.safetensors"),
                  "--latent-basis", "svd"])
    assert res.exit_code == 2 and "--latent-basis" in error_line(res) and "svd" in error_line(res)


def test_cli_invert_without_camera_uses_landmarks_and_run_keypoints(tiny, loaded, tmp_path, monkeypatch):
    """The landmark path: detected points -> camera fitted against RUN/keypoints.json (the detector is
    replaced by the true projected keypoints, so the fitted camera can be compared with the true one)."""
    from lolnerf_cli import landmarks
    from lolnerf_cli.invert import camera_from_landmarks

    frames = {Path(f["file_path"]).name: f for f in
              json.loads((tiny.holdout / "transforms.json").read_text())["frames"]}
    path, rgb, cam, _ = _query(tiny, 0)
    uv = np.asarray(frames[path.name]["keypoints_uv"], dtype=np.float64)
    monkeypatch.setattr(landmarks, "detect_face5", lambda img: (uv, 0.99))
    fitted, note = camera_from_landmarks(loaded, rgb, path)
    assert "landmarks" in note
    # the class-mean keypoints differ from this object's, so the fit is close, not exact
    assert np.linalg.norm(fitted.c2w[:3, 3] - cam.c2w[:3, 3]) < 0.35 * np.linalg.norm(cam.c2w[:3, 3])
    assert np.dot(fitted.c2w[:3, 2], cam.c2w[:3, 2]) > np.cos(np.radians(15))

    out = tmp_path / "lm.safetensors"
    res = invoke(["invert", str(path), "--model", str(tiny.run), "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "camera: landmarks" in res.stdout

    def no_face(img):
        raise landmarks.LandmarksNotFound("no face found")

    monkeypatch.setattr(landmarks, "detect_face5", no_face)
    res = invoke(["invert", str(path), "--model", str(tiny.run), "--steps", "2", "--out", str(out)])
    assert res.exit_code == 2
    line = error_line(res)
    assert "h0000_q.png" in line and "no face found" in line
    assert "--landmarks" in line and "--camera" in line                  # and what to do instead

    monkeypatch.setattr(landmarks, "mediapipe_installed", lambda: False)  # installed without the extra
    res = invoke(["invert", str(path), "--model", str(tiny.run), "--steps", "2", "--out", str(out)])
    assert res.exit_code == 2
    line = error_line(res)
    assert "h0000_q.png" in line and "lolnerf[landmarks]" in line and "--landmarks" in line


def test_cli_invert_without_keypoints_asks_for_cameras(tiny, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny.run, run, ignore=shutil.ignore_patterns("cache", "trainer*"))
    (run / "keypoints.json").unlink()
    res = invoke(["invert", str(tiny.holdout / "images" / "h0000_q.png"), "--model", str(run), "--out",
                  str(tmp_path / "z.safetensors")])
    assert res.exit_code == 2
    line = error_line(res)
    assert "keypoints.json" in line and "--camera" in line


def test_cli_invert_with_a_landmarks_file_fits_the_camera_to_run_keypoints(tiny, tmp_path):
    """--landmarks: 2D points from any landmarker, matched by file name, instead of face detection."""
    import json as _json

    query = tiny.data / "holdout" / "images" / "h0000_q.png"
    out = tmp_path / "z.safetensors"
    res = invoke(["invert", str(query), "--model", str(tiny.run), "--landmarks",
                  str(tiny.data / "holdout" / "landmarks.json"), "--out", str(out), "--steps", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "camera: landmarks" in res.stdout
    from lolnerf_cli.formats import load_latents

    assert re.search(r"corrected by \d+\.\d deg", res.stdout)
    meta = load_latents(out)[2]                  # a landmark camera is estimated: refined about the object
    assert json.loads(meta["refine_camera"]) is True and meta["camera_pivot"] == "object"
    other = tmp_path / "lm.json"
    lm = _json.loads((tiny.data / "holdout" / "landmarks.json").read_text())
    lm["frames"] = [f for f in lm["frames"] if "h0000" not in f["file_path"]]
    other.write_text(_json.dumps(lm))
    res = invoke(["invert", str(query), "--model", str(tiny.run), "--landmarks", str(other), "--out", str(out),
                  "--steps", "3", "--device", "cpu"])
    assert res.exit_code == 2 and "h0000_q.png" in error_line(res) and "lm.json" in error_line(res)


@pytest.mark.slow
def test_inversion_micro_batches_add_up_to_the_whole_step(tiny, loaded, monkeypatch):
    """Splitting an inversion step into micro-batches changes neither its losses nor its gradients."""
    import lolnerf_cli.render as render_mod
    from lolnerf_cli.invert import invert_images

    real = render_mod.render_rays
    def no_noise(*a, **kw):         # the same sample positions in both runs
        if len(a) > 5:
            a = a[:5] + (False,) + a[6:]
        else:
            kw["perturb"] = False
        return real(*a, **kw)

    monkeypatch.setattr(render_mod, "render_rays", no_noise)
    monkeypatch.setattr(loaded.cfg.train, "precision", "fp32")
    photos = [_query(tiny, i) for i in range(2)]
    runs = {}
    for mb in (0, 37):
        monkeypatch.setattr(loaded.cfg.train, "micro_batch_rays", mb)
        runs[mb] = invert_images(loaded, [ph[1] for ph in photos], [ph[2] for ph in photos],
                                 [ph[3] for ph in photos], steps=3, rays_per_image=64, refine_camera=True,
                                 measure_init=False)
    assert np.allclose(runs[0].loss_history, runs[37].loss_history, rtol=1e-5)
    assert torch.allclose(runs[0].latents, runs[37].latents, atol=1e-5)
    assert not torch.allclose(runs[0].latents[0], runs[0].latents[1])      # the fit did something


def test_latent_steps_follow_the_tables_spread():
    """The "pca" directions are the table's principal axes, longest where the rows differ most, with an
    average length of one latent unit; every direction stays reachable with fewer rows than dimensions;
    "raw" is the identity."""
    from lolnerf_cli.invert import latent_steps

    gen = torch.Generator().manual_seed(0)
    d = 6
    axes = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    spread = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25, 0.125], dtype=torch.float64)
    rows = (torch.randn(20000, d, generator=gen, dtype=torch.float64) * spread) @ axes.T + 3.0
    steps = latent_steps(rows.float(), "pca").double()                      # [D, D], one direction per row
    lengths = steps.norm(dim=1)
    assert lengths.mean() == pytest.approx(1.0, abs=1e-5)
    assert lengths.tolist() == sorted(lengths.tolist(), reverse=True)
    # lengths in the ratio of the spreads (the 1 % variance floor shifts the smallest ones slightly)
    assert (lengths[:3] / lengths[0]).tolist() == pytest.approx((spread[:3] / spread[0]).tolist(), rel=0.03)
    for i in range(3):                                                      # along the generating axes
        assert abs(float(steps[i] @ axes[:, i])) / float(lengths[i]) == pytest.approx(1.0, abs=1e-3)
    few = latent_steps(rows[:3].float(), "pca")                             # 3 rows span 2 directions only
    assert torch.linalg.matrix_rank(few.double()) == d
    assert torch.equal(latent_steps(rows.float(), "raw"), torch.eye(d))


def test_raw_basis_is_the_old_optimisation(tiny, loaded):
    """basis="raw" moves the latent along its own coordinates at the given learning rate: the first Adam
    step moves every coordinate by the learning rate (sign of the gradient), in both bases' own units."""
    from lolnerf_cli.invert import invert_images, latent_steps

    _, rgb, cam, mask = _query(tiny, 0)
    start = loaded.latents.detach().float().mean(0)
    raw = invert_images(loaded, [rgb], [cam], [mask], steps=1, seed=3, measure_init=False, basis="raw", lr=0.01)
    moved = (raw.latents[0] - start).abs()
    assert torch.allclose(moved, torch.full_like(moved, 0.01), atol=1e-4)
    pca = invert_images(loaded, [rgb], [cam], [mask], steps=1, seed=3, measure_init=False, basis="pca", lr=0.01)
    coef = (pca.latents[0] - start) @ torch.linalg.pinv(latent_steps(loaded.latents, "pca"))
    assert torch.allclose(coef.abs(), torch.full_like(coef, 0.01), atol=1e-3)


def test_latent_prior_is_the_tables_gaussian():
    """LatentPrior scores a table row about `weight` on average (the mean squared whitened coordinate), the
    table's mean 0, and an offset along a direction in which the rows hardly differ far more than the same
    offset along the direction in which they differ most."""
    from lolnerf_cli.invert import LatentPrior

    gen = torch.Generator().manual_seed(1)
    d = 5
    axes = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    spread = torch.tensor([3.0, 1.5, 1.0, 0.5, 0.2], dtype=torch.float64)
    rows = ((torch.randn(20000, d, generator=gen, dtype=torch.float64) * spread) @ axes.T - 1.0).float()
    prior = LatentPrior(rows, 0.5)
    per_row = float(prior(rows)) / rows.shape[0]
    var = spread ** 2
    floored = var / (var + 0.01 * var.mean())                # the 1 % variance floor (LATENT_FLOOR) lowers it
    assert per_row == pytest.approx(0.5 * float(floored.mean()), rel=0.03)
    assert float(prior(rows.mean(0, keepdim=True))) == pytest.approx(0.0, abs=1e-6)
    wide = rows.mean(0) + axes[:, 0].float()
    narrow = rows.mean(0) + axes[:, -1].float()
    assert float(prior(narrow[None])) > 50 * float(prior(wide[None]))


def test_latent_prior_keeps_an_inversion_near_the_training_latents(tiny, loaded):
    """The same inversion with a strong prior ends closer to the table's Gaussian (lower prior score) and
    fits the photo less closely than without one; a negative weight is refused."""
    from lolnerf_cli.errors import ParamError
    from lolnerf_cli.invert import LatentPrior, invert_images

    _, rgb, cam, mask = _query(tiny, 0)
    score = LatentPrior(loaded.latents, 1.0)
    free = invert_images(loaded, [rgb], [cam], [mask], steps=30, seed=0, latent_prior=0.0)
    held = invert_images(loaded, [rgb], [cam], [mask], steps=30, seed=0, latent_prior=1.0)
    assert float(score(held.latents)) < 0.5 * float(score(free.latents))
    assert held.psnr[0] < free.psnr[0]
    with pytest.raises(ParamError, match="latent_prior"):
        invert_images(loaded, [rgb], [cam], [mask], steps=1, latent_prior=-1.0)
