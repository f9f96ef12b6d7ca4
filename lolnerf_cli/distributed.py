"""torch.distributed for training (torchrun): which process this is, and gathering per-image rows.

Rank r owns the images k with k % world_size == r (see Trainer); tables of per-image rows are
gathered on every rank by `gather_rows` when a checkpoint is written."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def gather_rows(local: torch.Tensor, owned: torch.Tensor, total: int, info: DistInfo) -> torch.Tensor:
    """Assemble a [K, ...] table (on the CPU) from every rank's rows `local` [K_r, ...] at global indices
    `owned`. A collective: every rank calls it."""
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


def gather_all(t: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor t, in rank order (a collective)."""
    if info.world == 1:
        return [t]
    bufs = [torch.zeros_like(t) for _ in range(info.world)]
    dist.all_gather(bufs, t)
    return bufs
