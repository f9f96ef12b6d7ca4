"""Scoring for `lolnerf eval`: image metrics of one prediction (Scorer), depth scores of one object,
and the summaries (mean, std, count) that metrics.json's sections hold. Pure functions of arrays:
nothing here renders, reads files or prints."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

MASK_THRESHOLD = 0.5                # a mask pixel >= this is the object's
MIN_KEYPOINTS_FOR_PEARSON = 3       # fewer valid keypoints than this: the object's correlation is undefined


def finite_or_none(x: Any) -> Any:
    """JSON has no inf/NaN: non-finite floats become null (recursively)."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def as_float(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.item()
    return float(x)


def summary(rows: list[dict], key: str) -> dict | None:
    """mean, std, count of rows[key] over the rows that have a value (None when none has one)."""
    from .metrics import mean_std

    values = [r[key] for r in rows if r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
    if not values:
        return None
    out = mean_std(values)
    return {"mean": as_float(out["mean"]), "std": as_float(out["std"]), "count": int(out["count"])}


def pick_subset(n: int, subset: int, seed: int) -> list[int]:
    """A fixed, seeded choice of min(subset, n) indices in ascending order (all of them when subset <= 0)."""
    if subset <= 0 or subset >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=subset, replace=False))


def sample_depth(depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of a depth map [H, W] (NaN = no surface) at pixel positions uv [N, 2]
    (pixel centres at i + 0.5). Missing neighbours are left out and the others re-weighted; NaN where
    none of the four neighbours has a depth or the point lies outside the image."""
    h, w = depth.shape
    x = uv[:, 0] - 0.5
    y = uv[:, 1] - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    total = np.zeros(len(uv))
    acc = np.zeros(len(uv))
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        vals = np.full(len(uv), np.nan)
        vals[inside] = depth[yi[inside], xi[inside]]
        ok = np.isfinite(vals) & (wt > 0)
        acc[ok] += wt[ok] * vals[ok]
        total[ok] += wt[ok]
    outside = (uv[:, 0] < 0) | (uv[:, 0] > w) | (uv[:, 1] < 0) | (uv[:, 1] > h)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((total > 1e-6) & ~outside, acc / np.maximum(total, 1e-12), np.nan)
    return out


def nearest_resample(arr: np.ndarray, size: int) -> np.ndarray:
    """[H, W] -> [size, size] by nearest pixel centres (keeps NaN backgrounds NaN, never mixes them)."""
    h, w = arr.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return arr[rows][:, cols]


class Scorer:
    """PSNR / SSIM / LPIPS of one prediction against one ground truth (float [H, W, 3] in [0, 1])."""

    def __init__(self, size: int | None = None):
        """size: the images' side in pixels, when known (SSIM and LPIPS need a minimum size)."""
        from . import metrics

        self.m = metrics
        self.ssim_ok = size is None or size >= metrics.SSIM_WIN
        self.lpips_net, reason = metrics.lpips_model()
        self.lpips_weights = None
        if self.lpips_net is None:
            self.lpips_reason = str(reason or "LPIPS unavailable: no weights").strip().splitlines()[0]
        elif size is not None and size < metrics.LPIPS_MIN_SIDE:
            self.lpips_net = None
            self.lpips_reason = (f"LPIPS unavailable: the model's {size} px images are smaller than LPIPS' "
                                 f"{metrics.LPIPS_MIN_SIDE} px minimum")
        else:
            self.lpips_reason = None
            self.lpips_weights = str(reason)

    def _ssim(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float | None:
        return as_float(self.m.ssim(pred, gt, mask)) if self.ssim_ok else None

    def _lpips(self, pred: np.ndarray, gt: np.ndarray) -> float | None:
        if self.lpips_net is None:
            return None
        return as_float(self.m.lpips(pred, gt, self.lpips_net))

    def full(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> dict:
        """Whole-image metrics, plus PSNR over the object's pixels when a mask exists."""
        row = {"psnr": as_float(self.m.psnr(pred, gt)), "ssim": self._ssim(pred, gt),
               "lpips": self._lpips(pred, gt), "psnr_masked": None}
        if mask is not None and (mask >= MASK_THRESHOLD).any():
            row["psnr_masked"] = as_float(self.m.psnr(pred, gt, mask >= MASK_THRESHOLD))
        return row

    def masked(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict:
        """Metrics on the object's pixels only. LPIPS (a patch metric) sees both images with everything
        outside the mask set to black."""
        m = mask >= MASK_THRESHOLD
        if not m.any():
            return {"psnr": None, "ssim": None, "lpips": None}
        black = m[..., None].astype(np.float32)
        return {"psnr": as_float(self.m.psnr(pred, gt, m)), "ssim": self._ssim(pred, gt, m),
                "lpips": self._lpips(pred * black, gt * black)}


def depth_scores(pred: np.ndarray, keypoints: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 true_depth: np.ndarray | None, image_wh: tuple[int, int]) -> dict[str, Any]:
    """Scores of a predicted depth map pred [res, res] (NaN off the surface, in the folder's units)
    against an object's true keypoint depths (uv [N, 2] in pixels of the image_wh-sized photo, z [N],
    visible [N]) and/or a true depth map [H, W] (NaN on background). Keys as in metrics.json's depth rows."""
    from .metrics import pearson

    res = pred.shape[0]
    row: dict[str, Any] = {}
    if keypoints is not None:
        uv, z_true, visible = keypoints
        w, h = image_wh
        uv_r = uv * np.array([res / w, res / h])
        z_pred = sample_depth(pred, uv_r)
        ok = np.isfinite(z_pred) & visible           # hidden keypoints have no surface to compare
        row["keypoints_valid"] = int(ok.sum())
        row["keypoints_pred_z"] = [None if not math.isfinite(v) else float(v) for v in z_pred]
        r = None
        if ok.sum() >= MIN_KEYPOINTS_FOR_PEARSON and np.ptp(z_true[ok]) > 0 and np.ptp(z_pred[ok]) > 0:
            r = as_float(pearson(z_pred[ok], z_true[ok]))
        row["keypoint_pearson"] = r
    if true_depth is not None:
        t = nearest_resample(true_depth, res)
        has_true = np.isfinite(t)
        ok = has_true & np.isfinite(pred)
        row["dense_coverage"] = float(ok.sum() / max(has_true.sum(), 1))
        if ok.sum() >= 2:
            p_v, t_v = pred[ok], t[ok]
            row["dense_abs_median"] = float(np.median(np.abs(p_v - t_v)))
            row["dense_abs_median_centered"] = float(np.median(np.abs((p_v - p_v.mean()) - (t_v - t_v.mean()))))
            row["dense_pearson"] = as_float(pearson(p_v, t_v)) if np.ptp(p_v) > 0 and np.ptp(t_v) > 0 else None
        else:
            row.update(dense_abs_median=None, dense_abs_median_centered=None, dense_pearson=None)
    return row


def depth_summary(rows: list[dict]) -> dict:
    """metrics.json's depth section from its per-object rows."""
    out: dict[str, Any] = {"objects": len(rows)}
    if any("keypoint_pearson" in r for r in rows):
        out["keypoint_pearson"] = summary(rows, "keypoint_pearson")
        out["keypoint_undefined"] = sum(1 for r in rows
                                        if "keypoint_pearson" in r and r["keypoint_pearson"] is None)
    if any("dense_coverage" in r for r in rows):
        out["dense"] = {k: summary(rows, "dense_" + k) for k in ("abs_median", "abs_median_centered", "pearson",
                                                                 "coverage")}
    out["per_object"] = rows
    return out


def section_summary(rows: list[dict], keys: tuple[str, ...], extra: dict) -> dict:
    """A section of metrics.json: its row count, a summary (mean, std, count) per key, then `extra`."""
    sec: dict[str, Any] = {"count": len(rows)}
    for k in keys:
        sec[k] = summary(rows, k)
    sec.update(extra)
    return sec
