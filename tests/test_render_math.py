"""Hand-computed checks of the volume-rendering primitives (render.py, cameras.py) and of the latent
field (model/field.py), in the spirit of nerfacc's unit tests: small inputs whose answers are worked out
on paper, not by the code under test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lolnerf_cli.cameras import sphere_bounds
from lolnerf_cli.config import ModelConfig
from lolnerf_cli.model.encoding import posenc
from lolnerf_cli.model.field import LatentField
from lolnerf_cli.render import composite_weights, sample_pdf


# ----------------------------------------------------------------------------------------- compositing
def test_composite_weights_by_hand():
    # sigma 1, 2, 0.5 at t = 0, 0.5, 1 with far = 2: deltas 0.5, 0.5, 1 -> optical depths 0.5, 1, 0.5;
    # w_i = T_i (1 - e^-tau_i) with T = 1, e^-0.5, e^-1.5.
    sigma = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.0, 0.5, 1.0]])
    w = composite_weights(sigma, t, torch.tensor([2.0]), torch.tensor([1.0]))
    e = math.exp
    expected = [1 - e(-0.5), e(-0.5) * (1 - e(-1.0)), e(-1.5) * (1 - e(-0.5))]
    assert w[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert float(w.sum()) == pytest.approx(1 - e(-2.0), abs=1e-6)      # 1 - transmittance through all of it


def test_composite_weights_scale_with_direction_length_and_clamp_far():
    sigma = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.0, 0.5, 1.0]])
    # unnormalised directions of length 2: every delta is twice as long in distance
    w2 = composite_weights(sigma, t, torch.tensor([2.0]), torch.tensor([2.0]))
    e = math.exp
    assert w2[0].tolist() == pytest.approx([1 - e(-1.0), e(-1.0) * (1 - e(-2.0)), e(-3.0) * (1 - e(-1.0))], abs=1e-6)
    # far before the last sample: the last interval has zero length (weight 0), not a negative one
    w = composite_weights(sigma, t, torch.tensor([0.8]), torch.tensor([1.0]))
    assert float(w[0, 2]) == 0.0
    assert w[0, :2].tolist() == pytest.approx([1 - e(-0.5), e(-0.5) * (1 - e(-1.0))], abs=1e-6)


def test_composite_weights_empty_and_opaque():
    t = torch.tensor([[0.0, 1.0, 2.0]])
    assert composite_weights(torch.zeros(1, 3), t, torch.tensor([3.0]), torch.ones(1)).abs().max() == 0
    w = composite_weights(torch.tensor([[0.0, 1e4, 1.0]]), t, torch.tensor([3.0]), torch.ones(1))
    assert w[0].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)    # the first opaque sample takes it all


# ----------------------------------------------------------------------------------------- inverse CDF
def test_sample_pdf_bin_centres_by_hand():
    # bins [0, 1] and [1, 2] with weights 1 : 3 -> CDF 0, 0.25, 1. u = 1/8, 3/8, 5/8, 7/8 land at
    # 0.5 (half of bin 0), then 1 + (u - 0.25) / 0.75 in bin 1.
    edges = torch.tensor([[0.0, 1.0, 2.0]])
    t = sample_pdf(edges, torch.tensor([[1.0, 3.0]]), 4, perturb=False)
    assert t[0].tolist() == pytest.approx([0.5, 1 + 1 / 6, 1.5, 1 + 5 / 6], abs=1e-4)


def test_sample_pdf_skips_empty_bins_and_stratifies():
    edges = torch.tensor([[0.0, 1.0, 2.0, 4.0]])
    w = torch.tensor([[0.0, 1.0, 0.0]])
    t = sample_pdf(edges, w, 8, perturb=False)
    assert bool(((t > 1.0 - 1e-3) & (t < 2.0 + 1e-3)).all())        # all in the one bin with weight
    assert t[0].tolist() == pytest.approx([1 + (k + 0.5) / 8 for k in range(8)], abs=1e-3)
    g = torch.Generator().manual_seed(0)
    ts = sample_pdf(edges.expand(64, 4), w.expand(64, 3), 8, perturb=True, generator=g, stratified=True)
    assert bool((ts[:, 1:] >= ts[:, :-1]).all())                   # stratified u: ascending t
    k = torch.arange(8, dtype=torch.float32)
    assert bool(((ts >= 1 + k / 8 - 1e-3) & (ts <= 1 + (k + 1) / 8 + 1e-3)).all())   # one per stratum


# ----------------------------------------------------------------------------------------- sphere bounds
def test_sphere_bounds_by_hand():
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 2.0, 3.0], [0.0, 1.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -2.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far, hit = sphere_bounds(origins, dirs, 1.0, near_min=0.05)
    assert hit.tolist() == [True, True, True, False, False]           # the last one only grazes the sphere
    assert near[:3].tolist() == pytest.approx([2.0, 1.0, 0.05])       # t counts direction lengths; inside: near_min
    assert far[:3].tolist() == pytest.approx([4.0, 2.0, 1.0])
    assert bool((near[3:] == far[3:]).all())                          # misses: zero-length interval


def test_sphere_bounds_off_axis_chord():
    # a ray at height 0.6 through a unit sphere crosses it along a chord of half-length 0.8
    near, far, hit = sphere_bounds(torch.tensor([[0.0, 0.6, 5.0]]), torch.tensor([[0.0, 0.0, -1.0]]), 1.0)
    assert bool(hit[0]) and float(near[0]) == pytest.approx(4.2) and float(far[0]) == pytest.approx(5.8)


# ----------------------------------------------------------------------------------------- latent field
def _plain_forward(field: LatentField, x: torch.Tensor, z: torch.Tensor, skips: tuple[int, ...]):
    """The textbook network: [enc(x), z] concatenated to every sample, and again at each skip layer."""
    xe = posenc(x / field.cfg.scene_radius, field.freqs)
    zs = z[:, None, :].expand(*x.shape[:-1], z.shape[-1])
    inp = torch.cat([xe, zs], -1)
    h = F.relu(F.linear(inp, torch.cat([field.in_x.weight, field.in_z.weight], 1), field.in_x.bias))
    for i, layer in enumerate(field.hidden, start=1):
        if i in skips:
            w = torch.cat([layer.weight, field.skip_x[str(i)].weight, field.skip_z[str(i)].weight], 1)
            h = F.relu(F.linear(torch.cat([h, inp], -1), w, layer.bias))
        else:
            h = F.relu(layer(h))
    raw = field.out(h)
    return F.softplus(raw[..., 0] + field.cfg.density_bias), torch.sigmoid(raw[..., 1:])


def test_latent_field_equals_the_plain_concatenating_network():
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=5, width=16, depth=4, skips=(2,), pos_freqs=3)
    field = LatentField(cfg)
    x = torch.rand(3, 7, 3) * 2 - 1
    z = torch.randn(3, 5)
    with torch.no_grad():
        sigma, rgb = field(x, z)
        sigma_ref, rgb_ref = _plain_forward(field, x, z, cfg.skips)
    assert torch.allclose(sigma, sigma_ref, atol=1e-5) and torch.allclose(rgb, rgb_ref, atol=1e-5)
