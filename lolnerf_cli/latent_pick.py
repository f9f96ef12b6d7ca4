"""Picking latents from a trained model: table rows, latent files, new samples, interpolation paths.

Shapes: K training images, D latent width, N samples, F frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import InputError, ParamError
from .formats import load_latents
from .model.latents import LatentGaussian

if TYPE_CHECKING:
    from .model import LoadedModel


@dataclass
class Latent:
    """One latent z [D] and a human-readable name of where it came from."""

    z: torch.Tensor
    source: str


def table_row(loaded: LoadedModel, index: int, spec: str | None = None) -> Latent:
    """Row `index` of the model's latent table (training image `index`); `spec`: the endpoint text it was
    read from, which an error then names (else the parameter `index`)."""
    k = loaded.latents.shape[0]
    if not -k <= index < k:
        reason = f"index {index} is out of range; the model has {k} training latents (0..{k - 1})"
        raise ParamError("index", reason) if spec is None else InputError(spec, reason)
    images = loaded.images()
    name = images[index] if 0 <= index < len(images) else f"index:{index}"
    return Latent(loaded.latents[index], f"index:{index % k} ({name})")


def file_row(loaded: LoadedModel, path: str | Path, row: int = 0) -> Latent:
    """Row `row` of a latent file, checked against the model (hash and width)."""
    path = Path(path)
    z, sources, _ = load_latents(path, loaded.model_hash, loaded.cfg.model.latent_dim)
    n = z.shape[0]
    if not -n <= row < n:
        raise InputError(path, f"has {n} latent row(s); row {row} does not exist")
    return Latent(z[row].to(loaded.latents.device), f"{path.name}:{row % n} ({sources[row]})")


def check_latent_choice(index: int | None, latent_file: str | Path | None, baked: bool = False) -> None:
    """Exactly one of a table index or a latent file; with `baked` (a baked grid holds its own latent) none
    is also fine. Commands call it before loading the model."""
    if (index is not None and latent_file is not None) or (index is None and latent_file is None and not baked):
        raise ParamError("index/latent_file", "give exactly one of {index} I or {latent_file} FILE")


def pick_latent(loaded: LoadedModel, index: int | None, latent_file: str | Path | None, row: int = 0) -> Latent:
    """Exactly one of a table index or a latent file (with its row)."""
    check_latent_choice(index, latent_file)
    if index is not None:
        return table_row(loaded, index)
    return file_row(loaded, latent_file, row)


def parse_endpoint(loaded: LoadedModel, spec: str) -> Latent:
    """An interpolation endpoint: 'index:I', 'FILE.safetensors' (row 0) or 'FILE.safetensors:ROW'."""
    spec = spec.strip()
    if spec.startswith("index:"):
        try:
            i = int(spec[len("index:"):])
        except ValueError:
            raise InputError(spec, "expected index:I with an integer I") from None
        return table_row(loaded, i, spec)
    path, row = spec, 0
    head, sep, tail = spec.rpartition(":")
    if sep and head.lower().endswith(".safetensors"):
        try:
            path, row = head, int(tail)
        except ValueError:
            raise InputError(spec, "expected FILE.safetensors:ROW with an integer ROW") from None
    if not path.lower().endswith(".safetensors"):
        raise InputError(spec, "an endpoint is index:I, FILE.safetensors or FILE.safetensors:ROW")
    return file_row(loaded, path, row)


def sample_latents(loaded: LoadedModel, n: int, truncation: float = 0.7, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """N new identities: z = mean + psi (z_raw - mean), z_raw from a Gaussian fitted to the table by PCA.

    Deterministic for a seed (CPU generator). Returns latents [N, D] (CPU) and one source per row."""
    if n < 1:
        raise ParamError("n", "must be at least 1")
    if truncation < 0:
        raise ParamError("truncation", "must be 0 or more")
    gauss = LatentGaussian.fit(loaded.latents.detach().cpu())
    gen = torch.Generator().manual_seed(int(seed))
    z = gauss.sample(n, truncation, gen)
    return z, [f"sample:seed={seed}:psi={truncation:g}:{i}" for i in range(n)]


def interpolation_path(endpoints: torch.Tensor, frames: int) -> torch.Tensor:
    """A linear walk through M >= 2 latents [M, D] in `frames` steps -> [F, D].

    Frame 0 is the first latent and frame F-1 the last; every intermediate endpoint falls exactly on a
    frame. The F-1 frame intervals are shared as evenly as possible among the M-1 segments, and frames
    are evenly spaced within each segment."""
    m = endpoints.shape[0]
    if m < 2:
        raise ValueError("need at least two latents")
    if frames < m:
        raise ParamError("frames", f"must be at least the number of endpoints ({m})")
    intervals = frames - 1
    out = []
    for j in range(m - 1):
        n_j = intervals // (m - 1) + (1 if j < intervals % (m - 1) else 0)
        t = (torch.arange(n_j, dtype=torch.float64) / n_j).to(endpoints.dtype)[:, None]
        out.append(endpoints[j] * (1 - t) + endpoints[j + 1] * t)
    out.append(endpoints[-1:])
    return torch.cat(out)
