"""`lolnerf demo`: the whole pipeline on built-in synthetic data, as the same commands a user would type."""

import shlex
import subprocess
import sys
import time
from pathlib import Path

import typer

from ..app import app, console, guarded, heading
from ..errors import InputError, LolnerfError

DEMO_STEPS = 1000     # training steps of the demo (a few minutes on 2 CPU cores)
DEMO_N = 300          # synthetic training photos
DEMO_RES = 32         # pixels
DEMO_ENCODER_STEPS = 300   # encoder training steps (small encoder: --width 16, a pool of 32 renders)
DEMO_SYMMETRY = 0.05  # mirror-symmetry weight: +1.8 dB on the demo's novel views (docs/cameras.md)


def demo_commands(out: Path, steps: int, n: int, resolution: int,
                  encoder_steps: int = DEMO_ENCODER_STEPS) -> list[tuple[str, list[str]]]:
    data, run = out / "data", out / "run"
    query = str(data / "holdout" / "images" / "h0000_q.png")
    return [
        (f"make a synthetic photo collection ({n} single views of face-like objects + 3 held-out objects)",
         ["synth", str(data), "--n", str(n), "--resolution", str(resolution), "--holdout", "3"]),
        ("fit cameras and canonical 3D keypoints from the 2D landmarks (the true cameras are not used)",
         ["fit-cameras", str(data)]),
        ("train the latent table and the NeRF (its shape mirror-symmetric, as faces are)",
         ["train", str(data), "--out", str(run), "--preset", "cpu", "--resolution", str(resolution),
          "--steps", str(steps), "--preview-every", "500", "--symmetry", str(DEMO_SYMMETRY)]),
        ("render training image 0 as an orbit video",
         ["render", "--model", str(run), "--index", "0", "--orbit", "--out", str(out / "orbit.mp4"),
          "--resolution", "96", "--frames", "24"]),
        ("lift a held-out photo into 3D (camera fitted from its landmarks, then inversion)",
         ["invert", query, "--model", str(run),
          "--landmarks", str(data / "holdout" / "landmarks.json"), "--out", str(out / "inverted.safetensors"),
          "--steps", "100"]),
        ("train a small encoder on the frozen model (a photo's latent and camera in one pass)",
         ["train-encoder", "--model", str(run), "--steps", str(encoder_steps), "--width", "16", "--pool", "32"]),
        ("lift the same photo with the encoder alone (no landmarks, no camera)",
         ["invert", query, "--model", str(run), "--out", str(out / "inverted_encoder.safetensors"), "--steps", "0"]),
        ("... and with the encoder's answer as the start of 30 optimisation steps (hybrid)",
         ["invert", query, "--model", str(run), "--out", str(out / "inverted_hybrid.safetensors"), "--steps", "30"]),
        ("render the inverted latent from new viewpoints, with depth",
         ["render", "--model", str(run), "--latent", str(out / "inverted.safetensors"), "--orbit", "--frames", "8",
          "--resolution", "64", "--out", str(out / "novel_views"), "--depth"]),
        ("sample 9 new identities (PCA Gaussian, truncation 0.7)",
         ["sample", "--model", str(run), "--n", "9", "--truncation", "0.7", "--out", str(out / "samples"),
          "--resolution", "64"]),
        ("measure it the way the paper does",
         ["eval", str(data), "--model", str(run), "--out", str(out / "metrics.json"), "--invert-steps", "100"]),
    ]


@app.command("demo")
@guarded
def demo(
    out: Path = typer.Option(Path("lolnerf-demo"), "--out", help="Folder for everything the demo writes."),
    steps: int = typer.Option(DEMO_STEPS, "--steps", min=1, help="Training steps."),
    n: int = typer.Option(DEMO_N, "--n", min=8, help="Synthetic training photos."),
    resolution: int = typer.Option(DEMO_RES, "--resolution", min=16, help="Image size in pixels."),
    encoder_steps: int = typer.Option(DEMO_ENCODER_STEPS, "--encoder-steps", min=1, help="Encoder training steps."),
):
    """Run the whole pipeline end to end on built-in synthetic data (a few minutes on a laptop CPU)."""
    if out.exists() and any(out.iterdir()):
        raise InputError(out, "already exists and is not empty; remove it or pass another --out")
    t_all = time.time()
    cmds = demo_commands(out, steps, n, resolution, encoder_steps)
    for i, (what, args) in enumerate(cmds, 1):
        heading(f"{i}/{len(cmds)}: {what}")
        console.print(f"$ lolnerf {shlex.join(args)}", markup=False, highlight=False)
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "lolnerf_cli", *args])
        if r.returncode != 0:
            raise LolnerfError(f"demo step {i} (lolnerf {args[0]}) failed with exit status {r.returncode}")
        console.print(f"[dim]({time.time() - t0:.0f} s)[/]")
    heading("done")
    console.print(f"everything is in {out}/ ({time.time() - t_all:.0f} s in all):")
    for name, what in [("data/", "the synthetic dataset (images, masks, landmarks, fitted cameras)"),
                       ("run/", "the trained model, log.jsonl and previews/latest.png"),
                       ("orbit.mp4", "an orbit video of training image 0"),
                       ("inverted_preview.png", "input | reconstruction | novel view of a held-out photo (landmarks + 100 steps)"),
                       ("inverted_encoder_preview.png", "the same photo through the encoder alone (run/encoder.safetensors)"),
                       ("inverted_hybrid_preview.png", "the encoder's answer + 30 optimisation steps"),
                       ("novel_views/, novel_views_depth/", "that photo from 8 new viewpoints, and their depth"),
                       ("samples/grid.png", "9 new identities"),
                       ("metrics.json, metrics_figure.png", "the evaluation (its encoder section: encoder alone and hybrid)")]:
        console.print(f"  {out}/{name:<34} {what}", markup=False)
