"""Multi-process training under torchrun (DistributedDataParallel): process group, DDP wrapping,
cross-rank reductions."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from colorgan.device import resolve_device
from colorgan.errors import ColorganError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a (possibly one-process) job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False  # launched by torchrun, with a process group

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, samples and checkpoints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher setting its variables) started this process."""
    return all(key in os.environ for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def init(device_name: str) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) or run alone; pick the device."""
    if not launched_by_torchrun():
        return Dist(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    wants_cuda = device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if wants_cuda and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ColorganError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                f"lower --nproc_per_node"
            )
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    elif device_name in ("auto", "cpu"):
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise ColorganError(f"train.device={device_name} is not available under torchrun; use auto")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(rank, local_rank, world_size, True), device


def shutdown(info: Dist) -> None:
    """Leave the process group, if this process joined one."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def leave(code: int) -> NoReturn:
    """End a torchrun rank now with exit status `code`, its output flushed, without the
    interpreter's teardown: there gloo's threads aborted a rank now and then after all its work
    was done and written ("terminate called without an active exception", SIGABRT: 5 of 36
    two-rank CPU colorize runs, and before #32 too), which torchrun reports as a failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def wrap(module: nn.Module, info: Dist, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module` when distributed; `module` itself otherwise."""
    if not info.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # broadcast_buffers=False: DDP would otherwise overwrite BatchNorm's running statistics in
    # place before every forward, and the discriminator runs twice (real, fake) before its
    # backward, whose saved tensors then fail autograd's version check on CUDA. Each rank keeps
    # its own running statistics (used only in eval mode); rank 0's are saved.
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def mean_over_ranks(values: torch.Tensor, info: Dist) -> torch.Tensor:
    """The element-wise mean of `values` over all ranks (a no-op alone)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world_size
    return values


def gather_counts(counts: list[int], info: Dist, device: torch.device) -> list[list[int]]:
    """Every rank's `counts` (the same length on each), rank 0's first; alone: [counts]."""
    if not info.enabled:
        return [counts]
    mine = torch.tensor(counts, dtype=torch.int64, device=device)
    every = [torch.zeros_like(mine) for _ in range(info.world_size)]
    dist.all_gather(every, mine)
    return [[int(v) for v in t.tolist()] for t in every]


def gather_objects(value: T, info: Dist) -> list[T]:
    """Every rank's `value` (anything picklable), in rank order, on every rank; alone: [value]."""
    if not info.enabled:
        return [value]
    every: list[T] = [value] * info.world_size
    dist.all_gather_object(every, value)
    return every


def any_rank(flag: bool, info: Dist, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any rank."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor)
    return bool(tensor.item() > 0)


def barrier(info: Dist) -> None:
    """Wait for every rank (a no-op alone)."""
    if info.enabled:
        dist.barrier()
