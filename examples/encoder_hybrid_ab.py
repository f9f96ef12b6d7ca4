"""A/B of the encoder's "hybrid" answer (encoder start + a few optimisation steps): with and without
optimising the encoder's camera together with the latent, on the held-out objects of a synth folder.
Prints masked novel-view PSNR, held-out PSNR and the camera's rotation error for each variant, beside
the encoder's answer alone (as `lolnerf eval`'s encoder section reports them).

    python examples/encoder_hybrid_ab.py DATA RUN [--holdout DIR] [--subset 20] [--steps 30] [--lr 5e-2 ...] [--camera-lr 5e-3 ...] [--pivot object camera]

RUN must have an encoder (`lolnerf train-encoder`). The 200-step optimisation baseline is in
`lolnerf eval DATA --model RUN --subset 20 --invert-steps 200`'s novel section."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from lolnerf_cli.encoder_eval import EncoderSection
    from lolnerf_cli.evaluate import EvalOptions, Evaluator
    from lolnerf_cli.config import InvertConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("run")
    ap.add_argument("--holdout", default=None, help="multi-view folder of unseen objects (default DATA/holdout)")
    ap.add_argument("--subset", type=int, default=20)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--camera-lr", type=float, nargs="*", default=[5e-3], help="variants with the camera optimised")
    ap.add_argument("--lr", type=float, nargs="*", default=[InvertConfig.lr], help="the latent's learning rate (each variant)")
    ap.add_argument("--pivot", nargs="*", default=["object"], choices=["object", "camera"],
                    help="what the camera correction turns about (invert.camera_pivot), each variant")
    ap.add_argument("--no-latent-only", action="store_true", help="skip the variants that keep the camera")
    args = ap.parse_args()
    ev = Evaluator(args.data, args.run, EvalOptions(subset=args.subset))
    holdout = Path(args.holdout) if args.holdout else Path(args.data) / "holdout"
    variants = [] if args.no_latent_only else [(f"latent only (lr {lr:g})", False, lr, 0.0) for lr in args.lr]
    variants = [(name, refine, lr, clr, "object") for name, refine, lr, clr in variants]
    variants += [(f"latent (lr {lr:g}) + camera (lr {clr:g}, about the {pivot})", True, lr, clr, pivot)
                 for lr in args.lr for clr in args.camera_lr for pivot in args.pivot]
    for name, refine, lr, camera_lr, pivot in variants:
        ev.loaded.cfg.invert.camera_pivot = pivot
        sec = EncoderSection(holdout, holdout, args.steps, refine, lr, camera_lr)
        sec.prepare(ev)
        t0 = time.perf_counter()
        out = sec.run(ev)["encoder"]
        novel, held, cam = out["novel"], out["heldout"], out["camera"]
        hyb_rot = cam.get("hybrid_rotation_error_deg") or {}
        print(f"{name}: novel masked PSNR encoder {novel['encoder']['psnr']['mean']:.2f}, hybrid "
              f"{novel['hybrid']['psnr']['mean']:.2f} dB; held-out PSNR hybrid {held['hybrid']['psnr']['mean']:.2f} dB; "
              f"rotation error median encoder {cam['rotation_error_deg']['median']:.2f} deg, hybrid "
              f"{hyb_rot.get('median', float('nan')):.2f} deg ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
