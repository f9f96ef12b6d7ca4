from pathlib import Path
from typing import Optional

import typer

from ..app import app, console, guarded, reporter


@app.command("export-mesh")
@guarded
def export_mesh(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    index: Optional[int] = typer.Option(None, "--index", help="Mesh training image I's latent."),
    latent: Optional[Path] = typer.Option(None, "--latent", help="Mesh a row of a latent file."),
    row: int = typer.Option(0, "--row", help="Row of --latent."),
    out: Path = typer.Option(..., "--out", help="FILE.ply or FILE.obj (vertex colours included)."),
    grid: int = typer.Option(128, "--grid", min=8, max=1024, help="Grid points per axis across the bounding cube."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Density of the extracted surface (default 10, or half "
                                                                          "the peak density of a model that never reaches 20)."),
    min_piece: float = typer.Option(0.0, "--min-piece", help="Drop connected pieces with fewer vertices than this "
                                    "fraction of the largest (floaters; e.g. 0.01). Default 0: keep every piece."),
    keep_unseen: bool = typer.Option(False, "--keep-unseen", help="Keep the pieces that no training camera sees "
                                     "(by default they are left out: no photo showed that density)."),
    ascii: bool = typer.Option(False, "--ascii", help="Write an ASCII PLY instead of a binary one."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
):
    """Extract a coloured mesh of one latent's foreground by marching cubes (closed hollows inside the object,
    which no camera sees, are filled first, so the mesh is the surface seen from outside; pieces that none of
    the training cameras sees are left out unless --keep-unseen)."""
    import time

    from ..device import pick_device
    from ..errors import InputError
    from ..mesh import check_piece_fraction, components, drop_small_pieces, extract_mesh, write_mesh
    from ..model import load_model
    from ..latent_pick import check_latent_choice, pick_latent
    from ..views import training_cameras

    if out.suffix.lower() not in (".ply", ".obj"):
        raise InputError(out, "mesh file must end in .ply or .obj")
    check_latent_choice(index, latent)
    check_piece_fraction(min_piece)
    loaded = load_model(model, pick_device(device))
    lat = pick_latent(loaded, index, latent, row)
    t0 = time.perf_counter()
    cameras, cam_source = (None, "") if keep_unseen else training_cameras(loaded.run.root, loaded.cfg.train.resolution)
    mesh = extract_mesh(loaded, lat.z, grid, threshold, reporter(), cameras)
    mesh, dropped = drop_small_pieces(mesh, min_piece)
    write_mesh(out, mesh, ascii=ascii)
    pieces = components(mesh)
    console.print(f"{out}: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces, {len(pieces)} connected "
                  f"piece(s){f' (largest {pieces[0]:,} vertices, the rest {sum(pieces[1:]):,})' if len(pieces) > 1 else ''} "
                  f"(grid {grid}^3, threshold {mesh.threshold:.3g}"
                  f"{f', {mesh.cavities_filled} closed hollow(s) inside filled' if mesh.cavities_filled else ''}"
                  f"{f', {mesh.unseen_dropped} piece(s) that none of {cam_source} sees left out' if mesh.unseen_dropped else ''}"
                  f"{f', {dropped} piece(s) under {min_piece:g} of the largest dropped' if dropped else ''}, "
                  f"{lat.source}, {time.perf_counter() - t0:.1f} s)",
                  soft_wrap=True, markup=False)
