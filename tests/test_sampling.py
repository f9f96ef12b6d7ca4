"""The proposal sampler and the anti-aliased (integrated) encoding: hand-computed pieces, training with
them end to end, exact resume, and old run folders (hierarchical sampler) loading unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lolnerf_cli.config import Config, config_from_dict, preset
from lolnerf_cli.errors import InputError
from lolnerf_cli.model import GenerativeNeRF, load_model
from lolnerf_cli.model.encoding import ipe, posenc
from lolnerf_cli.render import interlevel_loss, render_rays, resample_edges, stratified_edges
from lolnerf_cli.train import Trainer, resolve_config, use_sampler


def _proposal_cpu() -> Config:
    """The `cpu` network with the proposal sampler (the `cpu` preset before it went back to hierarchical)."""
    cfg = preset("cpu")
    use_sampler(cfg, "proposal")
    return cfg


def _proposal_tiny(run, steps=20):
    cfg = resolve_config(run, "tiny", False, {"train.steps": steps, "train.precision": "fp32",
                                              "train.preview_every": 0, "render.sampler": "proposal"})
    cfg.render.n_samples = 16
    return cfg


def test_interlevel_loss_by_hand():
    prop_edges = torch.tensor([[0.0, 1.0, 2.0]])
    prop_w = torch.tensor([[0.5, 0.5]])
    edges = torch.tensor([[0.0, 0.5, 1.5, 2.0]])
    # bounds: [0, .5] meets proposal bin 0 (0.5); [.5, 1.5] meets both (1.0); [1.5, 2] meets bin 1 (0.5)
    inside = torch.tensor([[0.2, 0.9, 0.1]])
    assert interlevel_loss(edges, inside, prop_edges, prop_w).item() == pytest.approx(0.0)
    over = torch.tensor([[0.7, 0.2, 0.1]])              # 0.7 > 0.5: penalised (0.2)^2 / 0.7
    assert interlevel_loss(edges, over, prop_edges, prop_w).item() == pytest.approx(0.04 / 0.7, rel=1e-5)
    # an interval lying inside one proposal bin is bounded by that bin alone
    fine = torch.tensor([[1.2, 1.4]])
    assert interlevel_loss(fine, torch.tensor([[0.6]]), prop_edges, prop_w).item() == pytest.approx(0.01 / 0.6, rel=1e-5)


def test_resampled_edges_are_sorted_inside_the_range_and_follow_the_weights():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0])
    gen = torch.Generator().manual_seed(0)
    edges = stratified_edges(near, far, 16, True, gen)
    assert edges.shape == (2, 17)
    assert torch.all(edges[:, 1:] >= edges[:, :-1])
    assert torch.equal(edges[:, 0], near) and torch.equal(edges[:, -1], far)
    even = stratified_edges(near, far, 4, False)
    assert torch.allclose(even[0], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    w = torch.zeros(2, 16)
    w[:, 5] = 1.0                                         # all the mass in bin 5
    for perturb in (True, False):
        new = resample_edges(edges, w, 32, perturb, gen)
        assert new.shape == (2, 33) and torch.all(new[:, 1:] >= new[:, :-1])
        assert torch.all(new >= near[:, None] - 1e-6) and torch.all(new <= far[:, None] + 1e-6)
        mids = 0.5 * (new[:, 1:] + new[:, :-1])
        in_bin = (mids >= edges[:, 5:6]) & (mids <= edges[:, 6:7])
        assert in_bin.float().mean() > 0.85               # nearly every sample where the weight is


def test_integrated_encoding_is_the_plain_one_at_zero_variance_and_fades_high_frequencies():
    x = torch.rand(5, 7, 3) * 2 - 1
    assert torch.allclose(ipe(x, torch.zeros(5, 7), 4), posenc(x, 4), atol=1e-6)
    var = torch.full((5, 7), 0.05)
    enc = ipe(x, var, 4)
    assert torch.equal(enc[..., :3], x)                   # the identity part is kept
    sines = enc[..., 3:3 + 12].reshape(5, 7, 4, 3)
    plain = posenc(x, 4)[..., 3:3 + 12].reshape(5, 7, 4, 3)
    for k in range(4):                                    # octave k is damped by exp(-(2^k pi)^2 var / 2)
        damp = math.exp(-0.5 * (2 ** k * math.pi) ** 2 * 0.05)
        assert torch.allclose(sines[:, :, k], plain[:, :, k] * damp, atol=1e-6)


def test_proposal_render_returns_the_interlevel_loss_only_with_gradients():
    torch.manual_seed(0)
    cfg = _proposal_cpu()
    model = GenerativeNeRF(cfg.model)
    with torch.no_grad():          # a dense main field and a nearly empty proposal: the bound is violated
        model.field.out.bias[0] = 5.0
        model.proposals[0].out.bias[0] = -5.0
    o = torch.tensor([[0.0, 0.0, 2.7]]).repeat(8, 1)
    d = torch.cat([torch.randn(8, 2) * 0.1, -torch.ones(8, 1)], -1)
    z = torch.randn(8, cfg.model.latent_dim) * 0.01
    out = render_rays(model, o, d, z, cfg.render, perturb=True, pix=torch.full((8,), 0.01))
    assert out.weights.shape == (8, cfg.render.n_samples) and out.interlevel is not None
    assert out.interlevel.item() > 0
    out.interlevel.backward()
    assert model.proposals[0].in_x.weight.grad.abs().sum() > 0   # the proposal learns from it ...
    assert model.field.in_x.weight.grad is None                   # ... the main field does not
    with torch.no_grad():
        assert render_rays(model, o, d, z, cfg.render).interlevel is None


@pytest.mark.slow
def test_training_with_the_proposal_sampler_resumes_exactly_and_loads(synth_data, tmp_path):
    cfg = _proposal_tiny(tmp_path / "a", steps=16)
    assert cfg.render.sampler == "proposal" and cfg.model.encoding == "ipe" and cfg.model.proposal_levels == 1
    Trainer(synth_data, tmp_path / "a", cfg).fit()
    Trainer(synth_data, tmp_path / "b", _proposal_tiny(tmp_path / "b", steps=16)).fit(stop_at=7)
    Trainer(synth_data, tmp_path / "b", resolve_config(tmp_path / "b", None, True, {}), resume=True).fit()
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("proposals.0.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert float(a["pixel_floor"]) > 0 and float(a["point_footprint"]) > 0
    loaded = load_model(tmp_path / "a")
    assert loaded.cfg.render.sampler == "proposal"
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss_interlevel"]) and r["loss_interlevel"] >= 0 for r in log)


def test_old_run_configuration_keeps_its_sampler_and_hash():
    """A config.json written before the proposal sampler existed (no sampler / encoding keys) loads as the
    hierarchical sampler with NeRF's encoding, and its model hash is the one it had then."""
    old = Config().to_dict()
    for key in ("encoding", "proposal_levels", "proposal_width", "proposal_depth", "proposal_freqs"):
        old["model"].pop(key)
    for key in ("sampler", "proposal_samples", "n_samples"):
        old["render"].pop(key)
    old["train"].pop("interlevel_weight")
    old["train"].pop("encoding_anneal")
    cfg = config_from_dict(old)
    assert cfg.render.sampler == "hierarchical" and cfg.model.encoding == "pe" and cfg.model.proposal_levels == 0
    # the hash of that configuration as lolnerf 0.1.0 computed it (before these keys existed)
    assert cfg.model_hash() == "ddb40f04a66a887b"
    assert isinstance(GenerativeNeRF(cfg.model).proposals, torch.nn.ModuleList)
    assert "pixel_floor" not in GenerativeNeRF(cfg.model).state_dict()


