"""`lolnerf train-encoder`: teach an ImageEncoder (encoder.py) to answer what inversion finds, in one pass.

The trained GLO model stays frozen. Every step draws a batch of photos from a mix of three parts
(docs/encoder.md has the A/B of what each one buys):

(a) "photos": the run's own training photos (RUN/cache, the pixels training used) with their latent rows
    and training cameras as targets (RUN/cameras.json, refined cameras, when the run has one; else the
    dataset's transforms.json). Where a photo has a mask its background is swapped for a random one
    half of the time.
(b) "renders": images of the frozen model at latents drawn from the PCA Gaussian fitted to its latent
    table and at training cameras (drawn at random, turned by a few degrees about the object centre and
    moved a few percent nearer or farther), whose targets are exact. Rendering is the costly part on a
    CPU (about 1 s per 64 px image with the `cpu` preset), so a pool of `pool` renders is made once and
    one of them is replaced every `refresh_every` steps (oldest first). Each is stored as foreground +
    alpha + the model's own background, and composited over a fresh background every time it is drawn
    (the model's own, a flat colour or a two-colour gradient): the backgrounds are unlimited even
    where the renders are not.
(c) "self-consistency" (off unless --mix lists it: in docs/encoder.md's A/B it cost 2.2x the CPU time
    and did not improve the encoder): the latent and camera the encoder predicts for the first `sc_images` photos of
    the batch are rendered through the frozen model on `sc_rays` random pixels each and compared with
    the input: RGB L2 on the object's pixels where a mask exists (all pixels otherwise) plus the
    training mask loss on opacity. Gradients flow through the renderer into the predicted latent and
    camera.

Targets are compared as: latent L2 in units of the table's per-dimension std; camera as the squared
Frobenius distance of the rotations plus the squared errors of (a, b, log d) (encoder.py), weighted by
`camera_weight`.

Checkpoints follow `train`'s habits: RUN/encoder_trainer.safetensors holds everything needed to continue
exactly (weights, Adam state, the render pool, the RNG, the step), written atomically with
RUN/encoder.safetensors and RUN/encoder.json; Ctrl-C and SIGTERM save; RUN/encoder_log.jsonl gets one
record per `log_every` steps."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .cameras import focal_from_fov, mean_view, pixel_rays
from .encoder import (EncoderConfig, ImageEncoder, at_focal, camera_params, c2w_from_params, encoder_from_tensors,
                      encoder_paths, save_encoder)
from .errors import InputError
from .formats import atomic_write_bytes, load_safetensors, read_json, save_safetensors, write_json
from .run_log import append_log, read_log
from .losses import psnr_from_mse
from .progress import Progress, or_silent
from .signals import saving_on_interrupt

TRAINER_FILE = "encoder_trainer.safetensors"
LOG_FILE = "encoder_log.jsonl"
TRAINER_FORMAT = "lolnerf-encoder-trainer"
PARTS = ("photos", "renders", "self-consistency")
DEFAULT_MEMBERS = 3             # networks in a new encoder (docs/encoder.md: the ensemble A/B)
SC_WEIGHT = 1.0                 # weight of (c) when --mix lists it


@dataclass
class EncoderTrainConfig:
    steps: int = 2000
    batch: int = 32               # photos per step
    photo_fraction: float = 0.5   # share of the batch from (a) when (b) is on too
    use_photos: bool = True       # (a)
    use_renders: bool = True      # (b)
    sc_weight: float = 0.0        # (c); 0 is off (the default: docs/encoder.md's A/B), --mix ...,self-consistency: 1
    sc_images: int = 8            # photos of each batch rendered for (c)
    sc_rays: int = 64             # random pixels of each of them
    pool: int = 128               # (b) renders kept
    refresh_every: int = 10       # (b) one render replaced every this many steps (0: never)
    jitter_deg: float = 3.0       # (b) camera turn about the object centre (std, degrees, per axis)
    jitter_dist: float = 0.03     # (b) log-distance jitter (std)
    bg_swap: float = 0.5          # (a) chance of a new background for a photo with a mask
    camera_weight: float = 30.0
    lr: float = 1e-3              # Adam, cosine-decayed to lr * 0.05
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 250

    def check(self, where: str = "--steps") -> "EncoderTrainConfig":
        if not (self.use_photos or self.use_renders):
            raise InputError("--mix", "needs at least one of 'photos' or 'renders' (the supervised parts)")
        for name in ("steps", "batch", "log_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(where, f"'{name}' must be at least 1")
        if self.use_renders and self.pool < 1:
            raise InputError("--pool", "must be at least 1 when renders are in the mix")
        return self

    @staticmethod
    def from_dict(data, where: str) -> "EncoderTrainConfig":
        if not isinstance(data, dict):
            raise InputError(where, "'training' must be a JSON object")
        names = {f.name for f in fields(EncoderTrainConfig)}
        kw = {}
        for k, v in data.items():
            if k in names:
                default = getattr(EncoderTrainConfig(), k)
                if isinstance(v, bool) != isinstance(default, bool) or not isinstance(v, (int, float)):
                    raise InputError(where, f"training setting '{k}' has the wrong type")
                kw[k] = type(default)(v)
        return EncoderTrainConfig(**kw)


def parse_mix(text: str) -> dict:
    """'photos,renders,self-consistency' (any subset, comma-separated) -> config overrides."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise InputError("--mix", f"lists {bad or 'nothing'}; choose from {', '.join(PARTS)}")
    return {"use_photos": "photos" in parts, "use_renders": "renders" in parts,
            "sc_weight": SC_WEIGHT if "self-consistency" in parts else 0.0}


