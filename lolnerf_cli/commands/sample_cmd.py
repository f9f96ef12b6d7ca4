from pathlib import Path
from typing import Optional

import typer

from ..app import app, console, guarded, reporter
from ..config import VideoConfig


@app.command("sample")
@guarded
def sample(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    n: int = typer.Option(16, "--n", min=1, help="Number of new identities."),
    truncation: float = typer.Option(0.7, "--truncation", min=0.0, help="psi: 0 = the mean, 1 = the full Gaussian."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same samples."),
    out: Path = typer.Option(..., "--out", help="Folder for latents.safetensors, one image per sample "
                                                "(sample_000.png ...) and grid.png (all of them, captioned)."),
    orbit: bool = typer.Option(False, "--orbit", help="Also render an orbit video per sample (DIR/sample_000.mp4 ...)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Size of each rendered image in pixels "
                                                                              "(default: the model's training resolution)."),
    frames: int = typer.Option(VideoConfig.orbit_frames, "--frames", min=1, help="Frames per orbit video."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
    exact: bool = typer.Option(False, "--exact", help="Render orbits through the network (default: bake each sample "
                                                      "once when that is cheaper)."),
):
    """Sample new identities from a Gaussian fitted to the latent table (PCA, truncation psi)."""
    import time

    from ..device import pick_device, resolve_precision
    from ..errors import InputError
    from ..formats import save_latents
    from ..frames import FrameRenderer
    from ..images import save_png
    from ..model import load_model
    from ..render import render_image
    from ..latent_pick import sample_latents
    from ..video import FrameSink, contact_sheet, render_sequence
    from ..views import read_view

    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    loaded = load_model(model, pick_device(device))
    z, sources = sample_latents(loaded, n, truncation, seed)
    save_latents(out / "latents.safetensors", z, loaded.model_hash, sources,
                 {"seed": seed, "truncation": truncation})
    dev = loaded.latents.device
    precision = resolve_precision(loaded.cfg.train.precision, dev)
    resolution = resolution or loaded.cfg.train.resolution
    view = read_view(loaded.run.root)
    cam = view.camera(resolution)
    tiles, t_render = [], 0.0
    with reporter().task("rendering samples", total=n) as task:
        for i in range(n):
            t0 = time.perf_counter()
            tiles.append(render_image(loaded.model, z[i].to(dev), cam, loaded.cfg.render, precision)["rgb"])
            t_render += time.perf_counter() - t0
            task.advance(1)
    for i, tile in enumerate(tiles):
        save_png(out / f"sample_{i:03d}.png", tile)
    save_png(out / "grid.png", contact_sheet(tiles, [f"sample_{i:03d}" for i in range(n)]))
    console.print(f"{n} samples (seed {seed}, psi {truncation:g}): {out / 'latents.safetensors'}  "
                  f"images: {out / 'sample_000.png'} .. {out / f'sample_{n - 1:03d}.png'} ({resolution} px)  "
                  f"grid: {out / 'grid.png'}  ({1000 * t_render / n:.0f} ms per image)", soft_wrap=True, markup=False)
    if orbit:
        cams = view.orbit(frames, resolution)
        pr = reporter()
        frames_r = FrameRenderer(loaded, precision, "exact" if exact else "auto", pr)   # one bake per sample
        for i in range(n):
            path = out / f"sample_{i:03d}.mp4"
            with FrameSink(path) as sink:
                stats = render_sequence(loaded, z[i].to(dev), cams, sink, None, precision, pr, f"orbit {i + 1}/{n}",
                                        frames_r)
        console.print(f"orbits: {out / 'sample_000.mp4'} .. {out / f'sample_{n - 1:03d}.mp4'} "
                      f"({stats.ms_per_frame:.0f} ms per frame); {frames_r.stats.describe()}", soft_wrap=True,
                      markup=False)
