from pathlib import Path

import typer

from ..app import app, guarded, not_yet


@app.command("synth")
@guarded
def synth(
    out: Path = typer.Argument(..., help="Dataset folder to write (images/, masks/, landmarks.json, transforms.json, keypoints.json)."),
    n: int = typer.Option(200, "--n", min=1, help="Number of training objects (one photo each)."),
    resolution: int = typer.Option(64, "--resolution", min=8, max=2048, help="Image width and height in pixels."),
    holdout: int = typer.Option(0, "--holdout", min=0, help="Unseen objects for novel-view/depth evaluation (written to OUT/holdout/)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same dataset."),
):
    """Generate a procedural object class (a stand-in for a face photo collection) with true cameras."""
    not_yet("lolnerf synth")
