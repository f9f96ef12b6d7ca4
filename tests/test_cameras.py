"""cameras.py: ray-sphere bounds worked out by hand."""

from __future__ import annotations

import pytest
import torch

from lolnerf_cli.cameras import sphere_bounds


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
