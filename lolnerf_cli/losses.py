"""LOLNeRF losses: per-pixel RGB L2, mask loss on alpha, and the hard-surface loss on weights."""

from __future__ import annotations

import math

import torch


def rgb_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over rays and channels. pred, target [R, 3]."""
    return ((pred - target) ** 2).mean()


def mask_loss(alpha: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor | None = None,
              n_masked: torch.Tensor | None = None) -> torch.Tensor:
    """L2 between rendered foreground opacity and the segmentation mask. alpha, mask [R] in [0, 1].

    has_mask [R] (0/1): only rays of images that have a mask count (mean over those rays). n_masked: divide
    by this count instead of has_mask's own (a micro-batch's share of a whole batch's mean)."""
    if has_mask is None:
        return ((alpha - mask) ** 2).mean()
    denom = has_mask.sum().clamp_min(1.0) if n_masked is None else n_masked
    return ((alpha - mask) ** 2 * has_mask).sum() / denom


def hard_surface_loss(weights: torch.Tensor) -> torch.Tensor:
    """-log(exp(-|w|) + exp(-|1 - w|)) averaged over every per-sample weight [R, S].

    Minimal (0 up to a constant) at w in {0, 1}: it pushes every sample to be empty or fully opaque,
    so the model forms hard surfaces and the depth is well defined. Shifted so that its minimum is 0."""
    w = weights
    return (-torch.log(torch.exp(-w.abs()) + torch.exp(-(1 - w).abs())) + math.log(1 + math.exp(-1))).mean()


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)
