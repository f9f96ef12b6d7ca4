from pathlib import Path

import typer

from ..app import app, console, guarded


@app.command("view")
@guarded
def view(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only; "
                                                         "0.0.0.0 for every interface)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to listen on."),
    out: Path = typer.Option(Path("lolnerf-view"), "--out", help="Folder for screenshots, meshes, saved cameras, "
                                                                 "uploaded photos and their latents."),
    invert_steps: int = typer.Option(200, "--invert-steps", min=1, help="Optimisation steps when inverting an "
                                                                        "uploaded photo."),
    mesh_grid: int = typer.Option(128, "--mesh-grid", min=8, max=1024, help="Grid points per axis of exported meshes."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
):
    """Explore a trained model in the browser: drag the camera, change the identity, invert a photo."""
    from ..device import pick_device, resolve_precision
    from ..model import load_model
    from ..viewer.server import serve

    loaded = load_model(model, pick_device(device))
    precision = resolve_precision(loaded.cfg.train.precision, loaded.latents.device)
    console.print(f"model {model}: {loaded.latents.shape[0]} identities, {loaded.latents.device}, {precision}",
                  soft_wrap=True, markup=False)
    serve(loaded, precision, host, port, out, invert_steps, mesh_grid,
          announce=lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False))
