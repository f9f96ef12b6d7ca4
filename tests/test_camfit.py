"""`lolnerf fit-cameras`: cameras and canonical keypoints from 2D landmarks.

Synthetic landmarks come from known cameras (a face-like or arbitrary canonical shape, yaw +-40,
pitch +-20 degrees, 256 px, 0.5 px noise); the fitted rotations must match the true ones after one
rotation aligns the fitted object frame with the true one (the fit cannot know the true frame)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from lolnerf_cli import camfit, camfit_solver, commands  # noqa: F401 - registers the subcommands
from lolnerf_cli.app import app
from lolnerf_cli.cameras import focal_from_fov, look_at, project, spherical_eye
from lolnerf_cli.formats import (FACE5_NAMES, Keypoints, LandmarkFrame, Landmarks, read_keypoints,
                                 read_transforms, write_keypoints, write_landmarks)

RES = 256


# ----------------------------------------------------------------------------------------- synthetic data
def face_like(rng: np.random.Generator, jitter: float = 0.015) -> np.ndarray:
    """A random face5 shape near the template, in some arbitrary similarity frame (fit must not care)."""
    pts = camfit_solver.FACE5_TEMPLATE + rng.normal(0.0, jitter, (5, 3))
    rot = Rotation.from_rotvec(rng.normal(0, 0.05, 3)).as_matrix()      # a slightly tilted true frame
    return 1.3 * pts @ rot.T + np.array([0.05, -0.02, 0.03])


def views(keypoints: np.ndarray, k: int, rng: np.random.Generator, noise: float = 0.5, fov: float = 30.0,
          yaw: float = 40.0, pitch: float = 20.0, roll: float = 8.0):
    """Landmarks [K, N, 2] of `keypoints` seen by K random cameras looking at the shape's centre."""
    centre = keypoints.mean(0)
    eye = spherical_eye(rng.uniform(-yaw, yaw, k), rng.uniform(-pitch, pitch, k), rng.uniform(2.4, 3.6, k))
    c2w = look_at(eye + centre, centre + rng.normal(0, 0.04, (k, 3)))
    c2w[:, :3, :3] = c2w[:, :3, :3] @ Rotation.from_euler("z", rng.uniform(-roll, roll, (k, 1)),
                                                          degrees=True).as_matrix()
    f = np.full(k, focal_from_fov(fov, RES))
    uv, z = project(np.broadcast_to(keypoints, (k,) + keypoints.shape), c2w, f, f, RES / 2, RES / 2)
    assert (z > 0).all()
    return uv + rng.normal(0.0, noise, uv.shape), c2w, f


def rotation_errors(c2w_fit: np.ndarray, c2w_true: np.ndarray) -> np.ndarray:
    """Per-camera angle (degrees) between fitted and true orientations after the best single rotation
    of the object frame (the fitted and true object frames differ by an unknown similarity)."""
    rf, rt = c2w_fit[:, :3, :3], c2w_true[:, :3, :3]
    u, _, vt = np.linalg.svd(np.einsum("kij,klj->il", rf, rt))
    align = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt    # rf ~ align @ rt
    rel = np.einsum("kji,jl,klm->kim", rt, align.T, rf)
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))


def write_dataset(root, uv: np.ndarray, names=FACE5_NAMES, scheme="face5", failed=()):
    frames = [LandmarkFrame(f"images/{i:05d}.png", RES, RES, uv[i], 0.9) for i in range(len(uv))]
    write_landmarks(root / "landmarks.json", Landmarks(scheme, list(names), frames, list(failed)))
    return root


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def err_text(res) -> str:
    try:
        return res.stderr
    except (ValueError, AttributeError):
        return res.output


# ----------------------------------------------------------------------------------------- accuracy
@pytest.fixture(scope="module")
def face_fit():
    rng = np.random.default_rng(7)
    kp_true = face_like(rng)
    uv, c2w, f = views(kp_true, 200, rng)
    sol = camfit_solver.solve_cameras(uv, np.full(200, RES), np.full(200, RES), face5=True)
    return kp_true, uv, c2w, f, sol


