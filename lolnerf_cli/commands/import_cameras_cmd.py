from pathlib import Path
from typing import Optional

import typer

from ..app import app, console, guarded, reporter


@app.command("import-cameras")
@guarded
def import_cameras(
    file: Path = typer.Argument(..., help="Another tool's cameras: jax3d/LOLNeRF *_camera_estimates.json, a nerfstudio "
                                          "or instant-ngp transforms.json, or a COLMAP text model (its folder, or "
                                          "its cameras.txt / images.txt)."),
    data: Path = typer.Argument(..., help="Dataset folder with images/; DATA/transforms.json is written."),
    fmt: str = typer.Option("auto", "--format", help="auto, jax3d, nerfstudio or colmap-text."),
    keep_frame: bool = typer.Option(False, "--keep-frame", help="Keep the file's world frame (only convert the "
                                                                "conventions): for cameras already in lolnerf's "
                                                                "object frame."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw the imported cameras (positions, some "
                                                             "frusta, the unit sphere) to this PNG."),
):
    """Convert another tool's cameras to DATA/transforms.json (OpenGL camera-to-world, SPEC's object frame).

    Frames are matched to DATA/images/ by file name (without extension); images without a camera and cameras
    without an image are reported. The cameras are re-centred on the point they look at, rotated so +Y is
    their mean up and +Z the side they see, and scaled so the object fits the unit sphere (docs/import-cameras.md).
    Training on the result needs no landmarks."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    from ..folders import dataset
    from ..import_cameras import camera_figure, import_cameras as run_import

    if plot is not None and plot.suffix.lower() != ".png":
        from ..errors import InputError

        raise InputError(plot, "the --plot figure must be a .png file")
    res = run_import(file, data, fmt=fmt, keep_frame=keep_frame, progress=reporter())
    tf, ds = res.transforms, dataset(data)
    pos = np.stack([f.c2w[:3, 3] for f in tf.frames])
    dist = np.linalg.norm(pos, axis=1)
    table = Table(title=f"imported cameras ({res.fmt})", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("cameras in the file", f"{res.n_cameras:,}")
    table.add_row("frames written", f"{len(tf.frames):,}")
    table.add_row("[yellow]images without a camera[/]", f"{len(res.images_without_camera):,}")
    table.add_row("[yellow]cameras without an image[/]", f"{len(res.cameras_without_image):,}")
    if res.rescaled:
        table.add_row("intrinsics scaled to the image size", f"{res.rescaled:,}")
    table.add_row("optical axis vs origin", f"{np.median(res.look_at_deg):.2f} deg median, "
                                            f"{res.look_at_deg.max():.2f} max")
    table.add_row("camera distance", f"{dist.min():.2f} - {dist.max():.2f} (median {np.median(dist):.2f})")
    if not keep_frame:
        table.add_row("scale applied", f"{res.normalisation.scale:.4g}")
    console.print(table)
    for label, names in (("image without a camera", res.images_without_camera),
                         ("camera without an image", res.cameras_without_image)):
        for name in names[:5]:
            console.print(f"  {label}: {escape(name)}", soft_wrap=True)
        if len(names) > 5:
            console.print(f"  ... and {len(names) - 5:,} more")
    for note, count in res.notes.items():
        console.print(f"[yellow]note[/]: {escape(note)} ({count:,} camera(s))", soft_wrap=True)
    if res.keypoints:
        console.print(f"keypoints.json: {escape(res.keypoints)}", soft_wrap=True)
    console.print(f"wrote {escape(str(ds.transforms))}" + (" (replacing the previous one)" if res.replaced else ""),
                  soft_wrap=True)
    if plot is not None:
        camera_figure(tf, plot, title=f"{file.name}: {len(tf.frames):,} cameras")
        console.print(f"wrote {escape(str(plot))}", soft_wrap=True)
