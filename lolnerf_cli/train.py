"""The training loop: GLO latent table + latent-conditioned NeRF, single process or torch.distributed.

Every step draws `images_per_step` images and `pixels_per_image` random pixels from each (no full
images are rendered, so memory does not depend on image resolution), pairs every ray with its image's
latent row, renders it, and takes one Adam step on the network and one sparse Adam step on the rows
that were used.

Distributed (torchrun): rank r owns the images k with k % world_size == r and keeps only their latent
rows; only the network's gradients are all-reduced. Checkpoints gather the rows on rank 0.

Checkpoints: `trainer.safetensors` holds everything needed to continue *exactly* (weights, latents,
both optimisers' state, every rank's RNG state, the step) in one atomically written file, so a
kill -9 at any moment leaves either the previous or the new checkpoint, never a mix. `model.safetensors`
is the user-facing model, also written atomically.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import __version__
from .cameras import Camera, look_at, mean_view, pixel_rays, spherical_eye
from .config import Config, config_from_dict
from .data import build_cache, camera_tensors, select_frames
from .device import pick_device, resolve_precision
from .errors import InputError, LolnerfError
from .formats import (append_log, dataset, load_safetensors, read_json, read_keypoints, read_log, run_folder,
                      save_safetensors, write_images_json, write_json, write_keypoints)
from .images import save_png
from .losses import hard_surface_loss, mask_loss, psnr_from_mse, rgb_loss
from .model import GenerativeNeRF, save_model
from .model.latents import init_table

ENCODING_WINDOW_START = 1.0     # octaves of the "ipe" encoding open at step 0 of coarse-to-fine training
from .progress import Progress, or_silent
from .render import backward_in_micro_batches, render_image, render_rays


# ----------------------------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def _gather_rows(local: torch.Tensor, owned: torch.Tensor, total: int, info: DistInfo) -> torch.Tensor:
    """Assemble a [K, ...] table from every rank's rows `local` [K_r, ...] at global indices `owned`."""
    if info.world == 1:
        out = torch.empty((total,) + tuple(local.shape[1:]), dtype=local.dtype)
        out[owned.cpu()] = local.detach().cpu()
        return out
    dev = local.device
    per = math.ceil(total / info.world)
    pad = torch.zeros((per,) + tuple(local.shape[1:]), dtype=local.dtype, device=dev)
    pad[: local.shape[0]] = local.detach()
    bufs = [torch.zeros_like(pad) for _ in range(info.world)]
    dist.all_gather(bufs, pad)
    out = torch.empty((total,) + tuple(local.shape[1:]), dtype=local.dtype)
    for r, buf in enumerate(bufs):
        idx = torch.arange(r, total, info.world)
        out[idx] = buf[: idx.shape[0]].cpu()
    return out


