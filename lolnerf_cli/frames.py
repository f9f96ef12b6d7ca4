"""Which renderer draws a command's frames: the network (`render.render_image`, "exact") or a baked
grid (`bake.render_baked`), with one bake shared by every frame of the same latent.

The "auto" policy counts field evaluations. An exact frame costs H x W x (coarse + fine samples); a
bake costs its coarse pass plus B^3 per occupied block, after which a frame costs no field evaluation
(a trilinear grid lookup is a small fraction of one network evaluation). A latent is baked when that
is cheaper for all the frames it will get; the coarse pass is only run when those frames would cost
more than it does, and the bake then reuses it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .bake import (DEFAULT_BLOCK, BakedField, bake, coarse_occupancy, coarse_points_estimate, default_resolution,
                   fine_points_estimate, render_baked)
from .cameras import Camera
from .progress import Progress

if TYPE_CHECKING:
    from .model import LoadedModel

MODES = ("auto", "exact", "baked")
CHECK_SIDE = 32            # pixels per side of the view on which a new bake is checked against the network
CHECK_MIN_PSNR = 30.0      # dB: a bake that matches the network worse than this is not used ("auto" mode)


@dataclass
class FrameStats:
    bakes: int = 0
    bake_seconds: float = 0.0
    baked_frames: int = 0
    exact_frames: int = 0
    bake_mb: float = 0.0                 # memory of the last grid
    blocks: int = 0                      # occupied blocks of the last grid
    resolution: int = 0
    check_psnr: float | None = None      # baked vs exact on the last check view (dB)
    rejected: int = 0                    # bakes not used: they did not match the network

    def describe(self) -> str:
        """One line for the terminal: what was baked, how long it took, how frames were drawn."""
        if self.rejected:
            return (f"{self.exact_frames} frame(s) rendered through the network: the baked grid did not match "
                    f"it (check view {self.check_psnr:.1f} dB < {CHECK_MIN_PSNR:.0f} dB; a field with detail finer "
                    f"than the {self.resolution}^3 grid), so it was not used")
        if not self.bakes and not self.baked_frames:
            return f"{self.exact_frames} frame(s) rendered through the network (exact)"
        bakes = (f"baked {self.bakes} latent(s) at {self.resolution}^3 in {self.bake_seconds:.1f} s "
                 f"({self.blocks} blocks, {self.bake_mb:.0f} MB)") if self.bakes else "reused a baked grid"
        return f"{bakes}; {self.baked_frames} frame(s) ray-marched, {self.exact_frames} through the network"


class FrameRenderer:
    """Draws (latent, camera) frames exactly or from bakes. mode: auto (the cheaper, see the module
    docstring), exact or baked; `baked` is a grid to start from (e.g. loaded with --bake)."""

    def __init__(self, loaded: LoadedModel, precision: str, mode: str = "auto", progress: Progress | None = None,
                 baked: BakedField | None = None, resolution: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.loaded, self.precision, self.mode, self.progress = loaded, precision, mode, progress
        self.resolution = resolution or default_resolution(loaded.cfg.model)
        self.baked = baked
        self._baked_key = _key(baked.latent) if baked is not None else None
        self._coarse: tuple[bytes, tuple] | None = None      # a coarse pass kept for the bake that follows
        self._rejected: set[bytes] = set()                    # latents whose bake did not match the network
        self.stats = FrameStats()

    # ------------------------------------------------------------------ policy
    def exact_cost(self, cams: list[Camera]) -> int:
        rc = self.loaded.cfg.render
        return sum(c.w * c.h for c in cams) * (rc.n_coarse + rc.n_fine)

    def worth_baking(self, z: torch.Tensor, cams: list[Camera]) -> bool:
        """Is baking z cheaper than drawing these frames of it exactly?"""
        key = _key(z)
        if self.mode != "auto" or key == self._baked_key:
            return self.mode != "exact"
        exact = self.exact_cost(cams)
        coarse = coarse_points_estimate(self.resolution, self.loaded.cfg.model.scene_radius)
        if exact <= coarse:
            return False
        occ = coarse_occupancy(self.loaded.model, z, self.resolution, precision=self.precision)
        self._coarse = (key, occ)
        return occ[1] + fine_points_estimate(occ[0], DEFAULT_BLOCK) < exact

    def plan(self, latents: list[torch.Tensor], cams: list[Camera]) -> list[bool]:
        """Per frame: ray-march a bake (True) or render exactly. Frames of one latent share a decision.
        When every frame has its own latent (a walk), the first latent's estimate decides for all."""
        groups: dict[bytes, list[int]] = {}
        for i, z in enumerate(latents):
            groups.setdefault(_key(z), []).append(i)
        if len(groups) == len(latents) > 1:
            return [self.worth_baking(latents[0], [cams[0]])] * len(latents)
        out = [False] * len(latents)
        for idx in groups.values():
            choice = self.worth_baking(latents[idx[0]], [cams[i] for i in idx])
            for i in idx:
                out[i] = choice
        return out

    # ------------------------------------------------------------------ drawing
    def bake_for(self, z: torch.Tensor, source: str = "") -> BakedField:
        """The grid of latent z: the current one when it is z's, else a new bake (replacing it)."""
        key = _key(z)
        if self.baked is not None and self._baked_key == key:
            return self.baked
        occ = self._coarse[1] if self._coarse is not None and self._coarse[0] == key else None
        t0 = time.perf_counter()
        self.baked = bake(self.loaded.model, z, self.precision, self.resolution, source=source,
                          progress=self.progress, occupied=occ)
        self._baked_key, self._coarse = key, None
        st = self.stats
        st.bakes += 1
        st.bake_seconds += time.perf_counter() - t0
        st.bake_mb, st.blocks, st.resolution = self.baked.nbytes / 1e6, self.baked.stats.blocks, self.baked.resolution
        return self.baked

    def render(self, z: torch.Tensor, cam: Camera, baked: bool) -> dict[str, np.ndarray]:
        """One frame, as `render.render_image` returns it."""
        from .render import render_image

        key = _key(z) if baked else None
        if baked and key not in self._rejected:
            bakes_before = self.stats.bakes
            grid = self.bake_for(z)
            new = self.stats.bakes > bakes_before
            if not (new and self.mode == "auto") or self._bake_matches(grid, z, cam):
                self.stats.baked_frames += 1
                return render_baked(grid, self.loaded.model, cam, self.precision,
                                    near_min=self.loaded.cfg.render.near_min)
            self._rejected.add(key)
            self.stats.rejected += 1
        self.stats.exact_frames += 1
        return render_image(self.loaded.model, z, cam, self.loaded.cfg.render, self.precision)

    def _bake_matches(self, grid: BakedField, z: torch.Tensor, cam: Camera) -> bool:
        """A new bake is checked once on a small view of its first frame ("auto" mode): a field whose
        detail the grid cannot hold would otherwise give every frame a wrong picture."""
        self.stats.check_psnr = bake_check_psnr(self.loaded, grid, z, cam, self.precision)
        return self.stats.check_psnr >= CHECK_MIN_PSNR


def bake_check_psnr(loaded: LoadedModel, grid: BakedField, z: torch.Tensor, cam: Camera, precision: str) -> float:
    """PSNR (dB) of the baked grid against the network on a CHECK_SIDE-pixel version of camera `cam`."""
    from .render import render_image

    small = cam.scaled(CHECK_SIDE, max(1, round(CHECK_SIDE * cam.h / cam.w)))
    exact = render_image(loaded.model, z, small, loaded.cfg.render, precision)["rgb"]
    baked = render_baked(grid, loaded.model, small, precision, near_min=loaded.cfg.render.near_min)["rgb"]
    mse = float(np.mean((np.asarray(exact, np.float64) - np.asarray(baked, np.float64)) ** 2))
    return 10.0 * float(np.log10(1.0 / max(mse, 1e-12)))


def _key(z: torch.Tensor) -> bytes:
    return z.detach().float().cpu().numpy().tobytes()
