"""`lolnerf import-cameras`: other tools' cameras -> DATA/transforms.json in SPEC's conventions and frame.

The LOLNeRF authors' AFHQ cat cameras (tests/data/jax3d, CC-BY 4.0) are converted against stand-in images
of the right names and size; the jax3d convention is checked against jax3d's own projection formula,
written out here; synthetic cameras go through jax3d, COLMAP and nerfstudio files and back."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from scipy.spatial.transform import Rotation

from use_models import error_line, invoke

from lolnerf_cli.cameras import project
from lolnerf_cli.formats import read_keypoints, read_transforms, write_json
from lolnerf_cli.run_log import read_log
from lolnerf_cli.camera_formats import export_jax3d, read_jax3d
from lolnerf_cli.import_cameras import import_cameras, normalise

CAT_FILE = Path(__file__).parent / "data" / "jax3d" / "afhq-cats_camera_estimates.json"


def jpeg_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 110, 100)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cat_data(tmp_path_factory):
    """A dataset folder with a 256x256 stand-in JPEG for each of the 5,147 images the cat file names."""
    root = tmp_path_factory.mktemp("cats") / "data"
    (root / "images").mkdir(parents=True)
    data = jpeg_bytes(256, 256)
    for name in json.loads(CAT_FILE.read_text()):
        (root / "images" / name).write_bytes(data)
    return root


def copy_images(src: Path, dst: Path, with_masks: bool = True) -> Path:
    """A dataset folder holding only the photos (and masks) of `src`: no cameras, landmarks or keypoints."""
    dst.mkdir(parents=True)
    shutil.copytree(src / "images", dst / "images")
    if with_masks:
        shutil.copytree(src / "masks", dst / "masks")
    return dst


def c2w_stack(tf) -> np.ndarray:
    return np.stack([np.asarray(f.c2w) for f in tf.frames])


# ----------------------------------------------------------------------------------------- the cat file
@pytest.mark.slow
def test_the_authors_cat_cameras_convert(cat_data, tmp_path):
    fig = tmp_path / "cameras.png"
    res = invoke(["import-cameras", str(CAT_FILE), str(cat_data), "--plot", str(fig)])
    assert res.exit_code == 0, res.output
    assert "5,147" in res.stdout
    tf = read_transforms(cat_data / "transforms.json", cat_data, require_files=True)
    assert len(tf.frames) == 5147
    assert tf.extra["camera_source"] == "import-cameras"
    c2w = c2w_stack(tf)
    f = np.array([fr.fx for fr in tf.frames])
    assert np.all(f == 512.0) and all((fr.w, fr.h, fr.cx, fr.cy) == (256, 256, 128.0, 128.0) for fr in tf.frames)
    # the estimated look-at point (now the origin) projects near every image's principal point
    uv, depth = project(np.zeros((len(c2w), 1, 3)), c2w, f, f, 128.0, 128.0)
    off = np.linalg.norm(uv[:, 0] - 128.0, axis=1)
    angle = np.degrees(np.arctan(off / 512.0))
    assert np.all(depth > 0)
    assert np.median(angle) < 1.0 and angle.max() < 7.0, (np.median(angle), angle.max())
    # one cap of cameras around +Z, +Y the mean up, the frustum through the origin fitting the unit sphere
    pos = c2w[:, :3, 3]
    dist = np.linalg.norm(pos, axis=1)
    from_z = np.degrees(np.arccos(pos[:, 2] / dist))
    assert from_z.max() < 75.0 and np.median(from_z) < 40.0, (np.median(from_z), from_z.max())
    mean_dir = (pos / dist[:, None]).mean(0)
    assert abs(mean_dir[0]) < 0.05 * np.linalg.norm(mean_dir) and abs(mean_dir[1]) < 0.05 * np.linalg.norm(mean_dir)
    up = c2w[:, :3, 1].mean(0)
    assert np.degrees(np.arccos(up[1] / np.linalg.norm(up))) < 1e-6
    assert np.median(depth[:, 0] * np.sqrt(2) * 128 / 512) == pytest.approx(1.0)
    assert dist.min() > 1.0                                     # every camera outside the unit sphere
    assert fig.is_file() and Image.open(fig).size[0] > 800


@pytest.mark.slow
def test_jax3d_orientation_is_world_to_camera_with_opencv_axes():
    """jax3d's camera.project: local = orientation @ (p - position); pixel = f * local.xy / local.z + pp (y scaled
    by the pixel aspect ratio). Our conversion must give the same pixels for the same world points, which pins
    every axis flip and the world-to-camera reading of 'orientation'."""
    raw = json.loads(CAT_FILE.read_text())
    names = sorted(raw)[::257]

    cams = {c.name: c for c in read_jax3d(CAT_FILE, {n: raw[n] for n in names})}
    rng = np.random.default_rng(0)
    for name in names:
        cam = raw[name]["camera"]
        orient, position = np.array(cam["orientation"]), np.array(cam["position"])
        points = rng.normal(0, 1.0, (50, 3))                    # around the object, in front of the camera
        local = (points - position) @ orient.T
        jax_uv = cam["focal_length"][0] * local[:, :2] / local[:, 2:] + np.array(cam["principal_point"])
        ours = cams[name]
        uv, depth = project(points, ours.c2w, ours.fx, ours.fy, ours.cx, ours.cy)
        assert np.all(depth > 0) and np.allclose(depth, local[:, 2])
        assert np.allclose(uv, jax_uv, atol=1e-3)     # the file's rotations are orthonormal to ~3e-6 only


# ----------------------------------------------------------------------------------------- round trips
def test_jax3d_round_trip_keeps_synthetic_cameras(synth_data, tmp_path):
    data = copy_images(synth_data, tmp_path / "data")
    orig = read_transforms(synth_data / "transforms.json", synth_data)
    write_json(tmp_path / "cams.json", export_jax3d(orig))
    res = invoke(["import-cameras", str(tmp_path / "cams.json"), str(data), "--keep-frame"])
    assert res.exit_code == 0, res.output
    back = read_transforms(data / "transforms.json", data)
    assert [f.file_path for f in back.frames] == [f.file_path for f in orig.frames]
    assert np.abs(c2w_stack(back) - c2w_stack(orig)).max() < 1e-12
    for a, b in zip(back.frames, orig.frames):
        assert (a.fx, a.fy, a.cx, a.cy, a.w, a.h) == pytest.approx((b.fx, b.fy, b.cx, b.cy, b.w, b.h))
    # normalised instead: synth's cameras already look at the origin with +Y up, so little changes
    result = import_cameras(tmp_path / "cams.json", data, write=False)
    n = result.normalisation
    assert np.linalg.norm(n.centre) < 1e-6
    assert np.degrees(Rotation.from_matrix(n.rotation).magnitude()) < 4.0
    assert n.scale == pytest.approx(1 / (2.7 * np.tan(np.radians(15)) * np.sqrt(2)), rel=0.03)


def test_normalisation_ignores_the_source_frame(synth_data, tmp_path):
    """Centre, axes and scale come from the cameras alone: the same cameras in any similar frame
    (rotated, moved, scaled; here a nerfstudio file) import to the same transforms.json."""
    orig = read_transforms(synth_data / "transforms.json", synth_data)
    c2w = c2w_stack(orig)
    rot = Rotation.from_euler("xyz", [30, -70, 110], degrees=True).as_matrix()
    moved = c2w.copy()
    moved[:, :3, :3] = rot @ c2w[:, :3, :3]
    moved[:, :3, 3] = 3.7 * c2w[:, :3, 3] @ rot.T + np.array([5.0, -2.0, 40.0])
    ns = {"camera_model": "OPENCV", "fl_x": orig.frames[0].fx, "fl_y": orig.frames[0].fy, "cx": 16.0, "cy": 16.0,
          "w": 32, "h": 32, "frames": [{"file_path": f"./images/{Path(f.file_path).name}", "transform_matrix": m.tolist()}
                                       for f, m in zip(orig.frames, moved)]}
    write_json(tmp_path / "ns.json", ns)
    data = copy_images(synth_data, tmp_path / "data")
    a = import_cameras(synth_data / "transforms.json", data, write=False)
    b = import_cameras(tmp_path / "ns.json", data, write=False)
    assert a.fmt == b.fmt == "nerfstudio"
    assert np.abs(c2w_stack(a.transforms) - c2w_stack(b.transforms)).max() < 1e-9


def test_colmap_text_model(synth_data, tmp_path):
    orig = read_transforms(synth_data / "transforms.json", synth_data)
    model = tmp_path / "sparse"
    model.mkdir()
    f0 = orig.frames[0]
    (model / "cameras.txt").write_text("# Camera list with one line of data per camera:\n"
                                       f"1 PINHOLE 32 32 {f0.fx} {f0.fy} 16 16\n")
    lines = ["# Image list with two lines of data per image:"]
    for i, fr in enumerate(orig.frames):
        c2w = np.asarray(fr.c2w)
        rot_w2c = (c2w[:3, :3] @ np.diag([1.0, -1.0, -1.0])).T            # OpenGL c2w -> OpenCV w2c
        t = -rot_w2c @ c2w[:3, 3]
        qx, qy, qz, qw = Rotation.from_matrix(rot_w2c).as_quat()
        lines += [f"{i + 1} {qw} {qx} {qy} {qz} {t[0]} {t[1]} {t[2]} 1 {Path(fr.file_path).name}",
                  "" if i % 2 else "12.5 3.5 -1 20.25 7.75 4"]                # empty and non-empty points lines
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    data = copy_images(synth_data, tmp_path / "data")
    res = invoke(["import-cameras", str(model), str(data), "--keep-frame"])
    assert res.exit_code == 0, res.output
    back = read_transforms(data / "transforms.json", data)
    assert json.loads((data / "transforms.json").read_text())["imported_from"]["format"] == "colmap-text"
    assert np.abs(c2w_stack(back) - c2w_stack(orig)).max() < 1e-9


# ----------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_training_on_imported_cameras_matches_the_original_cameras(synth_data, tmp_path):
    """No landmarks, no keypoints: cameras exported to jax3d and imported back train exactly like the
    originals; invert then asks for --camera in one line."""
    from lolnerf_cli.train import train

    a = copy_images(synth_data, tmp_path / "a")
    shutil.copy(synth_data / "transforms.json", a / "transforms.json")
    b = copy_images(synth_data, tmp_path / "b")
    write_json(tmp_path / "cams.json", export_jax3d(read_transforms(a / "transforms.json", a)))
    assert invoke(["import-cameras", str(tmp_path / "cams.json"), str(b), "--keep-frame"]).exit_code == 0
    for data in (a, b):
        assert not (data / "landmarks.json").exists() and not (data / "keypoints.json").exists()
        train(data, tmp_path / f"run_{data.name}", "tiny", steps=12, device="cpu", preview_every=0,
              precision="fp32", log_every=4)
    wa, wb = load_file(tmp_path / "run_a" / "model.safetensors"), load_file(tmp_path / "run_b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    la, lb = read_log(tmp_path / "run_a" / "log.jsonl"), read_log(tmp_path / "run_b" / "log.jsonl")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb] and len(la) == 3
    assert not (tmp_path / "run_b" / "keypoints.json").exists()
    photo = synth_data / "holdout" / "images" / "h0000_q.png"
    res = invoke(["invert", str(photo), "--model", str(tmp_path / "run_b"), "--out", str(tmp_path / "z.safetensors")])
    assert res.exit_code == 2
    line = error_line(res)
    assert "keypoints.json" in line and "--camera" in line


# ----------------------------------------------------------------------------------------- matching, sizes
def test_unmatched_images_and_cameras_are_reported(synth_data, tmp_path):
    data = copy_images(synth_data, tmp_path / "data", with_masks=False)
    orig = read_transforms(synth_data / "transforms.json", synth_data)
    cams = export_jax3d(orig)
    cams.pop("0003.png")
    cams["nowhere.jpg"] = cams["0004.png"]
    (data / "images" / "0007.png").rename(data / "images" / "0007.jpg")    # matched by name without extension
    write_json(tmp_path / "cams.json", cams)
    res = invoke(["import-cameras", str(tmp_path / "cams.json"), str(data)])
    assert res.exit_code == 0, res.output
    assert "image without a camera: 0003.png" in res.stdout
    assert "camera without an image: nowhere.jpg" in res.stdout
    tf = read_transforms(data / "transforms.json", data, require_files=True)
    assert len(tf.frames) == len(orig.frames) - 1
    assert "images/0007.jpg" in [f.file_path for f in tf.frames]


def test_resized_images_get_scaled_intrinsics(tmp_path):
    """AFHQ ships 512 px images; the authors' cameras are for 256 px: intrinsics scale with the image."""
    raw = json.loads(CAT_FILE.read_text())
    names = sorted(raw)[:40]
    write_json(tmp_path / "cams.json", {n: raw[n] for n in names})
    (tmp_path / "data" / "images").mkdir(parents=True)
    for n in names:
        (tmp_path / "data" / "images" / n).write_bytes(jpeg_bytes(512, 512))
    res = import_cameras(tmp_path / "cams.json", tmp_path / "data")
    assert res.rescaled == 40
    fr = res.transforms.frames[0]
    assert (fr.fx, fr.fy, fr.cx, fr.cy, fr.w, fr.h) == (1024.0, 1024.0, 256.0, 256.0, 512, 512)
    assert np.median(res.look_at_deg) < 2.0


