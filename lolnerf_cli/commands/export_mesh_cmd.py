import typer

from ..app import app, guarded, not_yet


@app.command("export-mesh")
@guarded
def export_mesh():
    """Extract a coloured mesh of one latent's foreground by marching cubes."""
    not_yet("lolnerf export-mesh")
