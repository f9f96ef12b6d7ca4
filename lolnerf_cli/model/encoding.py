"""Positional encoding (NeRF): x -> [x, sin(2^k pi x), cos(2^k pi x)] for k < n_freqs."""

from __future__ import annotations

import math

import torch


def encoded_dim(n_freqs: int, in_dim: int = 3) -> int:
    return in_dim * (1 + 2 * n_freqs)


def posenc(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """x [..., C] -> [..., C * (1 + 2 n_freqs)]."""
    if n_freqs == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi   # [F]
    xf = x[..., None, :] * freqs[:, None]                                              # [..., F, C]
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], dim=-1)
