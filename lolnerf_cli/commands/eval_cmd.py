from pathlib import Path
from typing import Optional

import typer

from ..app import app, console, guarded, reporter
from ..config import EvalConfig


@app.command("eval")
@guarded
def evaluate(
    data: Path = typer.Argument(..., help="The dataset the model was trained on (images/, transforms.json)."),
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    novel: Optional[Path] = typer.Option(None, "--novel", help="Multi-view held-out folder scored on novel views and "
                                                               "depth (default: DATA/holdout when it exists; layout in "
                                                               "docs/evaluation.md)."),
    out: Path = typer.Option(..., "--out", help="metrics.json to write (a figure <stem>_figure.png goes beside it)."),
    subset: int = typer.Option(EvalConfig.subset, "--subset", min=0, help="Training (and held-out) images scored, a fixed seeded "
                                                            "choice; 0 = all."),
    heldout: Optional[Path] = typer.Option(None, "--heldout", help="Folder of photos the model never saw, inverted and "
                                                                   "scored (default: DATA/holdout's query views)."),
    invert_steps: int = typer.Option(EvalConfig.invert_steps, "--invert-steps", min=1, help="Optimisation steps per inversion."),
    seed: int = typer.Option(EvalConfig.seed, "--seed", help="Seed of the subset and the inversions; the same seed gives the "
                                               "same numbers."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
    precision: str = typer.Option(EvalConfig.precision, "--precision", help="Rendering precision: fp32 (default), bf16 or auto."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Write the figure PNG beside metrics.json."),
    frames: str = typer.Option(EvalConfig.frames, "--frames", help="Camera frame of the held-out / novel cameras: 'query' "
                                                        "fits each query view's camera to RUN/keypoints.json and "
                                                        "places the other views relative to it; 'as-given' uses "
                                                        "the folder's cameras unchanged; 'auto' (default) is "
                                                        "'query' when DATA/transforms.json was written by "
                                                        "fit-cameras and the folder's was not."),
    upsample: int = typer.Option(EvalConfig.upsample, "--upsample", min=0, help="Also render every novel view this many times finer "
                                                             "than the training photos and score it, and a bicubic "
                                                             "upsample of the training-size render, against exact "
                                                             "ground truth (lolnerf synth datasets; 0: off)."),
    refine_query_camera: bool = typer.Option(EvalConfig.refine_query_camera, "--refine-query-camera/--no-refine-query-camera",
                                             help="With 'query' frames: the inversion also corrects each query view's "
                                                  "landmark-fitted camera, and the object's other views follow "
                                                  "the corrected camera."),
    latent_prior: Optional[float] = typer.Option(None, "--latent-prior", min=0.0,
                                                 help="Weight of the latent prior in every inversion (default: the "
                                                      "run's invert.latent_prior; 0: none; docs/evaluation.md)."),
    encoder_steps: int = typer.Option(30, "--encoder-steps", min=1, help="With RUN/encoder.safetensors: optimisation "
                                                                         "steps of the hybrid answer (encoder + steps)."),
    sections: str = typer.Option(EvalConfig.sections, "--sections",
                                 help="Which sections to run, comma-separated: train, heldout, novel (with depth), "
                                      "encoder, training_cameras; 'all' (default) runs every one whose inputs "
                                      "exist."),
):
    """Measure reconstruction, held-out, novel-view and depth quality the way the paper does."""
    from ..evaluate import EvalOptions, evaluate as run_eval

    if upsample == 1:
        from ..errors import InputError

        raise InputError("--upsample", "must be 0 (off) or at least 2")
    opts = EvalOptions(subset=subset, invert_steps=invert_steps, seed=seed, device=device, precision=precision,
                       frames=frames, upsample=upsample, encoder_steps=encoder_steps,
                       refine_query_camera=refine_query_camera, latent_prior=latent_prior, sections=sections)
    result = run_eval(data, model, out, novel_dir=novel, heldout_dir=heldout, options=opts, progress=reporter(),
                      figure=figure)
    if result.lpips_unavailable:
        console.print(f"[yellow]{_esc(result.lpips_unavailable)}[/]")
    print_tables(result.metrics)
    used = result.metrics["settings"].get("frames") or {}
    aligned = [k for k in ("heldout", "novel") if used.get(k) == "query"]
    if aligned:
        console.print(f"{' and '.join(aligned)} cameras: each query view fitted to RUN/keypoints.json, the other "
                      f"views placed relative to it (--frames {used.get('option')})")
    console.print(f"metrics: {_esc(str(result.metrics_path))}" +
                  (f"   figure: {_esc(str(result.figure_path))}" if result.figure_path else ""))


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _cell(stat, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def print_tables(m: dict) -> None:
    from rich.table import Table

    t = Table(title=f"lolnerf eval: {m.get('preset')} model {m.get('model_hash')}, step {m.get('step')}, "
                    f"{m['settings']['resolution']} px, seed {m.get('seed')}")
    for col in ("section", "n", "PSNR dB", "SSIM", "LPIPS", "PSNR mask"):
        t.add_column(col, justify="left" if col == "section" else "right", no_wrap=True)
    names = {"train": "train", "heldout": "held-out", "novel": "novel (mask)"}
    for key, label in names.items():
        sec = m.get(key)
        if not sec:
            continue
        count = str(sec["count"])
        t.add_row(label, count, _cell(sec.get("psnr")), _cell(sec.get("ssim"), 3), _cell(sec.get("lpips"), 3),
                  _cell(sec.get("psnr_masked")) if "psnr_masked" in sec else "(masked)")
    if m.get("novel") and m["novel"].get("flat_picture_psnr"):
        t.add_row("novel: flat query photo", str(m["novel"]["flat_picture_psnr"]["count"]),
                  _cell(m["novel"]["flat_picture_psnr"]), "", "", "(baseline)")
    up = m.get("novel_upsampled")
    if up and "render_psnr" in up:
        t.add_row(f"novel (mask) at {up['scale']}x: render", str(up["views"]), _cell(up["render_psnr"]), "", "",
                  f"{up['resolution']} px")
        t.add_row(f"novel (mask) at {up['scale']}x: bicubic", str(up["views"]), _cell(up["bicubic_psnr"]), "", "",
                  "(baseline)")
    enc = m.get("encoder")
    if enc and "ms_per_photo" in enc:
        steps = enc["hybrid_steps"]
        for key, label in (("heldout", "held-out"), ("novel", "novel (mask)")):
            sec = enc.get(key)
            for way, name in (("encoder", "encoder only"), ("hybrid", f"encoder + {steps} steps")):
                if sec:
                    s = sec[way]
                    t.add_row(f"{label}: {name}", str(sec["count"]), _cell(s.get("psnr")), _cell(s.get("ssim"), 3),
                              _cell(s.get("lpips"), 3),
                              _cell(s.get("psnr_masked")) if "psnr_masked" in s else "(masked)")
    console.print(t)
    if enc and "ms_per_photo" in enc:
        ms, cam = enc["ms_per_photo"], enc.get("camera") or {}
        line = f"encoder: {ms['encoder_median']:.1f} ms per photo (median, batch of 1, {ms['photos']} photos)"
        r, lr = cam.get("rotation_error_deg"), cam.get("landmark_rotation_error_deg")
        if r:
            line += f"; camera rotation error {r['median']:.2f} deg median ({r['count']} photos)"
        if lr:
            line += f", landmark-fitted camera {lr['median']:.2f} deg"
        opt_ms = ms.get("optimisation_path_mean") or {}
        if opt_ms:
            line += (f"; the hybrid's {steps} steps take {ms['hybrid_optimisation_mean'] / 1000:.2f} s per photo, the "
                     f"{ms['optimisation_path_steps']}-step optimisation {max(opt_ms.values()) / 1000:.2f} s")
        console.print(line, markup=False)
    tc = m.get("training_cameras")
    if tc:
        console.print(f"training cameras against the true ones ({tc['images']} photos, frames aligned): "
                      f"{tc['dataset_cameras']['median_deg']:.2f} deg median in the dataset, "
                      f"{tc['trained_cameras']['median_deg']:.2f} deg as trained"
                      + (" (refined, RUN/cameras.json)" if tc["refined"] else "")
                      + (f"; ratio {tc['median_ratio']:.2f}" if tc["median_ratio"] is not None
                         else " (the dataset's cameras are the true ones: no ratio)"),
                      markup=False)
        axes = tc["trained_cameras"].get("median_abs_axis_deg")
        if axes:
            console.print("  as trained, median |turn| about each axis: " +
                          ", ".join(f"{k} {v:.2f} deg" for k, v in axes.items()), markup=False)
    if up and "unavailable" in up:
        console.print(f"novel views at another resolution: {up['unavailable']}")
    d = m.get("depth")
    if d:
        dt = Table(title=f"depth: {d['objects']} query views")
        dt.add_column("measure", no_wrap=True)
        dt.add_column("value", justify="right")
        dt.add_column("count", justify="right")
        kp = d.get("keypoint_pearson")
        if "keypoint_pearson" in d:
            dt.add_row("keypoint depth Pearson r", _cell(kp, 3), str(kp["count"] if kp else 0) +
                       (f" ({d['keypoint_undefined']} undefined)" if d.get("keypoint_undefined") else ""))
        dense = d.get("dense") or {}
        for name, label, digits in (("abs_median", "dense |error| median", 4),
                                    ("abs_median_centered", "dense |error| median, centred", 4),
                                    ("pearson", "dense depth Pearson r", 3), ("coverage", "surface coverage", 3)):
            if name in dense:
                dt.add_row(label, _cell(dense[name], digits), str(dense[name]["count"] if dense[name] else 0))
        console.print(dt)
