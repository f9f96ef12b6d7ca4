"""Camera frames for `lolnerf eval`: putting a calibrated folder's cameras into the model's frame.

A model trained on `lolnerf fit-cameras` cameras lives in the fitted object frame, which differs from a
calibrated multi-view set's frame by an unknown similarity. With "query" frames each object's query
camera is fitted from its landmarks to RUN/keypoints.json with the view's own intrinsics, and every other
view is placed by its calibrated pose relative to the query, the relative translation scaled by
s = |o_q model| / |o_q true| (see relative_scale, align_views)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .cameras import Camera
from .errors import InputError, ParamError
from .eval_inputs import Item, NovelObject
from .formats import Frame, read_transforms

if TYPE_CHECKING:
    from .model import LoadedModel

EVAL_LANDMARKS_HINT = ("put the photos' 2D landmarks (landmarks.json, docs/landmarks.md) or cameras "
                       "(transforms.json) in the held-out folder")

FRAMES_MODES = ("auto", "as-given", "query")


def cameras_fitted(transforms_extra: dict) -> bool:
    """Whether a transforms.json (its top-level keys other than frames and intrinsics) was written by
    `lolnerf fit-cameras`, i.e. its cameras live in the fitted object frame."""
    from .camfit import CAMERA_SOURCE_FITTED, CAMERA_SOURCE_KEY

    return transforms_extra.get(CAMERA_SOURCE_KEY) == CAMERA_SOURCE_FITTED


def frames_mode(option: str, training_fitted: bool, folder_fitted: bool) -> str:
    """The frames actually used for a folder: "query" (align to the model through the query view) or
    "as-given". auto: "query" exactly when the training cameras were fitted and the folder's are not."""
    if option not in FRAMES_MODES:
        raise ParamError("frames", f"must be one of {', '.join(FRAMES_MODES)}, got {option!r}")
    if option == "auto":
        return "query" if training_fitted and not folder_fitted else "as-given"
    return option


def relative_scale(c2w_q_model: np.ndarray, c2w_q_true: np.ndarray, centre_model: np.ndarray | None = None,
                   centre_true: np.ndarray | None = None) -> float:
    """s = |o_q_model - centre_model| / |o_q_true - centre_true|: model units per unit of the folder's frame,
    from the query camera's distance to the object centre in both frames (default: both origins)."""
    cm = np.zeros(3) if centre_model is None else np.asarray(centre_model, np.float64)
    ct = np.zeros(3) if centre_true is None else np.asarray(centre_true, np.float64)
    d_model = float(np.linalg.norm(np.asarray(c2w_q_model, np.float64)[:3, 3] - cm))
    d_true = float(np.linalg.norm(np.asarray(c2w_q_true, np.float64)[:3, 3] - ct))
    if not (math.isfinite(d_model) and math.isfinite(d_true) and d_model > 1e-9 and d_true > 1e-9):
        raise ValueError(f"the query camera sits at the object centre (distances {d_model:g} model, {d_true:g} "
                         "true); the scale between the frames is undefined")
    return d_model / d_true


def align_views(c2w_q_model: np.ndarray, c2w_q_true: np.ndarray, c2w_views_true: np.ndarray,
                scale: float) -> np.ndarray:
    """Other views' cameras in the model frame from their calibrated poses relative to the query:
    c2w_v_model = c2w_q_model @ S(scale) @ inv(c2w_q_true) @ c2w_v_true, where S scales the relative
    pose's translation only (rotations are unchanged by a change of frame, distances scale).

    c2w_q_model, c2w_q_true [4, 4]; c2w_views_true [V, 4, 4] -> [V, 4, 4]. Exact whenever the two frames
    differ by a similarity of that scale and c2w_q_model is the query's true camera in the model frame."""
    views = np.asarray(c2w_views_true, np.float64)
    rel = np.linalg.inv(np.asarray(c2w_q_true, np.float64))[None] @ views          # query camera <- view camera
    rel[:, :3, 3] *= scale
    out = np.asarray(c2w_q_model, np.float64)[None] @ rel
    out[:, 3] = [0.0, 0.0, 0.0, 1.0]
    return out


