"""torchrun support: one process per GPU (or CPU process with gloo), rank 0 writes.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs as one process.
The data stay as tensors in memory on every rank; DistributedSampler hands each rank its
share of each epoch's shuffled order, so the ranks together see every image once.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; return this rank's device."""
    if world_size() <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not (dist.is_available() and dist.is_initialized()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def epoch_order(n: int, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """This rank's indices for one epoch: a seeded shuffle, split across ranks when distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return torch.randperm(n, generator=generator)
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=dist.get_world_size(), rank=dist.get_rank(), shuffle=True,
                                 seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    sampler.set_epoch(epoch)
    return torch.tensor(list(iter(sampler)))


def from_main(value: float, device: torch.device) -> float:
    """Rank 0's value on every rank, so that decisions taken on it (best epoch, early stop) agree."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.item()
