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
from ..formats import load_safetensors, read_json, save_safetensors
from ..folders import RunPaths, run_folder
from .background import Background
from .field import LatentField, proposal_field


class GenerativeNeRF(nn.Module):
    """sigma, c = field(x | z); background colour = background(d | z); optional proposal density networks
    that place the field's samples. Latents live outside it.

    `pixel_floor` (a buffer, with the "ipe" encoding only) is the smallest pixel footprint per unit depth
    the model was trained with (1 / focal length in pixels): renders at a finer resolution use it instead
    of their own, so they never ask for detail finer than the training photos held."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.field = LatentField(cfg)
        self.background = Background(cfg)
        self.proposals = nn.ModuleList(proposal_field(cfg) for _ in range(cfg.proposal_levels))
        if cfg.encoding == "ipe":
            self.register_buffer("pixel_floor", torch.zeros(()))
            self.register_buffer("point_footprint", torch.zeros(()))   # pixel width at the mean camera distance

    def set_footprint(self, pixel_floor: float | None = None, point_footprint: float | None = None) -> None:
        """Set (or, with no arguments, re-read from the buffers after loading weights) the training pixel
        footprint the "ipe" encoding uses; the fields keep a plain float copy."""
        if self.cfg.encoding != "ipe":
            return
        if pixel_floor is not None:
            self.pixel_floor.fill_(float(pixel_floor))
        if point_footprint is not None:
            self.point_footprint.fill_(float(point_footprint))
        for f in [self.field, *self.proposals]:
            f.footprint = float(self.point_footprint)

    def set_window(self, octaves: float | None) -> None:
        """Open the encoding's octaves up to `octaves` (coarse-to-fine training); None: all of them."""
        for f in [self.field, *self.proposals]:
            f.window = octaves

    def point_var(self, like: torch.Tensor, spacing: float) -> torch.Tensor | None:
        """Variances [...] for field queries at loose points (a grid of `spacing`, mesh export) whose shape
        is like[..., 3]: each point stands for a cell no finer than a training pixel. None with "pe"."""
        if self.cfg.encoding != "ipe":
            return None
        size = max(float(spacing), float(self.point_footprint))
        return torch.full(like.shape[:-1], size * size / 12.0, device=like.device)


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
    model.set_footprint()
    model.eval().requires_grad_(False)
    return LoadedModel(run, cfg, model.to(device), latents.to(device), meta)
