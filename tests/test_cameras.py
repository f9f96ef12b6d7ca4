"""cameras.py: ray-sphere bounds worked out by hand; the typical training camera (mean_view)."""

from __future__ import annotations

import pytest
import torch

from lolnerf_cli.cameras import Camera, focal_from_fov, look_at, mean_view, spherical_eye, sphere_bounds


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


def _camera(yaw: float, pitch: float, radius: float, fov: float, size: int = 64) -> Camera:
    f = focal_from_fov(fov, size)
    return Camera(look_at(spherical_eye(yaw, pitch, radius)), f, f, size / 2, size / 2, size, size)


def test_mean_view_of_agreeing_cameras_is_their_common_view():
    cams = [_camera(y, p, 2.7, 30.0) for y, p in ((-20.0, 0.0), (20.0, 0.0), (10.0, 6.0), (10.0, -6.0))]
    yaw, pitch, radius, fov = mean_view(cams)
    assert (pitch, radius, fov) == pytest.approx((0.0, 2.7, 30.0), abs=1e-6) and 0.0 < yaw < 10.0


def test_mean_view_ignores_a_few_badly_fitted_focal_lengths():
    # as fit-cameras leaves them: most photos near 31 degrees, a few with a far too short focal length
    # (a wide field of view) and the camera pulled in close to match; the mean would follow those few
    cams = [_camera(0.0, 0.0, 2.6, 31.0 + 0.1 * k) for k in range(9)] + [_camera(0.0, 0.0, 1.0, 110.0)]
    _, _, radius, fov = mean_view(cams)
    assert fov == pytest.approx(31.45, abs=1e-6) and radius == pytest.approx(2.6, abs=1e-9)


def test_sphere_bounds_gradient_is_finite_for_rays_that_miss():
    # refined and inverted cameras take gradients through the bounds: a ray that misses the sphere (or
    # grazes it) must give a finite gradient, not NaN (sqrt's infinite slope at 0 times clamp's zero)
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 2.0, 3.0], [0.0, 1.0, 3.0]], requires_grad=True)
    dirs = torch.tensor([[0.0, 0.0, -1.0]] * 3, requires_grad=True)
    near, far, hit = sphere_bounds(origins, dirs, 1.0)
    assert hit.tolist() == [True, False, False]                        # the third ray only touches the sphere
    assert near[0].item() == pytest.approx(2.0) and far[0].item() == pytest.approx(4.0)
    assert near[1].item() == far[1].item()                             # a miss: zero length
    (near.sum() + far.sum()).backward()
    assert torch.isfinite(origins.grad).all() and torch.isfinite(dirs.grad).all()
