"""Making a baked grid agree with the network at hard surfaces (used by `bake.bake`).

A trained model's surfaces are much thinner than a voxel: on a 15,000-step `cpu` model the density
rises from ~1 to ~1,000 within 0.002 object units (a 128^3 voxel is 0.016), and the network's colour
is only right where that density is: 0.01 in front of the skin it is dark red, 0.01 behind a lip it is
already skin. A sample in the voxel that holds the surface interpolates the corners on both sides, so
the raw corner values put wrong colours on every surface (16 dB against exact renders). Three steps,
all on the evaluated corners before they are stored:

1. "bleed" (`bleed_colours`): nearly transparent corners take the opacity-weighted mean colour of their
   3 x 3 x 3 neighbourhood (what is in front of a surface never shows, so its own colour is free).
2. "cap": the corners of every voxel a surface crosses (`surface_corners`) have their density capped at
   INSIDE_TAU optical depth per marching step. Between an outside corner (logit ~0) and an inside one
   (logit 100-7,000) trilinear interpolation otherwise puts the surface next to the outside corner:
   silhouettes came out half a voxel too fat. Deeper corners keep their density, so a ray that crosses
   the surface still stops within a step or two.
3. "surface" (`surface_colours`, `fill_inwards`): those corners get the colour a ray along the surface
   normal sees (SURFACE_SAMPLES network evaluations over +-SURFACE_SPAN voxels, composited like a render),
   and the opaque corners one step behind them the mean of their colours.

The effect of each is measured by `examples/baked_vs_exact.py --without ...`.

Shapes: M evaluated corners, T corners being updated; corner indices are (z, y, x) on the (N+1)^3
lattice and `slot` [(N+1)^3] maps a lattice corner to its row in `values` [M, 4] (-1: not evaluated)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .render import weights_from_optical_depth

BLEED_ROUNDS = 2             # rounds of colour bleeding into transparent corners
BLEED_ALPHA = 0.05           # corners less opaque than this over one marching step take their neighbours' colour
INSIDE_TAU = 1.75            # cap on the optical depth of one marching step inside a surface
SURFACE_SAMPLES = 16         # network evaluations along each surface corner's normal
SURFACE_SPAN = 1.5           # ... spread over +-this many voxels
ROWS_PER_PASS = 1 << 16      # corners handled at once (bounded memory)


def density_logit(sigma: float) -> float:
    """The softplus logit whose density is `sigma` (-inf for 0)."""
    if sigma <= 0:
        return -math.inf
    return sigma + math.log(-math.expm1(-sigma)) if sigma < 20 else sigma


def step_alpha(values: torch.Tensor, step: float) -> torch.Tensor:
    """[M] opacity of one marching step of length `step` at each corner."""
    return -torch.expm1(-F.softplus(values[:, 0]) * step)


def neighbour_rows(vidx: torch.Tensor, rows: torch.Tensor, slot: torch.Tensor, n: int) -> torch.Tensor:
    """[T, 27] rows in `values` of the 3 x 3 x 3 corners around corners `rows` (-1: not evaluated);
    neighbour (dz, dy, dx) is column (dz + 1) * 9 + (dy + 1) * 3 + (dx + 1)."""
    off = torch.stack(torch.meshgrid(*[torch.arange(-1, 2, device=vidx.device)] * 3, indexing="ij"), -1).view(-1, 3)
    nb = vidx[rows][:, None] + off
    inside = ((nb >= 0) & (nb <= n)).all(-1)
    lin = (nb[..., 0] * (n + 1) + nb[..., 1]) * (n + 1) + nb[..., 2]
    return torch.where(inside, slot[lin.clamp(0, slot.numel() - 1)].long(), torch.full_like(lin, -1))


def _around(alpha: torch.Tensor, j: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[T, 27] opacity of each neighbour; a missing neighbour counts as the corner itself."""
    return torch.where(j >= 0, alpha[j.clamp_min(0)], alpha[rows][:, None])


def colour_logits(rgb: torch.Tensor) -> torch.Tensor:
    """Colours in [0, 1] -> the colour logits a grid stores (kept finite)."""
    return torch.logit(rgb.clamp(1e-4, 1 - 1e-4))


