"""The training loop: GLO latent table + latent-conditioned NeRF, single process or torch.distributed.

Every step draws `images_per_step` images and `pixels_per_image` random pixels from each (no full
images are rendered, so memory does not depend on image resolution), pairs every ray with its image's
latent row, renders it, and takes one Adam step on the network and one sparse Adam step on the rows
that were used.

Distributed (torchrun, distributed.py): rank r owns the images k with k % world_size == r and keeps only
their latent rows; only the network's gradients are all-reduced. Checkpoints gather the rows on rank 0.

Per-image parameters are `RowTable`s (row_table.py: rows + sparse Adam + saved by name); the latent
table is one. Another per-image table: build it in `__init__`, add it to `self.tables` (checkpoints then
save and restore it), use its rows in `train_step` and call its `zero_grad` / `step` there.

Checkpoints (checkpoint.py): `trainer.safetensors` holds everything needed to continue *exactly*
(weights, the tables, both optimisers' state keyed by name, every rank's RNG state, the step) in one
atomically written file; `model.safetensors` is the user-facing model.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import __version__
from .cameras import Camera, look_at, mean_view, pixel_rays, spherical_eye
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, check_sampler, config_from_dict
from .data import build_cache, camera_tensors, select_frames
from .device import autocast, denormals_flushed, pick_device, resolve_precision
from .distributed import gather_all, init_distributed
from .errors import InputError, LolnerfError, ParamError
from .camera_refine import CameraRefiner, write_refined_cameras
from .eval_align import cameras_fitted
from .formats import read_json, read_keypoints, read_transforms, write_images_json, write_json, write_keypoints
from .run_log import append_log
from .folders import dataset, run_folder
from .images import save_png
from .losses import LossWeights, backward_in_micro_batches, compose_loss, psnr_from_mse, symmetry_loss
from .model import GenerativeNeRF
from .model.encoding import nyquist_octaves
from .model.latents import init_table
from .progress import Progress, or_silent
from .render import render_image, render_rays
from .row_table import RowTable
from .signals import saving_on_interrupt

ENCODING_WINDOW_START = 1.0     # octaves of the "ipe" encoding open at step 0 of coarse-to-fine training


# ----------------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, data_dir: str | Path, run_dir: str | Path, cfg: Config, resume: bool = False,
                 device: str = "auto", progress: Progress | None = None, include_flagged: bool | None = None):
        """include_flagged: train on frames fit-cameras flagged too (default: not
        cfg.train.min_landmark_rmse_excluded, which leaves them out)."""
        self.cfg = cfg
        self.progress = or_silent(progress)
        self.device = pick_device(device)
        self.info = init_distributed(self.device)
        if self.device.type == "cuda" and self.info.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.info.rank)))
            torch.cuda.set_device(self.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        if self.info.world > 1:   # every rank trains in rank 0's precision (auto measures each machine)
            flag = torch.tensor([float(self.precision == "bf16")], device=self.device)
            self.precision = "bf16" if float(gather_all(flag, self.info)[0]) > 0.5 else "fp32"
        self.run = run_folder(run_dir, must_exist=False)
        self.data_dir = Path(data_dir)
        self._check_out_dir(resume)

        tc = cfg.train
        if include_flagged is None:
            include_flagged = not tc.min_landmark_rmse_excluded
        frames = select_frames(data_dir, include_flagged)
        cache_dir = self.run.root / "cache"
        if self.info.main:
            self.cache, self.frames = build_cache(frames, cache_dir, tc.resolution, self.progress)
        self._barrier()
        if not self.info.main:
            self.cache, self.frames = build_cache(frames, cache_dir, tc.resolution, None)
        self.k = len(self.cache)
        self.cams = {k: v.to(self.device) for k, v in camera_tensors(self.frames.frames, tc.resolution).items()}
        self.has_mask = torch.as_tensor(self.cache.has_mask, device=self.device)

        # this rank's images and latent rows
        self.owned = torch.arange(self.info.rank, self.k, self.info.world)
        if self.owned.numel() == 0:
            raise InputError(self.data_dir, f"has {self.k} images, fewer than the {self.info.world} processes")

        # the finest pixel footprint of the training photos, per unit depth and at the object (each photo's
        # own distance and focal: fitted cameras' focal lengths vary, 9-133 px on the demo's 32 px photos)
        floor = float((1.0 / self.cams["fx"]).min())
        footprint = float((self.cams["c2w"][:, :3, 3].norm(dim=-1) / self.cams["fx"]).min())
        if cfg.model.encoding == "pe" and not resume:
            self._cap_octaves(footprint)
        torch.manual_seed(tc.seed)
        self.model = GenerativeNeRF(cfg.model).to(self.device)
        if cfg.model.encoding == "ipe":
            self.model.set_footprint(floor, footprint)
        init_gen = torch.Generator().manual_seed(tc.seed + 1)
        table = init_table(self.k, cfg.model.latent_dim, tc.latent_init_std, init_gen)
        self.latents = RowTable("latents", table, self.owned, tc.latent_lr, self.device, self.info,
                                opt_key="lat_opt", what="latent table")
        self.tables: list[RowTable] = [self.latents]       # per-image tables: trained, saved and restored
        self.refiner = self._camera_refiner(resume)
        if self.refiner is not None:
            self.tables.append(self.refiner.table)
        self.named_params = list(self.model.named_parameters())
        self.net_params = [p for _, p in self.named_params]
        self.opt = torch.optim.Adam(self.net_params, lr=tc.lr)
        self.loss_weights = LossWeights.of(tc)
        self.gen = torch.Generator().manual_seed(tc.seed * 1000 + 17 + self.info.rank)
        self.step = 0
        self.bad_steps_total = 0
        self.bad_streak = 0
        self.elapsed_before = 0.0
        if resume:
            self._load_checkpoint()
        elif self.info.world > 1:
            for p in self.net_params:                      # identical start on every rank
                dist.broadcast(p.data, 0)

    @property
    def lat_opt(self) -> torch.optim.Optimizer:
        """The latent table's sparse Adam."""
        return self.latents.opt

    # ------------------------------------------------------------------------------ set-up helpers
    def _barrier(self) -> None:
        self.info.barrier()

    def _check_out_dir(self, resume: bool) -> None:
        run = self.run
        if resume:
            if not run.trainer.is_file():
                raise InputError(run.trainer, "not found; nothing to resume (train without --resume first)")
            return
        if run.root.exists() and not run.root.is_dir():
            raise InputError(run.root, "exists and is not a folder")
        if run.trainer.is_file() or run.model.is_file():
            raise InputError(run.root, "already holds a trained run; use --resume to continue it or choose another --out")
        if self.info.main:
            try:
                run.root.mkdir(parents=True, exist_ok=True)
                run.previews.mkdir(exist_ok=True)
            except OSError as exc:
                raise InputError(run.root, f"cannot be created ({exc.strerror or exc})") from None
            if not os.access(run.root, os.W_OK):
                raise InputError(run.root, "is not writable")

    def _camera_refiner(self, resume: bool) -> CameraRefiner | None:
        """The per-image camera corrections, when this run refines its cameras. A new run decides "auto" from
        the dataset (landmark-fitted cameras are refined, known ones not) and its config.json keeps the answer;
        a resumed run whose config.json still says "auto" predates refinement and keeps its cameras."""
        tc = self.cfg.train
        if tc.refine_cameras == "off":
            return None
        # the dataset's transforms.json top-level keys: whether fit-cameras wrote it, and what cameras.json keeps
        self.camera_source = read_transforms(dataset(self.data_dir).transforms).extra
        if tc.refine_cameras == "auto":
            tc.refine_cameras = "on" if cameras_fitted(self.camera_source) and not resume else "off"
        if tc.refine_cameras != "on":
            return None
        self.progress.log(f"refining the {self.k} training cameras (train.refine_cameras on; RUN/cameras.json)")
        return CameraRefiner(self.k, self.owned, tc.camera_lr, tc.camera_prior, int(tc.camera_warmup * tc.steps),
                             tc.camera_recentre_every, self.device, self.info, tc.camera_momentum)

    def _cap_octaves(self, footprint: float) -> None:
        """A new run with NeRF's encoding keeps only the octaves whose period spans at least two training
        pixels at the object (`model.pos_freqs` in its config.json says how many): finer ones cannot be
        learnt from the photos and alias into stripes (docs/sampling.md). "ipe" fades them out instead."""
        m = self.cfg.model
        cap = int(nyquist_octaves(footprint / m.scene_radius, m.pos_freqs))
        if cap < m.pos_freqs:
            self.progress.log(f"model.pos_freqs {m.pos_freqs} -> {cap}: octaves finer than two training pixels "
                              f"({self.cfg.train.resolution} px) would alias into stripes")
            m.pos_freqs = cap

    def lr_factor(self, step: int) -> float:
        tc = self.cfg.train
        return (tc.lr_final / tc.lr) ** (min(step, tc.steps) / max(tc.steps, 1))

    # ------------------------------------------------------------------------------ one step
    def encoding_window(self, step: int) -> float | None:
        """Octaves of the encoding open at `step`: from ENCODING_WINDOW_START to all of them, linearly over the
        first `encoding_anneal` of the steps (coarse to fine); None once all are open. NeRF's "pe" encoding
        opens all of them at once unless the run refines its cameras (BARF: smooth early pose gradients)."""
        tc = self.cfg.train
        span = tc.encoding_anneal * tc.steps
        annealed = self.cfg.model.encoding == "ipe" or self.refiner is not None
        if not annealed or span <= 0 or step >= span:
            return None
        full = self.model.field.nyquist_limit()
        return ENCODING_WINDOW_START + (full - ENCODING_WINDOW_START) * step / span

    def train_step(self) -> dict[str, float] | None:
        tc, g = self.cfg.train, self.gen
        self.model.set_window(self.encoding_window(self.step))
        n_local = self.owned.numel()
        b = min(tc.images_per_step, n_local)
        p = tc.pixels_per_image
        res = tc.resolution
        local = torch.randperm(n_local, generator=g)[:b] if b < n_local else torch.arange(n_local)
        rows = torch.randint(res, (b, p), generator=g)
        cols = torch.randint(res, (b, p), generator=g)
        local_rep = local[:, None].expand(b, p).reshape(-1)                       # [R]
        global_rep = self.owned[local_rep]
        rgb_u8, mask_u8 = self.cache.gather(global_rep.numpy(), rows.reshape(-1).numpy(), cols.reshape(-1).numpy())
        dev = self.device
        target = torch.from_numpy(rgb_u8).to(dev).float() / 255.0                 # [R, 3]
        mask = torch.from_numpy(mask_u8).to(dev).float() / 255.0                   # [R]
        gi = global_rep.to(dev)
        u = cols.reshape(-1).to(dev).float() + 0.5
        v = rows.reshape(-1).to(dev).float() + 0.5
        c = self.cams
        fx, fy, cx, cy, c2w = c["fx"][gi], c["fy"][gi], c["cx"][gi], c["cy"][gi], c["c2w"][gi]
        pix = 1.0 / fx
        lat_idx = local_rep.to(dev)
        refiner, step = self.refiner, self.step

        def rays(sl: slice):            # refined cameras are rebuilt per micro-batch: each backward frees its graph
            cam = c2w[sl] if refiner is None else refiner.cameras(c2w[sl], lat_idx[sl], step)
            return pixel_rays(cam, fx[sl], fy[sl], cx[sl], cy[sl], u[sl], v[sl])

        has_m = self.has_mask[gi].float()
        n_rays = int(gi.shape[0])
        n_masked = has_m.sum().clamp_min(1.0)
        self._zero_grad()

        def loss_of(sl: slice):         # one micro-batch of the step's rays, its losses scaled to its share
            origins, dirs = rays(sl)
            out = render_rays(self.model, origins, dirs, self.latents(lat_idx[sl]), self.cfg.render,
                              perturb=True, precision=self.precision, generator=g, pix=pix[sl])
            loss, terms = compose_loss(out, target[sl], mask[sl], has_m[sl], self.loss_weights, n_rays, n_masked)
            if tc.symmetry_weight > 0:     # computed here, not in compose_loss: it evaluates the field again
                k = tc.symmetry_every
                with autocast(dev, self.precision):
                    per_ray = symmetry_loss(lambda x, zz: self.model.field(x, zz)[0], origins[::k], dirs[::k],
                                            self.latents(lat_idx[sl][::k]), out.alpha[::k], out.depth[::k])
                terms["loss_symmetry"] = per_ray.sum() / math.ceil(n_rays / k)
                loss = loss + tc.symmetry_weight * terms["loss_symmetry"]
                terms["loss"] = loss
            return loss, {**terms, "alpha_mean": out.alpha.sum() / n_rays, "samples": out.weights.numel()}

        finite, sums = backward_in_micro_batches(n_rays, tc.micro_batch_rays, dev, loss_of)
        if refiner is not None and refiner.active(step) and finite:
            prior = refiner.prior_loss(local.to(dev))
            prior.backward()
            sums["loss_camera_prior"] = float(prior.detach())
        # a table's rows are stepped without clipping: one non-finite row gradient would poison its row (and,
        # through the cameras' recentring, every row), so such a step is dropped like a non-finite loss
        finite = finite and all(table.grad_finite() for table in self.tables)
        ok = torch.tensor(float(finite), device=dev)
        if self.info.world > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            self._zero_grad()
            return None
        self._allreduce_grads()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net_params, tc.grad_clip)
        if not torch.isfinite(grad_norm):
            return None
        f = self.lr_factor(self.step)
        for grp in self.opt.param_groups:
            grp["lr"] = tc.lr * f
        self.opt.step()
        self.latents.step(f)
        if refiner is not None:
            refiner.step(step, f)
        return {**sums, "rays": float(n_rays), "lr": tc.lr * f}

    def _zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        for table in self.tables:
            table.zero_grad()

    def _allreduce_grads(self) -> None:
        if self.info.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.net_params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.info.world
        offset = 0
        for p, g in zip(self.net_params, grads):
            n = g.numel()
            p.grad = flat[offset: offset + n].view_as(p)
            offset += n

    # ------------------------------------------------------------------------------ the loop
    def fit(self, stop_at: int | None = None) -> dict:
        """Train to cfg.train.steps (or stop early at `stop_at`, saving a checkpoint, as if interrupted)."""
        tc = self.cfg.train
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        if self.info.main and self.step == 0:
            self._write_static_files()
        log_acc: dict[str, float] = {}
        window_t0 = time.time()
        t_start = time.time()
        last = None

        # SIGTERM and `kill -INT` save like Ctrl-C does
        with saving_on_interrupt(lambda: self.save_checkpoint(time.time() - t_start)), denormals_flushed():
            with self.progress.task("training", total=tc.steps) as task:
                if self.step:
                    task.resume_from(self.step)
                while self.step < end:
                    stats = self.train_step()
                    if stats is None:
                        self.bad_steps_total += 1
                        self.bad_streak += 1
                        if self.bad_streak >= tc.max_bad_steps:
                            # skipped steps never touched the weights: the state now is the last good one
                            self.save_checkpoint(time.time() - t_start)
                            raise LolnerfError(
                                f"training diverged: {self.bad_streak} consecutive steps had a non-finite loss or "
                                f"gradient at step {self.step}; the last good state was saved in {self.run.root} "
                                "(try a lower learning rate or --precision fp32)")
                        continue
                    self.bad_streak = 0
                    self.step += 1
                    for k2, v in stats.items():
                        log_acc[k2] = log_acc.get(k2, 0.0) + v
                    log_acc["n"] = log_acc.get("n", 0.0) + 1
                    if self.step % tc.log_every == 0 or self.step == tc.steps:
                        last = self._log(log_acc, time.time() - window_t0, t_start)
                        task.advance(0, loss=last["loss"], psnr=last["psnr"], rays_s=last["rays_per_s"])
                        log_acc, window_t0 = {}, time.time()
                    task.advance(1)
                    if self.step % tc.checkpoint_every == 0 and self.step < tc.steps:
                        self.save_checkpoint(time.time() - t_start)
                    if tc.preview_every and self.step % tc.preview_every == 0 and self.info.main:
                        self.write_preview()
        if self.info.main and (not tc.preview_every or self.step % tc.preview_every != 0):
            self.write_preview()
        return {"step": self.step, "last": last, "excluded": self.frames.excluded, "images": self.k,
                "bad_steps": self.bad_steps_total, "run": str(self.run.root), "precision": self.precision,
                "device": str(self.device), "world_size": self.info.world}

    def _log(self, acc: dict[str, float], window_s: float, t_start: float) -> dict:
        n = max(acc.get("n", 1.0), 1.0)
        rays = acc.get("rays", 0.0) * self.info.world
        samples = acc.get("samples", 0.0) * self.info.world
        rec = {
            "step": self.step,
            "loss": acc["loss"] / n,
            "loss_rgb": acc["loss_rgb"] / n,
            "loss_mask": acc["loss_mask"] / n,
            "loss_hard": acc["loss_hard"] / n,
            "loss_interlevel": acc.get("loss_interlevel", 0.0) / n,
            **({"loss_camera_prior": acc.get("loss_camera_prior", 0.0) / n} if self.refiner is not None else {}),
            **({"loss_symmetry": acc.get("loss_symmetry", 0.0) / n} if self.cfg.train.symmetry_weight > 0 else {}),
            "psnr": psnr_from_mse(acc["loss_rgb"] / n),
            "alpha_mean": acc["alpha_mean"] / n,
            "lr": acc["lr"] / n,
            "rays_per_s": rays / max(window_s, 1e-9),
            "samples_per_s": samples / max(window_s, 1e-9),
            "elapsed_s": self.elapsed_before + (time.time() - t_start),
            "bad_steps": self.bad_steps_total,
        }
        if self.info.main:
            append_log(self.run.log, rec)
        return rec

    # ------------------------------------------------------------------------------ files
    def _write_static_files(self) -> None:
        cfg_dict = self.cfg.to_dict()
        cfg_dict["lolnerf_version"] = __version__
        write_json(self.run.config, cfg_dict)
        write_images_json(self.run.images, [f.file_path for f in self.frames.frames], self.data_dir)
        ds = dataset(self.data_dir)
        if ds.keypoints.is_file():
            write_keypoints(self.run.keypoints, read_keypoints(ds.keypoints))
        yaw, pitch, radius, fov = mean_view(self.frames.frames)
        write_json(self.run.root / "view.json", {"yaw": yaw, "pitch": pitch, "radius": radius, "fov": fov,
                                                 "note": "typical training camera (mean direction, median distance "
                                                         "and field of view); orbits, novel views and the encoder "
                                                         "use it"})
        if self.frames.excluded:
            write_json(self.run.root / "excluded.json", {"excluded": self.frames.excluded})

    def global_latents(self) -> torch.Tensor:
        return self.latents.gather()

    def save_checkpoint(self, elapsed_this_session: float) -> None:
        """All ranks call this (collectives); rank 0 writes the files (checkpoint.py)."""
        save_checkpoint(self.run, self.cfg, self.model, self.opt, self.named_params, self.tables, self.gen, self.info,
                        self.step, self.bad_steps_total, self.elapsed_before + elapsed_this_session, self.precision,
                        self.device)
        if self.refiner is not None:
            self.write_cameras()

    def write_cameras(self) -> None:
        """RUN/cameras.json: the refined training cameras (all ranks call: the rows are gathered)."""
        c2w, delta = self.refiner.refined(self.cams["c2w"])
        if self.info.main:
            write_refined_cameras(self.run.cameras, self.frames.frames, c2w, delta, self.step, self.camera_source)

    def _load_checkpoint(self) -> None:
        resumed = load_checkpoint(self.run, self.cfg, self.model, self.opt, self.named_params, self.tables, self.gen,
                                  self.info)
        self.model.set_footprint()
        self.step, self.bad_steps_total, self.elapsed_before = resumed.step, resumed.bad_steps, resumed.elapsed_s

    def write_preview(self, n_images: int = 4) -> Path:
        """A grid PNG: training photos | reconstructions | a novel view (yaw +30 degrees) of the same latents."""
        res = self.cfg.train.resolution
        picks = list(range(0, self.k, max(1, self.k // n_images)))[:n_images]
        lat = self.latents.weight.detach()
        poses = None
        if self.refiner is not None:        # single-process previews: the rows are all local
            poses = self.refiner.refined(self.cams["c2w"])[0] if self.info.world == 1 else None
        yaw, pitch, radius, fov = mean_view(self.frames.frames)
        rows_gt, rows_rec, rows_nov = [], [], []
        self.model.eval()
        for k in picks:
            local = (self.owned == k).nonzero()
            if local.numel() == 0:
                continue
            z = lat[int(local[0])]
            cam = Camera.from_frame(self.frames.frames[k]).scaled(res, res)
            if poses is not None:
                cam = cam.with_pose(poses[k])
            rows_gt.append(self.cache.image(k).astype(np.float32) / 255.0)
            rows_rec.append(render_image(self.model, z, cam, self.cfg.render, self.precision)["rgb"])
            eye = spherical_eye(yaw + 30.0, pitch, radius)
            nov = cam.with_pose(look_at(eye))
            rows_nov.append(render_image(self.model, z, nov, self.cfg.render, self.precision)["rgb"])
        self.model.train()
        grid = np.concatenate([np.concatenate(r, axis=1) for r in (rows_gt, rows_rec, rows_nov)], axis=0)
        path = self.run.previews / f"step_{self.step:07d}.png"
        save_png(path, grid)
        save_png(self.run.previews / "latest.png", grid)
        return path


def resolve_config(run_dir: str | Path, preset_name: str | None, resume: bool, overrides: dict) -> Config:
    """The run's configuration: RUN/config.json when resuming, else the preset plus overrides."""
    from .config import preset

    if resume:
        run = run_folder(run_dir, must_exist=False)
        if not run.trainer.is_file():
            raise InputError(run.trainer, "not found; nothing to resume (train without --resume first)")
        cfg = config_from_dict(read_json(run.config, "run configuration"), str(run.config))
    else:
        cfg = preset(preset_name or "cpu")
    apply_settings(cfg, overrides)
    cfg.check("--preset" if not resume else str(run_folder(run_dir, must_exist=False).config))
    tc = cfg.train
    if tc.images_per_step < 1 or tc.pixels_per_image < 1 or tc.resolution < 4:
        raise ParamError("preset", "images_per_step, pixels_per_image and resolution must be positive")
    return cfg


def apply_settings(cfg: Config, settings: dict) -> None:
    """Set each "section.key" of `settings` (None values skipped), checked like config.json; "render.sampler"
    brings its companion settings (`use_sampler`)."""
    for key, value in settings.items():
        if value is None:
            continue
        if key == "render.sampler":
            use_sampler(cfg, value, setting=key)
            continue
        cfg.override(key, value)


def use_sampler(cfg: Config, sampler: str, setting: str | None = None) -> None:
    """Switch a configuration to a sampler with its companions: "proposal" uses the "ipe" encoding and
    one proposal network per `render.proposal_samples` count; "hierarchical" neither. An unknown sampler
    is an error naming `setting` (e.g. "render.sampler"), or the `sampler` parameter without one."""
    check_sampler(sampler, setting or "sampler", flag=setting is None)
    cfg.render.sampler = sampler
    if sampler == "proposal":
        cfg.model.encoding = "ipe"
        cfg.model.proposal_levels = len(cfg.render.proposal_samples)
    else:
        cfg.model.encoding = "pe"
        cfg.model.proposal_levels = 0


def train(data_dir: str | Path, run_dir: str | Path, preset_name: str | None = "cpu", steps: int | None = None,
          resume: bool = False, device: str = "auto", progress: Progress | None = None,
          config_overrides: dict | None = None, **overrides) -> dict:
    """Train (or resume) a run. Returns a summary dict. `overrides` name TrainConfig fields;
    `config_overrides` any "section.key" (e.g. "render.sampler", "model.pos_freqs")."""
    ov = {"train.steps": steps}
    ov.update({f"train.{k}": v for k, v in overrides.items()})
    if resume and config_overrides and any(v is not None for v in config_overrides.values()):
        raise ParamError("resume", "a resumed run keeps the settings in its config.json; drop {config_overrides}")
    ov.update(config_overrides or {})
    cfg = resolve_config(run_dir, preset_name, resume, ov)
    trainer = Trainer(data_dir, run_dir, cfg, resume=resume, device=device, progress=progress)
    if resume and steps is not None and trainer.info.main:
        write_json(trainer.run.config, {**cfg.to_dict(), "lolnerf_version": __version__})
    try:
        summary = trainer.fit()
        if trainer.info.world > 1:
            dist.barrier()           # every rank is done before any tears the process group down
        return summary
    finally:
        if trainer.info.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
