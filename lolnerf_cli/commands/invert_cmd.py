from pathlib import Path
from typing import List, Optional

import typer

from ..app import app, guarded, not_yet


@app.command("invert")
@guarded
def invert(
    images: List[Path] = typer.Argument(..., help="Photos to lift into 3D."),
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    camera: Optional[Path] = typer.Option(None, "--camera", help="transforms.json with the photos' cameras (matched by file name)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimisation steps per batch."),
    out: Path = typer.Option(..., "--out", help="Latent file to write (.safetensors)."),
):
    """Fit a latent to each photo (network frozen), starting from the mean latent."""
    not_yet("lolnerf invert")
