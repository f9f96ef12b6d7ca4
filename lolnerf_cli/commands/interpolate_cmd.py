from pathlib import Path
from typing import List, Optional

import typer

from ..app import app, console, guarded, reporter
from ..config import VideoConfig


@app.command("interpolate")
@guarded
def interpolate(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    start: str = typer.Option(..., "--from", help="First latent: index:I, FILE.safetensors (row 0) or FILE.safetensors:ROW."),
    to: List[str] = typer.Option(..., "--to", help="Next latent (same forms); repeat for a longer walk."),
    out: Path = typer.Option(..., "--out", help="FILE.mp4, FILE.gif or a folder of frames."),
    frames: int = typer.Option(60, "--frames", min=2, help="Frames in the whole video."),
    orbit: bool = typer.Option(False, "--orbit", help="Move the camera along the orbit while walking (else: the fixed mean view)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Frame width and height in pixels "
                                                                              "(default: the model's training resolution)."),
    fps: int = typer.Option(VideoConfig.fps, "--fps", min=1, help="Frames per second of a video."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
    exact: bool = typer.Option(False, "--exact", help="Render through the network (default: bake each frame's latent "
                                                      "instead when that is cheaper, i.e. at large frame sizes)."),
):
    """Render a video that walks linearly between latents."""
    import torch

    from ..device import pick_device, resolve_precision
    from ..frames import FrameRenderer
    from ..model import load_model
    from ..latent_pick import interpolation_path, parse_endpoint
    from ..video import FrameSink, output_kind, render_sequence
    from ..views import read_view

    output_kind(out)                      # a bad suffix fails before the model is loaded
    loaded = load_model(model, pick_device(device))
    ends = [parse_endpoint(loaded, s) for s in [start, *to]]
    path = interpolation_path(torch.stack([e.z for e in ends]), frames)
    resolution = resolution or loaded.cfg.train.resolution
    view = read_view(loaded.run.root)
    cams = view.orbit(frames, resolution) if orbit else [view.camera(resolution)] * frames
    precision = resolve_precision(loaded.cfg.train.precision, loaded.latents.device)
    frames_r = FrameRenderer(loaded, precision, "exact" if exact else "auto", reporter())
    with FrameSink(out, fps) as sink:
        stats = render_sequence(loaded, list(path), cams, sink, None, precision, reporter(), "rendering walk", frames_r)
    console.print(" -> ".join(e.source for e in ends), soft_wrap=True, markup=False)
    console.print(f"{sink.describe()}: {stats.frames} frames of {resolution}x{resolution} px, "
                  f"{stats.ms_per_frame:.0f} ms per frame; {frames_r.stats.describe()}", soft_wrap=True, markup=False)
