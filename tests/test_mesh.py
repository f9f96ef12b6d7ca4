"""`lolnerf export-mesh`: marching cubes of a model whose geometry is known (a solid box), PLY/OBJ files
that parse back, vertex colours from the field, outward-facing triangles, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from use_models import CUBE_RGB, cube_surface, error_line, invoke

GRID = 32


def _check_cube_mesh(mesh, threshold: float):
    assert len(mesh.faces) > 100 and len(mesh.vertices) > 50
    assert mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.vertices)
    surface, cell = cube_surface(threshold), 2.0 / (GRID - 1)
    # the box's six faces, each axis at its own extent (x narrower than y narrower than z)
    for axis in range(3):
        assert mesh.vertices[:, axis].max() == pytest.approx(surface[axis], abs=cell)
        assert mesh.vertices[:, axis].min() == pytest.approx(-surface[axis], abs=cell)
    # and nothing far inside it (the edges are slightly rounded): every vertex lies on the box's boundary
    outside = (np.abs(mesh.vertices) - surface).max(axis=1)
    assert outside.min() > -2 * cell and outside.max() < cell
    # colours come from the field (uniform), not a default
    assert np.abs(mesh.colors.astype(float) / 255 - np.array(CUBE_RGB)).max() < 2 / 255
    # triangles wind counter-clockwise seen from outside: normals point away from the centre
    v = mesh.vertices[mesh.faces]
    normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert (np.einsum("fi,fi->f", normals, v.mean(axis=1)) > 0).mean() > 0.99


def test_export_binary_ply_of_a_solid_box(cube, tmp_path):
    from lolnerf_cli.mesh import read_ply

    out = tmp_path / "cube.ply"
    res = invoke(["export-mesh", "--model", str(cube), "--index", "0", "--out", str(out), "--grid", str(GRID),
                  "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    mesh = read_ply(out)
    _check_cube_mesh(mesh, 10.0)
    assert f"{len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces" in res.stdout and "threshold 10," in res.stdout
    assert "1 connected piece(s)" in res.stdout          # one solid box, no floaters


def test_connected_pieces_are_counted():
    from lolnerf_cli.mesh import Mesh, components

    tri = np.array([[0, 1, 2], [1, 2, 3], [4, 5, 6]], np.int32)     # two pieces: 4 and 3 vertices; 7 alone
    mesh = Mesh(np.zeros((8, 3), np.float32), tri, np.zeros((8, 3), np.uint8))
    assert components(mesh) == [4, 3, 1]


def test_small_pieces_are_dropped_and_the_rest_renumbered():
    from lolnerf_cli.mesh import Mesh, components, drop_small_pieces

    # piece A: vertices 0, 2, 4, 6 (two triangles); piece B: 1, 3, 5; vertex 7 alone; interleaved on purpose
    tri = np.array([[0, 2, 4], [2, 4, 6], [1, 3, 5]], np.int32)
    verts = np.arange(24, dtype=np.float32).reshape(8, 3)
    cols = np.arange(24, dtype=np.uint8).reshape(8, 3)
    mesh = Mesh(verts, tri, cols, 5.0, 2)
    same, n = drop_small_pieces(mesh, 0.0)
    assert same is mesh and n == 0
    kept, n = drop_small_pieces(mesh, 0.5)              # B has 3 of A's 4 vertices: kept; the lone vertex is not
    assert n == 1 and components(kept) == [4, 3] and len(kept.faces) == 3
    kept, n = drop_small_pieces(mesh, 0.8)
    assert n == 2 and components(kept) == [4]
    assert (kept.vertices[kept.faces] == verts[tri[:2]]).all()          # same triangles, renumbered
    assert (kept.colors[kept.faces] == cols[tri[:2]]).all()
    assert kept.threshold == 5.0 and kept.cavities_filled == 2


def test_ascii_ply_and_obj_hold_the_same_mesh(cube, tmp_path):
    from lolnerf_cli.mesh import extract_mesh, read_ply, write_mesh
    from lolnerf_cli.model import load_model

    loaded = load_model(cube)
    mesh = extract_mesh(loaded, loaded.latents[1], GRID, 20.0)
    _check_cube_mesh(mesh, 20.0)
    write_mesh(tmp_path / "a.ply", mesh, ascii=True)
    back = read_ply(tmp_path / "a.ply")
    assert np.allclose(back.vertices, mesh.vertices, atol=1e-5)
    assert (back.faces == mesh.faces).all() and (back.colors == mesh.colors).all()

    write_mesh(tmp_path / "a.obj", mesh)
    lines = (tmp_path / "a.obj").read_text().splitlines()
    v = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    f = np.array([[int(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    assert v.shape == (len(mesh.vertices), 6) and f.shape == mesh.faces.shape
    assert np.allclose(v[:, :3], mesh.vertices, atol=1e-5)
    assert np.allclose(v[:, 3:], mesh.colors / 255.0, atol=1e-3)
    assert f.min() == 1 and (f - 1 == mesh.faces).all()                  # OBJ indices are 1-based


def test_empty_density_suggests_a_lower_threshold(cube, tmp_path):
    out = tmp_path / "none.ply"
    res = invoke(["export-mesh", "--model", str(cube), "--index", "0", "--out", str(out), "--grid", "16",
                  "--threshold", "1000", "--device", "cpu"])
    assert res.exit_code == 2
    line = error_line(res)
    assert "--threshold" in line and "lower" in line
    assert not out.exists()


def test_mesh_usage_errors(cube, tmp_path):
    res = invoke(["export-mesh", "--model", str(cube), "--index", "0", "--out", str(tmp_path / "m.stl")])
    assert res.exit_code == 2 and "m.stl" in error_line(res)
    res = invoke(["export-mesh", "--model", str(cube), "--out", str(tmp_path / "m.ply")])
    assert res.exit_code == 2 and "--index" in error_line(res)
    res = invoke(["export-mesh", "--model", str(cube), "--index", "7", "--out", str(tmp_path / "m.ply")])
    assert res.exit_code == 2 and "out of range" in error_line(res)
    res = invoke(["export-mesh", "--model", str(tmp_path / "nope"), "--index", "0", "--out", str(tmp_path / "m.ply")])
    assert res.exit_code == 2 and "nope" in error_line(res)
    res = invoke(["export-mesh", "--model", str(cube), "--index", "0", "--out", str(tmp_path / "m.ply"),
                  "--min-piece", "2"])
    assert res.exit_code == 2 and "--min-piece" in error_line(res) and not (tmp_path / "m.ply").exists()


def _pieces_of(dens: np.ndarray, threshold: float) -> int:
    from skimage import measure

    from lolnerf_cli.mesh import Mesh, components

    verts, faces, _, _ = measure.marching_cubes(np.pad(dens, 1), level=threshold)
    return len(components(Mesh(verts.astype(np.float32), faces.astype(np.int32),
                               np.zeros((len(verts), 3), np.uint8))))


def test_closed_hollows_are_filled_and_open_ones_kept():
    from lolnerf_cli.mesh import fill_cavities

    g = np.linspace(-1, 1, 40)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    shell = np.where((r > 0.3) & (r < 0.7), 100.0, 0.0).astype(np.float32)      # a ball with a bubble inside
    assert _pieces_of(shell, 10.0) == 2                 # outer surface + the bubble's inward-facing one
    filled, n = fill_cavities(shell, 10.0)
    assert n == 1 and _pieces_of(filled, 10.0) == 1
    assert (filled[r <= 0.3] == 20.0).all() and (filled[r >= 0.7] == 0).all()
    assert (shell[r <= 0.3] == 0).all()                 # the input is left as it was
    cup = shell.copy()
    cup[(r <= 0.75) & (z > 0.2) & (np.abs(x) < 0.15) & (np.abs(y) < 0.15)] = 0.0   # a hole from the bubble out
    same, n_open = fill_cavities(cup, 10.0)
    assert n_open == 0 and same is cup                  # seen from outside through the hole: kept


def _mesh_of(dens: np.ndarray, axis: np.ndarray, threshold: float):
    """Marching cubes of a density grid in object coordinates, as extract_mesh places it."""
    from skimage import measure

    from lolnerf_cli.mesh import Mesh

    step = float(axis[1] - axis[0])
    verts, faces, _, _ = measure.marching_cubes(np.pad(dens, 1), level=threshold, spacing=(step,) * 3)
    verts = (verts - step + axis[0]).astype(np.float32)
    return Mesh(verts, faces.astype(np.int32), np.zeros((len(verts), 3), np.uint8))


def test_pieces_no_camera_sees_are_dropped():
    from lolnerf_cli.mesh import components, drop_unseen_pieces, piece_labels, seen_pieces
    from lolnerf_cli.views import View

    axis = np.linspace(-1, 1, 64, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    box = (np.abs(x) < 0.3) & (np.abs(y) < 0.4) & (np.abs(z) < 0.3)

    def ball(cx, cy, cz, r):
        return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < r * r

    hidden = ball(0.0, 0.0, -0.7, 0.12)       # straight behind the box, seen from the front camera
    above = ball(0.0, 0.92, 0.0, 0.06)        # above the image (the frustum is 0.72 high at the centre)
    beside = ball(0.62, 0.0, 0.35, 0.12)      # in plain view
    dens = np.where(box | hidden | above | beside, 100.0, 0.0).astype(np.float32)
    mesh = _mesh_of(dens, axis, 10.0)
    labels = piece_labels(mesh)
    assert len(components(mesh)) == 4
    front = View(0.0, 0.0, 2.7, 30.0).camera(64)
    seen = seen_pieces(mesh, dens, axis, [front], labels)
    centre = np.stack([mesh.vertices[labels == k].mean(0) for k in range(4)])
    by_place = {"box": np.abs(centre).sum(1).argmin(), "hidden": centre[:, 2].argmin(),
                "above": centre[:, 1].argmax(), "beside": centre[:, 0].argmax()}
    assert len(set(by_place.values())) == 4
    assert seen[by_place["box"]] and seen[by_place["beside"]]
    assert not seen[by_place["hidden"]] and not seen[by_place["above"]]

    kept = drop_unseen_pieces(mesh, dens, axis, [front])
    assert kept.unseen_dropped == 2 and len(components(kept)) == 2
    assert kept.vertices[:, 2].min() > -0.45 and kept.vertices[:, 1].max() < 0.6
    # a camera from behind and above sees the other two as well
    back = View(180.0, 40.0, 2.7, 30.0).camera(64)
    assert seen_pieces(mesh, dens, axis, [front, back], labels).sum() >= 3
    assert drop_unseen_pieces(mesh, dens, axis, []).unseen_dropped == 0


def test_visibility_cameras_are_the_training_cameras_or_views_around_the_mean(tiny, cube, tmp_path):
    import shutil

    from lolnerf_cli.formats import read_images_json, read_transforms
    from lolnerf_cli.views import training_cameras

    cams, source = training_cameras(tiny.run, 32)
    frames = {f.file_path: f for f in read_transforms(tiny.data / "transforms.json").frames}
    files = read_images_json(tiny.run / "images.json")
    assert len(cams) == min(48, len(files)) and "training cameras from" in source
    assert np.allclose(cams[0].c2w, frames[files[0]].c2w) and np.allclose(cams[-1].c2w, frames[files[-1]].c2w)

    cams, source = training_cameras(cube, 32)                 # no images.json: views around the mean view
    assert len(cams) == 15 and "views around the mean training view" in source and "images.json" in source
    run = tmp_path / "run"
    shutil.copytree(tiny.run, run)
    (run / "images.json").write_text('{"dataset": "%s", "images": ["x.png"]}' % (tmp_path / "gone"))
    cams, source = training_cameras(run, 32)
    assert len(cams) == 15 and "gone" in source


def test_export_mesh_keep_unseen_keeps_every_piece(tiny, tmp_path):
    from lolnerf_cli.mesh import components, read_ply

    pieces = {}
    for flag in ([], ["--keep-unseen"]):
        out = tmp_path / f"m{len(flag)}.ply"
        res = invoke(["export-mesh", "--model", str(tiny.run), "--index", "0", "--out", str(out), "--grid", "32",
                      "--device", "cpu", *flag])
        assert res.exit_code == 0, res.output
        pieces[bool(flag)] = len(components(read_ply(out)))
        if not flag and "left out" in res.stdout:
            assert "training cameras from" in res.stdout
    assert 1 <= pieces[False] <= pieces[True]
