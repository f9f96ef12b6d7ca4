from pathlib import Path
from typing import Optional

import typer

from ..app import app, console, guarded, reporter


@app.command("train-encoder")
@guarded
def train_encoder(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model; RUN/encoder.safetensors is written there."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (default 2000)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN/encoder_trainer.safetensors (exactly: same step, optimiser state, render pool and RNG)."),
    mix: Optional[str] = typer.Option(None, "--mix", help="Training data, comma-separated subset of: photos (the run's training photos, "
                                                          "their latent rows and cameras as targets), renders (the frozen model at sampled "
                                                          "latents and cameras, exact targets), self-consistency (render the prediction, "
                                                          "compare with the input; 2x the CPU time). Default: photos,renders (docs/encoder.md)."),
    pool: Optional[int] = typer.Option(None, "--pool", min=1, help="Renders of the frozen model kept for training (default 128)."),
    refresh_every: Optional[int] = typer.Option(None, "--refresh-every", min=0, help="Steps between replacing one pooled render (default 10; 0: never)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Photos per step (default 32)."),
    width: Optional[int] = typer.Option(None, "--width", min=4, help="Channels of the encoder's first stage (default 32)."),
    members: Optional[int] = typer.Option(None, "--members", min=1, max=16, help="Networks in the encoder, each trained on its own batches; "
                                                                           "the answer is their mean (default 3; docs/encoder.md)."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, help="Adam learning rate (default 1e-3, cosine-decayed)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Steps between checkpoints (default 250)."),
    log_every: Optional[int] = typer.Option(None, "--log-every", min=1, help="Steps between RUN/encoder_log.jsonl records (default 25)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
):
    """Train an encoder that maps a photo to its latent and camera in one pass (the model stays frozen)."""
    from ..app import err_console
    from ..encoder_train import parse_mix, train_encoder as run

    ov = {"pool": pool, "refresh_every": refresh_every, "batch": batch, "lr": lr, "seed": seed,
          "checkpoint_every": checkpoint_every, "log_every": log_every}
    if mix is not None:
        ov.update(parse_mix(mix))
    try:
        summary = run(model, steps, resume, device, reporter(), width, members, **ov)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; a checkpoint was saved in {model}. Continue with: "
                          f"lolnerf train-encoder --model {model} --resume")
        raise typer.Exit(130)
    last = summary["last"] or {}
    if last:
        sc = (f"  self-consistency PSNR {last['self_psnr_masked']:.2f} dB (object pixels)" if "self_psnr_masked" in last else "")
        console.print(f"step {summary['step']}: loss {last['loss']:.4f}  latent {last['loss_latent']:.4f}  "
                      f"camera rotation error {last['rotation_error_deg']:.2f} deg (training batch){sc}",
                      markup=False)
    console.print(f"encoder: {summary['encoder']} ({summary['elapsed_s']:.0f} s; {summary['photos']} training photos, "
                  f"cameras from {summary['cameras']})   log: {Path(model) / 'encoder_log.jsonl'}", markup=False,
                  soft_wrap=True)
