from pathlib import Path
from typing import Optional

import typer

from ..app import app, console, guarded, reporter


@app.command("train")
@guarded
def train(
    data: Path = typer.Argument(..., help="Dataset folder with images/ and transforms.json."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    preset: str = typer.Option("cpu", "--preset", help="Configuration preset: tiny, cpu, paper, paper-hires."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN's last checkpoint (exactly: same step, optimiser state and RNG)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Training image size in pixels (default: the preset's)."),
    images_per_step: Optional[int] = typer.Option(None, "--images-per-step", min=1, help="Images drawn per step (B)."),
    pixels_per_image: Optional[int] = typer.Option(None, "--pixels-per-image", min=1, help="Random pixels per image per step."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto, bf16 or fp32."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: the preset's)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Steps between checkpoints."),
    preview_every: Optional[int] = typer.Option(None, "--preview-every", min=0, help="Steps between preview images (0: only at the end)."),
    log_every: Optional[int] = typer.Option(None, "--log-every", min=1, help="Steps between log.jsonl records."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="hierarchical (NeRF: coarse + fine samples through the main network) or proposal (a small density network places the main network's samples; anti-aliased encoding). Default: the preset's."),
    refine_cameras: Optional[bool] = typer.Option(None, "--refine-cameras/--no-refine-cameras", help="Refine every training photo's camera while training (a small rotation + translation each, RUN/cameras.json). Default: off (train.refine_cameras; 'auto' refines only cameras fitted from landmarks); see docs/cameras.md for what it does and does not buy."),
    symmetry: Optional[float] = typer.Option(None, "--symmetry", min=0.0, help="Weight of the mirror-symmetry loss on the object's shape (x -> -x in the object frame: left-right symmetric classes such as faces, with landmark-fitted or true cameras); 0: off (train.symmetry_weight, default 0). See docs/cameras.md."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="SECTION.KEY=VALUE: any config.json setting of a new run, e.g. --set render.n_coarse=16 --set model.width=128 (VALUE read as JSON, else as text); repeatable, applied after --sampler."),
):
    """Train the latent table and the latent-conditioned NeRF (launch with torchrun for several GPUs/processes)."""
    from ..app import err_console
    from ..config import check_sampler
    from ..train import train as run_training

    if sampler is not None:      # it travels as "render.sampler": name the flag the user typed
        check_sampler(sampler, "sampler", flag=True)
    overrides = {"render.sampler": sampler, **parse_settings(settings or [])}
    if refine_cameras is not None:
        overrides["train.refine_cameras"] = "on" if refine_cameras else "off"
    if symmetry is not None:
        overrides["train.symmetry_weight"] = symmetry
    try:
        summary = run_training(data, out, preset, steps, resume, device, reporter(), resolution=resolution,
                               images_per_step=images_per_step, pixels_per_image=pixels_per_image,
                               precision=precision, seed=seed, checkpoint_every=checkpoint_every,
                               preview_every=preview_every, log_every=log_every,
                               config_overrides=overrides)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; a checkpoint was saved in {out}. Continue with: "
                          f"lolnerf train {data} --out {out} --resume")
        raise typer.Exit(130)
    _report(summary, out)
    if summary.get("world_size", 1) > 1:
        _leave_without_teardown()


def _leave_without_teardown() -> None:
    """End a finished torchrun process at once. The run is saved and the process group destroyed, but gloo's
    worker threads can still abort the process while the interpreter tears down ("terminate called without
    an active exception", exit -6, seen with two CPU processes on a loaded machine), which torchrun reports
    as a failed run."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def parse_settings(items: list[str]) -> dict:
    """--set SECTION.KEY=VALUE items -> {"SECTION.KEY": value}; VALUE is JSON where it parses (numbers, lists,
    true/false), else the text itself. The keys and values are checked by Config.override."""
    import json

    from ..errors import InputError

    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or key.count(".") != 1:
            raise InputError("--set", f"expects SECTION.KEY=VALUE (e.g. render.n_coarse=16), got '{item}'")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out[key] = value
    return out


def _report(summary: dict, out: Path) -> None:
    last = summary["last"] or {}
    if summary.get("excluded"):
        console.print(f"[yellow]{len(summary['excluded'])} image(s) left out[/] (see {out}/excluded.json)")
    if last:
        console.print(f"step {summary['step']}: loss {last['loss']:.5f}  psnr {last['psnr']:.2f} dB  "
                      f"{last['samples_per_s']:,.0f} samples/s on {summary['device']} ({summary['precision']})")
    if summary["bad_steps"]:
        console.print(f"[yellow]{summary['bad_steps']} step(s) skipped for a non-finite loss[/]")
    console.print(f"model: {out}/model.safetensors   previews: {out}/previews/latest.png   log: {out}/log.jsonl")