# ----------------------------------------------------------------------------------------- backgrounds
def random_backgrounds(n: int, res: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 3, res, res]: flat colours or two-colour linear gradients in a random direction."""
    c0 = torch.rand(n, 3, 1, 1, generator=gen)
    c1 = torch.rand(n, 3, 1, 1, generator=gen)
    flat = torch.rand(n, generator=gen) < 0.5
    angle = torch.rand(n, generator=gen) * 2 * math.pi
    coord = (torch.arange(res, dtype=torch.float32) + 0.5) / res - 0.5
    yy, xx = torch.meshgrid(coord, coord, indexing="ij")
    t = (xx[None] * angle.cos()[:, None, None] + yy[None] * angle.sin()[:, None, None]) + 0.5    # [n, R, R]
    t = t.clamp(0, 1)[:, None]
    grad = c0 * (1 - t) + c1 * t
    return torch.where(flat[:, None, None, None], c0.expand(n, 3, res, res), grad)


def _world_rotation(axis_angle: torch.Tensor) -> torch.Tensor:
    """[n, 3] axis-angle (radians) -> [n, 3, 3] via the matrix exponential."""
    w = axis_angle
    z = torch.zeros_like(w[:, 0])
    k = torch.stack([torch.stack([z, -w[:, 2], w[:, 1]], -1), torch.stack([w[:, 2], z, -w[:, 0]], -1),
                     torch.stack([-w[:, 1], w[:, 0], z], -1)], -2)
    return torch.linalg.matrix_exp(k)


# ----------------------------------------------------------------------------------------- the trainer
class EncoderTrainer:
    def __init__(self, run_dir: str | Path, tcfg: EncoderTrainConfig | None = None, resume: bool = False,
                 device: str = "auto", progress: Progress | None = None, steps: int | None = None,
                 width: int | None = None, members: int | None = None):
        from .device import pick_device, resolve_precision
        from .model import load_model

        self.progress = or_silent(progress)
        self.device = pick_device(device)
        self.loaded = load_model(run_dir, self.device)
        self.root = self.loaded.run.root
        self.enc_path, self.json_path = encoder_paths(self.root)
        self.trainer_path = self.root / TRAINER_FILE
        self.log_path = self.root / LOG_FILE
        cfg = self.loaded.cfg
        self.res = int(cfg.train.resolution)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        if resume:
            if not self.trainer_path.is_file():
                raise InputError(self.trainer_path, "not found; nothing to resume (run train-encoder without --resume)")
            saved = read_json(self.json_path, "encoder configuration")
            if not isinstance(saved, dict):
                raise InputError(self.json_path, "must be a JSON object")
            self.tcfg = EncoderTrainConfig.from_dict(saved.get("training", {}), str(self.json_path))
            ecfg = EncoderConfig.from_dict(saved.get("encoder", {}), str(self.json_path))
        else:
            if self.trainer_path.is_file() or self.enc_path.is_file():
                raise InputError(self.enc_path, "already exists; continue it with --resume, or delete it (and "
                                                f"{TRAINER_FILE}) to train a new encoder")
            self.tcfg = tcfg or EncoderTrainConfig()
            # fov: the training cameras' median field of view, set by _load_photos (RUN/view.json's, for runs
            # trained since view.json holds the median; older runs hold the mean there)
            ecfg = EncoderConfig(resolution=self.res, latent_dim=int(cfg.model.latent_dim),
                                 model_hash=self.loaded.model_hash)
            if width is not None:
                ecfg.width, ecfg.hidden = int(width), max(64, 8 * int(width))
            ecfg.members = DEFAULT_MEMBERS if members is None else int(members)
            ecfg.check("--width" if members is None else "--members")
        if steps is not None:
            self.tcfg.steps = int(steps)
        self.tcfg.check()
        self.ecfg = ecfg
        self._load_photos(set_fov=not resume)
        torch.manual_seed(self.tcfg.seed)
        self.encoder = ImageEncoder(ecfg).to(self.device)
        self.encoder.set_statistics(self.loaded.latents.cpu(), self.cam_c2w.cpu())
        self.opt = torch.optim.Adam(self.encoder.parameters(), lr=self.tcfg.lr)
        self.gen = torch.Generator().manual_seed(self.tcfg.seed * 7919 + 3)
        from .model.latents import LatentGaussian

        self.gauss = LatentGaussian.fit(self.loaded.latents.detach().cpu())
        self.step = 0
        self.elapsed_before = 0.0
        self.pool: dict[str, torch.Tensor] | None = None
        self.pool_next = 0
        if resume:
            self._load_checkpoint()

    # ------------------------------------------------------------------------------ (a) the run's photos
    def _load_photos(self, set_fov: bool) -> None:
        """The training photos as the run cached them (latent-table order), their masks and cameras; with
        set_fov, the encoder's field of view: the median of the training cameras' (cameras.mean_view)."""
        from .data import build_cache, select_frames
        from .formats import read_image_list

        files, dataset = read_image_list(self.loaded.run.images)
        data_dir = dataset or Path("")
        frames = select_frames(data_dir, include_flagged=True)
        by_path = {f.file_path: f for f in frames.frames}
        missing = [f for f in files if f not in by_path]
        if missing:
            raise InputError(data_dir / "transforms.json", f"has no frame for '{missing[0]}', a training photo of "
                                                           f"{self.root} (was the dataset changed?)")
        frames.frames = [by_path[f] for f in files]
        cache, kept = build_cache(frames, self.root / "cache", self.res, self.progress)
        if [f.file_path for f in kept.frames] != files:
            raise InputError(self.root / "cache", f"does not hold the {len(files)} training photos of "
                                                  f"{self.loaded.run.images} in order")
        from .data import camera_tensors
        from .formats import with_run_cameras

        cams, refined = with_run_cameras(kept.frames, self.root)    # refined training cameras, when the run has them

        ct = camera_tensors(cams, self.res)
        if set_fov:
            self.ecfg.fov = float(mean_view(cams)[3])
        self.cache = cache
        # the encoder has one focal length (the median field of view) and fitted cameras each their own:
        # every target camera is moved along its axis to show the photo at its own scale with that focal length
        focal = focal_from_fov(self.ecfg.fov, self.res)
        self.cam_c2w = at_focal(ct["c2w"].double(), ct["fy"].double(), focal).float().to(self.device)
        self.cam_source = "RUN/cameras.json" if refined else str(data_dir / "transforms.json")

    def photo_batch(self, n: int) -> dict[str, torch.Tensor]:
        g = self.gen
        k = len(self.cache)
        idx = torch.randint(k, (n,), generator=g)
        rgb = torch.from_numpy(np.stack([self.cache.pixels[int(i)] for i in idx])).permute(0, 3, 1, 2).float() / 255
        mask = torch.from_numpy(np.stack([self.cache.masks[int(i)] for i in idx])).float()[:, None] / 255
        has = torch.as_tensor(self.cache.has_mask[idx.numpy()], dtype=torch.bool)
        swap = (torch.rand(n, generator=g) < self.tcfg.bg_swap) & has
        bg = random_backgrounds(n, self.res, g)
        img = torch.where(swap[:, None, None, None], rgb * mask + (1 - mask) * bg, rgb)
        return {"img": img, "mask": mask, "has_mask": has, "z": self.loaded.latents[idx.to(self.device)].cpu(),
                "c2w": self.cam_c2w[idx.to(self.device)].cpu()}

    # ------------------------------------------------------------------------------ (b) renders
    def _draw_render_targets(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g, t = self.gen, self.tcfg
        z = self.gauss.sample(n, 1.0, g)
        pick = torch.randint(self.cam_c2w.shape[0], (n,), generator=g)
        c2w = self.cam_c2w.cpu()[pick].double().clone()
        turn = _world_rotation(torch.randn(n, 3, generator=g).double() * math.radians(t.jitter_deg))
        scale = (torch.randn(n, generator=g).double() * t.jitter_dist).exp()
        c2w[:, :3, :3] = turn @ c2w[:, :3, :3]
        c2w[:, :3, 3] = (turn @ c2w[:, :3, 3:])[..., 0] * scale[:, None]
        return z, c2w.float()

    @torch.inference_mode()
    def _render(self, z: torch.Tensor, c2w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Exact renders at the training resolution: fg [n, 3, R, R] premultiplied, alpha [n, 1, R, R],
        bg [n, 3, R, R] (the model's own background)."""
        from .cameras import Camera
        from .render import render_rays

        f = self.encoder.focal()
        out = {"fg": [], "alpha": [], "bg": []}
        r = self.res
        for i in range(z.shape[0]):
            cam = Camera(c2w[i].double().numpy(), f, f, r / 2, r / 2, r, r)
            o, d = cam.rays(self.device)
            pix = torch.full((o.shape[0],), 1.0 / f, device=self.device)
            parts = {"fg": [], "alpha": [], "bg": []}
            chunk = self.loaded.cfg.render.chunk
            for s in range(0, o.shape[0], chunk):
                zz = z[i].to(self.device)[None].expand(min(chunk, o.shape[0] - s), -1)
                ro = render_rays(self.loaded.model, o[s:s + chunk], d[s:s + chunk], zz, self.loaded.cfg.render,
                                 False, self.precision, pix=pix[s:s + chunk])
                parts["fg"].append(ro.fg_rgb.float().clamp(0, 1))
                parts["alpha"].append(ro.alpha.float().clamp(0, 1))
                parts["bg"].append(ro.bg_rgb.float().clamp(0, 1))
            out["fg"].append(torch.cat(parts["fg"]).reshape(r, r, 3).permute(2, 0, 1).cpu())
            out["alpha"].append(torch.cat(parts["alpha"]).reshape(1, r, r).cpu())
            out["bg"].append(torch.cat(parts["bg"]).reshape(r, r, 3).permute(2, 0, 1).cpu())
        return {k: torch.stack(v) for k, v in out.items()}

    def build_pool(self) -> None:
        n = self.tcfg.pool
        z, c2w = self._draw_render_targets(n)
        parts = {"fg": [], "alpha": [], "bg": []}
        with self.progress.task("rendering the encoder's pool", total=n) as task:
            for s in range(0, n, 8):
                out = self._render(z[s:s + 8], c2w[s:s + 8])
                for k in parts:
                    parts[k].append(out[k])
                task.advance(min(8, n - s))
        self.pool = {"z": z, "c2w": c2w, **{k: torch.cat(v) for k, v in parts.items()}}
        self.pool_next = 0

    def refresh_pool(self) -> None:
        z, c2w = self._draw_render_targets(1)
        out = self._render(z, c2w)
        i = self.pool_next
        for k, v in (("z", z), ("c2w", c2w), *out.items()):
            self.pool[k][i] = v[0]
        self.pool_next = (i + 1) % self.pool["z"].shape[0]

    def render_batch(self, n: int) -> dict[str, torch.Tensor]:
        g, p = self.gen, self.pool
        idx = torch.randint(p["z"].shape[0], (n,), generator=g)
        fg, alpha, own = p["fg"][idx], p["alpha"][idx], p["bg"][idx]
        kind = torch.randint(3, (n,), generator=g)
        bg = torch.where((kind == 0)[:, None, None, None], own, random_backgrounds(n, self.res, g))
        img = (fg + (1 - alpha) * bg).clamp(0, 1)
        return {"img": img, "mask": alpha, "has_mask": torch.ones(n, dtype=torch.bool), "z": p["z"][idx],
                "c2w": p["c2w"][idx]}

    # ------------------------------------------------------------------------------ one step
    def lr_at(self, step: int) -> float:
        t = self.tcfg
        return t.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, t.steps) / max(t.steps, 1))))

    def batch(self) -> dict[str, torch.Tensor]:
        t = self.tcfg
        n_photo = t.batch if not t.use_renders else (0 if not t.use_photos else round(t.batch * t.photo_fraction))
        parts = []
        if n_photo:
            parts.append(self.photo_batch(n_photo))
        if t.batch - n_photo:
            parts.append(self.render_batch(t.batch - n_photo))
        return {k: torch.cat([p[k] for p in parts]).to(self.device) for k in parts[0]}

    def train_step(self) -> dict[str, float]:
        t = self.tcfg
        if t.use_renders and self.pool is None:
            self.build_pool()
        if t.use_renders and t.refresh_every and self.step % t.refresh_every == 0 and self.step > 0:
            self.refresh_pool()
        for grp in self.opt.param_groups:
            grp["lr"] = self.lr_at(self.step)
        members = self.encoder.members
        sums: dict[str, float] = {}
        self.opt.zero_grad(set_to_none=True)
        for i, member in enumerate(members):                # each member its own batch (renders are shared)
            loss, stats = self._member_loss(i, self.batch())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(member.parameters(), 1.0)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        self.opt.step()
        return {**{k: v / len(members) for k, v in sums.items()}, "lr": self.lr_at(self.step)}

    def _member_loss(self, i: int, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Member i's supervised (and self-consistency) loss on batch b, and its stats (the loss, its parts,
        the batch's mean rotation error)."""
        t = self.tcfg
        z, rot, abd = self.encoder.member_answer(i, b["img"])
        rot_t, abd_t = camera_params(b["c2w"].double())
        l_z = (((z - b["z"]) / self.encoder.z_std) ** 2).mean()
        l_rot = ((rot - rot_t.float()) ** 2).sum((-1, -2)).mean()
        l_pos = ((abd - abd_t.float()) ** 2).sum(-1).mean()
        loss = l_z + t.camera_weight * (l_rot + l_pos)
        stats = {"loss_latent": l_z.item(), "loss_rotation": l_rot.item(), "loss_position": l_pos.item()}
        if t.sc_weight > 0:
            l_sc, sc_mse = self.self_consistency(b, z, rot, abd)
            loss = loss + t.sc_weight * l_sc
            stats.update(loss_self=l_sc.item(), self_psnr_masked=psnr_from_mse(sc_mse))
        with torch.no_grad():
            ang = torch.linalg.matrix_norm(rot.detach() - rot_t.float(), "fro")
            deg = torch.rad2deg(2 * torch.asin((ang / (2 * math.sqrt(2))).clamp(max=1.0)))
        stats.update(loss=loss.item(), rotation_error_deg=float(deg.mean()))
        return loss, stats

    def self_consistency(self, b, z, rot, abd) -> tuple[torch.Tensor, float]:
        """Render the predicted latents at the predicted cameras on random pixels; compare with the input."""
        from .render import render_rays

        t, g, r = self.tcfg, self.gen, self.res
        n = min(t.sc_images, z.shape[0])
        p = min(t.sc_rays, r * r)
        f = self.encoder.focal()
        c2w = c2w_from_params(rot[:n], abd[:n])                                     # [n, 4, 4]
        pix = torch.stack([torch.randperm(r * r, generator=g)[:p] for _ in range(n)]).to(self.device)  # [n, p]
        img_of_ray = torch.arange(n, device=self.device).repeat_interleave(p)
        u = (pix % r).float().reshape(-1) + 0.5
        v = (pix // r).float().reshape(-1) + 0.5
        full = lambda x: torch.full_like(u, x)  # noqa: E731
        origins, dirs = pixel_rays(c2w[img_of_ray], full(f), full(f), full(r / 2), full(r / 2), u, v)
        out = render_rays(self.loaded.model, origins, dirs, z[:n][img_of_ray], self.loaded.cfg.render, True,
                          self.precision, generator=g, pix=full(1.0 / f))
        flat = b["img"][:n].flatten(2)                                              # [n, 3, R*R]
        tgt = flat.gather(2, pix[:, None].expand(n, 3, p)).permute(0, 2, 1).reshape(-1, 3)
        m = b["mask"][:n].flatten(1).gather(1, pix).reshape(-1)
        has = b["has_mask"][:n][img_of_ray].float()
        w = has * m + (1 - has)                                                    # object pixels, or all of them
        err = ((out.rgb.float() - tgt) ** 2).mean(-1)
        l_rgb = (w * err).sum() / w.sum().clamp_min(1.0)
        l_mask = (has * (out.alpha.float() - m) ** 2).sum() / has.sum().clamp_min(1.0)
        tc = self.loaded.cfg.train
        return tc.rgb_weight * l_rgb + tc.mask_weight * l_mask, l_rgb.detach().item()

    # ------------------------------------------------------------------------------ the loop
    def fit(self, stop_at: int | None = None) -> dict:
        """Train to tcfg.steps (or stop early at `stop_at`, saving a checkpoint, as if interrupted)."""
        t = self.tcfg
        end = t.steps if stop_at is None else min(stop_at, t.steps)
        acc: dict[str, float] = {}
        last = None
        t_start = time.time()

        # SIGTERM and `kill -INT` save like Ctrl-C does
        with saving_on_interrupt(lambda: self.save_checkpoint(time.time() - t_start)):
            if t.use_renders and self.pool is None:
                self.build_pool()
            with self.progress.task("training the encoder", total=t.steps) as task:
                if self.step:
                    task.resume_from(self.step)
                while self.step < end:
                    stats = self.train_step()
                    self.step += 1
                    for k, v in stats.items():
                        acc[k] = acc.get(k, 0.0) + v
                    acc["n"] = acc.get("n", 0.0) + 1
                    if self.step % t.log_every == 0 or self.step == t.steps:
                        n = acc.pop("n")
                        last = {"step": self.step, **{k: v / n for k, v in acc.items()},
                                "elapsed_s": self.elapsed_before + time.time() - t_start}
                        append_log(self.log_path, last)
                        task.advance(0, loss=last["loss"], rot_deg=last["rotation_error_deg"])
                        acc = {}
                    task.advance(1)
                    if self.step % t.checkpoint_every == 0 and self.step < t.steps:
                        self.save_checkpoint(time.time() - t_start)
        return {"step": self.step, "last": last, "encoder": str(self.enc_path), "photos": len(self.cache),
                "cameras": self.cam_source, "elapsed_s": self.elapsed_before + time.time() - t_start}

    # ------------------------------------------------------------------------------ files
    def save_checkpoint(self, elapsed_this_session: float) -> None:
        elapsed = self.elapsed_before + elapsed_this_session
        tensors = {f"enc.{k}": v for k, v in self.encoder.state_dict().items()}
        params = list(self.encoder.parameters())
        for i, p in enumerate(params):
            st = self.opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in st:
                    tensors[f"opt.{i}.{name}"] = st[name]
            if "step" in st:
                tensors[f"opt.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
        if self.pool is not None:
            tensors.update({f"pool.{k}": v for k, v in self.pool.items()})
        tensors["rng"] = self.gen.get_state()
        meta = {"format": TRAINER_FORMAT, "model_hash": self.loaded.model_hash, "step": str(self.step),
                "pool_next": str(self.pool_next), "elapsed_s": f"{elapsed:.3f}",
                "encoder_config": json.dumps(asdict(self.ecfg))}
        save_safetensors(self.trainer_path, tensors, meta)
        save_encoder(self.enc_path, self.encoder, {"step": self.step})
        write_json(self.json_path, {"format": "lolnerf-encoder-config", "model_hash": self.loaded.model_hash,
                                    "encoder": asdict(self.ecfg), "training": asdict(self.tcfg),
                                    "step": self.step, "elapsed_s": round(elapsed, 3),
                                    "photo_cameras": self.cam_source, "lolnerf_version": __version__,
                                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _load_checkpoint(self) -> None:
        path = self.trainer_path
        tensors, meta = load_safetensors(path, "encoder trainer checkpoint")
        if meta.get("format") != TRAINER_FORMAT:
            raise InputError(path, "is not a lolnerf encoder trainer checkpoint")
        enc_t = {k[4:]: v for k, v in tensors.items() if k.startswith("enc.")}
        enc = encoder_from_tensors(path, enc_t, {**meta, "format": "lolnerf-encoder"}, self.loaded.model_hash,
                                   int(self.loaded.cfg.model.latent_dim))
        self.encoder.load_state_dict(enc.state_dict())
        for i, p in enumerate(self.encoder.parameters()):
            if f"opt.{i}.exp_avg" in tensors:
                self.opt.state[p] = {"step": tensors[f"opt.{i}.step"].reshape(()).float(),
                                     "exp_avg": tensors[f"opt.{i}.exp_avg"].to(self.device),
                                     "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"].to(self.device)}
        if "pool.z" in tensors:
            self.pool = {k[5:]: v for k, v in tensors.items() if k.startswith("pool.")}
            self.pool_next = int(meta.get("pool_next", "0"))
        if "rng" in tensors:
            self.gen.set_state(tensors["rng"])
        self.step = int(meta.get("step", "0"))
        self.elapsed_before = float(meta.get("elapsed_s", "0"))
        recs = [r for r in read_log(self.log_path) if int(r.get("step", 0)) <= self.step]
        atomic_write_bytes(self.log_path, "".join(json.dumps(r) + "\n" for r in recs).encode())


def train_encoder(run_dir: str | Path, steps: int | None = None, resume: bool = False, device: str = "auto",
                  progress: Progress | None = None, width: int | None = None, members: int | None = None,
                  **overrides) -> dict:
    """Train (or resume) RUN/encoder.safetensors. `overrides` name EncoderTrainConfig fields (None: default)."""
    tcfg = EncoderTrainConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    if resume and members is not None:
        given["members"] = members
    if resume and given:
        raise InputError("--resume", f"a resumed encoder keeps its training settings; drop {sorted(given)[0]}")
    for k, v in given.items():
        setattr(tcfg, k, v)
    trainer = EncoderTrainer(run_dir, tcfg, resume, device, progress, steps, width, members)
    return trainer.fit()
