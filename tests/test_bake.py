"""Baked rendering (`lolnerf_cli.bake`): baked vs exact agreement (image PSNR, depth where alpha >= 0.5),
empty-space skipping and block culling never changing the image, saved grids, and the commands'
baked path (`render`, `sample --orbit`, `interpolate`; `--exact`, `--bake`, `--save-bake`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from use_models import BOX_HALF, CUBE_PEAK, CUBE_RGB, CUBE_SHARPNESS, cube_surface, error_line, invoke

BAKED_VS_EXACT_DB = 35.0     # the bar for baked vs exact renders
SKIP_DB = 50.0               # skipping empty space (with early termination) / culling empty blocks: ~no change
PSNR_VIEWS = (0.0, 35.0, -60.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from lolnerf_cli.metrics import psnr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return psnr(a[..., None] if a.ndim == 2 else a, b[..., None] if b.ndim == 2 else b)


def textured_run(tmp_path_factory) -> Path:
    """A run folder (the `tiny` network) whose field is a soft-edged solid box with colour varying over
    its surface, like a trained model: density about 20 inside, falling off over ~0.1 scene units, and
    colour logits made of sin(pi x), sin(2 pi x) features of the position. Latents 0 and 1 shift the box."""
    from lolnerf_cli.config import preset
    from lolnerf_cli.formats import write_json
    from lolnerf_cli.model import GenerativeNeRF, save_model

    run = tmp_path_factory.getbasetemp() / "bake_textured"
    if (run / "model.safetensors").is_file():
        return run
    cfg = preset("tiny")
    cfg.train.precision = "fp32"
    m = GenerativeNeRF(cfg.model)
    f = m.field
    half, sharp, peak = (0.35, 0.45, 0.4), 120.0, 20.0
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for i in range(3):                                     # units 2i, 2i+1: relu(+-x_i - half_i)
            f.in_x.weight[2 * i, i], f.in_x.weight[2 * i + 1, i] = 1.0, -1.0
            f.in_x.bias[2 * i: 2 * i + 2] = -half[i]
        for j, col in enumerate((3, 4, 5, 6, 7, 8)):           # units 6..11: 1 + sin(2^k pi x_c) >= 0
            f.in_x.weight[6 + j, col] = 1.0
            f.in_x.bias[6 + j] = 1.0
        f.in_z.weight[0, 0] = 1.0                              # latent 0 moves the +x face, 1 the -x face
        f.in_z.weight[1, 1] = 1.0
        for layer in f.hidden:
            layer.weight[:12, :12] = torch.eye(12)
        f.out.weight[0, :6] = -sharp
        f.out.bias[0] = peak - cfg.model.density_bias
        g = torch.Generator().manual_seed(3)
        f.out.weight[1:, 6:12] = (torch.rand(3, 6, generator=g) - 0.5) * 3.0
        f.out.bias[1:] = torch.tensor([0.3, -0.2, 0.1]) - f.out.weight[1:, 6:12].sum(1)
        m.background.net[-1].bias[:] = torch.tensor([2.0, 2.0, -1.0])
    lat = torch.zeros(3, cfg.model.latent_dim)
    lat[1, 0], lat[2, 1] = 0.1, 0.15
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", cfg.to_dict())
    write_json(run / "view.json", {"yaw": 20.0, "pitch": 10.0, "radius": 2.7, "fov": 30.0})
    save_model(run / "model.safetensors", m, lat, cfg)
    return run


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    return textured_run(tmp_path_factory)


def _renders(run, index, yaw, size=32, **bake_kw):
    from lolnerf_cli.bake import bake, render_baked
    from lolnerf_cli.model import load_model
    from lolnerf_cli.render import render_image
    from lolnerf_cli.views import read_view

    loaded = load_model(run)
    z = loaded.latents[index]
    cam = read_view(run).camera(size, yaw_offset=yaw)
    baked = bake(loaded.model, z, "fp32", **bake_kw)
    return loaded, baked, cam, render_image(loaded.model, z, cam, loaded.cfg.render, "fp32"), \
        render_baked(baked, loaded.model, cam, "fp32")


# ----------------------------------------------------------------------------------------- agreement
@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 2])
def test_baked_matches_exact_image_and_depth(textured, index):
    for yaw in PSNR_VIEWS:
        _, baked, _, ex, bk = _renders(textured, index, yaw)
        assert baked.stats.blocks < baked.stats.blocks_total          # empty blocks were culled
        assert _psnr(ex["rgb"], bk["rgb"]) >= BAKED_VS_EXACT_DB, yaw
        assert _psnr(ex["fg"], bk["fg"]) >= BAKED_VS_EXACT_DB, yaw
        both = (ex["alpha"] >= 0.5) & (bk["alpha"] >= 0.5)
        assert both.sum() > 100                                     # the box covers much of the frame
        # alpha crosses 0.5 at the same pixels except along the silhouette
        assert np.mean((ex["alpha"] >= 0.5) != (bk["alpha"] >= 0.5)) < 0.03
        err = np.abs(ex["depth"] - bk["depth"])[both]
        assert np.median(err) < 0.01 and err.max() < 0.05, (np.median(err), err.max())


def test_baked_cube_has_the_true_depth_and_colour(cube):
    _, _, cam, ex, bk = _renders(cube, 0, 0.0, size=24)
    centre = bk["depth"][10:14, 10:14]
    assert np.isfinite(centre).all()
    # the expected depth of the front face, integrated finely along z (logit 100 - 1000 relu(z - half))
    zs = np.linspace(1.0, 0.0, 200001)
    sigma = np.logaddexp(0.0, CUBE_PEAK - CUBE_SHARPNESS * np.maximum(zs - BOX_HALF[2], 0.0))
    tau = np.concatenate([[0.0], np.cumsum(sigma[:-1] * (zs[0] - zs[1]))])
    w = np.exp(-tau) * sigma * (zs[0] - zs[1])
    assert centre.mean() == pytest.approx(float((w * (2.7 - zs)).sum() / w.sum()), abs=0.005)
    assert centre.mean() == pytest.approx(2.7 - cube_surface(10.0)[2], abs=0.08)   # as the exact renderer's test
    assert np.abs(bk["rgb"][12, 12] - np.array(CUBE_RGB)).max() < 0.02
    assert np.isnan(bk["depth"][0, 0]) and bk["alpha"][0, 0] < 1e-3          # a ray that misses the box
    assert _psnr(ex["rgb"], bk["rgb"]) >= BAKED_VS_EXACT_DB


@pytest.mark.slow
def test_empty_space_skipping_and_culling_do_not_change_the_image(textured, cube):
    from lolnerf_cli.bake import bake, render_baked

    for run, index in ((textured, 1), (cube, 0)):
        loaded, baked, cam, _, skipped = _renders(run, index, 25.0)
        every = render_baked(baked, loaded.model, cam, "fp32", skip=False)   # every sample, no early stop
        full = bake(loaded.model, loaded.latents[index], "fp32", threshold=0.0)  # no block culled
        assert full.stats.blocks == full.stats.blocks_total > baked.stats.blocks
        unculled = render_baked(full, loaded.model, cam, "fp32", skip=False)
        for key in ("rgb", "alpha", "fg"):
            assert _psnr(every[key], skipped[key]) >= SKIP_DB, key
            assert _psnr(unculled[key], skipped[key]) >= SKIP_DB, key


@pytest.mark.slow
def test_a_fog_field_is_kept_whole(tiny):
    """The briefly trained tiny model is still a fog filling the sphere: nothing may be culled."""
    loaded, baked, cam, ex, bk = _renders(tiny.run, 0, 0.0)
    assert baked.stats.blocks == baked.stats.blocks_total
    assert _psnr(ex["rgb"], bk["rgb"]) >= BAKED_VS_EXACT_DB


def test_bench_measures_baked_rendering_of_a_run(textured):
    import torch as _torch

    from lolnerf_cli.bench import measure_run

    r = measure_run(textured, _torch.device("cpu"), "fp32", size=32)
    assert r["preset"] == "tiny" and r["bake_resolution"] == 64
    assert 0 < r["bake_blocks"] < r["bake_blocks_in_sphere"]
    assert r["baked_ms_per_frame_32"] > 0 and r["render_ms_per_frame_32"] > 0 and r["bake_seconds"] > 0
    assert r["baked_vs_exact_psnr"] >= BAKED_VS_EXACT_DB


# ----------------------------------------------------------------------------------------- files
@pytest.mark.slow
def test_saved_bake_renders_identically_and_is_checked(textured, tiny, tmp_path):
    from lolnerf_cli.bake import BakedField, render_baked
    from lolnerf_cli.errors import InputError
    from lolnerf_cli.formats import load_safetensors, save_safetensors
    from lolnerf_cli.model import load_model

    loaded, baked, cam, _, first = _renders(textured, 1, 10.0)
    path = tmp_path / "b.safetensors"
    baked.save(path)
    again = BakedField.load(path, loaded.model)
    assert torch.equal(again.latent, loaded.latents[1])
    second = render_baked(again, loaded.model, cam, "fp32")
    for key in ("rgb", "alpha", "fg"):
        assert np.array_equal(first[key], second[key])
    assert path.stat().st_size < 2 * baked.atlas.numel() + 4 * baked.index.numel() + 100_000   # float16 atlas

    with pytest.raises(InputError, match="another model"):
        BakedField.load(path, load_model(tiny.run).model)          # same configuration, other weights
    tensors, meta = load_safetensors(path)
    for bad, words in ((dict(tensors, atlas=tensors["atlas"][:-1]), "one to one"),
                       (dict(tensors, index=tensors["index"].float()), "int32"),
                       ({k: v for k, v in tensors.items() if k != "latent"}, "missing"),
                       (dict(tensors, atlas=tensors["atlas"] * float("nan")), "NaN")):
        save_safetensors(tmp_path / "bad.safetensors", bad, meta)
        with pytest.raises(InputError, match=words) as exc:
            BakedField.load(tmp_path / "bad.safetensors", loaded.model)
        assert "bad.safetensors" in str(exc.value)
    save_safetensors(tmp_path / "lat.safetensors", tensors, {**meta, "format": "lolnerf-latents"})
    with pytest.raises(InputError, match="not a lolnerf baked grid"):
        BakedField.load(tmp_path / "lat.safetensors")


# ----------------------------------------------------------------------------------------- commands
def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64) / 255


@pytest.mark.slow
def test_render_orbit_bakes_by_default_and_reuses_a_saved_bake(textured, tmp_path):
    base = ["render", "--model", str(textured), "--index", "1", "--orbit", "--frames", "4", "--resolution", "24",
            "--device", "cpu"]
    res = invoke(base + ["--out", str(tmp_path / "b"), "--save-bake", str(tmp_path / "g.safetensors")])
    assert res.exit_code == 0, res.output
    assert "baked 1 latent" in res.stdout and (tmp_path / "g.safetensors").is_file()
    res = invoke(base + ["--out", str(tmp_path / "e"), "--exact"])
    assert res.exit_code == 0, res.output
    assert "baked" not in res.stdout
    res = invoke(["render", "--model", str(textured), "--bake", str(tmp_path / "g.safetensors"), "--orbit",
                  "--frames", "4", "--resolution", "24", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    for i in range(4):
        name = f"frame_{i:04d}.png"
        assert np.array_equal(_png(tmp_path / "b" / name), _png(tmp_path / "r" / name))       # the same grid
        assert _psnr(_png(tmp_path / "b" / name), _png(tmp_path / "e" / name)) >= BAKED_VS_EXACT_DB


@pytest.mark.slow
def test_render_camera_bakes_many_frames_and_keeps_depth(textured, tmp_path):
    from lolnerf_cli.cameras import focal_from_fov, look_at, spherical_eye

    f = focal_from_fov(30.0, 40)           # 9 frames of 40 x 40: baking once is cheaper than 9 exact frames
    frames = [{"file_path": f"images/v{k}.png", "transform_matrix": look_at(spherical_eye(yaw, 5.0, 2.7)).tolist(),
               "fl_x": f, "fl_y": f, "cx": 20, "cy": 20, "w": 40, "h": 40} for k, yaw in enumerate(range(-40, 41, 10))]
    tf = tmp_path / "t.json"
    tf.write_text(json.dumps({"frames": frames}))
    outs = {}
    for flag in ([], ["--exact"]):
        out = tmp_path / ("exact" if flag else "baked")
        res = invoke(["render", "--model", str(textured), "--index", "2", "--camera", str(tf), "--out", str(out),
                      "--depth", "--device", "cpu"] + flag)
        assert res.exit_code == 0, res.output
        assert ("baked 1 latent" in res.stdout) == (not flag)
        outs[bool(flag)] = out
    for k in range(len(frames)):
        assert _psnr(_png(outs[False] / f"v{k}.png"), _png(outs[True] / f"v{k}.png")) >= BAKED_VS_EXACT_DB
        d_b, d_e = (np.load(outs[x] / f"v{k}_depth.npy") for x in (False, True))
        both = np.isfinite(d_b) & np.isfinite(d_e)
        assert both.sum() > 50 and np.abs(d_b - d_e)[both].max() < 0.05


@pytest.mark.slow
def test_bake_flag_errors(textured, tiny, tmp_path):
    grid = tmp_path / "g.safetensors"
    res = invoke(["render", "--model", str(textured), "--index", "0", "--orbit", "--frames", "2", "--resolution", "16",
                  "--device", "cpu", "--out", str(tmp_path / "o"), "--save-bake", str(grid)])
    assert res.exit_code == 0, res.output
    base = ["render", "--model", str(textured), "--orbit", "--frames", "2", "--resolution", "16", "--device", "cpu",
            "--out", str(tmp_path / "p")]
    res = invoke(base + ["--bake", str(grid), "--index", "1"])               # baked from latent 0, not 1
    assert res.exit_code == 2 and "g.safetensors" in error_line(res) and "latent" in error_line(res)
    res = invoke(base + ["--bake", str(grid), "--index", "0"])               # the same latent: fine
    assert res.exit_code == 0, res.output
    res = invoke(base + ["--bake", str(grid), "--exact"])
    assert res.exit_code == 2 and "--exact" in error_line(res)
    res = invoke(base + ["--index", "0", "--exact", "--save-bake", str(tmp_path / "x.safetensors")])
    assert res.exit_code == 2 and "--exact" in error_line(res)
    res = invoke(["render", "--model", str(tiny.run), "--bake", str(grid), "--orbit", "--out", str(tmp_path / "q"),
                  "--device", "cpu"])
    assert res.exit_code == 2 and "g.safetensors" in error_line(res) and "another model" in error_line(res)
    res = invoke(base + ["--bake", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "missing.safetensors" in error_line(res)


@pytest.mark.slow
def test_sample_orbit_and_interpolate_use_the_baked_path(textured, tmp_path):
    res = invoke(["sample", "--model", str(textured), "--n", "2", "--out", str(tmp_path / "s"), "--orbit",
                  "--frames", "8", "--resolution", "40", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "baked 2 latent" in res.stdout and "16 frame(s) ray-marched" in res.stdout
    # a fixed-view walk: every frame has its own latent; at this size one bake costs more than one exact frame
    res = invoke(["interpolate", "--model", str(textured), "--from", "index:0", "--to", "index:1",
                  "--out", str(tmp_path / "w"), "--frames", "3", "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "through the network" in res.stdout and "baked" not in res.stdout
    res = invoke(["interpolate", "--model", str(textured), "--from", "index:0", "--to", "index:1",
                  "--out", str(tmp_path / "w2"), "--frames", "3", "--resolution", "160", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "baked 3 latent" in res.stdout


@pytest.mark.slow
def test_fuzz_baked_grid_files(tmp_path):
    """Random and mutated grid files: `BakedField.load` reads them or raises one InputError naming the file,
    and whatever it accepts can be ray-marched."""
    from hypothesis import given, settings, strategies as st

    from lolnerf_cli.bake import BakedField, march
    from lolnerf_cli.errors import InputError
    from lolnerf_cli.formats import save_safetensors

    path = tmp_path / "fz.safetensors"
    base_meta = {"format": "lolnerf-bake", "version": "1", "model_hash": "x", "weights": "y", "resolution": "16",
                 "block": "8", "radius": "1.0", "threshold": "0.001", "source": "s"}
    origins = torch.tensor([[0.0, 0.0, 2.7], [0.3, -0.2, 2.7]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [-0.1, 0.05, -1.0]])

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(nb=st.integers(0, 3), order=st.permutations(range(8)),
           kind=st.sampled_from(["none", "none", "none", "index", "meta", "shape", "values", "bytes"]),
           bad=st.sampled_from([(0, -2), (3, 4), (5, 0), (7, 1)]), meta_key=st.sampled_from(sorted(base_meta)),
           meta_val=st.sampled_from(["", "0", "-1", "7", "24", "nan", "1e9", "abc", "2", "64"]),
           shape_cut=st.integers(1, 3), scale=st.sampled_from([1e5, float("inf")]), blob=st.binary(max_size=64))
    def check(nb, order, kind, bad, meta_key, meta_val, shape_cut, scale, blob):
        idx = [-1] * 8
        for k in range(nb):                              # a valid block map ...
            idx[order[k]] = k
        meta = dict(base_meta)
        atlas = torch.randn(nb, 4, 9, 9, 9)
        if kind == "index":                              # ... unless this example breaks something
            idx[bad[0]] = bad[1]
        elif kind == "meta":
            meta[meta_key] = meta_val
        elif kind == "shape":
            atlas = atlas[..., :9 - shape_cut]
        elif kind == "values":
            atlas = atlas * scale
        save_safetensors(path, {"index": torch.tensor(idx, dtype=torch.int32).reshape(2, 2, 2),
                                "atlas": atlas.half(), "latent": torch.zeros(4)}, meta)
        if kind == "bytes":
            path.write_bytes(blob)
        try:
            grid = BakedField.load(path)
        except InputError as exc:
            assert "fz.safetensors" in str(exc)
            return
        alpha, _, _ = march(grid, origins, dirs)
        assert torch.isfinite(alpha).all() and (alpha <= 1 + 1e-5).all()
        accepted.append(1)

    accepted: list[int] = []
    check()
    assert accepted                                      # valid files were among the examples


def test_a_bake_that_does_not_match_the_network_is_not_used(textured, monkeypatch):
    """'auto' checks each new bake on a small view; a grid that cannot hold the field (here: its rendering
    replaced by a wrong picture) is dropped and every frame of that latent is drawn through the network."""
    from lolnerf_cli import frames
    from lolnerf_cli.model import load_model
    from lolnerf_cli.render import render_image
    from lolnerf_cli.views import read_view

    loaded = load_model(textured)
    z = loaded.latents[1]
    cams = [read_view(textured).camera(24, yaw_offset=y) for y in (-20.0, 0.0, 20.0)]
    good = frames.FrameRenderer(loaded, "fp32", mode="auto")
    out = [good.render(z, c, True) for c in cams]
    assert good.stats.baked_frames == 3 and good.stats.rejected == 0 and good.stats.check_psnr >= frames.CHECK_MIN_PSNR

    real = frames.render_baked

    def wrong(*a, **k):
        r = real(*a, **k)
        return {**r, "rgb": 1.0 - r["rgb"]}

    monkeypatch.setattr(frames, "render_baked", wrong)
    bad = frames.FrameRenderer(loaded, "fp32", mode="auto")
    out = [bad.render(z, c, True) for c in cams]
    assert bad.stats.rejected == 1 and bad.stats.baked_frames == 0 and bad.stats.exact_frames == 3
    assert bad.stats.check_psnr < frames.CHECK_MIN_PSNR and "did not match" in bad.stats.describe()
    assert np.array_equal(out[0]["rgb"], render_image(loaded.model, z, cams[0], loaded.cfg.render, "fp32")["rgb"])