def test_landmarks_give_triangulated_keypoints_and_old_keypoints_move_aside(synth_data, tmp_path):
    orig = read_transforms(synth_data / "transforms.json", synth_data)
    write_json(tmp_path / "cams.json", export_jax3d(orig))
    data = copy_images(synth_data, tmp_path / "with_landmarks")
    shutil.copy(synth_data / "landmarks.json", data / "landmarks.json")
    res = invoke(["import-cameras", str(tmp_path / "cams.json"), str(data), "--keep-frame"])
    assert res.exit_code == 0, res.output
    assert "triangulated" in res.stdout
    got, true = read_keypoints(data / "keypoints.json"), read_keypoints(synth_data / "keypoints.json")
    assert got.names == true.names
    # synth's keypoints.json is the mean over the objects; each photo shows its own object's keypoints
    assert np.abs(got.points - true.points).max() < 0.05
    other = copy_images(synth_data, tmp_path / "without_landmarks")
    shutil.copy(synth_data / "keypoints.json", other / "keypoints.json")
    assert invoke(["import-cameras", str(tmp_path / "cams.json"), str(other)]).exit_code == 0
    assert not (other / "keypoints.json").exists() and (other / "keypoints.before-import.json").is_file()


# ----------------------------------------------------------------------------------------- bad input
def _cat_camera(**change):
    raw = json.loads(CAT_FILE.read_text())
    name = sorted(raw)[0]
    cam = dict(raw[name]["camera"], **change)
    return name, {name: {"camera": cam}}


