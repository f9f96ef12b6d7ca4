"""`lolnerf landmarks`: five face points with MediaPipe on real photos that ship with installed packages
(scikit-image's astronaut, matplotlib's Grace Hopper), failures with reasons (a cat, a coffee cup, two
faces, a corrupt and an empty file) that do not stop the run, masks, and the plug-in point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lolnerf_cli import commands  # noqa: F401 - registers the subcommands
from lolnerf_cli import landmarks as lmk
from lolnerf_cli.app import app
from lolnerf_cli.formats import FACE5_NAMES, read_landmarks
from lolnerf_cli.images import load_image, load_mask

skdata = pytest.importorskip("skimage.data")


def grace_hopper_path() -> Path:
    import matplotlib
    from matplotlib import cbook

    try:
        return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:  # noqa: BLE001 - older/newer matplotlib: look in mpl-data directly
        return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def assert_plausible_face(points: np.ndarray, w: int, h: int) -> None:
    (elu, elv), (eru, erv), (nu, nv), (mlu, mlv), (mru, mrv) = points
    assert points.shape == (5, 2) and np.isfinite(points).all()
    assert elu < eru and mlu < mru                           # image-left before image-right
    assert max(elv, erv) < nv < min(mlv, mrv)                # eyes above nose above mouth (v grows down)
    assert min(elu, eru) < nu < max(elu, eru)                # nose between the eyes horizontally
    assert (points >= 0).all() and (points[:, 0] <= w).all() and (points[:, 1] <= h).all()


@pytest.mark.slow
def test_astronaut_face():
    img = skdata.astronaut()
    points, conf = lmk.detect_face5(img)
    assert_plausible_face(points, img.shape[1], img.shape[0])
    assert 0.5 <= conf <= 1.0
    # Eileen Collins' face is in the upper middle of the 512 px photo; eyes about 40 px apart
    assert 180 < points[:, 0].mean() < 270 and 80 < points[:, 1].mean() < 160
    assert 30 < points[1, 0] - points[0, 0] < 60


def test_grace_hopper_face():
    img = load_image(grace_hopper_path())
    points, conf = lmk.detect_face5(img)
    assert_plausible_face(points, img.shape[1], img.shape[0])
    assert conf >= 0.5


def test_grey_and_float_input_are_accepted():
    grey = skdata.astronaut().mean(axis=2).astype(np.uint8)
    points, _ = lmk.detect_face5(grey)
    assert_plausible_face(points, 512, 512)
    points_f, _ = lmk.detect_face5(skdata.astronaut().astype(np.float32) / 255.0)
    assert np.abs(points_f - lmk.detect_face5(skdata.astronaut())[0]).max() < 2.0


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_no_face(name):
    with pytest.raises(lmk.LandmarksNotFound) as info:
        lmk.detect_face5(getattr(skdata, name)())
    assert info.value.reason == "no face found"


def test_two_faces_of_similar_size_are_refused():
    two = np.concatenate([skdata.astronaut(), skdata.astronaut()[:, ::-1]], axis=1)
    with pytest.raises(lmk.LandmarksNotFound) as info:
        lmk.detect_face5(two)
    assert info.value.reason == "2 faces found"


def test_segment_foreground():
    img = skdata.astronaut()
    mask = lmk.segment_foreground(img)
    assert mask.shape == img.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert mask[100:140, 200:250].mean() > 0.8               # the face
    assert mask[:60, 420:].mean() < 0.3                      # sky/background at the top right


def test_landmarks_for_image_names_the_file(tmp_path):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    with pytest.raises(lmk.LandmarksNotFound) as info:
        lmk.landmarks_for_image(bad)
    assert "empty" in info.value.reason and str(bad) in str(info.value)
    Image.fromarray(skdata.astronaut()).save(tmp_path / "a.png")
    points, conf, w, h = lmk.landmarks_for_image(tmp_path / "a.png")
    assert (w, h) == (512, 512) and points.shape == (5, 2)


@pytest.fixture(scope="module")
def photo_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    images = root / "images"
    images.mkdir()
    Image.fromarray(skdata.astronaut()).save(images / "astronaut.png")
    shutil.copy(grace_hopper_path(), images / "hopper.jpg")
    Image.fromarray(skdata.chelsea()).save(images / "cat.jpg")
    (images / "empty.png").write_bytes(b"")
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (images / "notes.txt").write_text("not an image, ignored")
    return root


@pytest.mark.slow
def test_cli_landmarks_and_masks(photo_dataset):
    res = CliRunner().invoke(app, ["landmarks", str(photo_dataset), "--masks"])
    assert res.exit_code == 0, res.output
    assert "found" in res.output and "no face found" in res.output and "empty" in res.output
    lm = read_landmarks(photo_dataset / "landmarks.json")
    assert lm.scheme == "face5" and lm.names == FACE5_NAMES
    found = {f.file_path: f for f in lm.frames}
    assert set(found) == {"images/astronaut.png", "images/hopper.jpg"}
    assert (found["images/hopper.jpg"].w, found["images/hopper.jpg"].h) == (512, 600)
    for f in lm.frames:
        assert_plausible_face(f.points, f.w, f.h)
        assert 0.5 <= f.confidence <= 1.0
    reasons = {f["file_path"]: f["reason"] for f in lm.failed}
    assert reasons["images/cat.jpg"] == "no face found"
    assert "empty" in reasons["images/empty.png"]
    assert "corrupt" in reasons["images/corrupt.jpg"] or "not a readable image" in reasons["images/corrupt.jpg"]
    assert len(reasons) == 3
    # masks: one 8-bit PNG per readable photo, the astronaut's face is foreground
    masks = sorted(p.name for p in (photo_dataset / "masks").iterdir())
    assert masks == ["astronaut.png", "cat.png", "hopper.png"]
    with Image.open(photo_dataset / "masks" / "astronaut.png") as im:
        assert im.mode == "L" and im.size == (512, 512)
    assert load_mask(photo_dataset / "masks" / "astronaut.png")[100:140, 200:250].mean() > 0.8


def test_cli_errors_are_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["landmarks", str(tmp_path / "missing")])
    assert res.exit_code == 2
    (tmp_path / "images").mkdir()
    res = CliRunner().invoke(app, ["landmarks", str(tmp_path)])
    assert res.exit_code == 2 and "no .png or .jpg" in res.output + getattr(res, "stderr", "")


def test_without_mediapipe_the_extra_is_named(tmp_path, monkeypatch):
    """Installed without the `landmarks` extra: one line naming the folder and the install command."""
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(lmk, "mediapipe_installed", lambda: False)
    res = CliRunner().invoke(app, ["landmarks", str(tmp_path), "--masks"])
    out = " ".join((res.output + getattr(res, "stderr", "")).split())
    assert res.exit_code == 2 and str(tmp_path) in out and "pip install 'lolnerf[landmarks]'" in out
    assert "Traceback" not in out


class CornerLandmarker:
    """A stand-in for another class's landmarker: the four image corners."""

    scheme = "corners4"
    names = ["top_left", "top_right", "bottom_right", "bottom_left"]

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        if rgb.mean() < 10:
            raise lmk.LandmarksNotFound("too dark")
        if rgb.mean() > 250:
            raise RuntimeError("model crashed")
        return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=float), 0.5