def test_inconsistent_sampler_settings_are_clear_errors():
    cfg = _proposal_cpu().to_dict()
    cfg["model"]["proposal_levels"] = 0
    with pytest.raises(InputError, match="proposal_levels"):
        config_from_dict(cfg)
    cfg = preset("tiny").to_dict()
    cfg["model"]["encoding"] = "ipe"
    with pytest.raises(InputError, match="ipe"):
        config_from_dict(cfg)
    cfg = preset("tiny").to_dict()
    cfg["render"]["sampler"] = "random"
    with pytest.raises(InputError, match="sampler"):
        config_from_dict(cfg)
    c = _proposal_cpu()
    use_sampler(c, "hierarchical")
    assert c.check() and c.model.proposal_levels == 0 and c.main_samples_per_ray() == 32
    assert c.model_hash() == preset("cpu").model_hash()
    with pytest.raises(InputError, match="sampler"):
        use_sampler(c, "nope")


def test_encoding_octaves_stop_at_the_training_nyquist_limit_and_open_coarse_to_fine(synth_data, tmp_path):
    from lolnerf_cli.model.encoding import nyquist_octaves, octave_weights

    assert torch.allclose(octave_weights(4, 2.0), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(octave_weights(4, 2.5), torch.tensor([1.0, 1.0, 0.5, 0.0]))
    # pixels 0.045 units wide (32 px, 30 deg, 2.7 away): octave 2^4 pi has a 2 / 16 = 0.125 period (2.8 px),
    # octave 2^5 pi 1.4 px: five octaves are resolved
    assert nyquist_octaves(0.045, 6) == 5 and nyquist_octaves(0.0227, 6) == 6 and nyquist_octaves(0.0227, 10) == 6
    cfg = _proposal_tiny(tmp_path / "a", steps=40)
    cfg.model.pos_freqs = 8
    cfg.train.encoding_anneal = 0.5
    t = Trainer(synth_data, tmp_path / "a", cfg)
    limit = t.model.field.octaves()
    assert 1 < limit < 8                                    # 32 px photos do not resolve all 8 octaves
    windows = [t.encoding_window(s) for s in (0, 10, 19, 20, 39)]
    assert windows[0] == pytest.approx(1.0) and windows[0] < windows[1] < windows[2] < limit
    assert windows[3] is None and windows[4] is None        # all open after half the steps
    x = torch.rand(1, 5, 3)
    var = torch.zeros(1, 5)
    enc = t.model.field.encode(x, var)
    sines = enc[..., 3:3 + 24].reshape(1, 5, 8, 3)
    assert torch.all(sines[:, :, int(math.ceil(limit)):] == 0)   # octaves above the limit are off
    assert torch.any(sines[:, :, : int(limit)] != 0)


def test_a_new_pe_run_keeps_only_the_octaves_its_photos_resolve(synth_data, tmp_path):
    """NeRF's encoding has no blur: a new run drops the octaves finer than two training pixels (32 px photos,
    30 deg, 2.6-2.8 away: five), config.json says so, and resuming or loading keeps the run's own count."""
    cfg = resolve_config(tmp_path / "a", "tiny", False, {"train.steps": 2, "train.precision": "fp32",
                                                         "train.preview_every": 0, "model.pos_freqs": 8})
    assert cfg.model.encoding == "pe"
    Trainer(synth_data, tmp_path / "a", cfg).fit(stop_at=1)
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["model"]["pos_freqs"] == 5
    assert load_model(tmp_path / "a").model.field.in_x.in_features == 3 * (1 + 2 * 5)
    again = resolve_config(tmp_path / "a", None, True, {})
    Trainer(synth_data, tmp_path / "a", again, resume=True).fit()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model"]["pos_freqs"] == 5
    kept = resolve_config(tmp_path / "b", "tiny", False, {"train.steps": 1, "train.precision": "fp32",
                                                          "train.preview_every": 0})
    Trainer(synth_data, tmp_path / "b", kept).fit()          # 4 octaves are all resolved: unchanged
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"]["pos_freqs"] == kept.model.pos_freqs == 4


@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_whole_images_take_image_sample_factor_times_the_training_samples(name):
    from dataclasses import replace

    from lolnerf_cli.cameras import Camera, look_at, spherical_eye
    from lolnerf_cli.render import image_samples, render_image

    cfg = preset(name)
    rc = cfg.render
    assert rc.image_sample_factor == 2
    doubled = image_samples(rc)
    assert doubled.image_sample_factor == 1 and image_samples(doubled) is doubled
    if rc.sampler == "proposal":
        assert doubled.n_samples == 2 * rc.n_samples
        assert doubled.proposal_samples == tuple(2 * p for p in rc.proposal_samples)
    else:
        assert (doubled.n_coarse, doubled.n_fine) == (2 * rc.n_coarse, 2 * rc.n_fine)
    if name == "paper":
        return                                        # the paper network is too slow to render in a test
    torch.manual_seed(0)
    model = GenerativeNeRF(cfg.model).eval()
    z = torch.randn(cfg.model.latent_dim) * 0.3
    cam = Camera(look_at(spherical_eye(20.0, 10.0, 2.7)), 20.0, 20.0, 8.0, 8.0, 16, 16)
    with torch.no_grad():
        img = render_image(model, z, cam, rc)["rgb"]
        same = render_image(model, z, cam, doubled)["rgb"]
        once = render_image(model, z, cam, replace(rc, image_sample_factor=1))["rgb"]
    assert np.array_equal(img, same)                  # the factor is applied once, inside render_image
    assert not np.array_equal(img, once)
    with pytest.raises(InputError, match="image_sample_factor must be at least 1"):
        replace(cfg, render=replace(rc, image_sample_factor=0)).check()
