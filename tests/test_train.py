"""Training: the run folder contract, exact resume, kill -9 safety, DDP on gloo, NaN handling, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lolnerf_cli import train as train_mod
from lolnerf_cli.errors import InputError, LolnerfError
from lolnerf_cli.run_log import read_log
from lolnerf_cli.losses import hard_surface_loss, symmetry_loss
from lolnerf_cli.model import load_model
from lolnerf_cli.train import Trainer, resolve_config

LOLNERF = [sys.executable, "-m", "lolnerf_cli"]


def _cfg(run, steps=20, **over):
    ov = {"train.steps": steps, "train.precision": "fp32", "train.preview_every": 0}
    ov.update({f"train.{k}": v for k, v in over.items()})
    return resolve_config(run, "tiny", False, ov)


@pytest.mark.slow
def test_train_writes_the_run_folder_of_the_spec(synth_data, tmp_path):
    run = tmp_path / "run"
    summary = train_mod.train(synth_data, run, "tiny", steps=20, preview_every=10, log_every=5)
    assert summary["step"] == 20
    for name in ("config.json", "model.safetensors", "trainer.safetensors", "trainer.json", "keypoints.json",
                 "images.json", "log.jsonl"):
        assert (run / name).is_file(), name
    assert (run / "previews" / "step_0000010.png").is_file()
    images = json.loads((run / "images.json").read_text())["images"]
    weights = load_file(run / "model.safetensors")
    assert weights["latents"].shape == (len(images), 16)
    log = read_log(run / "log.jsonl")
    assert [r["step"] for r in log] == [5, 10, 15, 20]
    for key in ("step", "loss", "psnr", "lr", "rays_per_s", "samples_per_s", "elapsed_s"):
        assert key in log[-1]
    assert log[-1]["lr"] < log[0]["lr"]                       # exponential decay
    loaded = load_model(run)
    assert loaded.latents.shape[0] == len(images)


@pytest.mark.slow
def test_resume_continues_exactly(synth_data, tmp_path):
    cfg = _cfg(tmp_path / "a", steps=24)
    Trainer(synth_data, tmp_path / "a", cfg).fit()
    Trainer(synth_data, tmp_path / "b", cfg).fit(stop_at=11)          # as if interrupted after step 11
    cfg_b = resolve_config(tmp_path / "b", None, True, {})
    Trainer(synth_data, tmp_path / "b", cfg_b, resume=True).fit()
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in read_log(tmp_path / "b" / "log.jsonl")][-1] == 24


@pytest.mark.slow
def test_kill_9_during_training_then_resume(synth_data, tmp_path):
    run = tmp_path / "run"
    cmd = LOLNERF + ["train", str(synth_data), "--out", str(run), "--preset", "tiny", "--steps", "100000",
                     "--checkpoint-every", "4", "--log-every", "1", "--preview-every", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            tj = run / "trainer.json"
            if tj.is_file() and json.loads(tj.read_text())["step"] >= 12:
                break
            time.sleep(0.05)
        else:
            pytest.fail("training made no checkpoint in time")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # the run folder is readable right after the kill
    ckpt_step = json.loads((run / "trainer.json").read_text())["step"]
    loaded = load_model(run)
    assert loaded.latents.shape[1] == 16
    last_logged = read_log(run / "log.jsonl")[-1]["step"]
    assert last_logged - ckpt_step <= 4 + 1                        # at most one checkpoint interval lost
    # resume runs to the end from the checkpoint
    r = subprocess.run(LOLNERF + ["train", str(synth_data), "--out", str(run), "--resume", "--steps",
                                  str(ckpt_step + 6)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    log = read_log(run / "log.jsonl")
    steps = [rec["step"] for rec in log]
    assert steps == sorted(set(steps)) and steps[-1] == ckpt_step + 6


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint(synth_data, tmp_path):
    run = tmp_path / "run"
    cmd = LOLNERF + ["train", str(synth_data), "--out", str(run), "--preset", "tiny", "--steps", "100000",
                     "--checkpoint-every", "100000", "--log-every", "1", "--preview-every", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if len(read_log(run / "log.jsonl")) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:                                     # never leave a training process behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    saved = json.loads((run / "trainer.json").read_text())["step"]
    assert saved >= 5
    assert "resume" in err


@pytest.mark.slow
def test_two_process_ddp_on_gloo(synth_data, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29613",
           "-m", "lolnerf_cli", "train", str(synth_data), "--out", str(run), "--preset", "tiny", "--steps", "12",
           "--device", "cpu", "--precision", "fp32", "--preview-every", "0",
           # camera refinement too: its rows live on their ranks, its gauge is a global mean (all_reduce)
           "--refine-cameras", "--set", "train.camera_warmup=0", "--set", "train.camera_lr=0.02",
           "--set", "train.camera_recentre_every=5"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-8000:] + r.stdout[-2000:]   # both ranks' messages, not only torchrun's summary
    info = json.loads((run / "trainer.json").read_text())
    assert info["world_size"] == 2 and info["step"] == 12
    k = len(json.loads((run / "images.json").read_text())["images"])
    lat = load_file(run / "model.safetensors")["latents"]
    assert lat.shape[0] == k
    delta = load_file(run / "trainer.safetensors")["camera_delta"]
    assert delta.shape == (k, 6)
    assert bool((delta[0::2].abs().sum(1) > 0).any()) and bool((delta[1::2].abs().sum(1) > 0).any())
    # recentred at step 10 over both ranks' rows, then two more steps of sparse updates: near zero, not exactly
    assert float(delta[:, :3].mean(0).abs().max()) < 0.5 * float(delta[:, :3].abs().mean())
    cams = json.loads((run / "cameras.json").read_text())
    assert len(cams["frames"]) == k and cams["refined_at_step"] == 12
    # rows of both ranks were trained (moved away from their small initial noise)
    from lolnerf_cli.model.latents import init_table

    init = init_table(k, 16, 0.01, torch.Generator().manual_seed(1))
    moved = (lat - init).abs().sum(1) > 1e-6
    assert bool(moved[0::2].any()) and bool(moved[1::2].any())


def test_non_finite_losses_are_skipped_then_stop(synth_data, tmp_path, monkeypatch):
    real = train_mod.render_rays
    calls = {"n": 0}

    def flaky(*a, **kw):
        out = real(*a, **kw)
        calls["n"] += 1
        if calls["n"] in (3, 4):
            out.rgb = out.rgb * float("nan")
        return out

    monkeypatch.setattr(train_mod, "render_rays", flaky)
    summary = Trainer(synth_data, tmp_path / "a", _cfg(tmp_path / "a", steps=8)).fit()
    assert summary["step"] == 8 and summary["bad_steps"] == 2

    monkeypatch.setattr(train_mod, "render_rays", lambda *a, **kw: _nan(real(*a, **kw)))
    with pytest.raises(LolnerfError, match="diverged"):
        Trainer(synth_data, tmp_path / "b", _cfg(tmp_path / "b", steps=50, max_bad_steps=5)).fit()
    assert (tmp_path / "b" / "trainer.safetensors").is_file()      # the state before divergence is kept


def _nan(out):
    out.rgb = out.rgb * float("nan")
    return out


def test_hard_surface_loss_prefers_zero_or_one():
    w = torch.linspace(0, 1, 101, requires_grad=True)
    per = torch.stack([hard_surface_loss(x.reshape(1, 1)) for x in w])
    assert per[0] < 1e-6 and per[-1] < 1e-6 and per.argmax() == 50
    hard_surface_loss(w[None]).backward()
    assert (w.grad[10:50] > 0).all() and (w.grad[51:91] < 0).all()   # descent pushes w to the nearer of 0, 1


def test_symmetry_loss_is_zero_for_a_mirror_symmetric_shape_only():
    # rays from +Z straight at the object: x in [-0.5, 0.5], surface of a sphere at depth ~2
    n = 16
    xs = torch.linspace(-0.5, 0.5, n)
    origins = torch.stack([xs, torch.zeros(n), torch.full((n,), 3.0)], -1)
    dirs = torch.tensor([[0.0, 0.0, -1.0]]).expand(n, 3)
    z = torch.zeros(n, 4)
    alpha, depth = torch.ones(n), torch.full((n,), 2.3)          # depth: expected t times alpha

    def ball(centre_x):
        def density(x, zz):
            c = torch.tensor([centre_x, 0.0, 0.0])
            return 50.0 * torch.sigmoid(40.0 * (0.8 - (x - c).norm(dim=-1)))
        return density

    assert symmetry_loss(ball(0.0), origins, dirs, z, alpha, depth).abs().max() < 1e-6
    off = symmetry_loss(ball(0.15), origins, dirs, z, alpha, depth)
    assert off.shape == (n,) and off.max() > 1e-3
    # each ray counts by its opacity: rays that miss the object count 0
    half = symmetry_loss(ball(0.15), origins, dirs, z, torch.full((n,), 0.5), depth * 0.5)
    assert torch.allclose(half, 0.5 * off)
    assert torch.equal(symmetry_loss(ball(0.15), origins, dirs, z, torch.zeros(n), depth), torch.zeros(n))


@pytest.mark.slow
def test_symmetry_weight_trains_with_its_term_logged(synth_data, tmp_path):
    Trainer(synth_data, tmp_path / "a", _cfg(tmp_path / "a", steps=10, log_every=5)).fit()
    subprocess.run(LOLNERF + ["train", str(synth_data), "--out", str(tmp_path / "b"), "--preset", "tiny", "--steps", "10",
                              "--precision", "fp32", "--preview-every", "0", "--log-every", "5", "--symmetry", "0.5"],
                   check=True, capture_output=True)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["symmetry_weight"] == 0.5
    plain, sym = read_log(tmp_path / "a" / "log.jsonl"), read_log(tmp_path / "b" / "log.jsonl")
    assert "loss_symmetry" not in plain[-1]                    # off by default: nothing computed
    assert all(r["loss_symmetry"] > 0 for r in sym)
    # the logged loss holds the weighted term
    first_a, first_b = plain[0], sym[0]
    assert first_b["loss"] > first_b["loss_rgb"] + 0.1 * first_b["loss_mask"] + 0.1 * first_b["loss_hard"]
    assert first_a["loss"] == pytest.approx(first_a["loss_rgb"] + 0.1 * first_a["loss_mask"] + 0.1 * first_a["loss_hard"],
                                            rel=1e-4)


@pytest.mark.slow
def test_cli_errors_are_one_line_exit_2(synth_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run(LOLNERF + ["train", str(empty), "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 2 and "transforms.json" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(LOLNERF + ["train", str(synth_data), "--out", str(tmp_path / "r"), "--preset", "huge"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown preset" in r.stderr
    r = subprocess.run(LOLNERF + ["train", str(synth_data), "--out", str(tmp_path / "nothing"), "--resume"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "trainer.safetensors" in r.stderr


def test_set_overrides_any_setting_of_a_new_run(synth_data, tmp_path):
    from use_models import error_line, invoke

    run = tmp_path / "s"
    res = invoke(["train", str(synth_data), "--out", str(run), "--preset", "tiny", "--steps", "2", "--device", "cpu",
                  "--preview-every", "0", "--sampler", "hierarchical", "--set", "render.n_coarse=6",
                  "--set", "model.width=24", "--set", "train.precision=fp32", "--set", "model.skips=[1]"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["render"]["n_coarse"] == 6 and cfg["model"]["width"] == 24 and cfg["model"]["skips"] == [1]
    assert cfg["train"]["precision"] == "fp32" and cfg["render"]["sampler"] == "hierarchical"
    assert load_model(run).model.cfg.width == 24
    for bad, says in ((["--set", "render.n_coarse"], "SECTION.KEY=VALUE"), (["--set", "render.nope=3"], "render.nope"),
                      (["--set", "model.width=-4"], "non-negative"), (["--set", "a.b.c=1"], "SECTION.KEY=VALUE"),
                      (["--set", "render.sampler=grid"], "render.sampler: must be 'hierarchical' or 'proposal'"),
                      (["--sampler", "grid"], "--sampler: must be"),
                      (["--resume", "--set", "model.width=8"], "config.json")):
        res = invoke(["train", str(synth_data), "--out", str(run if "--resume" in bad else tmp_path / "t"),
                      "--preset", "tiny", "--steps", "2", *bad])
        assert res.exit_code == 2 and says in error_line(res), (bad, res.output)


def test_resume_refuses_a_changed_model(synth_data, tmp_path):
    Trainer(synth_data, tmp_path / "a", _cfg(tmp_path / "a", steps=3)).fit()
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["model"]["width"] = 48
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="different model"):
        Trainer(synth_data, tmp_path / "a", resolve_config(tmp_path / "a", None, True, {}), resume=True)


def test_full_disk_is_a_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    from lolnerf_cli import formats

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old, complete contents")

    def no_space(fd, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(formats.os, "fsync", no_space)
    with pytest.raises(InputError, match="No space left on device") as exc:
        formats.atomic_write_bytes(target, b"new contents")
    assert str(target) in str(exc.value)
    assert target.read_bytes() == b"old, complete contents"          # the previous file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left


@pytest.mark.slow
def test_output_folder_that_is_a_file_is_a_clear_error(synth_data, tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    r = subprocess.run(LOLNERF + ["train", str(synth_data), "--out", str(blocker), "--preset", "tiny"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr


def test_micro_batches_give_the_whole_batch_gradient(synth_data, tmp_path, monkeypatch):
    """A step split into micro-batches accumulates exactly the gradient of the whole batch."""
    real = train_mod.render_rays
    monkeypatch.setattr(train_mod, "render_rays", lambda *a, **kw: real(*a, **{**kw, "perturb": False}))
    grads, stats = {}, {}
    for mb in (0, 24):                         # tiny preset: 8 images x 16 pixels = 128 rays per step
        t = Trainer(synth_data, tmp_path / f"mb{mb}", _cfg(tmp_path / f"mb{mb}", micro_batch_rays=mb, mask_weight=0.5))
        t.opt.step = t.lat_opt.step = lambda: None              # keep the gradients, change nothing
        stats[mb] = t.train_step()
        grads[mb] = [p.grad.clone() for p in t.net_params] + [t.latents.weight.grad.to_dense()]
    assert stats[0]["samples"] == stats[24]["samples"] > 0
    for key in ("loss", "loss_rgb", "loss_mask", "loss_hard", "alpha_mean"):
        assert stats[24][key] == pytest.approx(stats[0][key], rel=1e-5, abs=1e-7), key
    for a, b in zip(grads[0], grads[24]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads[0])


@pytest.mark.slow
def test_progress_lines_off_a_terminal(synth_data, tmp_path):
    env = dict(os.environ, LOLNERF_PROGRESS_INTERVAL="0")
    r = subprocess.run(LOLNERF + ["train", str(synth_data), "--out", str(tmp_path / "r"), "--preset", "tiny",
                                  "--steps", "6"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "training: started" in out and "training: done in" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("training: ") and "/6" in ln]
    assert lines and any("eta" in ln for ln in lines), out
