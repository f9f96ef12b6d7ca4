from pathlib import Path
from typing import Optional

import typer

from ..app import app, guarded, not_yet


@app.command("render")
@guarded
def render(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    index: Optional[int] = typer.Option(None, "--index", help="Render training image I's latent."),
    latent: Optional[Path] = typer.Option(None, "--latent", help="Render a row of a latent file."),
    row: int = typer.Option(0, "--row", help="Row of --latent to render."),
    orbit: bool = typer.Option(False, "--orbit", help="Render an orbit video around the mean view."),
    camera: Optional[Path] = typer.Option(None, "--camera", help="Render exactly the cameras of a transforms.json."),
    out: Path = typer.Option(..., "--out", help="Output: FILE.mp4, FILE.gif or a folder."),
    resolution: int = typer.Option(128, "--resolution", min=8, help="Output width and height."),
    depth: bool = typer.Option(False, "--depth", help="Also write depth maps."),
):
    """Render a latent from any camera, or as an orbit video."""
    not_yet("lolnerf render")
