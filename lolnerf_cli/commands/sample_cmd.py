from pathlib import Path

import typer

from ..app import app, guarded, not_yet


@app.command("sample")
@guarded
def sample(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    n: int = typer.Option(16, "--n", min=1, help="Number of new identities."),
    truncation: float = typer.Option(0.7, "--truncation", min=0.0, help="psi: 0 = the mean, 1 = the full Gaussian."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", help="Folder for latents.safetensors and grid.png."),
):
    """Sample new identities from a Gaussian fitted to the latent table (PCA, truncation psi)."""
    not_yet("lolnerf sample")