def test_plugin_landmarker(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "b.png")
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(tmp_path / "images" / "c.png")
    run = lmk.find_landmarks(tmp_path, landmarker=CornerLandmarker())
    lm = read_landmarks(tmp_path / "landmarks.json")
    assert lm.scheme == "corners4" and lm.names == CornerLandmarker.names
    assert [f.file_path for f in lm.frames] == ["images/a.png"]
    assert np.allclose(lm.frames[0].points, [[0, 0], [30, 0], [30, 20], [0, 20]])
    assert lm.failed[0] == {"file_path": "images/b.png", "reason": "too dark"}
    assert lm.failed[1]["file_path"] == "images/c.png" and "model crashed" in lm.failed[1]["reason"]
    assert run.counts == {"landmarker error": 1, "too dark": 1}


@pytest.mark.slow
def test_models_load_without_network():
    """MediaPipe's models ship inside the package: detection works with every socket refused."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from skimage import data\n"
        "from lolnerf_cli import landmarks\n"
        "p, c = landmarks.detect_face5(data.astronaut())\n"
        "m = landmarks.segment_foreground(data.astronaut())\n"
        "print('OK', p.shape, m.shape)\n"
    )
    env = dict(os.environ, no_proxy="*", http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK (5, 2) (512, 512)" in out.stdout
