"""LOLNeRF losses: per-pixel RGB L2, mask loss on alpha, the hard-surface loss on weights, the one
composer of them that training and inversion both use (`compose_loss`), and micro-batched backward
passes (`backward_in_micro_batches`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


def rgb_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over rays and channels. pred, target [R, 3]."""
    return ((pred - target) ** 2).mean()


def mask_loss(alpha: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor | None = None,
              n_masked: torch.Tensor | None = None) -> torch.Tensor:
    """L2 between rendered foreground opacity and the segmentation mask. alpha, mask [R] in [0, 1].

    has_mask [R] (0/1): only rays of images that have a mask count (mean over those rays). n_masked: divide
    by this count instead of has_mask's own (a micro-batch's share of a whole batch's mean)."""
    if has_mask is None:
        return ((alpha - mask) ** 2).mean()
    denom = has_mask.sum().clamp_min(1.0) if n_masked is None else n_masked
    return ((alpha - mask) ** 2 * has_mask).sum() / denom


def hard_surface_loss(weights: torch.Tensor) -> torch.Tensor:
    """-log(exp(-|w|) + exp(-|1 - w|)) averaged over every per-sample weight [R, S].

    Minimal (0 up to a constant) at w in {0, 1}: it pushes every sample to be empty or fully opaque,
    so the model forms hard surfaces and the depth is well defined. Shifted so that its minimum is 0."""
    w = weights
    return (-torch.log(torch.exp(-w.abs()) + torch.exp(-(1 - w).abs())) + math.log(1 + math.exp(-1))).mean()


# The mirror-symmetry loss looks at this many points per ray, spread over SYMMETRY_BAND scene units of the ray
# about its expected surface depth, each standing for an interval of SYMMETRY_STEP scene units.
SYMMETRY_POINTS = 8
SYMMETRY_BAND = 0.1
SYMMETRY_STEP = 0.05
MIRROR_X = (-1.0, 1.0, 1.0)     # the object frame's mirror: x -> -x (SPEC: +X is the eye line)


def symmetry_loss(density: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], origins: torch.Tensor,
                  dirs: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Mirror symmetry of the object's shape, per ray [R]: the opacity of the field near each ray's surface
    should equal the opacity at the mirrored points (x -> -x), for the same latent.

    density(points [R, S, 3], z [R, D]) -> sigma [R, S]; origins, dirs [R, 3] (object frame), alpha [R] and
    depth [R] (expected t, not yet divided by alpha) of the rendered rays. Points are SYMMETRY_POINTS evenly
    spaced over +-SYMMETRY_BAND / 2 about the expected depth, detached (the loss shapes the field and the
    latents, not the cameras). Each ray counts by its opacity (alpha), so rays that miss the object count
    0. Colour is left out: light from one side makes a symmetric face's colours asymmetric."""
    a = alpha.detach()
    t = depth.detach() / a.clamp_min(1e-6)
    dl = dirs.norm(dim=-1)
    offs = torch.linspace(-0.5, 0.5, SYMMETRY_POINTS, device=origins.device, dtype=origins.dtype) * SYMMETRY_BAND
    tt = t[:, None] + offs[None] / dl[:, None]                                              # [R, S]
    pts = (origins[:, None] + dirs[:, None] * tt[..., None]).detach()                       # [R, S, 3]
    mirror = torch.tensor(MIRROR_X, device=pts.device, dtype=pts.dtype)
    sigma = density(torch.cat([pts, pts * mirror], 0), torch.cat([z, z], 0)).float()
    occ = 1.0 - torch.exp(-sigma * SYMMETRY_STEP)
    own, mirrored = occ.chunk(2)
    return ((own - mirrored) ** 2).mean(-1) * a.to(own.dtype)


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


@dataclass
class LossWeights:
    rgb: float
    mask: float
    hard_surface: float
    interlevel: float = 0.0         # proposal sampler only; inversion leaves it out (the network is frozen)

    @classmethod
    def of(cls, tc, interlevel: bool = True) -> "LossWeights":
        """The weights of a TrainConfig (`interlevel=False`: without the proposal networks' term)."""
        return cls(tc.rgb_weight, tc.mask_weight, tc.hard_surface_weight, tc.interlevel_weight if interlevel else 0.0)


def compose_loss(out, target: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor, weights: LossWeights,
                 ray_count: float | torch.Tensor, mask_count: float | torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The weighted LOLNeRF loss of some rendered rays (render.RenderOut `out` of R rays; target [R, 3],
    mask [R] in [0, 1], has_mask [R] 0/1), and its terms.

    The RGB, hard-surface and interlevel terms are means over these rays scaled by R / ray_count, the mask
    term a sum over the masked rays divided by mask_count: with the counts of a whole batch, the losses of
    its micro-batches add up to the batch's. Training passes the step's ray and masked-ray counts (means
    over the batch); inversion passes its pixels per photo for both (per-photo means, summed over photos).
    A zero weight leaves its term out of the loss (the mask term is then not computed; it reads 0).

    Returns (loss, {"loss", "loss_rgb", "loss_mask", "loss_hard", "loss_interlevel"})."""
    share = out.rgb.shape[0] / ray_count
    zero = torch.zeros((), device=out.rgb.device)
    l_rgb = rgb_loss(out.rgb, target) * share
    l_mask = mask_loss(out.alpha, mask, has_mask, mask_count) if weights.mask > 0 else zero
    l_hard = hard_surface_loss(out.weights) * share
    l_inter = out.interlevel * share if out.interlevel is not None else zero
    loss = weights.rgb * l_rgb
    if weights.mask > 0:
        loss = loss + weights.mask * l_mask
    loss = loss + weights.hard_surface * l_hard
    if weights.interlevel != 0 and out.interlevel is not None:
        loss = loss + weights.interlevel * l_inter
    return loss, {"loss": loss, "loss_rgb": l_rgb, "loss_mask": l_mask, "loss_hard": l_hard, "loss_interlevel": l_inter}


def backward_in_micro_batches(n_rays: int, micro_batch: int, device: torch.device,
                              loss_of: Callable[[slice], tuple[torch.Tensor, dict]]) -> tuple[bool, dict[str, float]]:
    """Backpropagate a per-ray loss over n_rays rays in consecutive micro-batches of `micro_batch` rays
    (0 or >= n_rays: all at once). `loss_of(slice)` renders those rays and returns (loss, stats), the loss
    already scaled to its share of the whole batch's loss (compose_loss does this), so the accumulated
    gradients are the whole batch's. Each micro-batch's activations stay in cache: the same step, measured
    much faster on CPU. On GPUs, which need large batches to be busy, the whole batch goes at once.

    Returns (every loss was finite, the stats summed over micro-batches). Stops at the first non-finite
    loss without backpropagating it (the caller drops the step)."""
    mb = micro_batch if 0 < micro_batch < n_rays and device.type == "cpu" else n_rays
    sums: dict[str, float] = {}
    for start in range(0, n_rays, mb):
        loss, stats = loss_of(slice(start, min(start + mb, n_rays)))
        if not torch.isfinite(loss.detach()):
            return False, sums
        loss.backward()
        for key, val in stats.items():
            sums[key] = sums.get(key, 0.0) + (val.detach().item() if torch.is_tensor(val) else float(val))
    return True, sums
