import typer

from ..app import app, guarded, not_yet


@app.command("demo")
@guarded
def demo():
    """Run the whole pipeline end to end on built-in synthetic data."""
    not_yet("lolnerf demo")
