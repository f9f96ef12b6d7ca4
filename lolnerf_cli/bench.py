"""`lolnerf bench`: measure this machine the way training and rendering use it.

- matmul peak (GFLOP/s) in fp32 and bf16 (large square matmuls, best of several),
- per preset: training samples/s of a full step (rays -> samples -> network forward + backward ->
  Adam steps on the network and the latent rows), rendering ms per 128x128 frame, the achieved
  fraction of the bf16 (or fp32) peak counted in the plain network's FLOPs, and the estimated wall time
  of the preset's whole training,
- the plain reference: the same network written the nerf-pytorch way (latent concatenated to every
  sample, fp32, no importance-sampling merge) so the speed-up is measured, not claimed,
- optionally (--memory) peak memory of real training runs at 64 px and 256 px, to show that memory
  does not grow with image resolution.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cameras import Camera, look_at, pixel_rays, sphere_bounds, spherical_eye
from .config import Config, ModelConfig, RenderConfig, preset
from .device import (BF16_MIN_SPEEDUP, cpu_bf16_choice, cpu_has_bf16_instructions, measure_bf16_speedup, pick_device,
                     precision_cache_path, resolve_precision)
from .losses import LossWeights, backward_in_micro_batches, compose_loss, hard_surface_loss, rgb_loss
from .model import GenerativeNeRF
from .model.encoding import encoded_dim, posenc
from .progress import Progress, or_silent
from .render import composite_weights, render_image, render_rays, stratified_t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """Best sustained GFLOP/s of n x n matmuls."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        dt = time.perf_counter() - t0
        best = max(best, 4 * 2 * n ** 3 / dt / 1e9)
    return best


