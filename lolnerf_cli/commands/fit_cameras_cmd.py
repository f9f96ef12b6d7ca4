from pathlib import Path
from typing import Optional

import typer

from ..app import app, console, guarded, reporter


@app.command("fit-cameras")
@guarded
def fit_cameras(
    data: Path = typer.Argument(..., help="Dataset folder with landmarks.json."),
    keypoints: Optional[Path] = typer.Option(None, "--keypoints", help="Fixed canonical 3D keypoints (keypoints.json); fitted when omitted."),
    focal: Optional[float] = typer.Option(None, "--focal", help="Focal length in pixels; fitted per image when omitted."),
    flag_threshold: float = typer.Option(0.15, "--flag-threshold", help="Flag a frame when its landmark RMSE exceeds this fraction of its landmark spread (or 3x the dataset's median ratio if larger, up to 0.35)."),
    init_keypoints: Optional[Path] = typer.Option(None, "--init-keypoints", help="Start the keypoint fit from these keypoints (keypoints.json) instead of the built-in face template or a factorisation; they are refined."),
):
    """Fit per-image cameras and canonical 3D keypoints to the landmarks -> transforms.json, keypoints.json.

    Frames whose landmarks fit poorly get "flagged": true (training leaves them out by default); failed landmark frames are skipped. See docs/landmarks.md."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    from ..camfit import fit_cameras as run_fit
    from ..folders import dataset

    fit = run_fit(data, keypoints=keypoints, focal=focal, flag_fraction=flag_threshold,
                  init_keypoints=init_keypoints, progress=reporter())
    ds = dataset(data)
    table = Table(title="camera fit", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("frames fitted", str(len(fit.transforms.frames)))
    table.add_row("skipped (no landmarks)", str(len(fit.skipped)))
    table.add_row("landmark RMSE median", f"{fit.median_rmse_px:.2f} px")
    table.add_row("landmark RMSE 90th pct", f"{fit.p90_rmse_px:.2f} px")
    table.add_row("[yellow]flagged[/] (left out of training)", str(len(fit.flagged)))
    foc = np.array([f.fx for f in fit.transforms.frames])
    table.add_row("focal length", f"{np.median(foc):.1f} px (median)" + ("" if fit.fitted_focal else ", given"))
    table.add_row("keypoints", "fitted" if fit.fitted_keypoints else "given")
    console.print(table)
    for path in fit.flagged[:10]:
        console.print(f"  flagged: {escape(path)}")
    if len(fit.flagged) > 10:
        console.print(f"  ... and {len(fit.flagged) - 10} more flagged frames")
    console.print(f"wrote {escape(str(ds.transforms))} and {escape(str(ds.keypoints))}")
