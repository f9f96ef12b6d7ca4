from pathlib import Path

import typer

from ..app import app, console, guarded, reporter


@app.command("synth")
@guarded
def synth(
    out: Path = typer.Argument(..., help="Dataset folder to write (images/, masks/, landmarks.json, transforms.json, keypoints.json)."),
    n: int = typer.Option(200, "--n", min=1, help="Number of training objects (one photo each)."),
    resolution: int = typer.Option(64, "--resolution", min=8, max=2048, help="Image width and height in pixels."),
    holdout: int = typer.Option(0, "--holdout", min=0, help="Unseen objects for novel-view/depth evaluation (written to OUT/holdout/)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same dataset."),
):
    """Generate a procedural object class (a stand-in for a face photo collection) with true cameras.

    OUT may be a new or empty folder, or a previous synth output (which is replaced); any other non-empty folder is refused."""
    from ..synth import synthesize

    s = synthesize(out, n=n, resolution=resolution, holdout=holdout, seed=seed, progress=reporter())
    console.print(f"wrote {out}/", soft_wrap=True)
    console.print(f"images, masks:  {out / 'images'}/, {out / 'masks'}/")
    console.print(f"cameras:        {out / 'transforms.json'}")
    console.print(f"landmarks:      {out / 'landmarks.json'}")
    console.print(f"keypoints:      {out / 'keypoints.json'}")
    if s.holdout:
        console.print(f"holdout:        {out / 'holdout'}/ ({s.holdout} objects x {s.views + 1} views, with depth)")
    console.print(f"synth: {s.n} images at {s.resolution}x{s.resolution} px"
                  + (f" + {s.holdout * (s.views + 1)} holdout views" if s.holdout else "")
                  + f", seed {s.seed}, object covers {100 * s.mean_coverage:.0f}% of a photo on average,"
                  f" {s.seconds:.1f} s.", soft_wrap=True)