def _bad_cases():
    name, rot = _cat_camera(orientation=[[1, 0, 0], [0, 2, 0], [0, 0, 1]])
    yield "not a rotation", name, rot, "not a rotation matrix"
    _, refl = _cat_camera(orientation=[[-1, 0, 0], [0, 1, 0], [0, 0, 1]])
    yield "reflection", name, refl, "reflection"
    _, nan_text = _cat_camera(position=["NAN", 1.0, 2.0])
    yield "NaN", name, json.dumps(nan_text).replace('"NAN"', "NaN"), "NaN"
    _, size = _cat_camera(image_size=[256, 200])
    yield "size", name, size, "is for a 256x200 image"
    _, skew = _cat_camera(skew=[3.0])
    yield "skew", name, skew, "skew"
    yield "unknown format", None, {"cameras": [1, 2, 3]}, "is not a camera file lolnerf knows"
    yield "not JSON", None, "images/a.jpg 1 2 3\n", "not valid JSON"


@pytest.mark.parametrize("case", list(_bad_cases()), ids=lambda c: c[0])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    _, name, content, expect = case
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / (name or "a.jpg")).write_bytes(jpeg_bytes(256, 256))
    (data / "keypoints.json").write_text("{}")
    cams = tmp_path / "cams.json"
    cams.write_text(content if isinstance(content, str) else json.dumps(content))
    res = invoke(["import-cameras", str(cams), str(data)])
    assert res.exit_code == 2, res.output
    line = error_line(res)
    assert expect in line, line
    if name:
        assert f"camera '{name}'" in line, line
    assert sorted(p.name for p in data.iterdir()) == ["images", "keypoints.json"]


