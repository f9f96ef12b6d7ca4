"""How close and how fast is baked rendering? For some latents of a trained run (training rows and/or
the rows of latent files, e.g. held-out photos lifted with `lolnerf invert`), bake each once and
render views of the run's orbit both ways: print bake time, ms per baked frame, PSNR of baked against
exact frames and the depth difference where both have alpha >= 0.5.

    python examples/baked_vs_exact.py RUN [--index 0 1] [--latents held.safetensors] [--size 128]
                                      [--without bleed cap surface]

--without leaves out steps that make the grid agree with the network at hard surfaces (see
lolnerf_cli/bake_surface.py), to measure each.

Times are wall clock at the current thread count and, as a figure that a busy machine disturbs less,
process CPU time with one thread (`torch.set_num_threads(1)`)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lolnerf_cli.bake import SURFACE_FIX, bake, render_baked
from lolnerf_cli.device import resolve_precision
from lolnerf_cli.formats import load_latents
from lolnerf_cli.metrics import psnr
from lolnerf_cli.model import load_model
from lolnerf_cli.render import render_image
from lolnerf_cli.views import read_view


def timed(fn, threads: int):
    """(result, wall seconds, process CPU seconds) of fn() run with `threads` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    torch.set_num_threads(before)
    return out, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--index", type=int, nargs="*", default=[0])
    ap.add_argument("--latents", nargs="*", default=[])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--views", type=int, default=6, help="orbit views per latent (of a 60-frame orbit)")
    ap.add_argument("--without", nargs="*", default=[], choices=["bleed", "cap", "surface"])
    args = ap.parse_args()

    loaded = load_model(args.run)
    prec = resolve_precision(loaded.cfg.train.precision, loaded.latents.device)
    todo = [(f"index:{i}", loaded.latents[i]) for i in args.index]
    for path in args.latents:
        z, sources, _ = load_latents(path, loaded.model_hash, loaded.cfg.model.latent_dim)
        todo += list(zip(sources, z))
    cams = read_view(args.run).orbit(60, args.size)[:: max(1, 60 // args.views)][: args.views]
    threads = torch.get_num_threads()
    bakes, frames_w, frames_c, scores = [], [], [], []
    for name, z in todo:
        fix = tuple(step for step in SURFACE_FIX if step not in args.without)
        grid, wall, _ = timed(lambda: bake(loaded.model, z, prec, surface_fix=fix), threads)
        _, _, cpu = timed(lambda: bake(loaded.model, z, prec, surface_fix=fix), 1)
        bakes.append((wall, cpu))
        for cam in cams:
            out, wall_f, _ = timed(lambda: render_baked(grid, loaded.model, cam, prec), threads)
            _, _, cpu_f = timed(lambda: render_baked(grid, loaded.model, cam, prec), 1)
            frames_w.append(wall_f)
            frames_c.append(cpu_f)
            exact = render_image(loaded.model, z, cam, loaded.cfg.render, prec)
            both = (exact["alpha"] >= 0.5) & (out["alpha"] >= 0.5)
            err = np.abs(exact["depth"] - out["depth"])[both]
            scores.append((psnr(out["rgb"], exact["rgb"]), float(np.median(err)) if err.size else float("nan"),
                           float(err.max()) if err.size else float("nan")))
        mine = scores[-len(cams):]
        print(f"{name}: bake {wall:.1f} s ({cpu:.1f} s CPU, 1 thread), {grid.stats.blocks}/{grid.stats.blocks_total} "
              f"blocks, {grid.nbytes / 1e6:.0f} MB; PSNR vs exact {min(s[0] for s in mine):.1f}-"
              f"{max(s[0] for s in mine):.1f} dB; depth |diff| median {np.median([s[1] for s in mine]):.4f}, "
              f"max {max(s[2] for s in mine):.3f}", flush=True)
    print(f"{len(todo)} latent(s) x {len(cams)} views at {args.size} px: bake median {np.median([b[0] for b in bakes]):.1f} s "
          f"({np.median([b[1] for b in bakes]):.1f} s CPU, 1 thread); baked frame median {1000 * np.median(frames_w):.0f} ms "
          f"({1000 * np.median(frames_c):.0f} ms CPU, 1 thread, {threads} threads for wall); PSNR vs exact min "
          f"{min(s[0] for s in scores):.1f}, median {np.median([s[0] for s in scores]):.1f} dB")


if __name__ == "__main__":
    main()
