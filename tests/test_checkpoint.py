"""Checkpoints (checkpoint.py, row_table.py): optimiser state keyed by parameter name, older index-keyed
files, clear errors for files that do not fit; the loss composer both training and inversion use; the
flagged-frames setting."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from lolnerf_cli import invert as invert_mod
from lolnerf_cli import losses
from lolnerf_cli import train as train_mod
from lolnerf_cli.distributed import DistInfo
from lolnerf_cli.errors import InputError
from lolnerf_cli.formats import load_safetensors, save_safetensors
from lolnerf_cli.row_table import RowTable
from lolnerf_cli.train import Trainer, resolve_config

LOLNERF = [sys.executable, "-m", "lolnerf_cli"]


def _cfg(run, steps=4, **over):
    ov = {"train.steps": steps, "train.precision": "fp32", "train.preview_every": 0}
    ov.update({f"train.{k}": v for k, v in over.items()})
    return resolve_config(run, "tiny", False, ov)


@pytest.fixture(scope="module")
def trained(synth_data, tmp_path_factory):
    """A tiny run stopped after 3 steps (trainer.safetensors written) and the trainer that wrote it."""
    run = tmp_path_factory.mktemp("ckpt") / "run"
    t = Trainer(synth_data, run, _cfg(run, steps=6))
    t.fit(stop_at=3)
    return t


def _resume(synth_data, run):
    return Trainer(synth_data, run, resolve_config(run, None, True, {}), resume=True)


def _copy_run(trained, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained.run.root, dst, ignore=shutil.ignore_patterns("cache"))
    return dst


def _rewrite(run, change):
    """Load RUN/trainer.safetensors, let change(tensors, meta) edit it, write it back."""
    tensors, meta = load_safetensors(run / "trainer.safetensors")
    change(tensors, meta)
    save_safetensors(run / "trainer.safetensors", tensors, meta)


def _to_index_keys(tensors, meta, names):
    """What lolnerf wrote before names: opt.<position>.*, no optimizer_keys / parameters metadata."""
    for i, name in enumerate(names):
        for field in ("exp_avg", "exp_avg_sq", "step"):
            key = f"opt.{name}.{field}"
            if key in tensors:
                tensors[f"opt.{i}.{field}"] = tensors.pop(key)
    meta.pop("optimizer_keys")
    meta.pop("parameters")


def _same_adam_state(a: Trainer, b: Trainer):
    assert len(b.opt.state) == len(a.opt.state) > 0
    for (name, pa), (_, pb) in zip(a.named_params, b.named_params):
        sa, sb = a.opt.state.get(pa), b.opt.state.get(pb)
        assert (sa is None) == (sb is None), name
        if sa is not None:
            assert float(sa["step"]) == float(sb["step"]) == 3
            assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"]), name
    la, lb = a.lat_opt.state[a.latents.weight], b.lat_opt.state[b.latents.weight]
    assert la["step"] == lb["step"] == 3 and torch.equal(la["exp_avg"], lb["exp_avg"])


@pytest.mark.slow
def test_adam_state_is_keyed_by_parameter_name_and_round_trips(trained, synth_data, tmp_path):
    tensors, meta = load_safetensors(trained.run.trainer)
    names = [n for n, _ in trained.named_params]
    assert meta["optimizer_keys"] == "name" and json.loads(meta["parameters"]) == names
    for name, p in trained.named_params:
        assert tensors[f"opt.{name}.exp_avg"].shape == p.shape
    assert not any(k.split(".")[1].isdigit() for k in tensors if k.startswith("opt."))
    assert tensors["latents"].shape == (trained.k, trained.cfg.model.latent_dim)
    assert tensors["lat_opt.exp_avg"].shape == tensors["latents"].shape
    _same_adam_state(trained, _resume(synth_data, _copy_run(trained, tmp_path)))


@pytest.mark.slow
def test_an_index_keyed_checkpoint_still_resumes(trained, synth_data, tmp_path):
    run = _copy_run(trained, tmp_path)
    names = [n for n, _ in trained.named_params]
    _rewrite(run, lambda t, m: _to_index_keys(t, m, names))
    t = _resume(synth_data, run)
    _same_adam_state(trained, t)
    t.fit()                                              # and it trains on, writing names from now on
    _, meta = load_safetensors(run / "trainer.safetensors")
    assert meta["optimizer_keys"] == "name" and meta["step"] == "6"


def test_an_index_keyed_checkpoint_that_does_not_fit_is_one_clear_error(trained, synth_data, tmp_path):
    names = [n for n, _ in trained.named_params]
    run = _copy_run(trained, tmp_path)

    def beyond(t, m):                                   # one more entry than the model has parameters
        _to_index_keys(t, m, names)
        for field in ("exp_avg", "exp_avg_sq", "step"):
            t[f"opt.{len(names)}.{field}"] = t[f"opt.0.{field}"].clone()
    _rewrite(run, beyond)
    with pytest.raises(InputError, match=f"position {len(names)}, but the model has {len(names)} parameters") as e:
        _resume(synth_data, run)
    assert "trainer.safetensors" in str(e.value)

    run2 = _copy_run(trained, tmp_path / "b")
    shapes = [tuple(p.shape) for _, p in trained.named_params]
    j = next(i for i in range(1, len(names)) if shapes[i] != shapes[0])

    def swapped(t, m):                                  # entries in another order than the parameters
        _to_index_keys(t, m, names)
        for field in ("exp_avg", "exp_avg_sq", "step"):
            t[f"opt.0.{field}"], t[f"opt.{j}.{field}"] = t[f"opt.{j}.{field}"], t[f"opt.0.{field}"]
    _rewrite(run2, swapped)
    with pytest.raises(InputError, match=re.escape(f"position 0 (parameter '{names[0]}') is {list(shapes[j])}")):
        _resume(synth_data, run2)


@pytest.mark.slow
def test_a_name_keyed_checkpoint_that_does_not_fit_is_one_clear_line(trained, synth_data, tmp_path):
    name0 = trained.named_params[0][0]
    ghost = {f"opt.field.ghost.{f}": f for f in ("exp_avg", "exp_avg_sq", "step")}

    def add_ghost_state(t, m):
        t.update({k: t[f"opt.{name0}.{f}"].clone() for k, f in ghost.items()})

    def list_ghost(t, m):
        m["parameters"] = json.dumps(json.loads(m["parameters"]) + ["field.ghost"])

    cases = {   # a parameter the model lacks, with state / listed only (never stepped); state the list lacks
        "extra": (lambda t, m: (add_ghost_state(t, m), list_ghost(t, m)),
                  "parameter 'field.ghost', which the model does not have"),
        "listed": (list_ghost, "parameter 'field.ghost', which the model does not have"),
        "unlisted": (add_ghost_state, re.escape("'opt.field.ghost.*' for a parameter its metadata does not list")),
        "shape": (lambda t, m: t.update({f"opt.{name0}.exp_avg": torch.zeros(3, 3)}),
                  re.escape(f"optimiser state of parameter '{name0}' is [3, 3]")),
    }
    for case, (change, message) in cases.items():
        run = _copy_run(trained, tmp_path / case)
        _rewrite(run, change)
        with pytest.raises(InputError, match=message) as e:
            _resume(synth_data, run)
        assert str(run / "trainer.safetensors") in str(e.value), case
    # the CLI: one line naming the file, exit code 2
    r = subprocess.run(LOLNERF + ["train", str(synth_data), "--out", str(tmp_path / "shape"), "--resume"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "trainer.safetensors" in r.stderr and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr


def test_a_model_parameter_the_checkpoint_does_not_list_is_named(trained, synth_data, tmp_path):
    run = _copy_run(trained, tmp_path)
    name0 = trained.named_params[0][0]
    _rewrite(run, lambda t, m: m.update(parameters=json.dumps(json.loads(m["parameters"])[1:])) or
             [t.pop(f"opt.{name0}.{f}") for f in ("exp_avg", "exp_avg_sq", "step")])
    with pytest.raises(InputError, match=f"no optimiser entry for the model's parameter '{name0}'"):
        _resume(synth_data, run)


def test_a_second_row_table_saves_and_restores_by_name(tmp_path):
    """Another per-image table (as a camera correction would be): its rows and sparse Adam state go into
    the checkpoint under its own name and come back; an optional table missing from a file keeps its
    starting rows; a required one is a clear error."""
    info, dev = DistInfo(), torch.device("cpu")
    owned = torch.arange(5)
    a = RowTable("cam", torch.zeros(5, 6), owned, 1e-2, dev, info)
    a.zero_grad()
    (a(torch.tensor([1, 3, 3])) ** 2 + a(torch.tensor([1, 3, 3]))).sum().backward()
    a.step(0.5)
    state = a.state_tensors()
    assert sorted(state) == ["cam", "cam_opt.exp_avg", "cam_opt.exp_avg_sq", "cam_opt.step"]
    assert a.opt.param_groups[0]["lr"] == pytest.approx(5e-3)
    save_safetensors(tmp_path / "t.safetensors", state)
    tensors, _ = load_safetensors(tmp_path / "t.safetensors")
    b = RowTable("cam", torch.ones(5, 6), owned, 1e-2, dev, info)
    assert b.load_state(tensors, tmp_path / "t.safetensors")
    assert torch.equal(b.weight, a.weight) and b.weight[0].abs().sum() == 0 and b.weight[1].abs().sum() > 0
    sa, sb = a.opt.state[a.weight], b.opt.state[b.weight]
    assert sa["step"] == sb["step"] == 1 and torch.equal(sa["exp_avg"].to_dense(), sb["exp_avg"].to_dense())
    c = RowTable("other", torch.full((5, 2), 7.0), owned, 1e-2, dev, info)
    assert not c.load_state(tensors, tmp_path / "t.safetensors", required=False)
    assert torch.equal(c.weight, torch.full((5, 2), 7.0))
    with pytest.raises(InputError, match="t.safetensors.*table 'other'"):
        c.load_state(tensors, tmp_path / "t.safetensors")


# ----------------------------------------------------------------------------------------- the loss composer
class _Out:
    def __init__(self, rgb, alpha, weights, interlevel=None):
        self.rgb, self.alpha, self.weights, self.interlevel = rgb, alpha, weights, interlevel


def test_compose_loss_terms_and_micro_batches_add_up():
    g = torch.Generator().manual_seed(0)
    r = 12
    out = _Out(torch.rand(r, 3, generator=g), torch.rand(r, generator=g), torch.rand(r, 5, generator=g),
               torch.tensor(0.3))
    target, mask = torch.rand(r, 3, generator=g), torch.rand(r, generator=g)
    has = (torch.arange(r) % 3 != 0).float()
    w = losses.LossWeights(1.0, 0.5, 0.1, 2.0)
    loss, terms = losses.compose_loss(out, target, mask, has, w, r, has.sum())
    assert terms["loss_rgb"] == pytest.approx(float(((out.rgb - target) ** 2).mean()))
    assert terms["loss_mask"] == pytest.approx(float(((out.alpha - mask) ** 2)[has > 0].mean()))
    assert terms["loss_hard"] == pytest.approx(float(losses.hard_surface_loss(out.weights)))
    expect = terms["loss_rgb"] + 0.5 * terms["loss_mask"] + 0.1 * terms["loss_hard"] + 2.0 * 0.3
    assert float(loss) == pytest.approx(float(expect))
    # two micro-batches with the whole batch's counts add up to the whole batch (interlevel per micro-batch)
    halves = [losses.compose_loss(_Out(out.rgb[s], out.alpha[s], out.weights[s], torch.tensor(0.3)), target[s],
                                  mask[s], has[s], w, r, has.sum())[0] for s in (slice(0, 5), slice(5, r))]
    assert float(sum(halves)) == pytest.approx(float(loss), rel=1e-6)
    # a zero weight leaves its term out; inversion's weights have no interlevel term
    no_inter = losses.LossWeights.of(types_tc(), interlevel=False)
    assert no_inter.interlevel == 0 and no_inter.mask == types_tc().mask_weight
    loss0, terms0 = losses.compose_loss(out, target, mask, has, losses.LossWeights(1.0, 0.0, 0.0), r, 1.0)
    assert float(loss0) == pytest.approx(float(terms["loss_rgb"])) and float(terms0["loss_mask"]) == 0


def types_tc():
    from lolnerf_cli.config import TrainConfig

    return TrainConfig(mask_weight=0.25)


def test_training_and_inversion_use_the_one_loss_composer(synth_data, tmp_path, monkeypatch):
    calls = []
    real = losses.compose_loss

    def counted(*a, **kw):
        calls.append(a[4])
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "compose_loss", counted)
    monkeypatch.setattr(invert_mod, "compose_loss", counted)
    t = Trainer(synth_data, tmp_path / "run", _cfg(tmp_path / "run", mask_weight=0.5))
    assert t.train_step() is not None
    n_train = len(calls)
    assert n_train >= 1 and calls[0].interlevel == t.cfg.train.interlevel_weight and calls[0].mask == 0.5

    from lolnerf_cli.cameras import Camera
    from lolnerf_cli.formats import read_transforms
    from lolnerf_cli.images import load_image

    class Loaded:                                       # what invert_images needs of a loaded run
        model, cfg, latents = t.model, t.cfg, t.latents.weight.detach()

    frame = read_transforms(synth_data / "transforms.json").frames[0]
    rgb = load_image(synth_data / frame.file_path)
    result = invert_mod.invert_images(Loaded, [rgb], [Camera.from_frame(frame)], [None], steps=2,
                                      measure_init=False)
    assert len(calls) > n_train and all(c.interlevel == 0 and c.mask == 0.5 for c in calls[n_train:])
    assert result.latents.shape == (1, t.cfg.model.latent_dim) and torch.isfinite(result.latents).all()


# ----------------------------------------------------------------------------------------- flagged frames
def test_min_landmark_rmse_excluded_decides_whether_flagged_frames_train(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data, ignore=shutil.ignore_patterns("holdout"))
    tf = json.loads((data / "transforms.json").read_text())
    tf["frames"][0]["flagged"] = True
    (data / "transforms.json").write_text(json.dumps(tf))
    n = len(tf["frames"])
    left_out = Trainer(data, tmp_path / "a", _cfg(tmp_path / "a"))
    assert left_out.k == n - 1 and left_out.frames.excluded[0]["file_path"] == tf["frames"][0]["file_path"]
    cfg = _cfg(tmp_path / "b")
    cfg.train.min_landmark_rmse_excluded = False
    assert Trainer(data, tmp_path / "b", cfg).k == n