def test_bad_colmap_and_nerfstudio_inputs_name_the_camera(synth_data, tmp_path):
    data = copy_images(synth_data, tmp_path / "data", with_masks=False)
    model = tmp_path / "sparse"
    model.mkdir()
    (model / "cameras.txt").write_text("1 PINHOLE 32 32 60 60 16 16\n")
    (model / "images.txt").write_text("1 0.5 0.5 0.5 0.9 0 0 3 1 0000.png\n\n")
    res = invoke(["import-cameras", str(model / "images.txt"), str(data)])
    assert res.exit_code == 2 and "camera '0000.png'" in error_line(res) and "unit length" in error_line(res)
    (model / "cameras.txt").write_text("1 OPENCV_FISHEYE 32 32 60 60 16 16 0 0 0 0\n")
    res = invoke(["import-cameras", str(model), str(data), "--format", "colmap-text"])
    assert res.exit_code == 2 and "OPENCV_FISHEYE" in error_line(res)
    ns = json.loads((synth_data / "transforms.json").read_text())
    ns["frames"][2]["transform_matrix"][0][3] = float("nan")
    (tmp_path / "ns.json").write_text(json.dumps(ns))
    res = invoke(["import-cameras", str(tmp_path / "ns.json"), str(data)])
    assert res.exit_code == 2 and "camera 'images/0002.png'" in error_line(res) and "NaN" in error_line(res)
    res = invoke(["import-cameras", str(tmp_path / "ns.json"), str(data), "--format", "blender"])
    assert res.exit_code == 2 and "--format" in error_line(res)
    assert not (data / "transforms.json").exists()


def test_parallel_optical_axes_are_refused(tmp_path):
    c2w = np.repeat(np.eye(4)[None], 5, axis=0)
    c2w[:, 0, 3] = np.arange(5.0)                      # a row of cameras all looking down -Z
    ones = np.ones(5)
    with pytest.raises(Exception, match="parallel"):
        normalise(c2w, 100 * ones, 100 * ones, 64 * ones, 64 * ones, tmp_path / "cams.json")
