from pathlib import Path
from typing import Optional

import typer

from ..app import app, guarded, not_yet


@app.command("fit-cameras")
@guarded
def fit_cameras(
    data: Path = typer.Argument(..., help="Dataset folder with landmarks.json."),
    keypoints: Optional[Path] = typer.Option(None, "--keypoints", help="Fixed canonical 3D keypoints (keypoints.json); fitted when omitted."),
    focal: Optional[float] = typer.Option(None, "--focal", help="Focal length in pixels; fitted per image when omitted."),
):
    """Fit per-image cameras and canonical 3D keypoints to the landmarks -> transforms.json, keypoints.json."""
    not_yet("lolnerf fit-cameras")