# ----------------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, data_dir: str | Path, run_dir: str | Path, cfg: Config, resume: bool = False,
                 device: str = "auto", progress: Progress | None = None, include_flagged: bool = False):
        self.cfg = cfg
        self.progress = or_silent(progress)
        self.device = pick_device(device)
        self.info = init_distributed(self.device)
        if self.device.type == "cuda" and self.info.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.info.rank)))
            torch.cuda.set_device(self.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)
        self.run = run_folder(run_dir, must_exist=False)
        self.data_dir = Path(data_dir)
        self._check_out_dir(resume)

        tc = cfg.train
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

        torch.manual_seed(tc.seed)
        self.model = GenerativeNeRF(cfg.model).to(self.device)
        if cfg.model.encoding == "ipe":   # the finest pixel footprint of the training photos
            floor = float((1.0 / self.cams["fx"]).min())
            self.model.set_footprint(floor, floor * float(self.cams["c2w"][:, :3, 3].norm(dim=-1).mean()))
        init_gen = torch.Generator().manual_seed(tc.seed + 1)
        table = init_table(self.k, cfg.model.latent_dim, tc.latent_init_std, init_gen)
        self.latents = torch.nn.Embedding(self.owned.numel(), cfg.model.latent_dim, sparse=True).to(self.device)
        with torch.no_grad():
            self.latents.weight.copy_(table[self.owned].to(self.device))
        self.net_params = [p for p in self.model.parameters()]
        self.opt = torch.optim.Adam(self.net_params, lr=tc.lr)
        self.lat_opt = torch.optim.SparseAdam(list(self.latents.parameters()), lr=tc.latent_lr)
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

    # ------------------------------------------------------------------------------ set-up helpers
    def _barrier(self) -> None:
        if self.info.world > 1:
            dist.barrier()

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

    def lr_factor(self, step: int) -> float:
        tc = self.cfg.train
        return (tc.lr_final / tc.lr) ** (min(step, tc.steps) / max(tc.steps, 1))

    # ------------------------------------------------------------------------------ one step
    def encoding_window(self, step: int) -> float | None:
        """Octaves of the "ipe" encoding open at `step`: from ENCODING_WINDOW_START to all of them, linearly
        over the first `encoding_anneal` of the steps (coarse to fine); None once all are open."""
        tc = self.cfg.train
        span = tc.encoding_anneal * tc.steps
        if self.cfg.model.encoding != "ipe" or span <= 0 or step >= span:
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
        origins, dirs = pixel_rays(c["c2w"][gi], c["fx"][gi], c["fy"][gi], c["cx"][gi], c["cy"][gi], u, v)
        pix = 1.0 / c["fx"][gi]
        lat_idx = local_rep.to(dev)
        has_m = self.has_mask[gi].float()
        n_rays = origins.shape[0]
        n_masked = has_m.sum().clamp_min(1.0)
        self.opt.zero_grad(set_to_none=True)
        self.lat_opt.zero_grad(set_to_none=True)

        def loss_of(sl: slice):         # one micro-batch of the step's rays, its losses scaled to its share
            out = render_rays(self.model, origins[sl], dirs[sl], self.latents(lat_idx[sl]), self.cfg.render,
                              perturb=True, precision=self.precision, generator=g, pix=pix[sl])
            share = out.rgb.shape[0] / n_rays
            l_rgb = rgb_loss(out.rgb, target[sl]) * share
            l_mask = (mask_loss(out.alpha, mask[sl], has_m[sl], n_masked) if tc.mask_weight > 0
                      else torch.zeros((), device=dev))
            l_hard = hard_surface_loss(out.weights) * share
            l_inter = out.interlevel * share if out.interlevel is not None else torch.zeros((), device=dev)
            loss = (tc.rgb_weight * l_rgb + tc.mask_weight * l_mask + tc.hard_surface_weight * l_hard
                    + tc.interlevel_weight * l_inter)
            return loss, {"loss": loss, "loss_rgb": l_rgb, "loss_mask": l_mask, "loss_hard": l_hard,
                          "loss_interlevel": l_inter, "alpha_mean": out.alpha.sum() / n_rays,
                          "samples": out.weights.numel()}

        finite, sums = backward_in_micro_batches(n_rays, tc.micro_batch_rays, dev, loss_of)
        ok = torch.tensor(float(finite), device=dev)
        if self.info.world > 1:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            self.opt.zero_grad(set_to_none=True)
            self.lat_opt.zero_grad(set_to_none=True)
            return None
        self._allreduce_grads()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net_params, tc.grad_clip)
        if not torch.isfinite(grad_norm):
            return None
        f = self.lr_factor(self.step)
        for grp in self.opt.param_groups:
            grp["lr"] = tc.lr * f
        for grp in self.lat_opt.param_groups:
            grp["lr"] = tc.latent_lr * f
        self.opt.step()
        self.lat_opt.step()
        return {**sums, "rays": float(n_rays), "lr": tc.lr * f}

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
        interrupted = None

        def on_signal(signum, frame):  # SIGTERM saves like Ctrl-C does
            raise KeyboardInterrupt

        # Installed explicitly: a process started in the background by a non-interactive shell inherits an
        # *ignored* SIGINT, and Python then never raises KeyboardInterrupt; `kill -INT` must still save.
        old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} \
            if _in_main_thread() else {}
        try:
            with self.progress.task("training", total=tc.steps) as task:
                if self.step:
                    task.advance(self.step)
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
        except KeyboardInterrupt as exc:
            interrupted = exc
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        self.save_checkpoint(time.time() - t_start)
        if interrupted is not None:
            raise interrupted
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
                                                 "note": "mean training camera; orbits and novel views use it"})
        if self.frames.excluded:
            write_json(self.run.root / "excluded.json", {"excluded": self.frames.excluded})

    def global_latents(self) -> torch.Tensor:
        return _gather_rows(self.latents.weight, self.owned, self.k, self.info)

    def save_checkpoint(self, elapsed_this_session: float) -> None:
        """All ranks call this (collectives); rank 0 writes trainer.safetensors, then model.safetensors."""
        lat = self.global_latents()
        lat_state = self.lat_opt.state.get(self.latents.weight, {})
        lat_m = _gather_rows(lat_state["exp_avg"], self.owned, self.k, self.info) if lat_state else None
        lat_v = _gather_rows(lat_state["exp_avg_sq"], self.owned, self.k, self.info) if lat_state else None
        rng = self.gen.get_state()
        rngs = [rng]
        if self.info.world > 1:
            rngs = [torch.zeros_like(rng) for _ in range(self.info.world)]
            dist.all_gather(rngs, rng)
        if not self.info.main:
            self._barrier()
            return
        elapsed = self.elapsed_before + elapsed_this_session
        tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors["latents"] = lat
        for i, p in enumerate(self.net_params):
            st = self.opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in st:
                    tensors[f"opt.{i}.{name}"] = st[name]
            if "step" in st:
                tensors[f"opt.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
        if lat_m is not None:
            tensors["lat_opt.exp_avg"] = lat_m
            tensors["lat_opt.exp_avg_sq"] = lat_v
            tensors["lat_opt.step"] = torch.as_tensor(lat_state["step"], dtype=torch.float64).reshape(1)
        for r, s in enumerate(rngs):
            tensors[f"rng.{r}"] = s.cpu()
        meta = {"format": "lolnerf-trainer", "step": str(self.step), "world_size": str(self.info.world),
                "model_hash": self.cfg.model_hash(), "bad_steps": str(self.bad_steps_total),
                "elapsed_s": f"{elapsed:.3f}"}
        save_safetensors(self.run.trainer, tensors, meta)
        save_model(self.run.model, self.model, lat, self.cfg, {"step": self.step})
        write_json(self.run.trainer_json, {"step": self.step, "steps": self.cfg.train.steps, "world_size": self.info.world,
                                           "bad_steps": self.bad_steps_total, "elapsed_s": round(elapsed, 3),
                                           "precision": self.precision, "device": str(self.device),
                                           "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self._barrier()

    def _load_checkpoint(self) -> None:
        tensors, meta = load_safetensors(self.run.trainer, "trainer checkpoint")
        if meta.get("format") != "lolnerf-trainer":
            raise InputError(self.run.trainer, "is not a lolnerf trainer checkpoint")
        if meta.get("model_hash") != self.cfg.model_hash():
            raise InputError(self.run.trainer, "was written for a different model configuration than config.json")
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(state)
        except RuntimeError:
            raise InputError(self.run.trainer, "weights do not match the model configuration") from None
        self.model.set_footprint()
        lat = tensors.get("latents")
        if lat is None or lat.shape != (self.k, self.cfg.model.latent_dim):
            raise InputError(self.run.trainer, f"latent table does not match the {self.k} training images; was the "
                                               "dataset changed since the run started?")
        dev = self.device
        with torch.no_grad():
            self.latents.weight.copy_(lat[self.owned].to(dev))
        for i, p in enumerate(self.net_params):
            if f"opt.{i}.exp_avg" in tensors:
                self.opt.state[p] = {"step": tensors[f"opt.{i}.step"].reshape(()).float(),
                                     "exp_avg": tensors[f"opt.{i}.exp_avg"].to(dev),
                                     "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"].to(dev)}
        if "lat_opt.exp_avg" in tensors:
            self.lat_opt.state[self.latents.weight] = {
                "step": int(tensors["lat_opt.step"].item()),
                "exp_avg": tensors["lat_opt.exp_avg"][self.owned].to(dev),
                "exp_avg_sq": tensors["lat_opt.exp_avg_sq"][self.owned].to(dev)}
        rng = tensors.get(f"rng.{self.info.rank}")
        if rng is not None and int(meta.get("world_size", "1")) == self.info.world:
            self.gen.set_state(rng)
        else:
            self.gen.manual_seed(self.cfg.train.seed * 1000 + 17 + self.info.rank + int(meta.get("step", "0")))
        self.step = int(meta.get("step", "0"))
        self.bad_steps_total = int(meta.get("bad_steps", "0"))
        self.elapsed_before = float(meta.get("elapsed_s", "0"))
        if self.info.main:  # drop log lines written after the checkpoint (their work is lost)
            recs = [r for r in read_log(self.run.log) if int(r.get("step", 0)) <= self.step]
            from .formats import atomic_write_bytes

            atomic_write_bytes(self.run.log, "".join(json.dumps(r) + "\n" for r in recs).encode())

    def write_preview(self, n_images: int = 4) -> Path:
        """A grid PNG: training photos | reconstructions | a novel view (yaw +30 degrees) of the same latents."""
        res = self.cfg.train.resolution
        picks = list(range(0, self.k, max(1, self.k // n_images)))[:n_images]
        lat = self.latents.weight.detach()
        yaw, pitch, radius, fov = mean_view(self.frames.frames)
        rows_gt, rows_rec, rows_nov = [], [], []
        self.model.eval()
        for k in picks:
            local = (self.owned == k).nonzero()
            if local.numel() == 0:
                continue
            z = lat[int(local[0])]
            cam = Camera.from_frame(self.frames.frames[k]).scaled(res, res)
            rows_gt.append(self.cache.image(k).astype(np.float32) / 255.0)
            rows_rec.append(render_image(self.model, z, cam, self.cfg.render, self.precision)["rgb"])
            eye = spherical_eye(yaw + 30.0, pitch, radius)
            nov = Camera(look_at(eye), cam.fx, cam.fy, cam.cx, cam.cy, res, res)
            rows_nov.append(render_image(self.model, z, nov, self.cfg.render, self.precision)["rgb"])
        self.model.train()
        grid = np.concatenate([np.concatenate(r, axis=1) for r in (rows_gt, rows_rec, rows_nov)], axis=0)
        path = self.run.previews / f"step_{self.step:07d}.png"
        save_png(path, grid)
        save_png(self.run.previews / "latest.png", grid)
        return path


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


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
    for key, value in overrides.items():
        if value is None:
            continue
        section, name = key.split(".")
        if key == "render.sampler":
            use_sampler(cfg, value)
            continue
        setattr(getattr(cfg, section), name, value)
    cfg.check("--preset" if not resume else str(run_folder(run_dir, must_exist=False).config))
    tc = cfg.train
    if tc.images_per_step < 1 or tc.pixels_per_image < 1 or tc.resolution < 4:
        raise InputError("--preset", "images_per_step, pixels_per_image and resolution must be positive")
    return cfg


def use_sampler(cfg: Config, sampler: str) -> None:
    """Switch a configuration to a sampler with its companions: "proposal" uses the "ipe" encoding and
    one proposal network per `render.proposal_samples` count; "hierarchical" neither."""
    if sampler not in ("hierarchical", "proposal"):
        raise InputError("--sampler", f"must be 'hierarchical' or 'proposal', got '{sampler}'")
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
        raise InputError("--resume", "a resumed run keeps its model and renderer settings; drop --sampler")
    ov.update(config_overrides or {})
    cfg = resolve_config(run_dir, preset_name, resume, ov)
    trainer = Trainer(data_dir, run_dir, cfg, resume=resume, device=device, progress=progress)
    if resume and steps is not None and trainer.info.main:
        write_json(trainer.run.config, {**cfg.to_dict(), "lolnerf_version": __version__})
    try:
        return trainer.fit()
    finally:
        if trainer.info.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
