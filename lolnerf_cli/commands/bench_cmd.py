import typer

from ..app import app, guarded, not_yet


@app.command("bench")
@guarded
def bench(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Measure this machine: matmul peak, training samples/s and render time per preset."""
    not_yet("lolnerf bench")