@pytest.mark.slow
def test_accuracy_bar_face5(face_fit):
    """The issue's bar: median rotation error <= 2 deg and 90th percentile <= 5 deg."""
    _, uv, c2w, f, sol = face_fit
    err = rotation_errors(sol.c2w(), c2w)
    print(f"face5 rotation error: median {np.median(err):.2f} deg, p90 {np.percentile(err, 90):.2f} deg")
    assert np.median(err) <= 2.0
    assert np.percentile(err, 90) <= 5.0
    # the reprojection error is at the noise level, the focal length close to the truth
    uv_fit, _ = project(sol.X[None].repeat(len(uv), 0), sol.c2w(), sol.f, sol.f, RES / 2, RES / 2)
    rmse = np.sqrt(((uv_fit - uv) ** 2).sum(-1).mean(-1))
    assert np.median(rmse) < 0.8
    assert abs(math.log(np.median(sol.f) / f[0])) < 0.15


def test_face5_object_frame_follows_spec(face_fit):
    """+Y up, front +Z, centred, inside the unit sphere; the eye on the image's left at -X."""
    _, _, c2w, _, sol = face_fit
    X = sol.X
    assert np.linalg.norm(X, axis=1).max() < 1.0
    el, er, nose, ml, mr = X
    assert el[0] < 0 < er[0] and ml[0] < 0 < mr[0]
    assert abs(el[1] - er[1]) < 1e-6 and min(el[1], er[1]) > nose[1] > max(ml[1], mr[1])   # eye line is +X
    assert nose[2] > max(el[2], er[2])                      # the nose sticks out towards +Z
    assert np.allclose(X, camfit_solver.FACE5_TEMPLATE, atol=0.08)  # scale and offset follow the template
    # cameras: in front of the face (+Z side), upright (camera +Y close to world +Y), looking at it
    c2w_fit = sol.c2w()
    assert (c2w_fit[:, 2, 3] > 0).all()
    assert (c2w_fit[:, 1, 1] > 0.8).all()
    to_centre = -c2w_fit[:, :3, 3] / np.linalg.norm(c2w_fit[:, :3, 3], axis=1, keepdims=True)
    assert (np.einsum("ki,ki->k", -c2w_fit[:, :3, 2], to_centre) > 0.95).all()
    # no mirror image: a camera to the object's right (+X) in truth is at +X in the fit, above is above
    assert np.corrcoef(c2w_fit[:, 0, 3], c2w[:, 0, 3])[0, 1] > 0.9
    assert np.corrcoef(c2w_fit[:, 1, 3], c2w[:, 1, 3])[0, 1] > 0.9


@pytest.mark.slow
def test_generic_scheme_accuracy_and_gauge():
    """Any scheme with >= 4 points works from scratch (factorisation start, mirror ambiguity settled)."""
    rng = np.random.default_rng(3)
    kp_true = rng.uniform(-0.5, 0.5, (6, 3))
    uv, c2w, _ = views(kp_true, 150, rng)
    sol = camfit_solver.solve_cameras(uv, np.full(150, RES), np.full(150, RES), face5=False)
    err = rotation_errors(sol.c2w(), c2w)
    assert np.median(err) <= 2.0 and np.percentile(err, 90) <= 5.0
    assert np.allclose(sol.X.mean(0), 0, atol=1e-6)
    assert np.isclose(np.linalg.norm(sol.X, axis=1).max(), camfit_solver.GENERIC_RADIUS)
    mean_dir = sol.c2w()[:, :3, 3].mean(0)
    assert mean_dir[2] / np.linalg.norm(mean_dir) > 0.95     # the cameras' mean direction is +Z


@pytest.mark.slow
def test_outlier_frames_are_flagged_and_do_not_spoil_the_fit(tmp_path):
    rng = np.random.default_rng(11)
    kp_true = face_like(rng)
    uv, c2w, _ = views(kp_true, 200, rng)
    bad = np.zeros(200, bool)
    bad[rng.choice(200, 12, replace=False)] = True
    uv[bad] = rng.uniform(70, 190, (bad.sum(), 5, 2))              # wrong detections
    write_dataset(tmp_path, uv)
    fit = camfit.fit_cameras(tmp_path)
    flagged = np.array([f.extra["flagged"] for f in fit.transforms.frames])
    assert flagged[bad].mean() >= 0.9 and flagged[~bad].sum() <= 2
    c2w_fit = np.stack([f.c2w for f in fit.transforms.frames])
    err = rotation_errors(c2w_fit[~bad], c2w[~bad])
    assert np.median(err) <= 2.0 and np.percentile(err, 90) <= 5.0


