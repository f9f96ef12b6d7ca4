"""The generative NeRF: a latent-conditioned foreground field plus a background model, and its I/O.

`model.safetensors` holds the network weights under "field.*" and "background.*" plus the latent
table under "latents" [K, D]; its metadata names the model hash and the preset."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from ..config import Config, ModelConfig, config_from_dict
from ..errors import InputError
from ..formats import RunPaths, load_safetensors, read_json, run_folder, save_safetensors
from .background import Background
from .field import LatentField


class GenerativeNeRF(nn.Module):
    """sigma, c = field(x | z); background colour = background(d | z). Latents live outside it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.field = LatentField(cfg)
        self.background = Background(cfg)


def model_state(model: GenerativeNeRF, latents: torch.Tensor) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in model.state_dict().items()}
    state["latents"] = latents.detach()
    return state


def save_model(path: str | Path, model: GenerativeNeRF, latents: torch.Tensor, cfg: Config, extra: dict | None = None) -> None:
    meta = {"format": "lolnerf-model", "model_hash": cfg.model_hash(), "preset": cfg.preset,
            "model_config": json.dumps(cfg.to_dict()["model"])}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_safetensors(path, model_state(model, latents), meta)


class LoadedModel:
    """A trained run: config, network (eval mode), latent table [K, D], image list, paths."""

    def __init__(self, run: RunPaths, cfg: Config, model: GenerativeNeRF, latents: torch.Tensor, meta: dict):
        self.run, self.cfg, self.model, self.latents, self.meta = run, cfg, model, latents, meta

    @property
    def model_hash(self) -> str:
        return self.cfg.model_hash()

    def images(self) -> list[str]:
        from ..formats import read_images_json

        return read_images_json(self.run.images) if self.run.images.is_file() else []


def load_model(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load RUN/config.json + RUN/model.safetensors; every mismatch is an InputError naming the file."""
    run = run_folder(run_dir)
    cfg = config_from_dict(read_json(run.config, "run configuration"), str(run.config))
    tensors, meta = load_safetensors(run.model, "model file")
    if "latents" not in tensors:
        raise InputError(run.model, "has no 'latents' tensor; not a lolnerf model")
    latents = tensors.pop("latents").float()
    if latents.ndim != 2 or latents.shape[1] != cfg.model.latent_dim:
        raise InputError(run.model, f"latent table has shape {list(latents.shape)} but config.json says "
                                    f"latent_dim={cfg.model.latent_dim}")
    model = GenerativeNeRF(cfg.model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise InputError(run.model, f"weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in tensors.items():
        if v.shape != expected[k].shape:
            raise InputError(run.model, f"tensor '{k}' has shape {list(v.shape)}, config.json implies {list(expected[k].shape)}")
    model.load_state_dict(tensors)
    model.eval().requires_grad_(False)
    return LoadedModel(run, cfg, model.to(device), latents.to(device), meta)
