import typer

from ..app import app, guarded, not_yet


@app.command("interpolate")
@guarded
def interpolate():
    """Render a video that walks between latents."""
    not_yet("lolnerf interpolate")
