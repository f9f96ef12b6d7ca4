"""`lolnerf synth`: the dataset matches SPEC, the ground truth is consistent, outputs are deterministic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lolnerf_cli import folders, formats, synth, synth_scene
from lolnerf_cli.cameras import Camera, project
from lolnerf_cli.errors import InputError

SYNTH_N, SYNTH_RES, SYNTH_HOLDOUT, SYNTH_SEED = 24, 32, 2, 0       # as written by conftest.synth_data
VIEWS = synth_scene.HOLDOUT_VIEWS


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _yaw_deg(c2w: np.ndarray) -> float:
    eye = np.asarray(c2w)[:3, 3]
    return math.degrees(math.atan2(eye[0], eye[2]))


# ----------------------------------------------------------------------------------------- layout
def test_dataset_folder_matches_the_spec(synth_data):
    ds = folders.dataset(synth_data)
    images = folders.list_images(ds.images)
    assert [p.name for p in images] == [f"{i:04d}.png" for i in range(SYNTH_N)]
    for p in images:
        rgb = _png(p)
        assert rgb.shape == (SYNTH_RES, SYNTH_RES, 3) and rgb.dtype == np.uint8
        mask = Image.open(ds.mask_for(p.name))
        assert mask.mode == "L" and mask.size == (SYNTH_RES, SYNTH_RES)

    lm = formats.read_landmarks(ds.landmarks)
    assert lm.scheme == "face5" and lm.names == formats.FACE5_NAMES and lm.failed == []
    assert [f.file_path for f in lm.frames] == [f"images/{p.name}" for p in images]
    assert all(f.w == SYNTH_RES and f.h == SYNTH_RES and f.confidence == 1.0 for f in lm.frames)

    tf = formats.read_transforms(ds.transforms)
    assert [f.file_path for f in tf.frames] == [f.file_path for f in lm.frames]
    raw = json.loads(ds.transforms.read_text())
    assert raw["w"] == raw["h"] == SYNTH_RES and "fl_x" in raw       # shared intrinsics at the top level
    f_expected = 0.5 * SYNTH_RES / math.tan(math.radians(synth_scene.FOV_DEG) / 2)
    for f in tf.frames:
        assert f.fx == pytest.approx(f_expected) and f.cx == f.cy == SYNTH_RES / 2

    kp = formats.read_keypoints(ds.keypoints)
    assert kp.scheme == "face5" and kp.names == formats.FACE5_NAMES and kp.points.shape == (5, 3)
    assert np.linalg.norm(kp.points, axis=1).max() < synth_scene.MAX_RADIUS
    el, er, nose, ml, mr = kp.points
    assert el[0] < 0 < er[0] and ml[0] < 0 < mr[0]                    # image-left = object -X
    assert nose[2] > max(el[2], er[2], ml[2], mr[2])                  # the nose sticks out
    assert min(el[1], er[1]) > nose[1] > max(ml[1], mr[1])            # eyes above nose above mouth

    params = json.loads((synth_data / "synth.json").read_text())
    assert params["generator"] == synth.GENERATOR and params["complete"] is True
    assert (params["n"], params["resolution"], params["holdout"], params["seed"]) == \
        (SYNTH_N, SYNTH_RES, SYNTH_HOLDOUT, SYNTH_SEED)


def test_landmarks_are_the_projected_true_keypoints_on_the_object(synth_data):
    ds = folders.dataset(synth_data)
    lm = formats.read_landmarks(ds.landmarks)
    tf = formats.read_transforms(ds.transforms)
    frontal, on_object, total = 0, 0, 0
    for i, (lf, fr) in enumerate(zip(lm.frames, tf.frames)):
        obj = synth_scene.train_object(SYNTH_SEED, i)
        uv, z = project(obj.keypoints, fr.c2w, fr.fx, fr.fy, fr.cx, fr.cy)
        np.testing.assert_allclose(lf.points, uv, atol=2e-3)
        assert (z > 1.5).all()
        assert ((uv > 0) & (uv < SYNTH_RES)).all()
        mask = _png(ds.mask_for(lf.file_path))
        px = np.floor(uv).astype(int)
        on_object += int((mask[px[:, 1], px[:, 0]] == 255).sum())
        total += len(px)
        for x, y in px:                          # at worst next to the silhouette (at 32 px, yaw up to 40)
            assert mask[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].max() == 255, f"{lf.file_path}: off the object"
        el, er, nose, ml, mr = lf.points
        assert max(el[1], er[1]) < min(ml[1], mr[1])                  # eyes above the mouth (v grows down)
        if abs(_yaw_deg(fr.c2w)) < 25:
            frontal += 1
            assert el[0] < er[0] and ml[0] < mr[0], f"{lf.file_path}: left/right landmarks swapped"
    assert frontal >= 5
    assert on_object >= 0.95 * total                                  # keypoint pixels are fully object


def test_cameras_look_at_the_object_from_the_training_distribution(synth_data):
    tf = formats.read_transforms(synth_data / "transforms.json")
    yaws = []
    for f in tf.frames:
        c2w = np.asarray(f.c2w)
        eye, forward = c2w[:3, 3], -c2w[:3, 2]
        closest = eye + forward * float(-(eye @ forward))               # point of the principal ray nearest 0
        assert np.linalg.norm(closest) < 1e-6 < 1.0
        assert synth_scene.DISTANCE_RANGE[0] - 1e-9 <= np.linalg.norm(eye) <= synth_scene.DISTANCE_RANGE[1] + 1e-9
        pitch = math.degrees(math.asin(eye[1] / np.linalg.norm(eye)))
        assert abs(pitch) <= synth_scene.PITCH_RANGE_DEG + 1e-6
        assert abs(c2w[1, 0]) < 1e-9                                  # no roll: camera +X stays horizontal
        yaws.append(_yaw_deg(c2w))
    assert max(np.abs(yaws)) <= synth_scene.YAW_RANGE_DEG + 1e-6
    assert np.std(yaws) > 10                                          # varied, not one view


def test_masks_and_images_are_sensible(synth_data):
    ds = folders.dataset(synth_data)
    bg_means = []
    for p in folders.list_images(ds.images):
        mask = _png(ds.mask_for(p.name)).astype(np.float64) / 255
        assert 0.15 < mask.mean() < 0.9
        assert (mask == 0).any() and (mask == 1).any()
        rgb = _png(p).astype(np.float64)
        bg = rgb[mask == 0]
        assert bg.std(axis=0).max() > 1.0                             # not a plain background
        bg_means.append(bg.mean(axis=0))
        fg = rgb[mask == 1]
        assert fg.std(axis=0).max() > 5.0                             # the object has features
    assert np.std(bg_means, axis=0).max() > 10                         # backgrounds vary between photos


def test_objects_vary_fit_the_sphere_and_keypoints_lie_on_the_surface():
    kps = []
    rng = np.random.default_rng(1)
    sphere = rng.normal(size=(4000, 3))
    sphere = synth_scene.MAX_RADIUS * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    for i in range(12):
        obj = synth_scene.train_object(7, i)
        assert not obj.inside(sphere).any()                           # inside the radius-0.9 sphere
        assert obj.inside(np.zeros((1, 3))).all()                     # and around the origin
        n = obj.normals(obj.keypoints, obj.intersect(obj.keypoints + [0, 0, 1.0], np.tile([0, 0, -1.0], (5, 1)))[1])
        assert obj.inside(obj.keypoints - 1e-4 * n).all()
        assert not obj.inside(obj.keypoints + 1e-4 * n).any()
        kps.append(obj.keypoints)
    assert np.std(np.array(kps), axis=0).mean() > 0.01


def test_colour_is_view_independent():
    obj = synth_scene.train_object(0, 3)
    target = obj.keypoints[2]                                          # nose tip: seen by both cameras
    cols = []
    for yaw in (-30.0, 25.0):
        cam = synth_scene.make_camera(yaw, 10.0, 2.7, 64)
        origin = cam.c2w[:3, 3]
        t, idx = obj.intersect(origin, (target - origin)[None])
        p = origin + t[:, None] * (target - origin)
        np.testing.assert_allclose(p[0], target, atol=1e-6)
        cols.append(obj.color(p, idx))
    np.testing.assert_allclose(cols[0], cols[1], atol=1e-9)


# ----------------------------------------------------------------------------------------- holdout
def test_holdout_layout(synth_data):
    root = synth_data / "holdout"
    tf = formats.read_transforms(root / "transforms.json")
    assert len(tf.frames) == SYNTH_HOLDOUT * (VIEWS + 1)
    lm = formats.read_landmarks(root / "landmarks.json")
    queries = [f for f in tf.frames if f.extra["role"] == "query"]
    assert [f.file_path for f in lm.frames] == [f.file_path for f in queries]
    assert [f.file_path for f in queries] == [f"images/h{j:04d}_q.png" for j in range(SYNTH_HOLDOUT)]
    for j in range(SYNTH_HOLDOUT):
        views = [f for f in tf.frames if f.extra["object"] == f"h{j:04d}" and f.extra["role"] == "view"]
        assert [Path(f.file_path).name for f in views] == [f"h{j:04d}_v{k:02d}.png" for k in range(VIEWS)]
        yaws = [_yaw_deg(f.c2w) for f in views]
        assert yaws[0] == pytest.approx(-synth_scene.HOLDOUT_YAW_DEG) and yaws[-1] == pytest.approx(synth_scene.HOLDOUT_YAW_DEG)
    for f in tf.frames:
        stem = Path(f.file_path).stem
        assert _png(root / f.file_path).shape == (SYNTH_RES, SYNTH_RES, 3)
        mask = _png(root / "masks" / f"{stem}.png")
        depth = np.load(root / "depth" / f"{stem}.npy", allow_pickle=False)
        assert depth.dtype == np.float32 and depth.shape == (SYNTH_RES, SYNTH_RES)
        assert (np.isfinite(depth) == (mask >= 128)).all()            # depth exactly where coverage >= 0.5
        assert len(f.extra["keypoints_uv"]) == len(f.extra["keypoints_z"]) == len(f.extra["keypoints_visible"]) == 5
    # unseen: the holdout objects are not training objects
    assert not np.allclose(synth_scene.holdout_object(SYNTH_SEED, 0).keypoints, synth_scene.train_object(SYNTH_SEED, 0).keypoints)


def test_holdout_depth_is_consistent_with_the_cameras(synth_data):
    root = synth_data / "holdout"
    tf = formats.read_transforms(root / "transforms.json")
    errs = []
    for f in tf.frames:
        depth = np.load(root / "depth" / f"{Path(f.file_path).stem}.npy").astype(np.float64)
        j, i = np.nonzero(np.isfinite(depth))
        z = depth[j, i]
        d_cam = np.stack([(i + 0.5 - f.cx) / f.fx, -(j + 0.5 - f.cy) / f.fy, -np.ones_like(z)], axis=1)
        pts = f.c2w[:3, 3] + (d_cam * z[:, None]) @ f.c2w[:3, :3].T
        assert np.linalg.norm(pts, axis=1).max() < 1.0                # the surface is inside the unit sphere
        assert (z > 1.5).all() and (z < 3.7).all()
        uv = np.array(f.extra["keypoints_uv"])
        kz = np.array(f.extra["keypoints_z"])
        vis = np.array(f.extra["keypoints_visible"])
        obj = synth_scene.holdout_object(SYNTH_SEED, int(f.extra["object"][1:]))
        uv2, z2 = project(obj.keypoints, f.c2w, f.fx, f.fy, f.cx, f.cy)
        np.testing.assert_allclose(uv, uv2, atol=1e-3)
        np.testing.assert_allclose(kz, z2, atol=1e-5)
        for (u, v), zk, ok in zip(uv, kz, vis):
            if not ok:
                continue
            x, y = int(u), int(v)
            errs.append(abs(depth[y, x] - zk))
            # a pixel mixing the nose with the face behind it averages their depths; a neighbour is exact
            near = depth[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
            assert np.nanmin(np.abs(near - zk)) < 0.05, f"{f.file_path}: depth disagrees with keypoints_z"
    errs = np.array(errs)
    assert np.isfinite(errs).mean() > 0.9 and len(errs) >= 0.8 * 5 * len(tf.frames)
    assert np.nanmedian(errs) < 0.02


def test_rendered_depth_matches_keypoint_depth_at_high_resolution():
    obj = synth_scene.holdout_object(0, 0)
    cam = synth_scene.make_camera(20.0, -10.0, 2.7, 128)
    r = synth_scene.render_object(obj, cam)
    uv, z, vis = synth_scene.keypoint_views(obj, cam)
    assert vis.all()
    for (u, v), zk in zip(uv, z):
        assert abs(r.depth[int(v), int(u)] - zk) < 0.03
    assert r.alpha.min() == 0.0 and r.alpha.max() == 1.0
    # a keypoint hidden behind the head is reported as not visible
    back = synth_scene.make_camera(180.0, 0.0, 2.7, 64)
    assert not synth_scene.keypoint_views(obj, back)[2].any()


# ----------------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_different_seed_different(tmp_path, synth_data):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synth.synthesize(a, n=5, resolution=SYNTH_RES, holdout=1, seed=SYNTH_SEED)
    synth.synthesize(b, n=5, resolution=SYNTH_RES, holdout=1, seed=SYNTH_SEED)
    synth.synthesize(c, n=5, resolution=SYNTH_RES, holdout=1, seed=SYNTH_SEED + 1)
    fa, fb, fc = _all_files(a), _all_files(b), _all_files(c)
    assert fa == fb
    assert fa.keys() == fc.keys()
    assert all(fa[k] != fc[k] for k in fa if k.endswith(".png") or k.endswith(".npy"))
    # object i depends only on (seed, i): a smaller --n is a prefix of a larger one, holdout unchanged
    full = _all_files(synth_data)
    for k, v in fa.items():
        if k.startswith("images/") or k.startswith("masks/") or k.startswith("holdout/images/h0000"):
            assert full[k] == v, k


# ----------------------------------------------------------------------------------------- errors, CLI
def test_refuses_foreign_folders_and_cleans_its_own(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "me.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="not written by `lolnerf synth`"):
        synth.synthesize(foreign, n=2, resolution=16)
    assert (foreign / "me.jpg").read_bytes() == b"x"
    afile = tmp_path / "file.txt"
    afile.write_text("hi")
    with pytest.raises(InputError, match="not a folder"):
        synth.synthesize(afile, n=2, resolution=16)
    for bad in ({"n": 0}, {"resolution": 4}, {"holdout": -1}, {"views": 0}):
        with pytest.raises(InputError):
            synth.synthesize(tmp_path / "bad", **{"n": 2, "resolution": 16, **bad})

    out = tmp_path / "out"
    synth.synthesize(out, n=4, resolution=16, holdout=1)
    (out / "notes.txt").write_text("mine")
    synth.synthesize(out, n=2, resolution=16)                          # rerun over its own output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0000.png", "0001.png"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["0000.png", "0001.png"]
    assert not (out / "holdout").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert len(formats.read_transforms(out / "transforms.json").frames) == 2


def test_cli(tmp_path):
    from lolnerf_cli import commands  # noqa: F401 - registers the subcommands
    from lolnerf_cli.app import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["synth", str(out), "--n", "3", "--resolution", "16", "--holdout", "1",
                                   "--seed", "5"])
    assert res.exit_code == 0, res.output
    assert "3 images at 16x16 px" in res.output and str(out) in res.output
    assert json.loads((out / "synth.json").read_text())["seed"] == 5
    assert len(formats.read_transforms(out / "holdout" / "transforms.json").frames) == VIEWS + 1

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "other"), "--n", "2"])
    assert res.exit_code == 2
    assert "not written by `lolnerf synth`" in res.output and "Traceback" not in res.output


def test_render_object_camera_helpers_agree_with_the_project_convention():
    """Pixel (i + 0.5) rays of render_object and cameras.project agree: a projected point is covered."""
    obj = synth_scene.train_object(0, 0)
    cam = Camera(synth_scene.make_camera(0.0, 0.0, 2.7, 48).c2w, 90.0, 70.0, 20.0, 26.0, 40, 52)   # odd intrinsics
    r = synth_scene.render_object(obj, cam, supersample=3)
    uv, z, vis = synth_scene.keypoint_views(obj, cam)
    assert r.rgb.shape == (52, 40, 3) and vis.all()
    px = np.floor(uv).astype(int)
    assert (r.alpha[px[:, 1], px[:, 0]] == 1.0).all()
    assert np.allclose(r.depth[px[:, 1], px[:, 0]], z, atol=0.05)


def test_large_renders_in_bands_equal_one_pass(monkeypatch):
    obj = synth_scene.holdout_object(1, 0)
    cam = synth_scene.make_camera(-15.0, 5.0, 2.7, 40)
    bg = synth_scene.make_background(np.random.default_rng(0), 40)
    whole = synth_scene.render_object(obj, cam, bg)
    monkeypatch.setattr(synth_scene, "_BAND_RAYS", 7 * 40 * 4)               # bands of 7 rows
    bands = synth_scene.render_object(obj, cam, bg)
    for k in ("rgb", "alpha", "depth"):
        np.testing.assert_array_equal(getattr(whole, k), getattr(bands, k))
