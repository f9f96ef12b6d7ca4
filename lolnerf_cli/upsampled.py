"""Novel views rendered finer than the training photos, against exact ground truth (`eval --upsample S`).

A model trained at R px knows its objects only up to that resolution. Rendered at S x R px it should
still be at least as good as the plain answer, a bicubic upsample of its R px render: aliasing (stripes
from encoding frequencies the photos never constrained, comb-like edges) shows up as a render that
scores *worse* than that upsample. Ground truth at S x R px is exact only for `lolnerf synth` data,
which can re-render any held-out view at any size: this section is computed for synth datasets only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Camera
from .errors import InputError
from .formats import read_json

FIGURE_OBJECTS = 3      # objects shown in the upsampled figure (first view of each)
FIGURE_TILE_MIN = 192   # tiles are enlarged (nearest) to at least this many pixels


def bicubic(rgb: np.ndarray, size: int) -> np.ndarray:
    """Float RGB [H, W, 3] in [0, 1] -> [size, size, 3], bicubic, clamped to [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    up = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)
    return up[0].permute(1, 2, 0).clamp(0, 1).numpy()


def synth_seed(data_dir: Path) -> int | None:
    """The seed of a `lolnerf synth` dataset (DATA/synth.json), or None for other datasets."""
    path = data_dir / "synth.json"
    if not path.is_file():
        return None
    meta = read_json(path, "synth description")
    seed = meta.get("seed") if isinstance(meta, dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(path, "has no integer 'seed'; it was not written by lolnerf synth")
    return seed


def upsampled_section(ev, folder: Path, objects: list, scale: int,
                      figure_path: Path | None = None) -> dict[str, Any] | None:
    """Score every novel view of `folder` rendered at scale x the training resolution, and a bicubic
    upsample of the same view rendered at the training resolution, against synth's exact ground truth.
    `ev` is the running Evaluator, `objects` the novel section's (eval_inputs.NovelObject, loaded and with
    their cameras in the model's frame); its inversions are reused. None when the dataset is not synthetic."""
    from . import synth_scene
    from .eval_scoring import summary
    from .images import save_png
    from .metrics import psnr
    from .render import render_image

    seed = synth_seed(ev.data_dir)
    if seed is None:
        return None
    lat = ev.invert([o.query for o in objects], "query")
    big = ev.res * scale
    rows, tiles = [], []
    with ev.progress.task(f"eval: novel views at {scale}x", total=sum(len(o.views) for o in objects)) as task:
        for obj, z in zip(objects, lat):
            try:
                index = int(obj.name.lstrip("h"))
            except ValueError:
                raise InputError(folder / "transforms.json", f"object '{obj.name}' is not a synth holdout object "
                                                             "(h<number>)") from None
            truth_obj = synth_scene.holdout_object(seed, index)
            for j, v in enumerate(obj.views):
                small = ev.render(z, v.camera())["rgb"]
                fine = render_image(ev.loaded.model, z.to(ev.device), v.camera().scaled(big, big), ev.cfg.render,
                                    ev.precision)["rgb"]
                truth = synth_scene.render_object(truth_obj, Camera.from_frame(v.frame).scaled(big, big))
                on = truth.alpha >= 0.5
                if not on.any():
                    continue
                up = bicubic(small, big)
                row = {"object": obj.name, "file_path": v.file_path,
                       "render_psnr": float(psnr(fine, truth.rgb, on)), "bicubic_psnr": float(psnr(up, truth.rgb, on))}
                row["gain_db"] = row["render_psnr"] - row["bicubic_psnr"]
                rows.append(row)
                if j == 0 and len(tiles) < FIGURE_OBJECTS:
                    black = on[..., None].astype(np.float32)
                    tiles.append(np.concatenate([up * black, fine * black, truth.rgb * black], axis=1))
                task.advance(1, psnr=row["render_psnr"])
    section: dict[str, Any] = {"scale": scale, "resolution": big, "views": len(rows), "masked": True,
                               "render_psnr": summary(rows, "render_psnr"),
                               "bicubic_psnr": summary(rows, "bicubic_psnr"),
                               "gain_db": summary(rows, "gain_db"),
                               "render_at_least_bicubic": bool(rows) and
                               float(np.mean([r["render_psnr"] for r in rows])) >=
                               float(np.mean([r["bicubic_psnr"] for r in rows])),
                               "per_view": rows}
    if figure_path is not None and tiles:
        grid = np.concatenate(tiles, axis=0)
        zoom = max(1, -(-FIGURE_TILE_MIN // big))          # nearest-neighbour, so pixels stay visible
        save_png(figure_path, grid.repeat(zoom, axis=0).repeat(zoom, axis=1))
        section["figure"] = {"file": figure_path.name,
                             "columns": f"bicubic x{scale} of the {ev.res} px render | render at {big} px | "
                                        f"ground truth at {big} px (object pixels)"}
    return section
