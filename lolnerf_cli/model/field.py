"""The latent-conditioned foreground field sigma(x | z), c(x | z) (colour not view-dependent).

Mathematically a NeRF MLP whose input is [enc(x), z] (and whose skip layers re-join [enc(x), z]).
The linear maps of those concatenations are split into an x part and a z part: the z part is the same
for every sample of a ray, so it is computed once per ray ([R, W]) and broadcast over the S samples,
instead of once per sample. Same function, far fewer FLOPs and much less memory traffic."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .encoding import encoded_dim, ipe, nyquist_octaves, octave_weights, posenc


class LatentField(nn.Module):
    """The main field (density + colour). `proposal_field` builds the same network, smaller, density only."""

    def __init__(self, cfg: ModelConfig, width: int | None = None, depth: int | None = None,
                 skips: tuple[int, ...] | None = None, freqs: int | None = None, n_out: int = 4):
        super().__init__()
        self.cfg = cfg
        self.freqs = cfg.pos_freqs if freqs is None else freqs
        self.n_out = n_out
        ex = encoded_dim(self.freqs)
        w = cfg.width if width is None else width
        depth = cfg.depth if depth is None else depth
        skips = cfg.skips if skips is None else skips
        self.width, self.depth = w, depth
        self.in_x = nn.Linear(ex, w)
        self.in_z = nn.Linear(cfg.latent_dim, w, bias=False)
        self.hidden = nn.ModuleList()
        self.skip_x = nn.ModuleDict()
        self.skip_z = nn.ModuleDict()
        for i in range(1, depth):
            self.hidden.append(nn.Linear(w, w))
            if i in skips:
                self.skip_x[str(i)] = nn.Linear(ex, w, bias=False)
                self.skip_z[str(i)] = nn.Linear(cfg.latent_dim, w, bias=False)
        self.out = nn.Linear(w, n_out)   # density logit (+ rgb logits)
        # octaves open so far (None: all; "ipe": all below the training photos' Nyquist limit). The trainer
        # opens them coarse to fine ("pe": only while it refines cameras); a trained model uses all of them.
        self.window: float | None = None
        self.footprint = 0.0             # training pixel width in scene units (set from the model's buffer)

    def nyquist_limit(self) -> float:
        """Octaves of the encoding whose period spans at least two training pixels."""
        return nyquist_octaves(self.footprint / self.cfg.scene_radius, self.freqs)

    def octaves(self) -> float:
        """Octaves of the encoding in use: the training window, capped at the two-pixel (Nyquist) limit."""
        limit = self.nyquist_limit()
        return limit if self.window is None else min(self.window, limit)

    def encode(self, x: torch.Tensor, var: torch.Tensor | None) -> torch.Tensor:
        """Points [R, S, 3] (and, for the "ipe" encoding, their isotropic variances [R, S]) -> features."""
        r = self.cfg.scene_radius
        if self.cfg.encoding == "ipe":   # points without a variance: no blur, but the octave window still holds
            var = torch.zeros(x.shape[:-1], device=x.device) if var is None else var
            return ipe(x / r, var / (r * r), self.freqs, octave_weights(self.freqs, self.octaves(), x.device))
        if self.window is not None:       # "pe" under camera refinement: octaves open coarse to fine (BARF)
            return posenc(x / r, self.freqs, octave_weights(self.freqs, min(self.window, self.freqs), x.device))
        return posenc(x / r, self.freqs)

    def forward(self, x: torch.Tensor, z: torch.Tensor, var: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [R, S, 3] points (object frame), z [R, D] one latent per ray, var [R, S] the samples' variances
        ("ipe" only; None: points) -> sigma [R, S], rgb [R, S, 3] (None for a density-only network)."""
        raw = self.logits(x, z, var)                                            # [R, S, n_out]
        sigma = F.softplus(raw[..., 0] + self.cfg.density_bias)
        rgb = torch.sigmoid(raw[..., 1:]) if self.n_out > 1 else None
        return sigma, rgb

    def logits(self, x: torch.Tensor, z: torch.Tensor, var: torch.Tensor | None = None) -> torch.Tensor:
        """The output layer's values before the activations, fp32 [R, S, n_out]: density logit (without
        the density bias), then colour logits (what `bake` stores)."""
        xe = self.encode(x, var)                                                 # [R, S, Ex]
        r, n = xe.shape[0], xe.shape[1]
        xe = xe.reshape(r * n, -1)                                               # [R S, Ex]
        # Layers work on 2-D [R S, W] activations. A linear layer applied to a 3-D input returns a view,
        # and an in-place op on a view makes autograd copy the whole tensor back in the backward pass
        # (CopySlices): that cost a third of a `cpu` training step. The per-ray latent terms are added
        # out of place through a [R, S, W] view when autograd records them; the ReLUs then run in place on
        # fresh tensors (a ReLU's backward needs only its output). Without a graph everything is in place.
        h = self._add_per_ray(self.in_x(xe), self.in_z(z), r, n)
        for i, layer in enumerate(self.hidden, start=1):
            pre = layer(h)
            key = str(i)
            if key in self.skip_x:
                pre += self.skip_x[key](xe)
                pre = self._add_per_ray(pre, self.skip_z[key](z), r, n)
            else:
                F.relu(pre, inplace=True)
            h = pre
        return self.out(h).float().view(r, n, -1)

    @staticmethod
    def _add_per_ray(h: torch.Tensor, per_ray: torch.Tensor, r: int, n: int) -> torch.Tensor:
        """relu(h + per_ray term broadcast over each ray's samples): h [R S, W], per_ray [R, W] -> [R S, W]."""
        out = h.view(r, n, -1)
        if h.requires_grad or per_ray.requires_grad:   # autograd records (both are layer outputs)
            out = out + per_ray[:, None, :]      # a fresh tensor: no copy-back in the backward pass
        else:
            out += per_ray[:, None, :]           # no graph (renders): in place, no new [R, S, W] buffer
        return F.relu(out, inplace=True).view(r * n, -1)

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass per sample (per-ray latent terms excluded)."""
        ex, w = encoded_dim(self.freqs), self.width
        macs = ex * w + (self.depth - 1) * w * w + len(self.skip_x) * ex * w + w * self.n_out
        return 2 * macs


def proposal_field(cfg: ModelConfig) -> LatentField:
    """A small density-only field (no skips) that tells the main field where to sample."""
    return LatentField(cfg, width=cfg.proposal_width, depth=cfg.proposal_depth, skips=(),
                       freqs=cfg.proposal_freqs, n_out=1)


def plain_flops_per_sample(cfg: ModelConfig) -> int:
    """FLOPs per sample of the same network written the plain way (latent concatenated to every sample)."""
    ex, w, d = encoded_dim(cfg.pos_freqs), cfg.width, cfg.latent_dim
    macs = (ex + d) * w + (cfg.depth - 1) * w * w + len([s for s in cfg.skips if 0 < s < cfg.depth]) * (ex + d) * w + w * 4
    return 2 * macs
