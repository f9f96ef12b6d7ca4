"""`lolnerf view`: the viewer's camera and identity maths, its render policy, its button actions, its
error lines, and (slow) the page itself driven in headless Chromium with Playwright.

The browser test needs a Chromium binary: `chromium` on PATH (Debian's package) or LOLNERF_CHROMIUM.
Without one it is skipped with that reason, except where LOLNERF_TEST_REQUIRE_BROWSER=1 (`.ci/run`
sets it and installs Chromium), where a missing browser is a failure."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from use_models import error_line, invoke

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------- camera, identity
@pytest.mark.parametrize("eye", [(0.0, 0.0, 2.7), (1.5, 0.8, 2.0), (-2.0, -0.5, -1.2)])
def test_browser_pose_becomes_the_lolnerf_camera_that_sees_the_same_thing(eye):
    from lolnerf_cli.cameras import focal_from_fov, look_at, project
    from lolnerf_cli.viewer.state import camera_of, pose_from_lookat

    pose = pose_from_lookat(eye, (0, 0, 0), math.radians(30.0), 16 / 9)
    cam = camera_of(pose, 128)
    assert (cam.w, cam.h) == (128, 72)
    np.testing.assert_allclose(cam.c2w, look_at(np.array(eye)), atol=1e-9)
    assert cam.fy == pytest.approx(focal_from_fov(30.0, 72))
    uv, depth = project(np.zeros((1, 3)), cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy)
    np.testing.assert_allclose(uv[0], [64, 36], atol=1e-6)          # the point looked at is the image centre
    assert depth[0] == pytest.approx(np.linalg.norm(eye))
    tall = camera_of(pose_from_lookat(eye, (0, 0, 0), 0.5, 0.5), 100)
    assert (tall.w, tall.h) == (50, 100)


def test_identity_sources_match_the_cli(tiny):
    from lolnerf_cli.model import load_model
    from lolnerf_cli.latent_pick import sample_latents
    from lolnerf_cli.viewer.state import Identities, IdentityState

    loaded = load_model(tiny.run)
    ids = Identities(loaded)
    st = IdentityState()
    st.index = 5
    z, name = st.current(ids)
    assert torch.equal(z, loaded.latents[5].float()) and "index 5" in name
    st.source, st.seed, st.psi = "sample", 3, 0.6
    z, _ = st.current(ids)
    torch.testing.assert_close(z, sample_latents(loaded, 1, 0.6, 3)[0][0])
    st.psi = 0.0                                                        # psi 0: the mean identity
    torch.testing.assert_close(st.current(ids)[0], loaded.latents.mean(0), atol=1e-5, rtol=0)
    st.source, st.a, st.b = "mix", loaded.latents[1], loaded.latents[2]
    for t in (0.0, 0.25, 1.0):
        st.t = t
        torch.testing.assert_close(st.current(ids)[0], loaded.latents[1] * (1 - t) + loaded.latents[2] * t)
    st.source, st.index, st.pca = "index", 0, [2.0, 0, 0, 0, 0]
    z, name = st.current(ids)
    step = z - loaded.latents[0]
    v, s = ids.gauss.components[:, 0], ids.gauss.stddevs[0]
    torch.testing.assert_close(step, 2.0 * s * v, atol=1e-5, rtol=0)    # along PCA 1, two standard deviations
    assert "PCA [2" in name


def test_samples_control_scales_the_samplers():
    from lolnerf_cli.config import preset
    from lolnerf_cli.viewer.state import render_config_with_samples

    rc = preset("paper").render
    assert rc.sampler == "proposal"
    assert render_config_with_samples(rc, 0) is rc
    r = render_config_with_samples(rc, 16)
    assert r.n_samples == 16 and r.proposal_samples == tuple(p // 2 for p in rc.proposal_samples)
    h = render_config_with_samples(preset("tiny").render, 9)
    assert (h.n_coarse, h.n_fine) == (4, 5)


# ----------------------------------------------------------------------------------------- render policy
def test_render_state_previews_while_moving_then_bakes_and_sharpens(cube):
    from lolnerf_cli.model import load_model
    from lolnerf_cli.viewer.state import Identities, RenderState, pose_from_lookat

    loaded = load_model(cube)
    frames = []
    news = []
    state = RenderState(loaded, "fp32", Identities(loaded), frames.append, news.append, still_s=0.2)
    state.change_settings(resolution=48)
    state.start()
    try:
        state.set_pose(pose_from_lookat((0, 0, 2.7), (0, 0, 0), math.radians(30), 1.0))
        assert state.wait_idle(120)
        last = frames[-1]
        assert last.sharp and last.renderer == "baked" and last.image.shape == (48, 48, 3)
        assert any(f.renderer == "exact" and not f.sharp for f in frames)   # before the grid was there
        assert any(n.startswith("baked ") for n in news)
        # the box is in the middle of the frame, the blue background at its corners (CUBE_RGB is red-ish)
        assert last.image[24, 24, 0] > 150 and last.image[2, 2, 2] > 150
        before = len(frames)
        for yaw in range(5, 40, 5):                                    # a drag: poses in quick succession
            eye = (2.7 * math.sin(math.radians(yaw)), 0.0, 2.7 * math.cos(math.radians(yaw)))
            state.set_pose(pose_from_lookat(eye, (0, 0, 0), math.radians(30), 1.0))
            time.sleep(0.02)
        assert state.wait_idle(120)
        moved = frames[before:]
        assert moved[-1].sharp and moved[-1].image.shape == (48, 48, 3)
        assert all(f.renderer == "baked" for f in moved)             # the identity's grid is reused
        assert not np.array_equal(moved[-1].image, last.image)
        state.change_settings(mode="depth")
        assert state.wait_idle(60) and state.last_sharp.image.shape == (48, 48, 3)
        assert not np.array_equal(state.last_sharp.image, moved[-1].image)
        state.change_settings(mode="alpha", renderer="exact", samples=16)
        assert state.wait_idle(60)
        a = state.last_sharp
        assert a.renderer == "exact" and a.sharp
        assert a.image[24, 24, 0] > 240 and a.image[1, 1, 0] < 15      # opaque box, empty corners
        assert state.fps.fps() >= 0 and state.frames == len(frames)
    finally:
        state.close()


# ----------------------------------------------------------------------------------------- button actions
def test_saved_camera_renders_with_lolnerf_render(tiny, tmp_path):
    from lolnerf_cli.formats import load_latents, read_transforms
    from lolnerf_cli.model import load_model
    from lolnerf_cli.viewer.jobs import save_camera
    from lolnerf_cli.viewer.state import camera_of, pose_from_lookat

    loaded = load_model(tiny.run)
    cam = camera_of(pose_from_lookat((0.5, 0.3, 2.6), (0, 0, 0), math.radians(30), 1.5), 24)
    path, latent, cmd = save_camera(tmp_path, cam, loaded, loaded.latents[2], "index 2", 2)
    assert latent is None and "--index 2" in cmd
    frame = read_transforms(path).frames[0]
    np.testing.assert_allclose(frame.c2w, cam.c2w, atol=1e-7)
    assert (frame.w, frame.h, frame.fx) == (24, 16, pytest.approx(cam.fx))
    z = loaded.latents[0] * 0.5
    path2, latent2, cmd2 = save_camera(tmp_path, cam, loaded, z, "sample", None)
    assert path2 != path and latent2 is not None and f"--latent {latent2}" in cmd2
    torch.testing.assert_close(load_latents(latent2, loaded.model_hash)[0][0], z)
    res = invoke(["render", "--model", str(tiny.run), "--latent", str(latent2), "--camera", str(path2),
                  "--out", str(tmp_path / "views"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(tmp_path / "views" / f"{path2.stem}.png").size == (24, 16)


def test_uploads_refuse_non_images_and_keep_names_inside_the_folder(tmp_path):
    from lolnerf_cli.errors import InputError
    from lolnerf_cli.viewer.jobs import safe_name, store_upload

    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\photos\\me .jpg") == "me_.jpg"
    with pytest.raises(InputError, match="notes.png: .*not an image"):
        store_upload(tmp_path, "notes.png", b"hello, not a picture\n")
    with pytest.raises(InputError, match="empty"):
        store_upload(tmp_path, "x.png", b"")
    assert not any((tmp_path / "uploads").iterdir())


def test_mesh_and_screenshot_are_written(cube, tmp_path):
    from PIL import Image

    from lolnerf_cli.mesh import read_ply
    from lolnerf_cli.model import load_model
    from lolnerf_cli.viewer.jobs import export_mesh, save_screenshot

    loaded = load_model(cube)
    path, mesh = export_mesh(tmp_path, loaded, loaded.latents[0], 24)
    assert path.name == "mesh_001.ply" and len(read_ply(path).faces) == len(mesh.faces) > 0
    shot = save_screenshot(tmp_path, np.full((10, 20, 3), 7, np.uint8))
    assert shot.name == "screenshot_001.png" and Image.open(shot).size == (20, 10)


@pytest.mark.slow
def test_photo_inversion_without_a_face_uses_the_mean_view(tiny, tmp_path):
    from PIL import Image

    from lolnerf_cli.model import load_model
    from lolnerf_cli.viewer.jobs import invert_photo, store_upload

    loaded = load_model(tiny.run)
    img = np.zeros((40, 30, 3), np.uint8)
    img[10:30, 8:22] = (200, 120, 90)                                    # no face for any landmarker
    buf = tmp_path / "blob.png"
    Image.fromarray(img).save(buf)
    stored = store_upload(tmp_path, "blob.png", buf.read_bytes())
    res = invert_photo(loaded, stored, tmp_path, steps=3)
    assert "mean training view" in res.camera_source
    assert res.z.shape == (loaded.cfg.model.latent_dim,) and res.latent_path.is_file()
    assert res.sheet.dtype == np.uint8 and res.sheet.shape[1] > res.sheet.shape[0]


# ----------------------------------------------------------------------------------------- command line
def test_busy_port_and_bad_run_are_one_line_exit_2(tiny, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = invoke(["view", "--model", str(tiny.run), "--port", str(port), "--device", "cpu"])
        assert res.exit_code == 2
        assert f"port {port} on 127.0.0.1 is already in use" in error_line(res)
    res = invoke(["view", "--model", str(tmp_path / "nowhere"), "--port", str(_free_port())])
    assert res.exit_code == 2 and "nowhere" in error_line(res)
    res = invoke(["view", "--model", str(tiny.run), "--host", "no-such-host.invalid", "--port", "8080", "--device", "cpu"])
    assert res.exit_code == 2 and "--host" in error_line(res)


def test_url_lines_say_how_to_tunnel(monkeypatch):
    from lolnerf_cli.viewer.server import url_lines

    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.5 50000 10.0.0.9 22")
    monkeypatch.setenv("USER", "ana")
    lines = url_lines("127.0.0.1", 8123)
    assert lines[0] == "viewer: http://127.0.0.1:8123"
    assert "ssh -N -L 8123:127.0.0.1:8123 ana@10.0.0.9" in lines[1]
    assert len(url_lines("0.0.0.0", 8123)) == 1


# ----------------------------------------------------------------------------------------- in a real browser
def _chromium() -> str:
    exe = os.environ.get("LOLNERF_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    try:
        import playwright  # noqa: F401
    except ImportError:
        exe, why = None, "the playwright package is not installed (pip install -e '.[test]')"
    else:
        why = "no Chromium found (apt-get install chromium, or set LOLNERF_CHROMIUM)"
    if exe is None:
        if os.environ.get("LOLNERF_TEST_REQUIRE_BROWSER", "").strip() not in ("", "0"):
            pytest.fail(why + "; LOLNERF_TEST_REQUIRE_BROWSER is set, so this is an error")
        pytest.skip(why)
    return exe


class _Server:
    """`lolnerf view` in a subprocess; its output lines are collected as they come."""

    def __init__(self, args: list[str]):
        env = dict(os.environ, PYTHONUNBUFFERED="1", LOLNERF_PROGRESS_INTERVAL="1")
        # started with SIGINT ignored, as a background job of a non-interactive shell is: the server must
        # still stop on SIGINT (it installs its own handler)
        self.proc = subprocess.Popen([sys.executable, "-m", "lolnerf_cli", "view", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines:
                m = re.search(pattern, line)
                if m:
                    return m
            assert self.proc.poll() is None, "\n".join(self.lines)
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n" + "\n".join(self.lines))


def _status(page) -> tuple[int, str]:
    text = page.inner_text("body")
    m = re.search(r"frame (\d+) · (\d+)x(\d+) px (\w+)", text)
    return (int(m.group(1)) if m else -1), text


def _wait_status(page, cond, timeout: float, what: str) -> tuple[int, str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n, text = _status(page)
        if cond(n, text):
            return n, text
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen in {timeout} s; the page says:\n{_status(page)[1][:800]}")


def _canvas_pixels(page) -> np.ndarray:
    """The middle of the 3D view as the browser shows it (away from the panel and the axes gizmo)."""
    import io

    from PIL import Image

    png = page.screenshot(clip={"x": 150, "y": 200, "width": 400, "height": 300})
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)


@pytest.mark.slow
def test_the_page_in_headless_chromium(tiny, tmp_path):
    """Open the page, wait for the canvas and a frame, drag the camera (a new frame arrives and the image
    changes), move the truncation slider, upload a non-image (refused, server keeps running) and a
    photo (inverted, shown), save the camera; no request ever leaves 127.0.0.1."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from lolnerf_cli.formats import read_transforms

    exe = _chromium()
    photo = tmp_path / "photo.png"
    shutil.copy(tiny.data / "images" / "0003.png", photo)
    (tmp_path / "notes.png").write_text("not a picture\n")
    port = _free_port()
    server = _Server(["--model", str(tiny.run), "--port", str(port), "--out", str(tmp_path / "out"),
                      "--invert-steps", "5", "--device", "cpu"])
    requests: list[str] = []
    try:
        url = server.wait_for(r"viewer: (http://127\.0\.0\.1:\d+)", 120).group(1)
        assert url == f"http://127.0.0.1:{port}"
        server.wait_for(rf"ssh -N -L {port}:127\.0\.0\.1:{port} ", 5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--enable-unsafe-swiftshader", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.on("request", lambda r: requests.append(r.url))
            page.on("websocket", lambda ws: requests.append(ws.url))
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("canvas")
            n0, _ = _wait_status(page, lambda n, t: n > 0 and " sharp" in t and "baked" in t, 180,
                                 "a sharp baked first frame")
            before = _canvas_pixels(page)

            page.mouse.move(300, 350)
            page.mouse.down()
            for i in range(1, 16):
                page.mouse.move(300 + 12 * i, 350 + 3 * i)
                time.sleep(0.05)
            page.mouse.up()
            n1, text = _wait_status(page, lambda n, t: n > n0 and " sharp" in t, 120, "a new sharp frame after the drag")
            assert n1 > n0 + 1, text                                     # previews while dragging, then the sharp one
            after = _canvas_pixels(page)
            assert np.abs(after - before).mean() > 1.0, "the image did not change when the camera moved"

            thumb = page.locator('[role="slider"][aria-valuemax="1.5"]')
            box = thumb.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            _wait_status(page, lambda n, t: n > n1 and re.search(r"sample seed 0, psi (?!0\.7\b)[\d.]+", t), 120,
                         "a frame of a sample with the new truncation")

            upload = page.get_by_text("Invert a photo")
            with page.expect_file_chooser() as chooser:
                upload.click()
            chooser.value.set_files(str(tmp_path / "notes.png"))
            _wait_status(page, lambda n, t: "refused: notes.png" in t and "not an image" in t, 60, "refusing notes.png")
            with page.expect_file_chooser() as chooser:
                upload.click()
            chooser.value.set_files(str(photo))
            n2, text = _wait_status(page, lambda n, t: "reconstruction PSNR" in t, 240, "inverting photo.png")
            _wait_status(page, lambda n, t: n > n2 and "photo photo.png" in t, 120, "a frame of the inverted photo")
            assert (tmp_path / "out" / "photo.safetensors").is_file()

            page.get_by_role("button", name="Save camera").click()
            _wait_status(page, lambda n, t: "camera: " in t and "camera_001.json" in t, 60, "saving the camera")
            frame = read_transforms(tmp_path / "out" / "camera_001.json").frames[0]
            assert frame.w > 0 and frame.h > 0
            page.screenshot(path=str(tmp_path / "page.png"))
            assert Image.open(tmp_path / "page.png").size == (1100, 700)
            browser.close()
        assert server.proc.poll() is None, "\n".join(server.lines)        # still serving after the refusal
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGINT)
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
    assert server.proc.returncode == 0, "\n".join(server.lines)
    assert any(line == "stopped." for line in server.lines), "\n".join(server.lines)
    hosts = {urlparse(u).hostname for u in requests if urlparse(u).scheme not in ("data", "blob", "about")}
    assert requests and hosts == {"127.0.0.1"}, f"requests left 127.0.0.1: {sorted(set(requests))[:10]}"
