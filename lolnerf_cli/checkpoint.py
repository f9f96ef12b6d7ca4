"""Training checkpoints: RUN/trainer.safetensors (everything `--resume` needs to continue exactly), then
RUN/model.safetensors and RUN/trainer.json. Each file is written atomically, so a kill -9 at any moment
leaves the previous or the new checkpoint, never a mix.

trainer.safetensors holds (docs/formats.md):

    model.<parameter or buffer>          the network's state_dict
    opt.<parameter name>.exp_avg         Adam's moments of each network parameter, keyed by its name
    opt.<parameter name>.exp_avg_sq      (absent for a parameter Adam has not stepped yet)
    opt.<parameter name>.step            float64 [1]
    <table>, <table opt>.*               each per-image RowTable (latents, lat_opt.*; see row_table.py)
    rng.<rank>                           every rank's pixel-sampling generator state

and metadata: format, step, world_size, model_hash, bad_steps, elapsed_s, optimizer_keys ("name") and
parameters (a JSON list of the network's parameter names, all of them, in order). Files written before
optimizer_keys existed key Adam's state by parameter position (opt.<index>.*); they still resume when
their entries fit the model's parameters."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .distributed import DistInfo, gather_all
from .errors import InputError
from .formats import atomic_write_bytes, load_safetensors, save_safetensors, write_json
from .run_log import read_log
from .row_table import RowTable

TRAINER_FORMAT = "lolnerf-trainer"
OPT_PREFIX = "opt"
OPT_FIELDS = ("exp_avg", "exp_avg_sq", "step")
KEYED_BY_NAME = "name"              # metadata optimizer_keys of files that key Adam's state by parameter name
_OPT_KEY = re.compile(r"^opt\.(.+)\.(exp_avg|exp_avg_sq|step)$")
_START_OVER = "resume it with the lolnerf version that wrote it, or start a new run"

NamedParams = Sequence[tuple[str, torch.nn.Parameter]]


@dataclass
class Resumed:
    step: int
    bad_steps: int
    elapsed_s: float


# ----------------------------------------------------------------------------------------- Adam state by name
def adam_state_tensors(opt: torch.optim.Optimizer, named_params: NamedParams) -> dict[str, torch.Tensor]:
    """opt.<name>.{exp_avg, exp_avg_sq, step} of every parameter Adam holds state for."""
    out = {}
    for name, p in named_params:
        st = opt.state.get(p, {})
        for field in ("exp_avg", "exp_avg_sq"):
            if field in st:
                out[f"{OPT_PREFIX}.{name}.{field}"] = st[field]
        if "step" in st:
            out[f"{OPT_PREFIX}.{name}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
    return out


def adam_state_meta(named_params: NamedParams) -> dict[str, str]:
    return {"optimizer_keys": KEYED_BY_NAME, "parameters": json.dumps([n for n, _ in named_params])}


def _saved_entries(tensors: dict, path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{key between "opt." and the field: {field: tensor}}, each entry complete (all three fields)."""
    entries: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _OPT_KEY.match(key)
        if m:
            entries.setdefault(m.group(1), {})[m.group(2)] = t
    for key, fields in entries.items():
        missing = [f for f in OPT_FIELDS if f not in fields]
        if missing:
            raise InputError(path, f"optimiser state of '{key}' has no '{missing[0]}'; the file is damaged "
                                   "(start a new run)")
    return entries


