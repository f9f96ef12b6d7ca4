import time
from pathlib import Path
from typing import List, Optional

import typer

from ..app import app, console, guarded, reporter
from ..config import InvertConfig


@app.command("invert")
@guarded
def invert(
    images: List[Path] = typer.Argument(..., help="Photos to lift into 3D."),
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    camera: Optional[Path] = typer.Option(None, "--camera", help="transforms.json with the photos' cameras (matched by file name); "
                                                                 "without it the camera is fitted from face landmarks."),
    landmarks: Optional[Path] = typer.Option(None, "--landmarks", help="landmarks.json with the photos' 2D landmarks (matched by "
                                                                       "file name) instead of detecting them; the camera is "
                                                                       "fitted to RUN/keypoints.json."),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help=f"Optimisation steps (default {InvertConfig.steps}; with an "
                                                                      "encoder, 0 returns the encoder's answer alone)."),
    out: Path = typer.Option(..., "--out", help="Latent file to write (.safetensors); a preview PNG goes beside it."),
    resolution: Optional[int] = typer.Option(None, "--resolution", min=8, help="Fitting resolution (default: the training resolution)."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, help=f"Adam learning rate of the latents (default {InvertConfig.lr:g})."),
    latent_basis: str = typer.Option(InvertConfig.latent_basis, "--latent-basis",
                                     help="pca: move the latent along the latent table's principal axes, further "
                                          "along those in which the training objects differ more (converges faster); "
                                          "raw: along the latent's own coordinates (the old behaviour, with --lr 0.05)."),
    latent_prior: Optional[float] = typer.Option(None, "--latent-prior", min=0.0,
                                                 help="Weight of the pull towards the training latents' Gaussian "
                                                      "(default: the run's invert.latent_prior; 0: none). It keeps "
                                                      "a single photo from being fitted by a latent unlike any "
                                                      "training object, which looks wrong from other angles."),
    refine_camera: Optional[bool] = typer.Option(None, "--refine-camera/--no-refine-camera",
                                                 help="Also learn a small correction of each camera: a turn about the "
                                                      "object and a shift (default: on when the camera was estimated, "
                                                      "by the encoder or from landmarks; off with --camera)."),
    focal: Optional[float] = typer.Option(None, "--focal", min=1.0, help="Focal length in pixels for cameras fitted from landmarks "
                                                                         "(default: the training cameras' field of view)."),
    no_mask: bool = typer.Option(False, "--no-mask", help="Ignore masks (DATA/masks/<stem>.png, alpha channels, segmentation)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the pixel batches."),
    no_encoder: bool = typer.Option(False, "--no-encoder", help="Ignore RUN/encoder.safetensors: place the photos from "
                                                                "landmarks and start from the mean latent."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps."),
):
    """Fit a latent to each photo (network frozen). With RUN/encoder.safetensors (`lolnerf train-encoder`) and neither
    --camera nor --landmarks, the encoder gives each photo's latent and camera, and the optimisation starts there."""
    from ..device import pick_device
    from ..errors import InputError
    from ..formats import save_latents
    from ..invert import (INVERT_LR, INVERT_STEPS, check_latent_basis, invert_images, latent_prior_weight, load_photos,
                          preview_path, write_preview)
    from ..model import load_model

    check_latent_basis(latent_basis)          # before the model loads
    if out.suffix.lower() != ".safetensors":
        raise InputError(out, "the latent file must end in .safetensors")
    if out.exists() and out.is_dir():
        raise InputError(out, "is a folder; give a file name ending in .safetensors")
    loaded = load_model(model, pick_device(device))
    if focal is not None and camera is not None:
        raise InputError("--focal", "applies to landmark-fitted cameras only; --camera gives the focal length")
    if landmarks is not None and camera is not None:
        raise InputError("--landmarks", "give either --camera or --landmarks, not both")
    from ..encoder import has_encoder

    use_encoder = camera is None and landmarks is None and not no_encoder and has_encoder(model)
    if steps == 0 and not use_encoder:
        why = ("--no-encoder was given" if no_encoder else "--camera or --landmarks was given"
               if (camera is not None or landmarks is not None) else f"{model} has no encoder.safetensors "
               "(train one with `lolnerf train-encoder`)")
        raise InputError("--steps", f"0 returns the encoder's answer alone, but {why}")
    if use_encoder and focal is not None:
        raise InputError("--focal", "applies to landmark-fitted cameras only; the encoder's focal length is the run's")
    t0 = time.perf_counter()
    z_init = None
    if use_encoder:
        from ..encoder_invert import encoder_photos

        photos, z_init, camera_ms = encoder_photos(loaded, images, use_masks=not no_mask)
    else:
        photos = load_photos(loaded, images, camera, use_masks=not no_mask, focal=focal, landmarks_file=landmarks)
        camera_ms = [(time.perf_counter() - t0) * 1000.0 / len(photos)] * len(photos)
    n_steps = INVERT_STEPS if steps is None else steps
    if refine_camera is None:                 # estimated cameras are a few degrees off; given ones are kept
        refine_camera = camera is None
    refine_camera = refine_camera and n_steps > 0
    t1 = time.perf_counter()
    result = invert_images(loaded, [p.rgb for p in photos], [p.camera for p in photos], [p.mask for p in photos],
                           steps=n_steps, resolution=resolution, lr=INVERT_LR if lr is None else lr,
                           progress=reporter(), refine_camera=refine_camera, seed=seed, z_init=z_init,
                           camera_lr=InvertConfig.encoder_camera_lr if use_encoder else InvertConfig.camera_lr,
                           basis=latent_basis, latent_prior=latent_prior)
    fit_ms = (time.perf_counter() - t1) * 1000.0 / len(photos)
    res = result.cameras[0].w
    cams = [{"file_path": str(p.path), "transform_matrix": c.c2w.round(6).tolist(), "fl_x": c.fx, "fl_y": c.fy,
             "cx": c.cx, "cy": c.cy, "w": c.w, "h": c.h} for p, c in zip(photos, result.cameras)]
    save_latents(out, result.latents, loaded.model_hash, [str(p.path) for p in photos],
                 {"psnr": [round(v, 3) for v in result.psnr], "steps": n_steps, "resolution": res,
                  "refine_camera": refine_camera, "cameras": cams,
                  **({"camera_pivot": loaded.cfg.invert.camera_pivot} if refine_camera else {}),
                  "latent_prior": latent_prior_weight(loaded, latent_prior),
                  "start": "encoder" if use_encoder else "mean latent"})
    preview = write_preview(preview_path(out), loaded, result, names=[p.path.name for p in photos])
    for i, p in enumerate(photos):
        mask = f", mask: {p.mask_source}" if p.mask_source else ""
        start = "encoder" if use_encoder else "mean latent"
        psnr = (f"PSNR {result.psnr[i]:.2f} dB (encoder only)" if n_steps == 0 else
                f"PSNR {result.psnr_init[i]:.2f} ({start}) -> {result.psnr[i]:.2f} dB ({n_steps} steps)")
        stage = "encoder" if use_encoder else "reading + camera"
        times = f"{stage} {_ms(camera_ms[i])}" + (f", optimisation {_ms(fit_ms)}" if n_steps else "")
        moved = f", corrected by {_turn_deg(p.camera.c2w, result.cameras[i].c2w):.1f} deg" if refine_camera else ""
        console.print(f"{p.path}: {psnr}; time: {times} (camera: {p.camera_source}{moved}{mask})", soft_wrap=True,
                      markup=False)
    console.print(f"latents: {out} [{result.latents.shape[0]} x {result.latents.shape[1]}]   preview: {preview}",
                  soft_wrap=True, markup=False)


def _turn_deg(c2w_a, c2w_b) -> float:
    """The angle in degrees between two cameras' orientations."""
    import numpy as np

    from ..camera_refine import rotation_angle_deg

    return float(rotation_angle_deg(np.asarray(c2w_a)[None, :3, :3], np.asarray(c2w_b)[None, :3, :3])[0])


def _ms(ms: float) -> str:
    """A duration for people: 12 ms, 3.40 s."""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"
