"""The GLO latent table and the Gaussian fitted to it (mean + PCA) for sampling new identities."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def init_table(k: int, d: int, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latent table Z [K, D] initialised as small Gaussian noise."""
    return torch.randn(k, d, generator=generator) * std


@dataclass
class LatentGaussian:
    """Z ~ N(mean, V diag(s^2) V^T): mean [D], components V [D, C] (columns), stddevs s [C]."""

    mean: torch.Tensor
    components: torch.Tensor
    stddevs: torch.Tensor

    @staticmethod
    def fit(z: torch.Tensor, eps: float = 1e-8) -> "LatentGaussian":
        """Fit to latent rows z [K, D] by PCA (SVD of the centred table)."""
        z = z.detach().double()
        mean = z.mean(0)
        centred = z - mean
        k = z.shape[0]
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)          # s [C], vh [C, D]
        std = s / max(k - 1, 1) ** 0.5
        keep = std > eps * max(float(std.max()) if std.numel() else 0.0, 1.0)
        return LatentGaussian(mean.float(), vh[keep].T.float(), std[keep].float())

    def sample(self, n: int, truncation: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + psi * (z_raw - mean), z_raw drawn from the fitted Gaussian -> [n, D]."""
        eps = torch.randn(n, self.stddevs.shape[0], generator=generator)
        raw_offset = (eps * self.stddevs) @ self.components.T                 # z_raw - mean
        return self.mean + truncation * raw_offset