def restore_adam_state(opt: torch.optim.Optimizer, named_params: NamedParams, tensors: dict, meta: dict,
                       path: Path) -> None:
    """Put the saved Adam state back on the network's parameters, matched by name (or, in files from
    before names, by position). Any mismatch is one InputError naming `path`."""
    entries = _saved_entries(tensors, path)
    params = dict(named_params)
    if meta.get("optimizer_keys") == KEYED_BY_NAME:
        try:
            saved = json.loads(meta.get("parameters", ""))
            if not isinstance(saved, list) or not all(isinstance(n, str) for n in saved):
                raise ValueError
        except ValueError:
            raise InputError(path, "metadata 'parameters' is not a JSON list of parameter names; the file is "
                                   "damaged (start a new run)") from None
        extra = [n for n in saved if n not in params]
        if extra:
            raise InputError(path, f"holds optimiser state for parameter '{extra[0]}', which the model does not "
                                   f"have; it was written by a different version of the model ({_START_OVER})")
        missing = [n for n in params if n not in saved]
        if missing:
            raise InputError(path, f"has no optimiser entry for the model's parameter '{missing[0]}'; it was "
                                   f"written by a different version of the model ({_START_OVER})")
        unlisted = [n for n in entries if n not in saved]
        if unlisted:
            raise InputError(path, f"holds optimiser state 'opt.{unlisted[0]}.*' for a parameter its metadata does "
                                   "not list; the file is damaged (start a new run)")
        matched = {n: (params[n], f"parameter '{n}'") for n in entries}
        why = "it was written for a different model"
    else:                                               # older files: keyed by position in the parameter list
        order = list(named_params)
        bad = [k for k in entries if not k.isdigit()]
        if bad:
            raise InputError(path, f"has optimiser entry 'opt.{bad[0]}.*' but no 'optimizer_keys' metadata; the "
                                   "file is damaged (start a new run)")
        beyond = [int(k) for k in entries if int(k) >= len(order)]
        if beyond:
            raise InputError(path, f"keys optimiser state by parameter position (an older lolnerf) and has an entry "
                                   f"for position {max(beyond)}, but the model has {len(order)} parameters "
                                   f"({_START_OVER})")
        matched = {k: (order[int(k)][1], f"position {k} (parameter '{order[int(k)][0]}')") for k in entries}
        why = "the file keys it by parameter position (an older lolnerf) and the model's parameters have changed"
    for key, (p, what) in matched.items():
        for field in ("exp_avg", "exp_avg_sq"):
            got = tuple(entries[key][field].shape)
            if got != tuple(p.shape):
                raise InputError(path, f"optimiser state of {what} is {list(got)} but the parameter is "
                                       f"{list(p.shape)}; {why} ({_START_OVER})")
    dev = next(iter(params.values())).device if params else torch.device("cpu")
    for key, (p, _) in matched.items():
        e = entries[key]
        opt.state[p] = {"step": e["step"].reshape(()).float(), "exp_avg": e["exp_avg"].to(dev),
                        "exp_avg_sq": e["exp_avg_sq"].to(dev)}


# ----------------------------------------------------------------------------------------- save and load
def save_checkpoint(run, cfg, model: torch.nn.Module, opt: torch.optim.Optimizer, named_params: NamedParams,
                    tables: Sequence[RowTable], gen: torch.Generator, info: DistInfo, step: int, bad_steps: int,
                    elapsed_s: float, precision: str, device: torch.device) -> None:
    """Every rank calls this (collectives); rank 0 writes trainer.safetensors, then model.safetensors (the
    table named "latents" is the model's latent table) and trainer.json."""
    from .model import save_model

    table_state = [t.state_tensors() for t in tables]
    rngs = gather_all(gen.get_state(), info)
    if not info.main:
        info.barrier()
        return
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    for st in table_state:
        tensors.update(st)
    tensors.update(adam_state_tensors(opt, named_params))
    for r, s in enumerate(rngs):
        tensors[f"rng.{r}"] = s.cpu()
    meta = {"format": TRAINER_FORMAT, "step": str(step), "world_size": str(info.world),
            "model_hash": cfg.model_hash(), "bad_steps": str(bad_steps), "elapsed_s": f"{elapsed_s:.3f}",
            **adam_state_meta(named_params)}
    save_safetensors(run.trainer, tensors, meta)
    latents = next(st["latents"] for st in table_state if "latents" in st)
    save_model(run.model, model, latents, cfg, {"step": step})
    write_json(run.trainer_json, {"step": step, "steps": cfg.train.steps, "world_size": info.world,
                                  "bad_steps": bad_steps, "elapsed_s": round(elapsed_s, 3), "precision": precision,
                                  "device": str(device), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    info.barrier()


def load_checkpoint(run, cfg, model: torch.nn.Module, opt: torch.optim.Optimizer, named_params: NamedParams,
                    tables: Sequence[RowTable], gen: torch.Generator, info: DistInfo) -> Resumed:
    """Restore everything save_checkpoint wrote into the given (freshly built) pieces. Log lines written
    after the checkpoint are dropped (their work is lost)."""
    path = run.trainer
    tensors, meta = load_safetensors(path, "trainer checkpoint")
    if meta.get("format") != TRAINER_FORMAT:
        raise InputError(path, "is not a lolnerf trainer checkpoint")
    if meta.get("model_hash") != cfg.model_hash():
        raise InputError(path, "was written for a different model configuration than config.json")
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise InputError(path, "weights do not match the model configuration") from None
    for table in tables:
        table.load_state(tensors, path)
    restore_adam_state(opt, named_params, tensors, meta, path)
    step = int(meta.get("step", "0"))
    rng = tensors.get(f"rng.{info.rank}")
    if rng is not None and int(meta.get("world_size", "1")) == info.world:
        gen.set_state(rng)
    else:
        gen.manual_seed(cfg.train.seed * 1000 + 17 + info.rank + step)
    if info.main:
        trim_log(run.log, step)
    return Resumed(step, int(meta.get("bad_steps", "0")), float(meta.get("elapsed_s", "0")))


def trim_log(log: Path, step: int) -> None:
    """Drop the log lines of steps after `step` (rewritten atomically)."""
    recs = [r for r in read_log(log) if int(r.get("step", 0)) <= step]
    atomic_write_bytes(log, "".join(json.dumps(r) + "\n" for r in recs).encode())
