"""`lolnerf invert` through the run's encoder: each photo's latent and camera in one network pass, no
landmarks needed; `invert` then optimises the latent from there (`--steps`, hybrid) or returns the
encoder's answer alone (`--steps 0`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from .invert import PhotoInput, mask_for_photo


def encoder_photos(loaded, paths: Sequence[str | Path], use_masks: bool = True, device=None
                   ) -> tuple[list[PhotoInput], torch.Tensor, list[float]]:
    """Read the photos and place each with RUN/encoder.safetensors.

    Returns the photos (camera at each photo's own size, source "encoder"), the encoder's latents [N, D]
    and the encoder's wall time per photo in milliseconds (one photo per pass, after a warm-up pass).
    Masks come from DATA/masks/<stem>.png beside the photo or its alpha channel (no segmentation: the
    encoder path is for any object class)."""
    from .encoder import encode, encoder_paths, load_encoder
    from .images import load_image

    paths = [Path(p) for p in paths]
    images = [load_image(p, with_alpha=True) for p in paths]    # unreadable files fail before any work
    enc = load_encoder(encoder_paths(loaded.run.root)[0], loaded, device or loaded.latents.device)
    encode(enc, [images[0][0]])                                 # warm-up (first-call allocations)
    out, zs, ms = [], [], []
    for p, (rgb, alpha) in zip(paths, images):
        t0 = time.perf_counter()
        z, cams = encode(enc, [rgb])
        ms.append((time.perf_counter() - t0) * 1000.0)
        h, w = rgb.shape[:2]
        mask, msrc = mask_for_photo(p, rgb, alpha, segment=False) if use_masks else (None, None)
        out.append(PhotoInput(p, rgb, cams[0].scaled(w, h), mask, "encoder", msrc))
        zs.append(z[0])
    return out, torch.stack(zs), ms
