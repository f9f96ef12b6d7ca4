"""A table of per-image rows trained by sparse Adam, saved and restored by name: the latent table is
one; any other per-image parameter (e.g. a camera correction) is another `RowTable` with its own name.

Each rank keeps the rows of the images it owns (`owned`, global indices); a checkpoint gathers them into
[K, C] tensors in trainer.safetensors:

    <name>                  the rows, [K, C]
    <opt>.exp_avg           sparse Adam's first moments, [K, C]   (<opt> = opt_key, default "<name>_opt")
    <opt>.exp_avg_sq        its second moments, [K, C]
    <opt>.step              its step count, float64 [1]

The moments are absent before the first step."""

from __future__ import annotations

import torch

from .distributed import DistInfo, gather_rows
from .errors import InputError


class RowTable:
    def __init__(self, name: str, init: torch.Tensor, owned: torch.Tensor, lr: float, device: torch.device,
                 info: DistInfo, opt_key: str | None = None, what: str | None = None,
                 betas: tuple[float, float] = (0.9, 0.999)):
        """init: the whole table's starting rows [K, C]; owned: this rank's global row indices; lr: sparse
        Adam's learning rate before the schedule's factor (see `step`); what: how errors name the table;
        betas: sparse Adam's moment decays (a higher first one averages a noisy row's gradients over more visits)."""
        self.name = name
        self.opt_key = opt_key or f"{name}_opt"
        self.what = what or f"table '{name}'"
        self.total, self.width = int(init.shape[0]), int(init.shape[1])
        self.owned = owned
        self.info = info
        self.base_lr = lr
        self.emb = torch.nn.Embedding(owned.numel(), self.width, sparse=True).to(device)
        with torch.no_grad():
            self.emb.weight.copy_(init[owned].to(device))
        self.opt = torch.optim.SparseAdam(list(self.emb.parameters()), lr=lr, betas=betas)

    @property
    def weight(self) -> torch.Tensor:
        """This rank's rows [K_r, C] (local order: row i is image owned[i])."""
        return self.emb.weight

    def __call__(self, local: torch.Tensor) -> torch.Tensor:
        """Rows at local indices [R] -> [R, C], differentiable (sparse gradients)."""
        return self.emb(local)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def grad_finite(self) -> bool:
        """Whether this step's gradient rows are all finite (True when there is none)."""
        g = self.emb.weight.grad
        if g is None:
            return True
        return bool(torch.isfinite(g.coalesce().values() if g.is_sparse else g).all())

    def step(self, lr_factor: float = 1.0) -> None:
        for grp in self.opt.param_groups:
            grp["lr"] = self.base_lr * lr_factor
        self.opt.step()

    def gather(self) -> torch.Tensor:
        """The whole table [K, C] on the CPU (a collective under torch.distributed)."""
        return gather_rows(self.weight, self.owned, self.total, self.info)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The rows and the optimiser's state under this table's names, gathered (a collective)."""
        out = {self.name: self.gather()}
        st = self.opt.state.get(self.weight, {})
        if st:
            out[f"{self.opt_key}.exp_avg"] = gather_rows(st["exp_avg"], self.owned, self.total, self.info)
            out[f"{self.opt_key}.exp_avg_sq"] = gather_rows(st["exp_avg_sq"], self.owned, self.total, self.info)
            out[f"{self.opt_key}.step"] = torch.as_tensor(st["step"], dtype=torch.float64).reshape(1)
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], path, required: bool = True) -> bool:
        """Restore rows and optimiser state from a checkpoint's tensors (`path` names the file in errors).
        A table the file does not hold is an error when `required`, else it keeps its starting rows
        (returns whether it was found)."""
        rows = tensors.get(self.name)
        if rows is None and not required:
            return False
        expect = (self.total, self.width)
        if rows is None or tuple(rows.shape) != expect:
            got = "none" if rows is None else f"{list(rows.shape)}"
            raise InputError(path, f"{self.what} ('{self.name}', {got}) does not match the {self.total} training "
                                   f"images x {self.width}; was the dataset changed since the run started?")
        dev = self.weight.device
        with torch.no_grad():
            self.weight.copy_(rows[self.owned].to(dev))
        keys = [f"{self.opt_key}.{k}" for k in ("exp_avg", "exp_avg_sq", "step")]
        present = [k in tensors for k in keys]
        if any(present) and not all(present):
            missing = keys[present.index(False)]
            raise InputError(path, f"holds part of the optimiser state of {self.what} but not '{missing}'")
        if all(present):
            for k in keys[:2]:
                if tuple(tensors[k].shape) != expect:
                    raise InputError(path, f"optimiser state '{k}' is {list(tensors[k].shape)}, not {list(expect)}")
            self.opt.state[self.weight] = {"step": int(tensors[keys[2]].item()),
                                           "exp_avg": tensors[keys[0]][self.owned].to(dev),
                                           "exp_avg_sq": tensors[keys[1]][self.owned].to(dev)}
        return True