def test_given_keypoints_and_focal_are_used(tmp_path):
    """--keypoints: cameras in the given object frame (no alignment needed); --focal: used as is."""
    rng = np.random.default_rng(5)
    kp_true = face_like(rng)
    uv, c2w, f = views(kp_true, 60, rng)
    write_dataset(tmp_path, uv)
    kp_file = tmp_path / "given.json"
    order = [2, 0, 1, 4, 3]                                        # names in another order are matched
    write_keypoints(kp_file, Keypoints("face5", [FACE5_NAMES[i] for i in order], kp_true[order]))
    fit = camfit.fit_cameras(tmp_path, keypoints=kp_file, focal=float(f[0]))
    assert np.allclose(read_keypoints(tmp_path / "keypoints.json").points, kp_true, atol=1e-6)
    c2w_fit = np.stack([fr.c2w for fr in fit.transforms.frames])
    rel = np.einsum("kji,kjl->kil", c2w[:, :3, :3], c2w_fit[:, :3, :3])
    err = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert np.median(err) < 2.0
    assert np.median(np.linalg.norm(c2w_fit[:, :3, 3] - c2w[:, :3, 3], axis=1)) < 0.1
    assert all(fr.fx == fr.fy == pytest.approx(f[0]) for fr in fit.transforms.frames)


def test_fit_single_camera(face_fit):
    kp_true, uv, c2w, f, _ = face_fit
    frame = camfit.fit_single_camera(uv[0], kp_true, RES, RES, focal=float(f[0]), file_path="images/x.png")
    assert frame.file_path == "images/x.png" and (frame.w, frame.h, frame.cx, frame.cy) == (RES, RES, RES / 2, RES / 2)
    rel = c2w[0, :3, :3].T @ frame.c2w[:3, :3]
    assert np.degrees(np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1))) < 3.0
    assert np.linalg.norm(frame.c2w[:3, 3] - c2w[0, :3, 3]) < 0.15
    assert frame.extra["landmark_rmse_px"] < 1.5 and not frame.extra.get("flagged")
    free = camfit.fit_single_camera(uv[0], kp_true, RES, RES)
    assert 0.7 < free.fx / f[0] < 1.4
    # landmarks that match no pose of the keypoints (mouth corners swapped): flagged, and the reason
    # names the test against the landmarks' own spread, which is reported too
    bad = uv[0][[0, 1, 2, 4, 3]]
    flagged = camfit.fit_single_camera(bad, kp_true, RES, RES, focal=float(f[0]))
    spread = np.sqrt(((bad - bad.mean(0)) ** 2).sum(1).mean())
    assert flagged.extra["landmark_spread_px"] == pytest.approx(spread, rel=1e-3)
    assert flagged.extra["flagged"] and flagged.extra["landmark_rmse_px"] > camfit.FLAG_FRACTION * spread
    assert "15%" in flagged.extra["flag_reason"] and f"{spread:.1f} px" in flagged.extra["flag_reason"]
    with pytest.raises(Exception, match="N >= 4"):
        camfit.fit_single_camera(uv[0][:3], kp_true[:3], RES, RES)


