from pathlib import Path
from typing import Optional

import typer

from ..app import app, guarded, not_yet


@app.command("train")
@guarded
def train(
    data: Path = typer.Argument(..., help="Dataset folder with images/ and transforms.json."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    preset: str = typer.Option("cpu", "--preset", help="Configuration preset: tiny, cpu, paper, paper-hires."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (default: the preset's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN's last checkpoint."),
):
    """Train the latent table and the latent-conditioned NeRF."""
    not_yet("lolnerf train")
