"""The figure `lolnerf eval` writes beside metrics.json: captioned rows of four tiles
(input | prediction | ground truth or |error| | depth), each tile at least FIGURE_TILE pixels wide."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import to_uint8
from .video import colorize_depth

FIGURE_SUFFIX = "_figure.png"       # metrics.json -> metrics_figure.png beside it
FIGURE_TILE = 128                   # figure tiles are at least this many pixels wide (nearest upscaling)
FIGURE_PAD = 4                      # pixels between tiles
FIGURE_CAPTION = 16                 # caption strip above each figure row
FIGURE_COLUMNS = 4                  # input | prediction | ground truth (or error) | depth


def _colour_tile(tile: np.ndarray, kind: str) -> np.ndarray:
    """uint8 tiles: float [H, W, 3] images pass through; [H, W] error maps are colour-mapped (magma), depth
    maps with `video.colorize_depth` (the depth colours `render --depth` writes; NaN -> black)."""
    if tile.ndim == 3:
        return to_uint8(tile)
    if kind == "depth":
        return colorize_depth(tile)
    from matplotlib import colormaps

    finite = np.isfinite(tile)
    rgb = colormaps["magma"](np.nan_to_num(np.clip(tile / 0.25, 0, 1)))[..., :3]   # 0.25 mean abs error saturates
    return to_uint8(np.where(finite[..., None], rgb, 0.0))


def figure_size(n_rows: int, res: int) -> tuple[int, int]:
    """(width, height) in pixels of the figure for n_rows rows of tiles rendered at res."""
    tile = max(res, FIGURE_TILE)
    width = FIGURE_COLUMNS * tile + (FIGURE_COLUMNS + 1) * FIGURE_PAD
    height = n_rows * (FIGURE_CAPTION + tile + FIGURE_PAD) + FIGURE_PAD
    return width, height


def write_figure(path: Path, rows: list[dict], res: int) -> tuple[int, int]:
    """rows of tiles (each row: caption + 4 tiles) -> one PNG. Returns its (width, height)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    from .formats import atomic_write_bytes

    tile = max(res, FIGURE_TILE)
    width, height = figure_size(len(rows), res)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    y = FIGURE_PAD
    for row in rows:
        draw.text((FIGURE_PAD, y + 2), row["caption"], fill=(0, 0, 0), font=font)
        y += FIGURE_CAPTION
        kinds = ["image", "image", "error" if row["kind"] == "train" else "image", "depth"]
        for c, (t, kind) in enumerate(zip(row["tiles"], kinds)):
            arr = _colour_tile(np.asarray(t, dtype=np.float64), kind)
            img = Image.fromarray(arr).resize((tile, tile), Image.NEAREST)
            canvas.paste(img, (FIGURE_PAD + c * (tile + FIGURE_PAD), y))
        y += tile + FIGURE_PAD
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return width, height


def figure_path_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + FIGURE_SUFFIX)
