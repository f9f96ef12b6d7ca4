"""The corrections a bake applies where a surface is thinner than a voxel (`lolnerf_cli.bake_surface`),
each on a small lattice whose right answer is known by construction. The end-to-end effect on a trained
model is measured by `examples/baked_vs_exact.py --without ...` (README, "Baked rendering")."""

from __future__ import annotations

import math

import torch

from lolnerf_cli import bake_surface as bs

N = 6                     # voxels per axis of the test lattice; its (N + 1)^3 corners are all evaluated
RADIUS = 1.0
VOXEL = 2.0 * RADIUS / N
OPAQUE, EMPTY = 1000.0, -20.0        # density logits: opaque over one step / no density


def lattice():
    """vidx [M, 3] (z, y, x), slot [(N+1)^3], pts [M, 3] (x, y, z) of the full lattice."""
    ar = torch.arange(N + 1)
    zz, yy, xx = torch.meshgrid(ar, ar, ar, indexing="ij")
    vidx = torch.stack([zz, yy, xx], -1).reshape(-1, 3)
    slot = torch.arange(vidx.shape[0], dtype=torch.int32)
    pts = vidx.flip(-1).float() * VOXEL - RADIUS
    return vidx, slot, pts


def row(z, y, x):
    return (z * (N + 1) + y) * (N + 1) + x


def half_space(z_surface: float):
    """values [M, 4] of a solid filling z < z_surface: opaque and red-logit 3 inside, empty and with a
    'garbage' blue colour outside."""
    vidx, slot, pts = lattice()
    inside = pts[:, 2] < z_surface
    values = torch.empty(pts.shape[0], 4)
    values[:, 0] = torch.where(inside, torch.tensor(OPAQUE), torch.tensor(EMPTY))
    values[:, 1:] = torch.where(inside[:, None], torch.tensor([3.0, -3.0, -3.0]), torch.tensor([-3.0, -3.0, 3.0]))
    return values, vidx, slot, pts


def test_transparent_corners_take_their_opaque_neighbours_colour():
    values, vidx, slot, pts = half_space(0.1)
    before = values.clone()
    bs.bleed_colours(values, vidx, slot, N, VOXEL)
    inside = pts[:, 2] < 0.1
    assert torch.equal(values[inside], before[inside])                       # opaque corners keep theirs
    first_out = (pts[:, 2] > 0.1) & (pts[:, 2] < 0.1 + VOXEL)                # next to the solid: red now
    assert bool((values[first_out, 1] > 2.9).all()) and bool((values[first_out, 3] < -2.9).all())
    far = pts[:, 2] > 0.1 + (bs.BLEED_ROUNDS + 0.5) * VOXEL                 # out of reach: unchanged
    assert far.any() and torch.allclose(values[far], before[far], atol=1e-4)
    assert torch.equal(values[:, 0], before[:, 0])                           # density never changes


def test_surface_corners_and_their_normals():
    values, vidx, slot, pts = half_space(0.1)
    rows, normal = bs.surface_corners(values, vidx, slot, N, VOXEL)
    z = pts[rows, 2]
    # the corners of the voxels the plane crosses: the last layer inside and the first outside
    assert set(torch.unique((z / VOXEL).round()).tolist()) == {0.0, 1.0}
    assert torch.allclose(normal, torch.tensor([0.0, 0.0, 1.0]).expand_as(normal))


def test_density_is_capped_only_at_the_surface():
    values, vidx, slot, pts = half_space(0.1)
    bs.fix_surfaces(lambda q: None, values, vidx, slot=slot, pts=pts, n=N, voxel=VOXEL, step=VOXEL, steps=("cap",))
    cap = bs.density_logit(bs.INSIDE_TAU / VOXEL)
    at_surface = (pts[:, 2] < 0.1) & (pts[:, 2] > 0.1 - VOXEL)
    deep = pts[:, 2] < 0.1 - 1.5 * VOXEL
    assert torch.allclose(values[at_surface, 0], torch.tensor(cap))
    assert bool((values[deep, 0] == OPAQUE).all())                           # a ray still stops right behind it
    assert 1.0 < math.log(1.0 + math.exp(cap)) * VOXEL < 2.5                 # the cap is opaque-ish per step


def test_corners_at_the_surface_take_the_colour_seen_along_the_normal():
    """The field is a solid below z = 0.1 whose red logit is 3 within 0.09 of its surface (a quarter voxel)
    and -3 deeper (a thin coloured skin, as trained models have); outside its colour is blue garbage. The
    surface corners (z = 0 and z = 1/3) get red, the corners behind them (z = -1/3) the surface corners' red
    too, and deeper ones keep their own colour."""
    values, vidx, slot, pts = half_space(0.1)
    values[pts[:, 2] < 0.1, 1] = -3.0                                       # the grid's corners: all deeper than the skin

    def field(q):
        out = torch.empty(q.shape[0], 4)
        inside = q[:, 2] < 0.1
        out[:, 0] = torch.where(inside, torch.tensor(OPAQUE), torch.tensor(EMPTY))
        red = torch.where(q[:, 2] > 0.01, torch.tensor(3.0), torch.tensor(-3.0))
        out[:, 1] = torch.where(inside, red, torch.tensor(-3.0))
        out[:, 2] = -3.0
        out[:, 3] = torch.where(inside, torch.tensor(-3.0), torch.tensor(3.0))
        return out

    bs.fix_surfaces(field, values, vidx, pts, slot, N, VOXEL, VOXEL, ("bleed", "cap", "surface"))
    red = torch.sigmoid(values[:, 1])
    layer = lambda k: (pts[:, 2] / VOXEL).round() == k                       # noqa: E731
    assert bool((red[layer(0) | layer(1)] > 0.8).all())                      # surface corners: the skin's red
    assert bool((red[layer(-1)] > 0.8).all())                                # one step behind: filled inwards
    assert bool((red[layer(-3)] < 0.1).all())                                # deep inside: the field's own colour
