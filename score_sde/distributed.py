"""Running on several processes (torchrun): this process's rank, its device, its shard of a batch.

Every random draw that makes a training batch (toy points, flips, dequantization noise, the losses' times
and noise) is made for the whole global batch, from a generator in the same state on every rank, and each
rank keeps its own items, rank, rank + world_size, ... (`Shard.of`). So a run on any number of processes
draws exactly what a one-process run with the same global batch and seed draws, and DistributedDataParallel,
which averages the ranks' gradients, takes the same steps up to float summation order.

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is the one-process case and no
process group is made.
"""
import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's items of a global batch: rank, rank + world_size, rank + 2·world_size, ..."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size={self.world_size})")

    def global_size(self, local_size: int) -> int:
        """The global batch size whose shard has local_size items (exact when the shards are equal)."""
        return local_size * self.world_size

    def of(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's items of a global batch x [world_size·B, ...] -> [B, ...]."""
        return x[self.rank::self.world_size]


ONE_PROCESS = Shard()  # the whole batch: the default of every function that takes a shard


def init() -> Shard:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs) when WORLD_SIZE > 1; the process's Shard.

    Raises:
        ValueError: torchrun's variables are inconsistent.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        # A rank may sample or write checkpoints while the others wait at the next collective.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=datetime.timedelta(hours=2))
    return shard()


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard() -> Shard:
    """The current process's Shard (rank 0 of 1 outside a process group)."""
    if not dist.is_initialized():
        return ONE_PROCESS
    return Shard(dist.get_rank(), dist.get_world_size())


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def device() -> torch.device:
    """This process's device: its local GPU (LOCAL_RANK under torchrun) if there is one, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return shard().rank == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather(x: Any) -> list[Any]:
    """[x of rank 0, x of rank 1, ...] on every rank (any picklable x, e.g. CPU tensors of unequal sizes)."""
    if not dist.is_initialized():
        return [x]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, x)
    return gathered


def interleave(parts: list[torch.Tensor]) -> torch.Tensor:
    """Undo the sharding of Shard.of: the ranks' parts [B_r, ...] -> the global batch in its order."""
    world_size = len(parts)
    total = sum(len(p) for p in parts)
    out = parts[0].new_empty((total, *parts[0].shape[1:]))
    for rank, part in enumerate(parts):
        out[rank::world_size] = part
    return out


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor (each rank's own value outside a process group)."""
    if not dist.is_initialized():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()
