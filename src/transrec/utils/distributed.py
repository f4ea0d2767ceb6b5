"""The process group a run is part of (``torchrun``), and the two collectives evaluation needs.

Evaluation is sharded by *chunks*: chunk ``i`` of the items (or of the users) is computed by rank
``i % world_size``, with the same chunk boundaries whatever the number of processes. Each item vector
and each user's rank is therefore computed in exactly the same batch as in a single process, and the
results are combined exactly: item tables by summing tables that are zero outside each rank's chunks,
ranking metrics by summing histograms of ranks (integers). So a checkpoint's metrics are identical with
1 and N processes, with no padded duplicate users.

    ctx = DistributedContext.current()      # rank 0 of 1 outside torchrun
    mine = ctx.shard(range(n_chunks))       # this rank's chunk indices
    ctx.all_reduce_sum(tensor)              # in place; a no-op in a single process
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> DistributedContext:
        """The initialised default process group, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """The elements ``rank, rank + world_size, ...`` of ``items``."""
        return list(items[self.rank :: self.world_size])

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes, in place (a no-op in a single process)."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def join_process_group(device: str) -> tuple[DistributedContext, bool]:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment),
    unless one is already initialised. Returns the context and whether this call created the group
    (then the caller destroys it at the end). NCCL for CUDA devices, gloo otherwise."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext.current(), False
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(), False
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    dist.init_process_group("nccl" if cuda else "gloo")
    return DistributedContext.current(), True


def local_device(device: torch.device, ctx: DistributedContext) -> torch.device:
    """Under ``torchrun`` a CUDA device without an index becomes ``cuda:$LOCAL_RANK``."""
    if ctx.world_size > 1 and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", ctx.rank)))
    return device


class _GatherRows(torch.autograd.Function):
    """all_gather of ``[n_r, ...]`` tensors of the same trailing shape; backward sums the gradient over
    the processes and keeps this process's rows (every process's loss depends on every gathered row).
    Uses all_gather and all_reduce only, which gloo and NCCL both provide."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_rows(tensor: torch.Tensor, context: DistributedContext) -> tuple[torch.Tensor, int]:
    """The rows of ``tensor`` from every process, in rank order (differentiable), and the offset of
    this process's rows in the result. Processes may hold different numbers of rows."""
    if context.world_size == 1:
        return tensor, 0
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(context.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    return _GatherRows.apply(tensor, counts, context.rank), sum(counts[: context.rank])
