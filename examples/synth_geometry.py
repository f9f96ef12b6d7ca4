"""How well a model trained on `lolnerf synth` data knows its training heads' shapes, against exact truth.

    python examples/synth_geometry.py DATA RUN [N] [--figure FILE.png]

For the first N (default 30) training photos: the model's depth at each of the five keypoints, seen
through the photo's own camera, against the true depth there (`synth` re-renders any of its heads
exactly). Prints, per keypoint, the mean error (positive: the model's surface lies behind the true one)
and the spread of the error after removing each head's mean, then the mean per-head Pearson correlation
(what `eval`'s depth section reports for held-out heads). A keypoint with a large mean error is a part
of the face the model paints on instead of shaping: on the 64 px `cpu` model of README, the nose tip
(0.14 units behind, where the nose sticks out 0.07-0.12). Then the median and 90th percentile of the
whole depth map's error. `--figure` writes, for four heads, the truth
and the model side by side at 0, 60 and 90 degrees of yaw (RGB, then depth, near = dark).

Only for runs trained on the dataset's true cameras (the frames must agree): the script checks that
DATA/transforms.json holds synth's own cameras."""

import sys
from pathlib import Path

import numpy as np
import torch

from lolnerf_cli import synth_scene
from lolnerf_cli.device import resolve_precision
from lolnerf_cli.eval_scoring import sample_depth
from lolnerf_cli.formats import read_transforms
from lolnerf_cli.images import save_png
from lolnerf_cli.metrics import pearson
from lolnerf_cli.model import load_model
from lolnerf_cli.render import render_image
from lolnerf_cli.upsampled import synth_seed

NAMES = ("eye (image left)", "eye (image right)", "nose tip", "mouth (image left)", "mouth (image right)")
DEPTH_RANGE = (2.2, 3.1)        # depth shading of the figure, scene units (the synth cameras stand 2.6-2.8 away)


def _shade(depth: np.ndarray) -> np.ndarray:
    d = np.nan_to_num((depth - DEPTH_RANGE[0]) / (DEPTH_RANGE[1] - DEPTH_RANGE[0]), nan=1.0)
    return np.repeat(np.clip(d, 0, 1)[..., None], 3, -1)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    figure = sys.argv[sys.argv.index("--figure") + 1] if "--figure" in sys.argv else None
    if figure in args:
        args.remove(figure)
    if len(args) < 2:
        sys.exit(__doc__)
    data, run = Path(args[0]), Path(args[1])
    n = int(args[2]) if len(args) > 2 else 30
    seed = synth_seed(data)
    if seed is None:
        sys.exit(f"{data}: not a lolnerf synth dataset (no synth.json)")
    loaded = load_model(run, "cpu")
    precision = resolve_precision(loaded.cfg.train.precision, torch.device("cpu"))
    given = {Path(f.file_path).name: np.asarray(f.c2w) for f in read_transforms(data / "transforms.json").frames}
    res = loaded.cfg.train.resolution
    errors, rs, heads, dense = [], [], [], []
    for row, name in enumerate(loaded.images()[:n]):
        index = int(Path(name).stem)
        obj, cam, _ = synth_scene.train_view(seed, index, res)
        if np.abs(given[Path(name).name] - cam.c2w).max() > 1e-4:
            sys.exit(f"{data / 'transforms.json'}: {name} is not seen by synth's own camera; this check needs "
                     "a run trained on the true cameras")
        uv, z_true, visible = synth_scene.keypoint_views(obj, cam)
        out = render_image(loaded.model, loaded.latents[row], cam, loaded.cfg.render, precision)
        z_pred = sample_depth(out["depth"], uv)
        truth = synth_scene.render_object(obj, cam).depth
        both = np.isfinite(truth) & np.isfinite(out["depth"])
        dense.append(np.abs(out["depth"][both] - truth[both]))
        ok = visible & np.isfinite(z_pred)
        err = np.where(ok, z_pred - z_true, np.nan)
        errors.append(err)
        if ok.sum() >= 3:
            rs.append(float(pearson(z_pred[ok], z_true[ok])))
        heads.append((row, obj))
    e = np.array(errors)
    centred = e - np.nanmean(e, axis=1, keepdims=True)
    print(f"{run}: depth at the keypoints of {len(errors)} training photos ({res} px), model minus truth "
          f"(scene units)")
    for k, label in enumerate(NAMES):
        print(f"  {label:20s} mean {np.nanmean(e[:, k]):+.3f}   spread after each head's mean "
              f"{np.nanstd(centred[:, k]):.3f}")
    print(f"  per-head Pearson correlation of the 5 depths: mean {np.mean(rs):.3f} over {len(rs)} heads")
    d = np.concatenate(dense)
    print(f"  whole depth map (pixels where both have a surface): median |error| {np.median(d):.4f}, "
          f"90th percentile {np.percentile(d, 90):.4f}")
    if figure:
        size = 2 * res
        rows = []
        for row, obj in heads[:4]:
            tiles = []
            for yaw in (0.0, 60.0, 90.0):
                cam = synth_scene.make_camera(yaw, 0.0, float(np.mean(synth_scene.DISTANCE_RANGE)), size)
                truth = synth_scene.render_object(obj, cam)
                out = render_image(loaded.model, loaded.latents[row], cam, loaded.cfg.render, precision)
                tiles += [truth.rgb, out["rgb"], _shade(truth.depth), _shade(out["depth"])]
            rows.append(np.concatenate(tiles, 1))
        save_png(figure, (np.clip(np.concatenate(rows, 0), 0, 1) * 255).round().astype(np.uint8))
        print(f"wrote {figure}: per head, at yaw 0 / 60 / 90: truth, model, true depth, model depth")


if __name__ == "__main__":
    main()
