from pathlib import Path

import typer

from ..app import app, guarded, not_yet


@app.command("landmarks")
@guarded
def landmarks(
    data: Path = typer.Argument(..., help="Dataset folder with images/."),
    masks: bool = typer.Option(False, "--masks", help="Also write a foreground mask per image to DATA/masks/."),
):
    """Find the 5 face landmarks of every photo with MediaPipe -> DATA/landmarks.json."""
    not_yet("lolnerf landmarks")
