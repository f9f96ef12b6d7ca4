"""Positional encoding (NeRF): x -> [x, sin(2^k pi x), cos(2^k pi x)] for k < n_freqs."""

from __future__ import annotations

import math

import torch


def encoded_dim(n_freqs: int, in_dim: int = 3) -> int:
    return in_dim * (1 + 2 * n_freqs)


def posenc(x: torch.Tensor, n_freqs: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., C] -> [..., C * (1 + 2 n_freqs)]. weights [F]: an extra factor per octave (the coarse-to-fine
    window of camera refinement, BARF)."""
    if n_freqs == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi   # [F]
    xf = x[..., None, :] * freqs[:, None]                                              # [..., F, C]
    sin, cos = torch.sin(xf), torch.cos(xf)
    if weights is not None:
        w = weights.to(x.dtype)[:, None]
        sin, cos = sin * w, cos * w
    return torch.cat([x, sin.flatten(-2), cos.flatten(-2)], dim=-1)


def octave_weights(n_freqs: int, window: float, device=None) -> torch.Tensor:
    """Weights [n_freqs] of the encoding's octaves for a window of `window` octaves: 1 for octaves below
    floor(window), a cosine ramp for the one it is opening, 0 above (Nerfies' coarse-to-fine window)."""
    k = torch.arange(n_freqs, dtype=torch.float32, device=device)
    return 0.5 * (1.0 - torch.cos(math.pi * (window - k).clamp(0.0, 1.0)))


def nyquist_octaves(footprint: float, n_freqs: int) -> float:
    """How many octaves (2^k pi, k = 0, 1, ...) of the encoding have a period of at least two pixels,
    for pixels `footprint` scene units wide (the encoding is of x / scene_radius, period 2 / 2^k)."""
    if footprint <= 0:
        return float(n_freqs)
    return float(min(n_freqs, max(1, math.floor(math.log2(1.0 / footprint)) + 1)))


def ipe(x: torch.Tensor, var: torch.Tensor, n_freqs: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Integrated positional encoding of isotropic Gaussians: mean x [..., C], variance var [...] (same for
    every axis) -> [..., C * (1 + 2 n_freqs)], laid out like `posenc`.

    E[sin(w x)] over x ~ N(mu, s^2) is sin(w mu) exp(-w^2 s^2 / 2): a frequency whose period is short
    next to the sample's extent (its ray interval and pixel footprint) fades out instead of aliasing into
    stripes (mip-NeRF's idea, with the isotropic Gaussian of Zip-NeRF / mip-NeRF 360's proposal nets).
    weights [F]: an extra factor per octave (the coarse-to-fine / Nyquist window)."""
    if n_freqs == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi   # [F]
    damp = torch.exp(-0.5 * var[..., None].to(x.dtype) * freqs ** 2)                    # [..., F]
    if weights is not None:                                                             # octave window
        damp = damp * weights.to(x.device, x.dtype)
    damp = damp[..., None].expand(*damp.shape, x.shape[-1]).flatten(-2)                # [..., F*C]
    xf = (x[..., None, :] * freqs[:, None]).flatten(-2)                                # [..., F*C]
    return torch.cat([x, torch.sin(xf) * damp, torch.cos(xf) * damp], dim=-1)