def fit_query_camera(points2d: np.ndarray, keypoints3d: np.ndarray, frame: Frame) -> tuple[Camera, float, bool]:
    """The query view's camera in the model frame: its pose fitted so that the canonical keypoints
    keypoints3d [N, 3] project onto its landmarks points2d [N, 2] (pixels of a frame.w x frame.h image),
    with the frame's own calibrated intrinsics (focal, principal point) held fixed.

    Returns (camera, landmark RMSE in pixels, flagged: the fit is poor or a keypoint is behind it)."""
    from .cameras import project
    from .camfit import fit_single_camera

    pts = np.asarray(points2d, np.float64)
    kp = np.asarray(keypoints3d, np.float64)
    # the single-camera solver has its principal point at the image centre and square pixels: move the
    # landmarks into that camera (an exact change of intrinsics, the pose is unchanged)
    moved = np.stack([frame.w / 2 + (pts[:, 0] - frame.cx),
                      frame.h / 2 + (pts[:, 1] - frame.cy) * (frame.fx / frame.fy)], axis=1)
    fit = fit_single_camera(moved, kp, frame.w, frame.h, focal=frame.fx, file_path=frame.file_path)
    cam = frame.with_pose(fit.c2w)
    uv, z = project(kp, cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy)
    rmse = float(np.sqrt(((uv - pts) ** 2).sum(-1).mean()))
    return cam, rmse, bool(fit.extra.get("flagged", False)) or bool((z <= 0).any())