# ----------------------------------------------------------------------------------------- plain reference
class PlainField(nn.Module):
    """The nerf-pytorch way: [enc(x), z] concatenated for every sample, skip re-concatenation, fp32."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        cin = encoded_dim(cfg.pos_freqs) + cfg.latent_dim
        self.layers = nn.ModuleList([nn.Linear(cin, cfg.width)])
        for i in range(1, cfg.depth):
            self.layers.append(nn.Linear(cfg.width + (cin if i in cfg.skips else 0), cfg.width))
        self.out = nn.Linear(cfg.width, 4)

    def forward(self, x, z):
        inp = torch.cat([posenc(x, self.cfg.pos_freqs), z[:, None].expand(-1, x.shape[1], -1)], -1)
        h = inp
        for i, layer in enumerate(self.layers):
            if i in self.cfg.skips:
                h = torch.cat([h, inp], -1)
            h = F.relu(layer(h))
        raw = self.out(h)
        return F.softplus(raw[..., 0] - 1.0), torch.sigmoid(raw[..., 1:])


# The plain reference evaluates the whole network at every sample, as the paper trains (128 stratified
# samples per ray, no hierarchical pass), whatever the preset's own sampler.
PLAIN_SAMPLES_PER_RAY = 128


def _plain_step(field, bg_rgb, opt, origins, dirs, z, target):
    """One step of the plain reference: every sample through the whole network, with gradients."""
    near, far, _ = sphere_bounds(origins, dirs, 1.0)
    t = stratified_t(near, far, PLAIN_SAMPLES_PER_RAY, True)
    sigma, rgb = field(origins[:, None] + dirs[:, None] * t[..., None], z)
    w = composite_weights(sigma, t, far, dirs.norm(dim=-1))
    out = (w[..., None] * rgb).sum(1) + (1 - w.sum(-1))[:, None] * bg_rgb
    loss = rgb_loss(out, target) + 0.1 * hard_surface_loss(w)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# ----------------------------------------------------------------------------------------- our step
def _random_rays(n_rays: int, res: int, device: torch.device, gen: torch.Generator):
    yaw = (torch.rand(n_rays, generator=gen) - 0.5) * 80
    pitch = (torch.rand(n_rays, generator=gen) - 0.5) * 40
    c2w = torch.tensor(look_at(spherical_eye(yaw.numpy(), pitch.numpy(), 2.7)), dtype=torch.float32)
    f = 0.5 * res / math.tan(math.radians(15))
    u = torch.rand(n_rays, generator=gen) * res
    v = torch.rand(n_rays, generator=gen) * res
    full = torch.full((n_rays,), f)
    half = torch.full((n_rays,), res / 2)
    o, d = pixel_rays(c2w, full, full, half, half, u, v)
    return o.to(device), d.to(device)


def network_flops_per_ray(cfg) -> int:
    """Forward FLOPs per ray of the configured networks: the main field at its samples, plus each
    proposal network at its own (per-ray latent terms and the background excluded)."""
    model = GenerativeNeRF(cfg.model)
    flops = model.field.flops_per_sample() * cfg.main_samples_per_ray()
    if cfg.render.sampler == "proposal":
        flops += sum(p.flops_per_sample() * n for p, n in zip(model.proposals, cfg.render.proposal_samples))
    return flops


def measure_train(cfg, device: torch.device, precision: str, n_images: int = 1000, seconds: float = 6.0,
                  plain: bool = False, max_steps: int = 50) -> dict:
    """Samples/s of full training steps (forward, backward, both optimisers) on random rays."""
    tc, rc = cfg.train, cfg.render
    n_rays = tc.images_per_step * tc.pixels_per_image
    gen = torch.Generator().manual_seed(0)
    if plain:
        field = PlainField(cfg.model).to(device)
        bg = torch.rand(n_rays, 3, device=device)
        opt = torch.optim.Adam(list(field.parameters()), lr=1e-4)
    else:
        model = GenerativeNeRF(cfg.model).to(device)
        latents = nn.Embedding(n_images, cfg.model.latent_dim, sparse=True).to(device)
        nn.init.normal_(latents.weight, std=0.01)
        opt = torch.optim.Adam(list(model.parameters()), lr=1e-4)
        lat_opt = torch.optim.SparseAdam(list(latents.parameters()), lr=1e-3)
    batches = [_random_rays(n_rays, tc.resolution, device, gen) for _ in range(2)]
    pix = torch.full((n_rays,), 2.0 * math.tan(math.radians(15)) / tc.resolution, device=device)
    target = torch.rand(n_rays, 3, device=device)
    img = torch.randint(n_images, (tc.images_per_step,), generator=gen).repeat_interleave(tc.pixels_per_image).to(device)
    no_mask = torch.zeros(n_rays, device=device)
    weights = LossWeights(1.0, 0.0, tc.hard_surface_weight, tc.interlevel_weight)     # no masks in a benchmark

    def step(i):
        o, d = batches[i % 2]
        if plain:
            z = torch.randn(n_rays, cfg.model.latent_dim, device=device) * 0.01
            _plain_step(field, bg, opt, o, d, z, target)
            return
        opt.zero_grad(set_to_none=True)
        lat_opt.zero_grad(set_to_none=True)

        def loss_of(sl: slice):          # as train.py does it
            out = render_rays(model, o[sl], d[sl], latents(img[sl]), rc, perturb=True, precision=precision,
                              pix=pix[sl])
            loss, _ = compose_loss(out, target[sl], no_mask[sl], no_mask[sl], weights, n_rays, 1.0)
            return loss, {}

        backward_in_micro_batches(n_rays, tc.micro_batch_rays, device, loss_of)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        lat_opt.step()

    step(0)                                   # warm-up (allocations, autocast caches)
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while (time.perf_counter() - t0 < seconds and steps < max_steps) or steps < 2:
        step(steps)
        steps += 1
    _sync(device)
    dt = time.perf_counter() - t0
    samples = steps * n_rays * (PLAIN_SAMPLES_PER_RAY if plain else cfg.main_samples_per_ray())
    return {"steps": steps, "seconds": dt, "samples_per_s": samples / dt, "rays_per_s": steps * n_rays / dt,
            "step_ms": 1000 * dt / steps}


def measure_render(cfg, device: torch.device, precision: str, size: int = 128, frames: int = 2) -> float:
    model = GenerativeNeRF(cfg.model).to(device).eval()
    z = torch.zeros(cfg.model.latent_dim, device=device)
    f = 0.5 * size / math.tan(math.radians(15))
    cam = Camera(look_at(spherical_eye(20.0, 10.0, 2.7)), f, f, size / 2, size / 2, size, size)
    render_image(model, z, cam, cfg.render, precision)             # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(frames):
        render_image(model, z, cam, cfg.render, precision)
    _sync(device)
    return 1000 * (time.perf_counter() - t0) / frames


def measure_baked(model, z: torch.Tensor, device: torch.device, precision: str, size: int = 128,
                  frames: int = 3, near_min: float = 0.05, rcfg=None) -> dict:
    """The baked renderer on one latent: bake time and memory, median ms per size x size frame (cameras
    at 2.7 units, 10 degrees up, turned -25, 0 and 25 degrees about the vertical), and the lowest PSNR of
    those frames against exact renders."""
    from .bake import bake, render_baked
    from .metrics import psnr

    rcfg = rcfg or RenderConfig()
    f = 0.5 * size / math.tan(math.radians(15))
    cams = [Camera(look_at(spherical_eye(yaw, 10.0, 2.7)), f, f, size / 2, size / 2, size, size)
            for yaw in (-25.0, 0.0, 25.0)]
    _sync(device)
    t0 = time.perf_counter()
    baked = bake(model, z, precision)
    _sync(device)
    bake_s = time.perf_counter() - t0
    render_baked(baked, model, cams[0], precision, near_min=near_min)             # warm-up
    times, psnrs = [], []
    for k in range(frames):
        cam = cams[k % len(cams)]
        _sync(device)
        t0 = time.perf_counter()
        out = render_baked(baked, model, cam, precision, near_min=near_min)
        _sync(device)
        times.append(time.perf_counter() - t0)
        exact = render_image(model, z, cam, rcfg, precision)
        psnrs.append(float(psnr(out["rgb"], exact["rgb"])))
    return {f"baked_ms_per_frame_{size}": round(1000 * sorted(times)[len(times) // 2], 1),
            "bake_seconds": round(bake_s, 2), "bake_resolution": baked.resolution, "bake_mb": round(baked.nbytes / 1e6, 1),
            "bake_blocks": baked.stats.blocks, "bake_blocks_in_sphere": baked.stats.blocks_total,
            "baked_vs_exact_psnr": round(min(psnrs), 2)}


def measure_memory(resolutions=(64, 256), n: int = 48, steps: int = 20, preset_name: str = "cpu",
                   progress: Progress | None = None) -> dict:
    """Peak RSS (MB) of real `lolnerf train` processes on synth data at each resolution."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="lolnerf-bench-") as tmp, \
            or_silent(progress).task("memory benchmark", total=len(resolutions)) as task:
        for res in resolutions:
            data = Path(tmp) / f"data{res}"
            run = Path(tmp) / f"run{res}"
            cmd = [sys.executable, "-m", "lolnerf_cli", "synth", str(data), "--n", str(n), "--resolution", str(res)]
            subprocess.run(cmd, check=True, capture_output=True)
            code = ("import resource,sys;from lolnerf_cli.train import train;"
                    f"train({str(data)!r},{str(run)!r},{preset_name!r},{steps},resolution={res},preview_every=0,"
                    f"checkpoint_every={steps * 10});"
                    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
            r = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
            out[str(res)] = {"peak_rss_mb": round(int(r.stdout.strip().splitlines()[-1]) / 1024.0, 1),
                             "images": n, "steps": steps}
            task.advance()
    return out


DEFAULT_PRESETS = ("tiny", "cpu", "paper")   # what `lolnerf bench` measures without --preset


def run_bench(presets: list[str] | None = None, device_name: str = "auto", precision: str = "auto",
              seconds: float = 6.0, plain: bool = True, memory: bool = False,
              progress: Progress | None = None, micro_batch: int | None = None, baked: bool = True,
              model_dir: str | Path | None = None, settings: dict | None = None) -> dict:
    """settings: "section.key" values applied to every preset measured (`lolnerf bench --set`)."""
    device = pick_device(device_name)
    prec = resolve_precision(precision, device)
    progress = or_silent(progress)
    names = presets or list(DEFAULT_PRESETS)
    result: dict = {"device": _device_name(device), "precision": prec, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
                    "matmul_gflops": {}, "presets": {}, "settings": dict(settings or {})}
    with progress.task("matmul peak", total=2) as task:
        result["matmul_gflops"]["fp32"] = round(matmul_gflops(device, torch.float32), 1)
        task.advance()
        result["matmul_gflops"]["bf16"] = round(matmul_gflops(device, torch.bfloat16), 1)
        task.advance()
    if device.type == "cpu" and cpu_has_bf16_instructions():
        # the measurement `auto` decided by (kept per machine) and the same probe measured now
        result["auto_precision"] = {**cpu_bf16_choice(), "speedup_now": round(measure_bf16_speedup(), 3),
                                    "bf16_min_speedup": BF16_MIN_SPEEDUP, "cache": str(precision_cache_path())}
    peak = result["matmul_gflops"]["bf16" if prec == "bf16" else "fp32"]
    with progress.task("presets", total=len(names)) as task:
        for name in names:
            cfg = preset_with_settings(name, settings)
            if micro_batch is not None:
                cfg.train.micro_batch_rays = micro_batch
            tr = measure_train(cfg, device, prec, seconds=seconds)
            flops_ray = network_flops_per_ray(cfg) * 3                 # forward + backward ~ 3x forward
            entry = {
                "sampler": cfg.render.sampler,
                "main_field_evals_per_ray": cfg.main_samples_per_ray(),
                "proposal_evals_per_ray": list(cfg.render.proposal_samples) if cfg.render.sampler == "proposal" else [],
                "train_samples_per_s": round(tr["samples_per_s"]),
                "train_rays_per_s": round(tr["rays_per_s"]),
                "train_step_ms": round(tr["step_ms"], 1),
                "render_ms_per_frame_128": round(measure_render(cfg, device, prec), 1),
                "network_flops_per_ray": flops_ray,
                "achieved_gflops": round(tr["rays_per_s"] * flops_ray / 1e9, 1),
                "fraction_of_peak": round(tr["rays_per_s"] * flops_ray / 1e9 / peak, 3),
                "samples_per_ray": cfg.main_samples_per_ray(),
                "rays_per_step": cfg.train.images_per_step * cfg.train.pixels_per_image,
                "micro_batch_rays": cfg.train.micro_batch_rays,
                "full_training_steps": cfg.train.steps,
                "estimated_training_hours": round(cfg.train.steps * tr["step_ms"] / 1000 / 3600, 4),
            }
            if baked:              # the preset's random network: a fog filling the sphere, the worst case
                rand = GenerativeNeRF(cfg.model).to(device).eval()
                entry.update(measure_baked(rand, torch.zeros(cfg.model.latent_dim, device=device), device, prec,
                                           rcfg=cfg.render))
            if plain:
                pl = measure_train(cfg, device, "fp32", seconds=seconds, plain=True)
                entry["plain_samples_per_ray"] = PLAIN_SAMPLES_PER_RAY
                entry["plain_samples_per_s"] = round(pl["samples_per_s"])
                entry["plain_rays_per_s"] = round(pl["rays_per_s"], 1)
                entry["rays_speedup_vs_plain"] = round(tr["rays_per_s"] / pl["rays_per_s"], 2)
            result["presets"][name] = entry
            task.advance()
    if model_dir is not None:
        result["model"] = measure_run(model_dir, device, prec)
    if memory:
        result["memory"] = measure_memory(progress=progress)
    return result


def preset_with_settings(name: str, settings: dict | None) -> Config:
    """A preset with `bench --set` values applied and checked (an InputError naming --set otherwise)."""
    from .train import apply_settings

    cfg = preset(name)
    apply_settings(cfg, settings or {})
    return cfg.check("--set")


def measure_run(run_dir: str | Path, device: torch.device, precision: str, size: int = 128) -> dict:
    """Exact and baked rendering of a trained run's first latent (its own preset and render settings)."""
    from .model import load_model

    loaded = load_model(run_dir, device)
    z = loaded.latents[0]
    f = 0.5 * size / math.tan(math.radians(15))
    cam = Camera(look_at(spherical_eye(0.0, 10.0, 2.7)), f, f, size / 2, size / 2, size, size)
    render_image(loaded.model, z, cam, loaded.cfg.render, precision)              # warm-up
    _sync(device)
    t0 = time.perf_counter()
    render_image(loaded.model, z, cam, loaded.cfg.render, precision)
    _sync(device)
    out = {"run": str(Path(run_dir).resolve()), "preset": loaded.cfg.preset,
           f"render_ms_per_frame_{size}": round(1000 * (time.perf_counter() - t0), 1)}
    out.update(measure_baked(loaded.model, z, device, precision, size, near_min=loaded.cfg.render.near_min,
                             rcfg=loaded.cfg.render))
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu} ({os.cpu_count()} cores)"


def to_json(result: dict) -> str:
    return json.dumps(result, indent=1)