def _neighbour_mean(values: torch.Tensor, j: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Colour logits [T, 3] of the w-weighted mean colour of neighbours j [T, 27] (weights w [T, 27], each
    row's sum > 0)."""
    rgb = torch.sigmoid(values[j.clamp_min(0), 1:])                                        # [T, 27, 3]
    return colour_logits((w[..., None] * rgb).sum(1) / w.sum(1, keepdim=True))


def bleed_colours(values: torch.Tensor, vidx: torch.Tensor, slot: torch.Tensor, n: int, step: float) -> None:
    """In place: the colour logits of corners less opaque than BLEED_ALPHA become the opacity-weighted
    mean colour of their neighbourhood, BLEED_ROUNDS times (the density, and so the weights, never change)."""
    alpha = step_alpha(values, step)
    thin = torch.nonzero(alpha < BLEED_ALPHA).squeeze(1)
    if thin.numel() == 0:
        return
    for _ in range(BLEED_ROUNDS):
        new = torch.empty(thin.shape[0], 3, device=values.device)
        for s in range(0, thin.shape[0], ROWS_PER_PASS):
            rows = thin[s:s + ROWS_PER_PASS]
            j = neighbour_rows(vidx, rows, slot, n)
            ok = j >= 0
            w = torch.where(ok, alpha[j.clamp_min(0)], torch.zeros(())) + 1e-12 * ok     # no opaque neighbour: a plain mean
            new[s:s + rows.shape[0]] = _neighbour_mean(values, j, w)
        values[thin, 1:] = new


def fix_surfaces(field_logits, values: torch.Tensor, vidx: torch.Tensor, pts: torch.Tensor, slot: torch.Tensor,
                 n: int, voxel: float, step: float, steps: tuple[str, ...]) -> None:
    """In place, the steps named in `steps` ("bleed", "cap", "surface"; see the module docstring).

    field_logits(points [P, 3]) -> logits [P, 4] evaluates the network; pts [M, 3] are the corners'
    object-frame positions; voxel is the grid spacing and step the marching step (object units)."""
    if "bleed" in steps:
        bleed_colours(values, vidx, slot, n, step)
    rows, normal = surface_corners(values, vidx, slot, n, step)
    if rows.numel() == 0:
        return
    if "cap" in steps:
        values[rows, 0] = values[rows, 0].clamp(max=density_logit(INSIDE_TAU / step))
    if "surface" in steps:
        surface_colours(field_logits, values, rows, normal, pts, voxel)
        fill_inwards(values, vidx, slot, n, rows, step)


def surface_corners(values: torch.Tensor, vidx: torch.Tensor, slot: torch.Tensor, n: int, step: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Corners next to the surface (their neighbourhood holds corners both above and below opacity 0.5
    per step: every corner of a voxel that a surface crosses) [T], and their outward unit normals [T, 3]
    (x, y, z), from the opacity's gradient."""
    alpha = step_alpha(values, step)
    found, around = [], []
    for s in range(0, values.shape[0], ROWS_PER_PASS):
        rows = torch.arange(s, min(values.shape[0], s + ROWS_PER_PASS), device=values.device)
        a = _around(alpha, neighbour_rows(vidx, rows, slot, n), rows)
        at = (a.max(1).values >= 0.5) & (a.min(1).values < 0.5)
        found.append(rows[at])
        around.append(a[at])
    if not found or sum(r.numel() for r in found) == 0:
        return torch.zeros(0, dtype=torch.long, device=values.device), torch.zeros(0, 3, device=values.device)
    rows, a = torch.cat(found), torch.cat(around)
    grad = torch.stack([a[:, 14] - a[:, 12], a[:, 16] - a[:, 10], a[:, 22] - a[:, 4]], -1)   # d/dx, d/dy, d/dz
    length = grad.norm(dim=-1)
    keep = length > 1e-3
    return rows[keep], -grad[keep] / length[keep, None]


def surface_colours(field_logits, values: torch.Tensor, rows: torch.Tensor, normal: torch.Tensor, pts: torch.Tensor,
                    voxel: float) -> None:
    """In place: corners `rows` [T] with outward normals [T, 3] take the colour that a ray along the
    normal sees (composited like a render) where that ray meets the surface."""
    k, span = SURFACE_SAMPLES, SURFACE_SPAN * voxel
    offsets = torch.linspace(span, -span, k, device=values.device)           # outside first
    for s in range(0, rows.shape[0], ROWS_PER_PASS):
        r, nrm = rows[s:s + ROWS_PER_PASS], normal[s:s + ROWS_PER_PASS]
        q = pts[r][:, None] + nrm[:, None] * offsets[None, :, None]          # [T, K, 3]
        raw = field_logits(q.reshape(-1, 3)).view(-1, k, 4)
        w = weights_from_optical_depth(F.softplus(raw[..., 0]) * (2 * span / (k - 1)))
        total = w.sum(1)
        hit = total > 0.5                                                     # the segment crosses the surface
        col = (w[..., None] * torch.sigmoid(raw[..., 1:])).sum(1) / total.clamp_min(1e-6)[:, None]
        values[r[hit], 1:] = colour_logits(col[hit])


def fill_inwards(values: torch.Tensor, vidx: torch.Tensor, slot: torch.Tensor, n: int, surface: torch.Tensor,
                 step: float) -> None:
    """In place: opaque corners one step behind the surface corners `surface` [T] take the mean colour of
    the surface corners around them. A ray that crosses the surface near a voxel's far side takes its
    colour in the next voxel, whose far corners would otherwise hold the colour deeper inside."""
    is_surface = torch.zeros(values.shape[0], dtype=torch.bool, device=values.device)
    is_surface[surface] = True
    alpha = step_alpha(values, step)
    candidates = torch.nonzero(~is_surface & (alpha >= 0.5)).squeeze(1)
    for s in range(0, candidates.shape[0], ROWS_PER_PASS):
        rows = candidates[s:s + ROWS_PER_PASS]
        j = neighbour_rows(vidx, rows, slot, n)
        w = (j >= 0) & is_surface[j.clamp_min(0)]
        take = w.any(1)
        if bool(take.any()):
            values[rows[take], 1:] = _neighbour_mean(values, j[take], w[take].float())