class FrameAligner:
    """Places a folder's cameras in the model's frame, per the `frames` option (see frames_mode). Caches
    per folder (its mode, its landmarks) and per query view (its fitted camera), so the held-out and
    novel sections place the same query view once."""

    def __init__(self, loaded: LoadedModel, option: str, training_fitted: bool):
        frames_mode(option, training_fitted, False)           # a bad option fails here
        self.loaded = loaded
        self.option = option
        self.training_fitted = training_fitted
        self._fitted: dict[str, bool] = {}                    # folder -> its cameras were fitted (fit-cameras)
        self._frames: dict[str, str] = {}                     # folder -> "query" | "as-given"
        self._aligned: dict[tuple[str, str], tuple[Camera, dict]] = {}   # (folder, file_path) -> camera, info
        self._landmarks: dict[str, dict[str, tuple[np.ndarray, int, int]]] = {}
        self._canonical = None

    def _folder_fitted(self, folder: Path) -> bool | None:
        """Whether folder/transforms.json's cameras were fitted from landmarks; None without the file.
        Read once per folder."""
        key = str(folder.resolve())
        if key not in self._fitted:
            tpath = folder / "transforms.json"
            self._fitted[key] = cameras_fitted(read_transforms(tpath, folder).extra) if tpath.is_file() else None
        return self._fitted[key]

    def frames_for(self, folder: Path) -> str:
        """"query" or "as-given" for the cameras in folder/transforms.json (see frames_mode)."""
        key = str(folder.resolve())
        if key not in self._frames:
            self._frames[key] = frames_mode(self.option, self.training_fitted, bool(self._folder_fitted(folder)))
        return self._frames[key]

    def frames_agree(self, folder: Path) -> bool:
        """Whether folder/transforms.json's cameras are in the model's object frame (what "auto" would use
        as given), whichever frames the option picked: rotation errors against them are then meaningful."""
        fitted = self._folder_fitted(folder)
        return fitted is not None and frames_mode("auto", self.training_fitted, fitted) == "as-given"

    def canonical_keypoints(self):
        """RUN/keypoints.json (formats.Keypoints): the model frame's keypoints the query views are fitted to."""
        from .formats import read_keypoints

        if self._canonical is None:
            path = self.loaded.run.keypoints
            if not path.is_file():
                raise InputError(path, "not found; placing the query views in the model's object frame "
                                       "(--frames query, or auto with fitted training cameras) needs the model's "
                                       "canonical keypoints (use --frames as-given when the folder's cameras "
                                       "already are in the model's frame)")
            self._canonical = read_keypoints(path)
        return self._canonical

    def folder_landmarks(self, folder: Path) -> dict[str, tuple[np.ndarray, int, int]]:
        """file_path -> (landmarks [N, 2] in RUN/keypoints.json order, w, h of the image they are in
        pixels of) from folder/landmarks.json; empty when the folder has none."""
        from .formats import name_order, read_landmarks

        key = str(folder.resolve())
        if key not in self._landmarks:
            lpath = folder / "landmarks.json"
            found: dict[str, tuple[np.ndarray, int, int]] = {}
            if lpath.is_file():
                kp = self.canonical_keypoints()
                lm = read_landmarks(lpath, folder)
                order = name_order(kp.names, lm.names, lpath,
                                   f"{self.loaded.run.keypoints} (to place the query views)")
                for fr in lm.frames:
                    found[fr.file_path] = (np.asarray(fr.points, np.float64)[order], fr.w, fr.h)
            self._landmarks[key] = found
        return self._landmarks[key]

    def check_frames(self, folder: Path) -> str:
        """Validate what aligning a folder needs (before any rendering); returns its frames mode."""
        mode = self.frames_for(folder)
        if mode == "query":
            self.canonical_keypoints()
            self.folder_landmarks(folder)
        return mode

    def query_camera(self, folder: Path, item: Item) -> tuple[Camera, dict]:
        """A query view's camera in the model frame (item loaded, item.frame its calibrated frame) and how
        it was found. Landmarks from folder/landmarks.json, else the frame's keypoints_uv (when there are
        as many as canonical keypoints, same order), else found in the photo by the face landmarker."""
        key = (str(folder.resolve()), item.file_path)
        if key in self._aligned:
            return self._aligned[key]
        kp = self.canonical_keypoints()
        frame = item.frame
        img_h, img_w = item.rgb.shape[:2]
        n = len(kp.points)
        try:
            uv = np.asarray(frame.extra.get("keypoints_uv"), np.float64)
        except (TypeError, ValueError):
            uv = None                                          # not a usable [N, 2] list: not a landmark source
        lms = self.folder_landmarks(folder)
        rmse, flagged = None, False
        if item.file_path in lms:
            pts, lw, lh = lms[item.file_path]
            source = "landmarks.json"
            pts = pts * np.array([frame.w / lw, frame.h / lh])
        elif uv is not None and uv.shape == (n, 2) and np.isfinite(uv).all():
            source = "keypoints_uv"
            pts = uv * np.array([frame.w / img_w, frame.h / img_h])
        else:
            from .invert import camera_from_landmarks

            source = "landmark detector"
            det, _ = camera_from_landmarks(self.loaded, item.rgb, item.path, focal=frame.fx * img_w / frame.w,
                                           hint=EVAL_LANDMARKS_HINT)
            pts = None
            cam = frame.with_pose(det.c2w)
        if pts is not None:
            cam, rmse, flagged = fit_query_camera(pts, kp.points, frame)
        try:
            scale = relative_scale(cam.c2w, frame.c2w)
        except ValueError as exc:
            raise InputError(folder / "transforms.json", f"frame '{item.file_path}': {exc}") from None
        info = {"query": item.file_path, "landmarks": source,
                "landmark_rmse_px": None if rmse is None else round(rmse, 4), "flagged": flagged,
                "scale": scale}
        self._aligned[key] = (cam, info)
        return cam, info

    def align_object(self, folder: Path, obj: NovelObject) -> None:
        """Put an object's query and view cameras in the model frame ("query" frames); views and query
        loaded first."""
        cam, info = self.query_camera(folder, obj.query)
        obj.scale = info["scale"]
        obj.alignment = {"object": obj.name, **info}
        self.place_views(obj, cam)

    @staticmethod
    def place_views(obj: NovelObject, cam: Camera) -> None:
        """Make `cam` (in the model's frame, at the query photo's size) the object's query camera and place
        its other views by their calibrated poses relative to the query (the distance ratio kept)."""
        obj.query.cam = cam
        views = align_views(cam.c2w, obj.query.frame.c2w, np.stack([v.frame.c2w for v in obj.views]), obj.scale)
        for v, c2w in zip(obj.views, views):
            v.cam = v.frame.with_pose(c2w)
