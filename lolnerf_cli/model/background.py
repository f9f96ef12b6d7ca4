"""Low-capacity background model g(d | z): one colour per ray from its direction and the image's latent."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .encoding import encoded_dim, posenc


class Background(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        width_in = encoded_dim(cfg.dir_freqs) + cfg.latent_dim
        for _ in range(cfg.bg_depth):
            layers += [nn.Linear(width_in, cfg.bg_width), nn.ReLU()]
            width_in = cfg.bg_width
        layers.append(nn.Linear(width_in, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, dirs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """dirs [R, 3] (any length), z [R, D] -> rgb [R, 3] in [0, 1]."""
        d = F.normalize(dirs, dim=-1)
        return torch.sigmoid(self.net(torch.cat([posenc(d, self.cfg.dir_freqs), z.to(d.dtype)], dim=-1)).float())
