"""An image encoder on top of a trained GLO model: one photo -> its latent z [D] and its camera.

A small convolutional network (no pretrained weights) reads the photo at the model's training
resolution (square, as training resized it) and predicts:

- the latent, as z = mean + std * out[:D] with the latent table's per-dimension mean and std (buffers),
  so the untrained encoder answers the mean latent;
- the camera rotation (camera-to-world, the model's object frame) as 6 numbers: the first two columns of
  the rotation matrix, made orthonormal by Gram-Schmidt (Zhou et al., CVPR 2019), added to the mean
  training rotation's 6 numbers;
- where the object frame's origin lies in camera coordinates, p = d * (a, b, -1): a and b are the
  origin's offsets from the optical axis per unit depth and d its depth (log d is predicted around the
  training cameras' mean log distance). The camera centre is then o = -R p.

The focal length is fixed to the training cameras' median field of view (as RUN/view.json holds it), the
principal point is the image centre; train-encoder moves each training camera to that focal length
(at_focal). Files: RUN/encoder.safetensors (weights + buffers; metadata: format "lolnerf-encoder", the
model hash it was trained for and its configuration) and RUN/encoder.json (the same configuration plus
how it was trained); docs/formats.md. Shapes: B photos, R = H = W resolution, D latent width."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .cameras import Camera, focal_from_fov
from .errors import InputError

ENCODER_FORMAT = "lolnerf-encoder"
ENCODER_FILE = "encoder.safetensors"
ENCODER_JSON = "encoder.json"
MAX_MEMBERS = 16                # networks in one encoder file


@dataclass
class EncoderConfig:
    resolution: int = 64        # input side in pixels (the model's training resolution)
    latent_dim: int = 64        # D of the model
    width: int = 32             # channels of the first stage (doubling per stage, capped at max_width)
    max_width: int = 256
    hidden: int = 256           # the head's hidden layer
    members: int = 1            # networks averaged (an ensemble); a file without the key holds one
    fov: float = 30.0           # degrees; the camera's focal length (the training cameras' median field of view)
    model_hash: str = ""        # the model this encoder belongs to

    def check(self, where: str) -> "EncoderConfig":
        r = self.resolution
        if r < 8:
            raise InputError(where, f"encoder resolution must be at least 8 pixels, got {r}")
        for name in ("latent_dim", "width", "max_width", "hidden", "members"):
            if int(getattr(self, name)) < 1:
                raise InputError(where, f"encoder '{name}' must be positive")
        if int(self.members) > MAX_MEMBERS:
            raise InputError(where, f"encoder 'members' must be at most {MAX_MEMBERS}, got {self.members}")
        if not 1.0 < float(self.fov) < 179.0:
            raise InputError(where, f"encoder field of view must lie between 1 and 179 degrees, got {self.fov}")
        return self

    @staticmethod
    def from_dict(data, where: str) -> "EncoderConfig":
        if not isinstance(data, dict):
            raise InputError(where, "encoder configuration must be a JSON object")
        names = {f.name: f.type for f in fields(EncoderConfig)}
        kw = {}
        for k, v in data.items():
            if k not in names:
                continue
            default = getattr(EncoderConfig(), k)
            if isinstance(default, str) != isinstance(v, str) or isinstance(v, bool) or v is None:
                raise InputError(where, f"encoder configuration '{k}' has the wrong type")
            kw[k] = type(default)(v)
        return EncoderConfig(**kw).check(where)


def _gram_schmidt(six: torch.Tensor) -> torch.Tensor:
    """[..., 6] (two 3-vectors) -> rotation matrices [..., 3, 3] whose first two columns span them."""
    a, b = six[..., :3], six[..., 3:]
    x = F.normalize(a, dim=-1)
    y = F.normalize(b - (x * b).sum(-1, keepdim=True) * x, dim=-1)
    z = torch.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def nearest_rotation(m: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> the nearest rotation matrices (Frobenius norm), by SVD with the determinant kept at +1."""
    u, _, vh = torch.linalg.svd(m)
    d = torch.det(u @ vh)
    fix = torch.ones(*m.shape[:-2], 3, dtype=m.dtype, device=m.device)
    fix[..., 2] = d.sign()
    return u @ torch.diag_embed(fix) @ vh


def rotation_to_six(rot: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] -> [..., 6]: the first two columns."""
    return torch.cat([rot[..., :, 0], rot[..., :, 1]], dim=-1)


def origin_in_camera(c2w: torch.Tensor) -> torch.Tensor:
    """c2w [..., 4, 4] -> the world origin in camera coordinates p = -R^T o [..., 3]."""
    rot, o = c2w[..., :3, :3], c2w[..., :3, 3]
    return -(rot.transpose(-1, -2) @ o[..., None])[..., 0]


def camera_params(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of a camera: rotation [..., 3, 3] and (a, b, log d) [..., 3] with p = d * (a, b, -1)."""
    p = origin_in_camera(c2w)
    d = (-p[..., 2]).clamp_min(1e-6)
    return c2w[..., :3, :3], torch.stack([p[..., 0] / d, p[..., 1] / d, d.log()], -1)


