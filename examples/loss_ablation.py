"""Do the hard-surface and mask losses do what they claim? Train the same model twice on the same
synthetic data, once with both losses and once without, and compare the rendered opacity (alpha)
of every pixel of a few training views: with the losses, alpha should pile up near 0 (background) and 1
(object) and agree with the true masks; without them, more pixels stay semi-transparent.

    python examples/loss_ablation.py [--steps 600] [--out ablation/]

Writes ablation/alpha_histograms.png and prints the fractions. Takes a few minutes on 2 CPU cores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lolnerf_cli.cameras import Camera
from lolnerf_cli.formats import read_transforms
from lolnerf_cli.images import load_mask
from lolnerf_cli.model import load_model
from lolnerf_cli.render import render_image
from lolnerf_cli.synth import synthesize
from lolnerf_cli.train import train


def alpha_stats(run: Path, data: Path, n_views: int = 12) -> dict:
    loaded = load_model(run)
    files = loaded.images()
    frames = {f.file_path: f for f in read_transforms(data / "transforms.json").frames}
    res = loaded.cfg.train.resolution
    alphas, masks = [], []
    for k in range(min(n_views, len(files))):
        cam = Camera.from_frame(frames[files[k]]).scaled(res, res)
        out = render_image(loaded.model, loaded.latents[k], cam, loaded.cfg.render)
        alphas.append(out["alpha"].ravel())
        masks.append(load_mask(data / "masks" / (Path(files[k]).stem + ".png"), (res, res)).ravel())
    a, m = np.concatenate(alphas), np.concatenate(masks)
    return {"alpha": a,
            "fraction_semi_transparent": float(((a > 0.1) & (a < 0.9)).mean()),
            "fraction_near_0_or_1": float(((a <= 0.05) | (a >= 0.95)).mean()),
            "mask_agreement": float(((a >= 0.5) == (m >= 0.5)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", type=Path, default=Path("ablation"))
    args = ap.parse_args()
    data = args.out / "data"
    if not (data / "transforms.json").is_file():
        synthesize(data, n=100, resolution=32, seed=0)
    results = {}
    for name, weights in {"with losses": (0.1, 0.1), "without": (0.0, 0.0)}.items():
        run = args.out / ("run_with" if weights[0] else "run_without")
        if not (run / "model.safetensors").is_file():
            train(data, run, "cpu", steps=args.steps, resolution=32, images_per_step=32, preview_every=0,
                  mask_weight=weights[0], hard_surface_weight=weights[1])
        results[name] = alpha_stats(run, data)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, r in results.items():
        ax.hist(r["alpha"], bins=40, range=(0, 1), alpha=0.6, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("rendered alpha per pixel")
    ax.set_ylabel("pixels")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "alpha_histograms.png", dpi=120)
    summary = {k: {m: round(v, 4) for m, v in r.items() if m != "alpha"} for k, r in results.items()}
    (args.out / "alpha_stats.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"figure: {args.out / 'alpha_histograms.png'}")


if __name__ == "__main__":
    main()
