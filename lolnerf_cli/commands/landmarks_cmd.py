from pathlib import Path

import typer

from ..app import app, console, guarded, reporter


@app.command("landmarks")
@guarded
def landmarks(
    data: Path = typer.Argument(..., help="Dataset folder with images/."),
    masks: bool = typer.Option(False, "--masks", help="Also write a foreground mask per image to DATA/masks/."),
):
    """Find the 5 face landmarks of every photo with MediaPipe -> DATA/landmarks.json.

    Photos that cannot be read, show no face or several faces of similar size are listed as failed (with the reason) and the run goes on. For other object classes, convert any landmarker's output to landmarks.json instead (docs/landmarks.md)."""
    from rich.table import Table

    from ..landmarks import failure_counts, find_landmarks

    run = find_landmarks(data, masks=masks, progress=reporter())
    lm = run.landmarks
    total = len(lm.frames) + len(lm.failed)
    table = Table(title=f"landmarks ({lm.scheme}) of {total} photos", title_justify="left")
    table.add_column("result")
    table.add_column("photos", justify="right")
    table.add_row("[green]found[/]", str(len(lm.frames)))
    for reason, count in failure_counts(lm.failed).items():
        table.add_row(f"[red]failed[/]: {_escape(reason)}", str(count))
    if masks:
        table.add_row("masks written", str(run.masks_written))
        if run.mask_failed:
            table.add_row("[red]masks failed[/]", str(len(run.mask_failed)))
    console.print(table)
    console.print(f"wrote {_escape(str(run.path))}" + (f" and {run.masks_written} masks to "
                                                      f"{_escape(str(Path(data) / 'masks'))}" if masks else ""))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