# ----------------------------------------------------------------------------------------- command line
@pytest.mark.slow
def test_cli_writes_transforms_and_keypoints(tmp_path):
    rng = np.random.default_rng(1)
    uv, c2w, _ = views(face_like(rng), 300, rng)
    write_dataset(tmp_path, uv, failed=[{"file_path": "images/nope.png", "reason": "no face found"}])
    res = invoke(["fit-cameras", tmp_path])
    assert res.exit_code == 0, res.output
    assert "frames fitted" in res.output and "flagged" in res.output and "RMSE" in res.output
    tf = read_transforms(tmp_path / "transforms.json")
    assert len(tf.frames) == 300                                   # the failed frame is skipped
    for fr in tf.frames:
        assert set(fr.extra) >= {"landmark_rmse_px", "flagged"}
        assert fr.cx == RES / 2 and fr.cy == RES / 2 and fr.fx == fr.fy
    raw = json.loads((tmp_path / "transforms.json").read_text())
    assert raw["frames"][0]["file_path"] == "images/00000.png"
    kp = read_keypoints(tmp_path / "keypoints.json")
    assert kp.names == FACE5_NAMES and np.linalg.norm(kp.points, axis=1).max() < 1
    # the written cameras reproject the keypoints onto the landmarks (SPEC conventions end to end)
    c2w_fit = np.stack([fr.c2w for fr in tf.frames])
    fl = np.array([fr.fx for fr in tf.frames])
    uv_fit, depth = project(np.broadcast_to(kp.points, (300, 5, 3)), c2w_fit, fl, fl, RES / 2, RES / 2)
    assert (depth > 0).all()
    rmse = np.sqrt(((uv_fit - uv) ** 2).sum(-1).mean(-1))
    assert np.allclose(rmse, [fr.extra["landmark_rmse_px"] for fr in tf.frames], atol=1e-3)
    assert np.median(rotation_errors(c2w_fit, c2w)) <= 2.0


def test_cli_flag_threshold_option_matches_library_default():
    import inspect

    from lolnerf_cli.commands import fit_cameras_cmd

    default = inspect.signature(fit_cameras_cmd.fit_cameras).parameters["flag_threshold"].default.default
    assert default == camfit.FLAG_FRACTION


def _landmarks_json(root, frames, names=FACE5_NAMES):
    (root / "landmarks.json").write_text(json.dumps({"scheme": "x", "names": names, "frames": frames}))


@pytest.mark.parametrize("case, expect", [
    ("missing", "landmarks.json: not found"),
    ("three_names", "at least 4"),
    ("nan", "NaN"),
    ("wrong_count", "5 rows"),
    ("two_frames", "at least 3"),
    ("bad_focal", "--focal"),
    ("keypoint_names", "do not match"),
    ("all_flagged", "no frame fits"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, case, expect):
    frame = {"file_path": "images/a.png", "w": 64, "h": 64, "points": [[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]}
    three = [dict(frame, file_path=f"images/{c}.png") for c in "abc"]
    args = ["fit-cameras", tmp_path]
    if case == "three_names":
        _landmarks_json(tmp_path, [dict(frame, points=frame["points"][:3])], names=FACE5_NAMES[:3])
    elif case == "nan":
        (tmp_path / "landmarks.json").write_text(json.dumps({"scheme": "face5", "names": FACE5_NAMES, "frames": [
            dict(frame, points=[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]])]}).replace("[28, 30]", "[NaN, 30]"))
    elif case == "wrong_count":
        _landmarks_json(tmp_path, [dict(frame, points=frame["points"][:4])])
    elif case == "two_frames":
        _landmarks_json(tmp_path, [frame, dict(frame, file_path="images/b.png")])
    elif case == "bad_focal":
        _landmarks_json(tmp_path, three)
        args += ["--focal", "-5"]
    elif case == "keypoint_names":
        _landmarks_json(tmp_path, three)
        write_keypoints(tmp_path / "kp.json", Keypoints("other", ["a", "b", "c", "d", "e"], np.zeros((5, 3))))
        args += ["--keypoints", tmp_path / "kp.json"]
    elif case == "all_flagged":                                     # scrambled landmarks, keypoints given
        rng = np.random.default_rng(0)
        _landmarks_json(tmp_path, [dict(f, points=rng.uniform(0, 64, (5, 2)).tolist()) for f in three])
        write_keypoints(tmp_path / "kp.json", Keypoints("face5", FACE5_NAMES, camfit_solver.FACE5_TEMPLATE))
        args += ["--keypoints", tmp_path / "kp.json"]
    res = invoke(args)
    assert res.exit_code == 2, res.output
    text = err_text(res).strip()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0] and "Traceback" not in text
    assert not (tmp_path / "transforms.json").exists()
