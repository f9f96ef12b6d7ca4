from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..app import app, console, guarded, reporter
from ..config import VideoConfig

if TYPE_CHECKING:
    from ..model import LoadedModel



@app.command("render")
@guarded
def render(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    index: Optional[int] = typer.Option(None, "--index", help="Render training image I's latent."),
    latent: Optional[Path] = typer.Option(None, "--latent", help="Render a row of a latent file."),
    row: int = typer.Option(0, "--row", help="Row of --latent to render."),
    orbit: bool = typer.Option(False, "--orbit", help="Render an orbit around the mean training view."),
    camera: Optional[Path] = typer.Option(None, "--camera", help="Render exactly the cameras of a transforms.json into DIR/<stem>.png."),
    out: Path = typer.Option(..., "--out", help="--orbit: FILE.mp4, FILE.gif or a folder of frames; --camera: a folder."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8,
                                             help="--orbit: frame width and height (default: the model's training "
                                                  "resolution, RUN/config.json train.resolution); --camera: the longer "
                                                  "side of each image (default: each frame's own w, h)."),
    depth: bool = typer.Option(False, "--depth", help="Also write depth: <stem>_depth.npy + <stem>_depth.png, or a depth video beside the orbit."),
    frames: int = typer.Option(VideoConfig.orbit_frames, "--frames", min=1, help="Orbit frames."),
    fps: int = typer.Option(VideoConfig.fps, "--fps", min=1, help="Frames per second of a video."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
    exact: bool = typer.Option(False, "--exact", help="Render every frame through the network (default: bake the "
                                                      "latent's field into a grid once when that is cheaper)."),
    bake: Optional[Path] = typer.Option(None, "--bake", help="Ray-march this baked grid (written by --save-bake); "
                                                            "its latent is rendered, --index/--latent are optional."),
    save_bake: Optional[Path] = typer.Option(None, "--save-bake", help="Bake the latent and save the grid to FILE.safetensors "
                                                                       "for later --bake."),
):
    """Render a latent from any camera, or as an orbit video."""
    from ..device import pick_device, resolve_precision
    from ..errors import InputError
    from ..frames import FrameRenderer
    from ..model import load_model
    from ..latent_pick import check_latent_choice
    from ..video import FrameSink, output_kind, render_sequence, sibling
    from ..views import read_view

    check_latent_choice(index, latent, baked=bake is not None)
    if exact and (bake is not None or save_bake is not None):
        raise InputError("--exact", "renders through the network; it cannot be combined with --bake or --save-bake")
    if bake is not None and save_bake is not None:
        raise InputError("--save-bake", "cannot be combined with --bake (that grid is already saved)")
    if orbit == (camera is not None):
        raise InputError("--orbit/--camera", "give exactly one of --orbit or --camera TRANSFORMS")
    if camera is not None and output_kind(out) != "frames":
        raise InputError(out, "with --camera, --out must be a folder (images are written as DIR/<stem>.png)")
    loaded = load_model(model, pick_device(device))
    precision = resolve_precision(loaded.cfg.train.precision, loaded.latents.device)
    lat, grid = _latent_and_grid(loaded, index, latent, row, bake)
    mode = "exact" if exact else "baked" if grid is not None or save_bake is not None else "auto"
    frames_r = FrameRenderer(loaded, precision, mode, reporter(), baked=grid)

    if orbit:
        size = resolution or loaded.cfg.train.resolution     # larger only magnifies what the model learned
        cams = read_view(loaded.run.root).orbit(frames, size)
        depth_out = sibling(out, "depth") if depth else None
        with FrameSink(out, fps) as sink, (FrameSink(depth_out, fps) if depth else nullcontext()) as dsink:
            stats = render_sequence(loaded, lat.z, cams, sink, dsink, precision, reporter(), "rendering orbit", frames_r)
        _report_bake(frames_r, save_bake)
        console.print(f"orbit of {lat.source}: {sink.describe()}", soft_wrap=True, markup=False)
        if dsink is not None:
            console.print(f"depth: {dsink.describe()}", soft_wrap=True, markup=False)
        console.print(f"{stats.frames} frames of {size}x{size} px, {stats.ms_per_frame:.0f} ms per frame "
                      f"({loaded.latents.device}, {precision})", markup=False)
        return

    written, total_s = _render_cameras(loaded, lat.z, camera, out, resolution, depth, frames_r)
    _report_bake(frames_r, save_bake)
    console.print(f"{len(written)} image(s) of {lat.source} in {out}/ (e.g. {written[0].name}"
                  f"{', with _depth.npy and _depth.png' if depth else ''}), "
                  f"{1000 * total_s / len(written):.0f} ms per frame ({loaded.latents.device}, {precision})",
                  soft_wrap=True, markup=False)


def _latent_and_grid(loaded: "LoadedModel", index, latent, row, bake):
    """The latent to render and, with --bake, its grid (checked against the model and any --index/--latent)."""
    import torch

    from ..bake import BakedField
    from ..errors import InputError
    from ..latent_pick import Latent, pick_latent

    if bake is None:
        return pick_latent(loaded, index, latent, row), None
    grid = BakedField.load(bake, loaded.model, loaded.latents.device)
    if index is None and latent is None:
        return Latent(grid.latent, f"{bake.name} ({grid.source})"), grid
    lat = pick_latent(loaded, index, latent, row)
    if not torch.equal(lat.z.float(), grid.latent):
        raise InputError(bake, f"was baked from another latent ({grid.source}), not from {lat.source}")
    return lat, grid


def _report_bake(frames_r, save_bake) -> None:
    if save_bake is not None:                  # --save-bake renders in "baked" mode: there is a grid
        frames_r.baked.save(save_bake)
    console.print(frames_r.stats.describe() + (f"; grid saved to {save_bake}" if save_bake else ""),
                  soft_wrap=True, markup=False)


def _render_cameras(loaded: "LoadedModel", z, transforms: Path, out: Path, resolution, depth: bool, frames_r):
    import io
    import time

    import numpy as np

    from ..app import reporter as _reporter
    from ..cameras import Camera
    from ..errors import InputError
    from ..formats import atomic_write_bytes, read_transforms
    from ..images import save_png
    from ..video import colorize_depth, depth_range

    tf = read_transforms(transforms)
    if not tf.frames:
        raise InputError(transforms, "has no frames to render")
    stems: dict[str, str] = {}
    for f in tf.frames:
        stem = Path(f.file_path).stem
        if stem in stems:
            raise InputError(transforms, f"frames '{stems[stem]}' and '{f.file_path}' would both be written as {stem}.png")
        stems[stem] = f.file_path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot be created ({exc.strerror or exc})") from None
    written, total_s = [], 0.0
    radius = loaded.cfg.model.scene_radius
    cams = []
    for f in tf.frames:
        cam = Camera.from_frame(f)
        if resolution:
            scale = resolution / max(cam.w, cam.h)
            cam = cam.scaled(max(1, round(cam.w * scale)), max(1, round(cam.h * scale)))
        cams.append(cam)
    t0 = time.perf_counter()
    baked = frames_r.plan([z] * len(cams), cams)
    total_s += time.perf_counter() - t0
    with _reporter().task("rendering cameras", total=len(tf.frames)) as task:
        for f, cam, use in zip(tf.frames, cams, baked):
            t0 = time.perf_counter()
            r = frames_r.render(z, cam, use)
            total_s += time.perf_counter() - t0
            stem = Path(f.file_path).stem
            path = out / f"{stem}.png"
            save_png(path, r["rgb"])
            if depth:
                buf = io.BytesIO()
                np.save(buf, r["depth"].astype(np.float32), allow_pickle=False)
                atomic_write_bytes(out / f"{stem}_depth.npy", buf.getvalue())
                save_png(out / f"{stem}_depth.png", colorize_depth(r["depth"], *depth_range(cam, radius)))
            written.append(path)
            task.advance(1)
    return written, total_s
