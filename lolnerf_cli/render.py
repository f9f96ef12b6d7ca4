"""Volume rendering inside the scene sphere, two samplers, compositing, chunking.

- "hierarchical" (NeRF): stratified samples, then importance samples from their weights, all through the
  main field; samples are points.
- "proposal" (mip-NeRF 360 / nerfacto): small density networks (`model.proposals`) are evaluated on
  stratified intervals, each level's weights are resampled into the next level's intervals, and only the
  last set goes through the main field. The proposals learn from the interlevel loss (their weights must
  bound the main field's, which are detached), never from the photo loss. Samples are intervals, so
  the "ipe" encoding can integrate each one over its extent.

Shapes: R rays, S samples per ray, D latent width. Ray directions have camera-space z = -1 (see
cameras.py), so the distance parameter t of a sample is its camera-space z-depth."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch

from .cameras import Camera, sphere_bounds
from .config import RenderConfig
from .device import autocast
from .progress import Progress, or_silent


@dataclass
class RenderOut:
    rgb: torch.Tensor        # [R, 3] final colour (foreground composited over background)
    alpha: torch.Tensor      # [R] foreground opacity = sum of weights
    depth: torch.Tensor      # [R] expected t (sum w t), not yet divided by alpha
    weights: torch.Tensor    # [R, S] per-sample rendering weights (for the hard-surface loss)
    fg_rgb: torch.Tensor     # [R, 3] foreground colour premultiplied by alpha
    bg_rgb: torch.Tensor     # [R, 3] background colour
    interlevel: torch.Tensor | None = None   # proposal sampler, when gradients are on: mean over rays


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise drawn from `generator` (on its own device, so a CPU generator can drive CUDA work)."""
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=like.dtype)
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def stratified_t(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples per ray, one per equal bin of [near, far] -> t [R, n] ascending."""
    r = near.shape[0]
    offs = _rand((r, n), near, generator) if perturb else torch.full((r, n), 0.5, device=near.device)
    u = (torch.arange(n, device=near.device, dtype=near.dtype) + offs) / n
    return near[:, None] + (far - near)[:, None] * u


def sample_pdf(edges: torch.Tensor, weights: torch.Tensor, n: int, perturb: bool,
               generator: torch.Generator | None = None, stratified: bool = False) -> torch.Tensor:
    """Inverse-CDF samples from a piecewise-constant pdf. edges [R, B+1], weights [R, B] -> t [R, n].

    perturb: u uniform in [0, 1) (unsorted), or with `stratified` one u per 1/n of the CDF (ascending t);
    otherwise u at the n bin centres of the CDF (ascending t)."""
    w = weights + 1e-5                                              # no empty pdf
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1).clamp(max=1.0)   # [R, B+1]
    r = edges.shape[0]
    if perturb and stratified:
        u = (torch.arange(n, device=edges.device, dtype=edges.dtype) + _rand((r, n), edges, generator)) / n
    elif perturb:
        u = _rand((r, n), edges, generator)
    else:
        u = ((torch.arange(n, device=edges.device, dtype=edges.dtype) + 0.5) / n).expand(r, n)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[1] - 1)
    c0, c1 = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    e0, e1 = edges.gather(1, idx - 1), edges.gather(1, idx)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-8)).clamp(0, 1)
    return e0 + frac * (e1 - e0)


def composite_weights(sigma: torch.Tensor, t: torch.Tensor, far: torch.Tensor, dir_len: torch.Tensor) -> torch.Tensor:
    """Per-sample weights w_i = T_i (1 - exp(-sigma_i delta_i)). sigma, t [R, S] (t ascending) -> [R, S]."""
    delta = torch.cat([t[:, 1:] - t[:, :-1], (far[:, None] - t[:, -1:]).clamp_min(0)], dim=-1) * dir_len[:, None]
    return weights_from_optical_depth(sigma * delta)


def weights_from_optical_depth(tau: torch.Tensor) -> torch.Tensor:
    """w_i = T_i (1 - exp(-tau_i)) with T_i = exp(-sum_{j<i} tau_j). tau [R, S] -> [R, S]."""
    alpha = 1.0 - torch.exp(-tau)
    # transmittance T_i = exp(-sum_{j<i} tau_j), computed stably with an exclusive cumulative sum
    trans = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], -1), -1))
    return alpha * trans


def render_rays(model, origins: torch.Tensor, dirs: torch.Tensor, z: torch.Tensor, rcfg: RenderConfig,
                perturb: bool = False, precision: str = "fp32", generator: torch.Generator | None = None,
                pix: torch.Tensor | None = None) -> RenderOut:
    """Render R rays: origins, dirs [R, 3], one latent per ray z [R, D]; pix [R]: each ray's pixel width per
    unit depth (1 / focal length in pixels), used by the "ipe" encoding (None: the model's training floor)."""
    if rcfg.sampler == "proposal":
        return _render_proposal(model, origins, dirs, z, rcfg, perturb, precision, generator, pix)
    radius = model.cfg.scene_radius
    device = origins.device
    near, far, _ = sphere_bounds(origins, dirs, radius, rcfg.near_min)
    dir_len = dirs.norm(dim=-1)
    t_c = stratified_t(near, far, rcfg.n_coarse, perturb, generator)                    # [R, Sc]
    with autocast(device, precision):
        sigma_c, rgb_c = model.field(origins[:, None] + dirs[:, None] * t_c[..., None], z)
    if rcfg.n_fine > 0:
        with torch.no_grad():
            w_c = composite_weights(sigma_c.detach(), t_c, far, dir_len)
            mids = 0.5 * (t_c[:, 1:] + t_c[:, :-1])
            edges = torch.cat([near[:, None], mids, far[:, None]], -1)                  # [R, Sc+1]
            t_f = sample_pdf(edges, w_c, rcfg.n_fine, perturb, generator)               # [R, Sf]
        with autocast(device, precision):
            sigma_f, rgb_f = model.field(origins[:, None] + dirs[:, None] * t_f[..., None], z)
        t_all, order = torch.sort(torch.cat([t_c, t_f], -1), dim=-1)
        sigma = torch.cat([sigma_c, sigma_f], -1).gather(1, order)
        rgb = torch.cat([rgb_c, rgb_f], 1).gather(1, order[..., None].expand(-1, -1, 3))
    else:
        t_all, sigma, rgb = t_c, sigma_c, rgb_c
    weights = composite_weights(sigma, t_all, far, dir_len)                              # [R, S]
    alpha = weights.sum(-1)
    fg = (weights[..., None] * rgb).sum(1)
    with autocast(device, precision):
        bg = model.background(dirs, z)
    out_rgb = fg + (1.0 - alpha)[:, None] * bg
    return RenderOut(out_rgb, alpha, (weights * t_all).sum(-1), weights, fg, bg)


def stratified_edges(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """n intervals covering [near, far]: edges [R, n+1], the inner ones jittered within their bins when
    perturb (else evenly spaced)."""
    if perturb:
        inner = stratified_t(near, far, n - 1, True, generator)
    else:                                                   # evenly spaced: n equal intervals
        u = torch.arange(1, n, device=near.device, dtype=near.dtype) / n
        inner = near[:, None] + (far - near)[:, None] * u
    return torch.cat([near[:, None], inner, far[:, None]], -1)


# A little uniform mass added to a proposal histogram before resampling, so that a surface the proposal
# missed still gets an occasional sample (and its weight can teach the proposal where it is).
HISTOGRAM_PADDING = 1e-3


def resample_edges(edges: torch.Tensor, weights: torch.Tensor, n: int, perturb: bool,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """n intervals (edges [R, n+1], ascending) drawn by inverse CDF from a histogram (edges [R, B+1],
    weights [R, B]), stratified in CDF space: dense where the weights are, sparse elsewhere."""
    return sample_pdf(edges, weights.detach() + HISTOGRAM_PADDING, n + 1, perturb, generator, stratified=True)


def interval_variance(t0: torch.Tensor, t1: torch.Tensor, dir_len: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Isotropic variance of the region a sample stands for: its ray interval [t0, t1] (uniform along the
    ray) and the pixel's footprint at that depth (uniform across a pixel of width t * pix)."""
    along = ((t1 - t0) * dir_len[:, None]) ** 2 / 12.0
    across = (0.5 * (t0 + t1) * pix[:, None]) ** 2 / 12.0
    return (along + 2.0 * across) / 3.0


def interlevel_loss(edges: torch.Tensor, weights: torch.Tensor, prop_edges: torch.Tensor,
                    prop_weights: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's outer-bound loss, per ray [R]: each main interval's weight (detached by the caller)
    should not exceed the proposal weight of all proposal intervals that overlap it."""
    cum = torch.cat([torch.zeros_like(prop_weights[:, :1]), torch.cumsum(prop_weights, -1)], -1)   # [R, Bp+1]
    nb = prop_weights.shape[1]
    lo = (torch.searchsorted(prop_edges.contiguous(), edges[:, :-1].contiguous(), right=True) - 1).clamp(0, nb)
    hi = torch.searchsorted(prop_edges.contiguous(), edges[:, 1:].contiguous(), right=False).clamp(0, nb)
    bound = cum.gather(1, hi) - cum.gather(1, lo)
    return ((weights - bound).clamp_min(0) ** 2 / (weights + 1e-7)).sum(-1)


def _render_proposal(model, origins, dirs, z, rcfg: RenderConfig, perturb: bool, precision: str,
                     generator: torch.Generator | None, pix: torch.Tensor | None) -> RenderOut:
    device = origins.device
    near, far, _ = sphere_bounds(origins, dirs, model.cfg.scene_radius, rcfg.near_min)
    dir_len = dirs.norm(dim=-1)
    floor = getattr(model, "pixel_floor", None)
    if pix is None:
        pix = torch.zeros_like(near)
    if floor is not None:
        pix = pix.clamp_min(float(floor))

    def at(edges):     # sample points and variances of intervals
        t0, t1 = edges[:, :-1], edges[:, 1:]
        mid = 0.5 * (t0 + t1)
        return origins[:, None] + dirs[:, None] * mid[..., None], interval_variance(t0, t1, dir_len, pix), mid

    levels = []
    edges = stratified_edges(near, far, rcfg.proposal_samples[0], perturb, generator)
    z_prop = z.detach()          # the proposals learn where surfaces are, they do not shape the latents
    for i, prop in enumerate(model.proposals):
        if i > 0:
            edges = resample_edges(edges, levels[-1][1], rcfg.proposal_samples[i], perturb, generator)
        pts, var, _ = at(edges)
        with autocast(device, precision):
            sigma_p, _ = prop(pts, z_prop, var)
        w_p = weights_from_optical_depth(sigma_p * (edges[:, 1:] - edges[:, :-1]) * dir_len[:, None])
        levels.append((edges, w_p))
    edges = resample_edges(edges, levels[-1][1], rcfg.n_samples, perturb, generator)
    pts, var, mid = at(edges)
    with autocast(device, precision):
        sigma, rgb = model.field(pts, z, var)
    weights = weights_from_optical_depth(sigma * (edges[:, 1:] - edges[:, :-1]) * dir_len[:, None])
    alpha = weights.sum(-1)
    fg = (weights[..., None] * rgb).sum(1)
    with autocast(device, precision):
        bg = model.background(dirs, z)
    inter = None
    if torch.is_grad_enabled():
        w_det = weights.detach()
        inter = sum(interlevel_loss(edges, w_det, e_p, w_p) for e_p, w_p in levels).mean()
    return RenderOut(fg + (1.0 - alpha)[:, None] * bg, alpha, (weights * mid).sum(-1), weights, fg, bg, inter)


def image_samples(rcfg: RenderConfig) -> RenderConfig:
    """The sampling of whole-image renders: every sample count of `rcfg` times its image_sample_factor
    (then 1). With the few samples a step trains with (`cpu`: 16 + 16), the fixed sample positions of an
    unperturbed render leave terraces in depth and seams in colour where a surface crosses from one coarse
    interval to the next; twice as many remove most of them (docs/sampling.md, "Samples per ray in
    whole-image renders")."""
    f = int(rcfg.image_sample_factor)
    if f == 1:
        return rcfg
    return replace(rcfg, n_coarse=rcfg.n_coarse * f, n_fine=rcfg.n_fine * f, n_samples=rcfg.n_samples * f,
                   proposal_samples=tuple(p * f for p in rcfg.proposal_samples), image_sample_factor=1)


@torch.inference_mode()
def render_image(model, z: torch.Tensor, camera: Camera, rcfg: RenderConfig, precision: str = "fp32",
                 chunk: int | None = None, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Render one latent z [D] through one camera in bounded memory, with the sampling of `image_samples`.

    Returns numpy arrays: rgb [H, W, 3] float32 in [0, 1], alpha [H, W], depth [H, W] (camera z-depth =
    expected depth / alpha, NaN where alpha < 0.5), fg [H, W, 3] (premultiplied foreground)."""
    device = z.device
    rcfg = image_samples(rcfg)
    origins, dirs = camera.rays(device)
    pix = torch.full((origins.shape[0],), 1.0 / float(camera.fx), device=device)
    chunk = chunk or rcfg.chunk
    n = origins.shape[0]
    outs = {"rgb": [], "alpha": [], "depth": [], "fg": []}
    progress = or_silent(progress)
    steps = math.ceil(n / chunk)
    with progress.task("rendering", total=steps) if steps > 8 else nullcontext() as task:
        for s in range(0, n, chunk):
            zz = z[None].expand(min(chunk, n - s), -1)
            r = render_rays(model, origins[s:s + chunk], dirs[s:s + chunk], zz, rcfg, False, precision,
                            pix=pix[s:s + chunk])
            outs["rgb"].append(r.rgb.float())
            outs["alpha"].append(r.alpha.float())
            outs["depth"].append(r.depth.float())
            outs["fg"].append(r.fg_rgb.float())
            if task is not None:
                task.advance()
    return image_outputs(outs, camera.h, camera.w)


def image_outputs(outs: dict[str, list[torch.Tensor]], h: int, w: int) -> dict[str, np.ndarray]:
    """Per-chunk ray outputs (rgb, alpha, expected depth sum, premultiplied fg) -> the image arrays that
    `render_image` returns (depth = sum / alpha where alpha >= 0.5, else NaN)."""
    rgb = torch.cat(outs["rgb"]).clamp(0, 1).reshape(h, w, 3).cpu().numpy()
    alpha = torch.cat(outs["alpha"]).reshape(h, w).cpu().numpy()
    depth_sum = torch.cat(outs["depth"]).reshape(h, w).cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(alpha >= 0.5, depth_sum / np.maximum(alpha, 1e-6), np.nan).astype(np.float32)
    fg = torch.cat(outs["fg"]).clamp(0, 1).reshape(h, w, 3).cpu().numpy()
    return {"rgb": rgb, "alpha": alpha, "depth": depth, "fg": fg}