def at_focal(c2w: torch.Tensor, focal: torch.Tensor, new_focal: float) -> torch.Tensor:
    """c2w [..., 4, 4] of cameras with focal lengths `focal` [...] (pixels) -> the cameras that show the
    object's origin at the same image point and the object at the same image scale with `new_focal`:
    the same rotation, the origin's depth scaled by new_focal / focal (p = (x, y, z) -> (x, y, z * ratio))."""
    p = origin_in_camera(c2w)
    ratio = (new_focal / focal.to(p.dtype)).reshape(p.shape[:-1])
    p = torch.stack([p[..., 0], p[..., 1], p[..., 2] * ratio], -1)
    out = c2w.clone()
    out[..., :3, 3] = -(c2w[..., :3, :3] @ p[..., None])[..., 0]
    return out


def c2w_from_params(rot: torch.Tensor, abd: torch.Tensor) -> torch.Tensor:
    """Inverse of camera_params: rotation [..., 3, 3] and (a, b, log d) [..., 3] -> c2w [..., 4, 4]."""
    d = abd[..., 2].exp()
    p = torch.stack([abd[..., 0] * d, abd[..., 1] * d, -d], -1)
    o = -(rot @ p[..., None])[..., 0]
    top = torch.cat([rot, o[..., None]], -1)
    bottom = torch.zeros(top.shape[:-2] + (1, 4), dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def rotation_error_deg(r_pred: np.ndarray, r_true: np.ndarray) -> float:
    """Angle in degrees of the rotation between two rotation matrices [3, 3]."""
    from .camera_refine import rotation_angle_deg

    return float(rotation_angle_deg(np.asarray(r_pred, np.float64)[None], np.asarray(r_true, np.float64)[None])[0])


class _Member(nn.Module):
    """One network of the ensemble: photo [B, 3, R, R] in [-1, 1] -> raw outputs [B, D + 9].

    Stride-2 stages (conv 3x3 s2 + conv 3x3, GroupNorm, SiLU) down to 4 x 4 or less, flattened (where things
    are matters for the camera), one hidden layer, one linear head."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side, i = 3, cfg.resolution, 0
        while side > 4:
            c = min(cfg.width * 2 ** i, cfg.max_width)
            layers += [nn.Conv2d(c_in, c, 3, 2, 1), nn.GroupNorm(min(8, c), c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, 1, 1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            c_in, side, i = c, (side + 1) // 2, i + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, cfg.hidden), nn.SiLU(),
                                  nn.Linear(cfg.hidden, cfg.latent_dim + 9))
        with torch.no_grad():                       # start at the mean answer
            self.head[-1].weight.mul_(0.1)
            self.head[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ImageEncoder(nn.Module):
    """Photo [B, 3, R, R] in [0, 1] -> (z [B, D], rotation [B, 3, 3], (a, b, log d) [B, 3]).

    `cfg.members` networks (_Member), each trained on its own batches from its own initialisation; the
    answer is their mean: the latents and (a, b, log d) averaged, the rotations averaged and projected back
    onto the rotations (the nearest one, by SVD). One member answers alone, exactly as before ensembles."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(_Member(cfg) for _ in range(int(cfg.members)))
        d = cfg.latent_dim
        self.register_buffer("z_mean", torch.zeros(d))
        self.register_buffer("z_std", torch.ones(d))
        self.register_buffer("six_mean", torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
        self.register_buffer("abd_mean", torch.tensor([0.0, 0.0, math.log(2.7)]))

    def set_statistics(self, latents: torch.Tensor, c2w: torch.Tensor) -> None:
        """Centre the outputs on the model's latent table [K, D] and training cameras [K, 4, 4]."""
        with torch.no_grad():
            self.z_mean.copy_(latents.float().mean(0))
            self.z_std.copy_(latents.float().std(0).clamp_min(1e-4) if latents.shape[0] > 1
                             else torch.ones_like(self.z_std))
            rot, abd = camera_params(c2w.double())
            r = nearest_rotation(rot.mean(0))                  # nearest rotation to the mean matrix
            self.six_mean.copy_(rotation_to_six(r).float())
            self.abd_mean.copy_(abd.mean(0).float())

    def member_answer(self, i: int, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Member i's own answer (what training supervises)."""
        out = self.members[i](img * 2.0 - 1.0)
        d = self.cfg.latent_dim
        z = self.z_mean + self.z_std * out[:, :d]
        rot = _gram_schmidt(self.six_mean + out[:, d:d + 6])
        abd = self.abd_mean + out[:, d + 6:]
        return z, rot, abd

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        answers = [self.member_answer(i, img) for i in range(len(self.members))]
        if len(answers) == 1:
            return answers[0]
        z, rot, abd = (torch.stack(a).mean(0) for a in zip(*answers))
        return z, nearest_rotation(rot), abd

    def focal(self) -> float:
        return focal_from_fov(self.cfg.fov, self.cfg.resolution)


def photo_tensor(rgb: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, R, R] in [0, 1], resized square the way training resizes photos."""
    from .images import resize

    arr = rgb if rgb.shape[:2] == (resolution, resolution) else resize(rgb, resolution, resolution)
    return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def encode(encoder: ImageEncoder, photos: list[np.ndarray]) -> tuple[torch.Tensor, list[Camera]]:
    """Photos (uint8 [H, W, 3]) -> latents [N, D] (CPU) and cameras at the encoder's resolution.

    On a CPU one photo's pass (a few million multiply-adds per stage) runs on one thread: splitting such
    small convolutions over threads gains nothing, and on a busy machine waiting for the other threads
    cost 2-3 s per pass where one thread took 4 ms (measured, load average 17 on 2 cores)."""
    device = next(encoder.parameters()).device
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:
        torch.set_num_threads(1)
    try:
        return _encode(encoder, photos, device)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@torch.inference_mode()
def _encode(encoder: ImageEncoder, photos: list[np.ndarray], device) -> tuple[torch.Tensor, list[Camera]]:
    r = encoder.cfg.resolution
    f = encoder.focal()
    zs, cams = [], []
    for rgb in photos:
        if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
            raise ValueError("photos must be uint8 RGB [H, W, 3]")
        z, rot, abd = encoder(photo_tensor(rgb, r).to(device))
        c2w = c2w_from_params(rot.double(), abd.double())[0].cpu().numpy()
        zs.append(z[0].float().cpu())
        cams.append(Camera(c2w, f, f, r / 2, r / 2, r, r))
    return torch.stack(zs), cams


# ----------------------------------------------------------------------------------------- files
def encoder_paths(run_root: str | Path) -> tuple[Path, Path]:
    root = Path(run_root)
    return root / ENCODER_FILE, root / ENCODER_JSON


def has_encoder(run_root: str | Path) -> bool:
    return encoder_paths(run_root)[0].is_file()


def save_encoder(path: str | Path, encoder: ImageEncoder, extra: dict | None = None) -> None:
    from .formats import save_safetensors

    meta = {"format": ENCODER_FORMAT, "model_hash": encoder.cfg.model_hash,
            "encoder_config": json.dumps(asdict(encoder.cfg))}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_safetensors(path, dict(encoder.state_dict()), meta)


def encoder_from_tensors(path: Path, tensors: dict, meta: dict, model_hash: str | None,
                         latent_dim: int | None) -> ImageEncoder:
    """Check a loaded encoder file against the model and build the network; InputError naming `path`."""
    if meta.get("format") != ENCODER_FORMAT:
        raise InputError(path, f"is not a lolnerf encoder (its format is {meta.get('format')!r}, "
                               f"expected '{ENCODER_FORMAT}')")
    if model_hash is not None and meta.get("model_hash") != model_hash:
        raise InputError(path, f"was trained for model {meta.get('model_hash')}, not this run's model {model_hash}; "
                               "train one for this model with `lolnerf train-encoder --model RUN`")
    try:
        cfg_data = json.loads(meta.get("encoder_config", ""))
    except (ValueError, RecursionError):
        raise InputError(path, "has no readable encoder configuration in its metadata") from None
    cfg = EncoderConfig.from_dict(cfg_data, str(path))
    if latent_dim is not None and cfg.latent_dim != latent_dim:
        raise InputError(path, f"predicts {cfg.latent_dim}-d latents but the model's are {latent_dim}-d")
    enc = ImageEncoder(cfg)
    if cfg.members == 1 and not any(k.startswith("members.") for k in tensors):   # written before ensembles
        tensors = {(f"members.0.{k}" if k.startswith(("features.", "head.")) else k): v for k, v in tensors.items()}
    expected = enc.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise InputError(path, f"weights do not match its configuration (missing {missing[:2]}, "
                               f"unexpected {unexpected[:2]})")
    for k, v in tensors.items():
        if v.shape != expected[k].shape or not v.dtype.is_floating_point:
            raise InputError(path, f"tensor '{k}' has shape {list(v.shape)}, its configuration implies "
                                   f"{list(expected[k].shape)}")
        if not bool(torch.isfinite(v).all()):
            raise InputError(path, f"tensor '{k}' holds non-finite values")
    enc.load_state_dict({k: v.float() for k, v in tensors.items()})
    return enc


def load_encoder(path: str | Path, loaded=None, device: torch.device | str = "cpu") -> ImageEncoder:
    """RUN/encoder.safetensors (or another path) checked against `loaded` (a model.LoadedModel), eval mode."""
    from .formats import load_safetensors

    path = Path(path)
    tensors, meta = load_safetensors(path, "encoder file")
    enc = encoder_from_tensors(path, tensors, meta, None if loaded is None else loaded.model_hash,
                               None if loaded is None else int(loaded.cfg.model.latent_dim))
    if loaded is not None and enc.cfg.resolution != int(loaded.cfg.train.resolution):
        raise InputError(path, f"reads {enc.cfg.resolution} px photos but the model was trained at "
                               f"{loaded.cfg.train.resolution} px")
    return enc.to(device).eval().requires_grad_(False)
