"""`lolnerf render`, `sample` and `interpolate`: file names, sizes, depth maps, real videos, determinism,
truncation, interpolation endpoints, usage errors (exit 2, one line naming the file or flag)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from use_models import CUBE_RGB, cube_surface, error_line, invoke

from lolnerf_cli.cameras import focal_from_fov, look_at, spherical_eye
from lolnerf_cli.video import SHEET_MIN_TILE, SHEET_PAD


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _frame(name: str, yaw: float, w: int, h: int, radius: float = 2.7) -> dict:
    f = focal_from_fov(30.0, h)
    return {"file_path": f"images/{name}.png", "transform_matrix": look_at(spherical_eye(yaw, 0.0, radius)).tolist(),
            "fl_x": f, "fl_y": f, "cx": w / 2, "cy": h / 2, "w": w, "h": h}


# ----------------------------------------------------------------------------------------- render --camera
def test_render_camera_writes_one_png_per_frame_with_depth(cube, tmp_path):
    tf = tmp_path / "cams" / "transforms.json"
    tf.parent.mkdir()
    tf.write_text(json.dumps({"frames": [_frame("front", 0.0, 24, 24), _frame("side", 60.0, 20, 16)]}))
    out = tmp_path / "out"
    res = invoke(["render", "--model", str(cube), "--index", "0", "--camera", str(tf), "--out", str(out),
                  "--depth", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{x}" for s in ("front", "side") for x in (".png", "_depth.npy", "_depth.png"))
    assert _png(out / "front.png").shape == (24, 24, 3) and _png(out / "side.png").shape == (16, 20, 3)
    assert "ms per frame" in res.stdout

    depth = np.load(out / "front_depth.npy", allow_pickle=False)
    assert depth.dtype == np.float32 and depth.shape == (24, 24)
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, -1]) and np.isnan(depth[-1, 0])   # rays that miss the cube
    centre = depth[10:14, 10:14]
    assert np.isfinite(centre).all()
    assert centre.mean() == pytest.approx(2.7 - cube_surface(10.0)[2], abs=0.08)       # z-depth of the front face
    assert np.load(out / "side_depth.npy").shape == (16, 20)
    dpng = _png(out / "front_depth.png")
    assert dpng.shape == (24, 24, 3) and (dpng[0, 0] == 0).all() and dpng[12, 12].sum() > 0   # NaN -> black

    rgb = _png(out / "front.png").astype(float) / 255
    assert np.abs(rgb[12, 12] - np.array(CUBE_RGB)).max() < 0.02                          # the cube's colour
    assert rgb[0, 0, 2] > 0.9 and rgb[0, 0, 0] < 0.1                                      # the blue background


def test_render_camera_resolution_scales_each_frame(tiny, tmp_path):
    out = tmp_path / "r"
    res = invoke(["render", "--model", str(tiny.run), "--index", "1", "--camera", str(tiny.holdout / "transforms.json"),
                  "--out", str(out), "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    frames = json.loads((tiny.holdout / "transforms.json").read_text())["frames"]
    names = sorted(Path(f["file_path"]).stem + ".png" for f in frames)
    assert sorted(p.name for p in out.iterdir()) == names
    assert all(_png(out / n).shape == (16, 16, 3) for n in names)


# ----------------------------------------------------------------------------------------- render --orbit
def test_orbit_mp4_decodes_with_the_asked_number_of_frames(cube, tmp_path):
    out = tmp_path / "orbit.mp4"
    res = invoke(["render", "--model", str(cube), "--index", "0", "--orbit", "--out", str(out), "--frames", "6",
                  "--resolution", "21", "--depth", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for path in (out, tmp_path / "orbit_depth.mp4"):
        reader = iio.get_reader(path, format="FFMPEG")
        frames = [f for f in reader]
        reader.close()
        assert len(frames) == 6
        assert frames[0].shape == (22, 22, 3)                  # odd sizes are padded to even for libx264
    mid = frames[0][8:14, 8:14].astype(float) / 255            # a depth frame: coloured where the cube is
    assert mid.sum() > 0 and (frames[0][0, 0] < 10).all()
    assert "ms per frame" in res.stdout


def test_orbit_gif_and_frame_folder(cube, tmp_path):
    gif = tmp_path / "orbit.gif"
    res = invoke(["render", "--model", str(cube), "--index", "0", "--orbit", "--out", str(gif), "--frames", "4",
                  "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    frames = iio.mimread(gif)
    assert len(frames) == 4 and frames[0].shape[:2] == (16, 16)

    folder = tmp_path / "frames"
    res = invoke(["render", "--model", str(cube), "--index", "0", "--orbit", "--out", str(folder), "--frames", "3",
                  "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in folder.iterdir()) == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    # the orbit turns: first and second frames differ (the cube is seen from another side)
    assert np.abs(_png(folder / "frame_0000.png").astype(int) - _png(folder / "frame_0001.png")).max() > 0


def test_render_usage_errors(cube, tiny, tmp_path):
    base = ["render", "--model", str(cube), "--out", str(tmp_path / "o.mp4")]
    res = invoke(base + ["--orbit"])
    assert res.exit_code == 2 and "--index" in error_line(res)
    res = invoke(base + ["--index", "0", "--latent", str(tmp_path / "z.safetensors"), "--orbit"])
    assert res.exit_code == 2 and "--index" in error_line(res)
    res = invoke(base + ["--index", "0"])
    assert res.exit_code == 2 and "--orbit" in error_line(res)
    res = invoke(base + ["--index", "0", "--orbit", "--camera", str(tmp_path / "t.json")])
    assert res.exit_code == 2 and "--orbit" in error_line(res)
    res = invoke(base + ["--index", "0", "--camera", str(tmp_path / "t.json")])
    assert res.exit_code == 2 and "o.mp4" in error_line(res)                   # --camera writes a folder
    res = invoke(["render", "--model", str(cube), "--index", "0", "--camera", str(tmp_path / "missing.json"),
                  "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "missing.json" in error_line(res)
    # a latent file made for another model
    from lolnerf_cli.formats import save_latents
    from lolnerf_cli.model import load_model

    other = tmp_path / "other.safetensors"
    save_latents(other, torch.zeros(1, 16), "0123456789abcdef", ["x"])
    res = invoke(base + ["--latent", str(other), "--orbit"])
    assert res.exit_code == 2 and "other.safetensors" in error_line(res) and "0123456789abcdef" in error_line(res)
    one = tmp_path / "one.safetensors"
    save_latents(one, torch.zeros(1, 16), load_model(tiny.run).model_hash, ["x"])
    res = invoke(["render", "--model", str(tiny.run), "--latent", str(one), "--row", "3", "--orbit",
                  "--out", str(tmp_path / "o.gif")])
    assert res.exit_code == 2 and "one.safetensors" in error_line(res) and "row 3" in error_line(res)


# ----------------------------------------------------------------------------------------- sample
def test_sample_is_deterministic_and_writes_a_grid(tiny, tmp_path):
    from lolnerf_cli.formats import load_latents
    from lolnerf_cli.model import load_model

    hash_ = load_model(tiny.run).model_hash
    outs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        res = invoke(["sample", "--model", str(tiny.run), "--n", "5", "--truncation", "0.8", "--seed", str(seed),
                      "--out", str(tmp_path / name), "--resolution", "12", "--device", "cpu"])
        assert res.exit_code == 0, res.output
        outs[name] = load_latents(tmp_path / name / "latents.safetensors", hash_, 16)
    za, src, _ = outs["a"]
    assert za.shape == (5, 16) and src == [f"sample:seed=5:psi=0.8:{i}" for i in range(5)]
    assert torch.equal(za, outs["b"][0])
    assert (tmp_path / "a" / "grid.png").read_bytes() == (tmp_path / "b" / "grid.png").read_bytes()
    assert not torch.allclose(za, outs["c"][0])
    assert len({tuple(r.tolist()) for r in za}) == 5                        # five different identities
    # one image per identity at the asked size, and all of them on a captioned, enlarged 3 x 2 grid
    singles = [_png(tmp_path / "a" / f"sample_{i:03d}.png") for i in range(5)]
    assert all(im.shape == (12, 12, 3) for im in singles)
    grid = _png(tmp_path / "a" / "grid.png")
    k = -(-SHEET_MIN_TILE // 12)
    assert grid.shape[1] == 3 * 12 * k + 4 * SHEET_PAD and grid.shape[0] > 2 * 12 * k + 3 * SHEET_PAD
    big = np.repeat(np.repeat(singles[1], k, axis=0), k, axis=1)
    x = 2 * SHEET_PAD + 12 * k                                              # second column, first row
    assert any((grid[y:y + 12 * k, x:x + 12 * k] == big).all() for y in range(0, 60))


def test_sample_and_render_default_to_the_training_resolution(tiny, tmp_path):
    res_px = json.loads((tiny.run / "config.json").read_text())["train"]["resolution"]
    res = invoke(["sample", "--model", str(tiny.run), "--n", "1", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert _png(tmp_path / "s" / "sample_000.png").shape == (res_px, res_px, 3)
    res = invoke(["render", "--model", str(tiny.run), "--index", "0", "--orbit", "--frames", "2",
                  "--out", str(tmp_path / "f"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert _png(tmp_path / "f" / "frame_0000.png").shape == (res_px, res_px, 3)
    res = invoke(["interpolate", "--model", str(tiny.run), "--from", "index:0", "--to", "index:1", "--frames", "2",
                  "--out", str(tmp_path / "w"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert _png(tmp_path / "w" / "frame_0000.png").shape == (res_px, res_px, 3)


@pytest.mark.slow
def test_sample_orbit_writes_one_video_per_sample(tiny, tmp_path):
    res = invoke(["sample", "--model", str(tiny.run), "--n", "2", "--seed", "1", "--out", str(tmp_path / "s"),
                  "--orbit", "--frames", "3", "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["grid.png", "latents.safetensors",
                                                                  "sample_000.mp4", "sample_000.png",
                                                                  "sample_001.mp4", "sample_001.png"]
    for name in ("sample_000.mp4", "sample_001.mp4"):
        assert len(iio.mimread(tmp_path / "s" / name, format="FFMPEG")) == 3


def test_truncation_zero_gives_the_mean_and_one_the_table_spread(tiny):
    from lolnerf_cli.model import load_model
    from lolnerf_cli.latent_pick import sample_latents

    loaded = load_model(tiny.run)
    mean = loaded.latents.mean(0)
    z0, _ = sample_latents(loaded, 4, truncation=0.0, seed=1)
    assert torch.allclose(z0, mean.expand(4, -1), atol=1e-6)
    z1, _ = sample_latents(loaded, 4000, truncation=1.0, seed=1)
    assert torch.allclose(z1.mean(0), mean, atol=0.05 * float(loaded.latents.std()) + 1e-6)
    assert torch.allclose(z1.var(0).sum(), loaded.latents.var(0).sum(), rtol=0.1)   # same total variance
    zh, _ = sample_latents(loaded, 4000, truncation=0.5, seed=1)
    assert torch.allclose(zh - mean, 0.5 * (z1 - mean), atol=1e-5)                  # psi scales the offset


# ----------------------------------------------------------------------------------------- interpolate
def test_interpolation_path_hits_every_endpoint():
    from lolnerf_cli.latent_pick import interpolation_path

    ends = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    for frames in (3, 7, 10, 31):
        path = interpolation_path(ends, frames)
        assert path.shape == (frames, 8)
        assert torch.equal(path[0], ends[0]) and torch.equal(path[-1], ends[2])
        k = [i for i, p in enumerate(path) if torch.equal(p, ends[1])]
        assert len(k) == 1 and abs(k[0] - (frames - 1) / 2) <= 1             # the middle latent, mid-way
        for a, b in ((0, k[0]), (k[0], frames - 1)):                         # evenly spaced on each segment
            steps = path[a + 1:b + 1] - path[a:b]
            assert torch.allclose(steps, ((path[b] - path[a]) / (b - a)).expand_as(steps), atol=1e-5)


def test_interpolate_cli_frames_start_and_end_at_the_given_latents(tiny, tmp_path):
    from lolnerf_cli.formats import save_latents
    from lolnerf_cli.model import load_model
    from lolnerf_cli.render import render_image
    from lolnerf_cli.latent_pick import parse_endpoint
    from lolnerf_cli.views import read_view

    loaded = load_model(tiny.run)
    zfile = tmp_path / "z.safetensors"
    zs = torch.randn(2, 16, generator=torch.Generator().manual_seed(3)) * 0.3
    save_latents(zfile, zs, loaded.model_hash, ["a", "b"])
    assert torch.equal(parse_endpoint(loaded, f"{zfile}:1").z, zs[1])
    assert torch.equal(parse_endpoint(loaded, str(zfile)).z, zs[0])
    assert torch.equal(parse_endpoint(loaded, "index:2").z, loaded.latents[2])

    out = tmp_path / "walk"
    res = invoke(["interpolate", "--model", str(tiny.run), "--from", "index:2", "--to", f"{zfile}:1",
                  "--out", str(out), "--frames", "5", "--resolution", "12", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    frames = sorted(out.iterdir())
    assert len(frames) == 5
    cam = read_view(tiny.run).camera(12)
    for frame, z in ((frames[0], loaded.latents[2]), (frames[-1], zs[1])):
        want = render_image(loaded.model, z, cam, loaded.cfg.render)["rgb"]
        assert np.abs(_png(frame).astype(float) / 255 - want).max() <= 1 / 255 + 1e-6

    res = invoke(["interpolate", "--model", str(tiny.run), "--from", "index:0", "--to", "index:1", "--orbit",
                  "--out", str(tmp_path / "w.gif"), "--frames", "4", "--resolution", "12", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert len(iio.mimread(tmp_path / "w.gif")) == 4


def test_interpolate_bad_endpoint_names_it(tiny, tmp_path):
    for spec, needle in (("index:999", "index:999"), ("face.png", "face.png"),
                         (str(tmp_path / "nope.safetensors"), "nope.safetensors")):
        res = invoke(["interpolate", "--model", str(tiny.run), "--from", "index:0", "--to", spec,
                      "--out", str(tmp_path / "w.mp4"), "--frames", "4"])
        assert res.exit_code == 2, res.output
        assert needle in error_line(res)
