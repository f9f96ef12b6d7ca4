from pathlib import Path
from typing import Optional

import typer

from ..app import app, guarded, not_yet


@app.command("eval")
@guarded
def evaluate(
    data: Path = typer.Argument(..., help="The dataset the model was trained on."),
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    novel: Optional[Path] = typer.Option(None, "--novel", help="Multi-view held-out folder (synth --holdout writes DATA/holdout)."),
    out: Path = typer.Option(..., "--out", help="metrics.json to write."),
):
    """Measure reconstruction, held-out, novel-view and depth quality the way the paper does."""
    not_yet("lolnerf eval")
