"""The viewer's button actions as plain functions: each writes into the viewer's output folder and
returns the path(s) it wrote. Errors a user can cause (a file that is not an image) are `InputError`s,
which the page shows without stopping the server."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cameras import Camera, focal_from_fov
from ..errors import InputError
from ..progress import Progress


def next_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem_NNN.suffix with the first NNN not yet taken (folder created)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(folder, f"cannot be created ({exc.strerror or exc})") from None
    i = 1
    while (folder / f"{stem}_{i:03d}{suffix}").exists():
        i += 1
    return folder / f"{stem}_{i:03d}{suffix}"


def save_screenshot(folder: Path, image: np.ndarray) -> Path:
    """The frame as the page shows it (uint8 [H, W, 3]) -> folder/screenshot_NNN.png."""
    from ..images import save_png

    path = next_path(folder, "screenshot", ".png")
    save_png(path, image)
    return path


def save_camera(folder: Path, camera: Camera, loaded, z: torch.Tensor, identity: str,
                index: int | None) -> tuple[Path, Path | None, str]:
    """The camera as a one-frame transforms.json (folder/camera_NNN.json, frame camera_NNN.png) that
    `lolnerf render --camera` renders, the identity as a latent file beside it unless it is a table row,
    and the command line that renders it. Returns (transforms path, latent path or None, command)."""
    from ..formats import Frame, Transforms, save_latents, write_transforms

    path = next_path(folder, "camera", ".json")
    frame = Frame(np.asarray(camera.c2w, dtype=np.float64).round(8), float(camera.fx), float(camera.fy),
                  float(camera.cx), float(camera.cy), int(camera.w), int(camera.h), f"{path.stem}.png")
    write_transforms(path, Transforms([frame], {"note": f"saved by lolnerf view; identity: {identity}"}))
    latent = None
    if index is None:
        latent = path.with_name(path.stem + "_latent.safetensors")
        save_latents(latent, z.detach().float().cpu()[None], loaded.model_hash, [identity])
        who = f"--latent {latent}"
    else:
        who = f"--index {index}"
    cmd = f"lolnerf render --model {loaded.run.root} {who} --camera {path} --out {folder / 'renders'}"
    return path, latent, cmd


def export_mesh(folder: Path, loaded, z: torch.Tensor, grid: int, progress: Progress | None = None):
    """Marching cubes of the identity's foreground, without the pieces no training camera sees (as
    `export-mesh` writes it) -> folder/mesh_NNN.ply. Returns (path, mesh)."""
    from ..mesh import extract_mesh, write_mesh
    from ..views import training_cameras

    path = next_path(folder, "mesh", ".ply")
    cameras, _ = training_cameras(loaded.run.root, loaded.cfg.train.resolution)
    mesh = extract_mesh(loaded, z.to(loaded.latents.device), grid, None, progress, cameras)
    write_mesh(path, mesh)
    return path, mesh


# ----------------------------------------------------------------------------------------- photo upload
@dataclass
class Inverted:
    z: torch.Tensor                # [D] the photo's latent (CPU)
    camera: Camera                 # the camera it was fitted through (at the fitting resolution)
    camera_source: str
    psnr: float
    sheet: np.ndarray              # uint8: photo | reconstruction, captioned, side by side
    latent_path: Path


def safe_name(name: str) -> str:
    """A browser-supplied file name reduced to a plain file name (no folders, no odd characters)."""
    base = Path(str(name).replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return base[:80]


def store_upload(folder: Path, name: str, content: bytes) -> Path:
    """Write an uploaded file to folder/uploads/<name> and check that it decodes as an image
    (InputError otherwise: the page refuses it)."""
    from ..images import load_image

    up = folder / "uploads"
    try:
        up.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(up, f"cannot be created ({exc.strerror or exc})") from None
    path = up / safe_name(name)
    if not content:
        raise InputError(safe_name(name), "is empty, not an image")
    path.write_bytes(content)
    try:
        load_image(path, with_alpha=True)
    except InputError as exc:
        path.unlink(missing_ok=True)
        raise InputError(safe_name(name), exc.reason) from None
    return path


def invert_photo(loaded, path: Path, folder: Path, steps: int, progress: Progress | None = None) -> Inverted:
    """Lift one stored photo to a latent with the library entry point `lolnerf invert` uses
    (`invert.load_photos` for its camera and mask, `invert.invert_images` for the fit). Where no camera
    can be found from its landmarks (no MediaPipe, no face, a run without keypoints) the photo is taken
    to be seen from the run's mean training view. The latent goes to folder/<photo stem>.safetensors."""
    from ..formats import save_latents
    from ..images import load_image
    from ..invert import PhotoInput, invert_images, load_photos, mask_for_photo
    from ..video import contact_sheet
    from ..views import read_view

    try:
        photo = load_photos(loaded, [path])[0]
    except InputError as exc:
        rgb, alpha = load_image(path, with_alpha=True)
        h, w = rgb.shape[:2]
        view = read_view(loaded.run.root)
        cam = view.camera(h)
        f = focal_from_fov(view.fov, h)
        cam = Camera(cam.c2w, f, f, w / 2, h / 2, w, h)
        mask, msrc = mask_for_photo(path, rgb, alpha, segment=False)
        photo = PhotoInput(path, rgb, cam, mask, f"the mean training view ({exc.reason})", msrc)
    result = invert_images(loaded, [photo.rgb], [photo.camera], [photo.mask], steps=steps, progress=progress,
                           measure_init=False, refine_camera=True)    # estimated cameras, as `invert` refines them
    latent = folder / f"{path.stem}.safetensors"
    save_latents(latent, result.latents, loaded.model_hash, [str(path)],
                 {"psnr": [round(result.psnr[0], 3)], "steps": steps, "camera_source": photo.camera_source})
    sheet = contact_sheet([result.targets[0], result.renders[0]],
                          [path.name, f"reconstruction {result.psnr[0]:.1f} dB"], cols=2)
    return Inverted(result.latents[0], result.cameras[0], photo.camera_source, float(result.psnr[0]), sheet, latent)
