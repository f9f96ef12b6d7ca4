"""render.py's volume-rendering primitives checked against small inputs worked out by hand (in the
spirit of nerfacc's unit tests), not against the code under test."""

from __future__ import annotations

import math

import pytest
import torch

from lolnerf_cli.render import composite_weights, sample_pdf


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
