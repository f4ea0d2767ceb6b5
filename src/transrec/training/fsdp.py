"""Fully sharded training (``TrainConfig.parallel: fsdp``) with FSDP2 (``torch.distributed.fsdp``).

Under ``torchrun`` each process then holds 1/N of every parameter, gradient and AdamW moment instead of a
whole replica. The FSDP units, each gathered whole for its forward and its backward and freed after, are
the item encoder and the user encoder; the few remaining parameters (the NID head) belong to the root.
Finer units (one per backbone block) would lower the peak further, but the ``mom`` item encoder routes a
batch's items to the text or the image backbone, so a block may run in one process and not in another,
and FSDP needs every process to run the same units in the same order.

What the rest of the trainer relies on:
- an objective reaches the item encoder through its forward (``model.encode_items``) or ``encode``, and
  the user encoder through its forward (``model.user_states``), equally often in every process; a
  parameter that a process leaves unused gets a zero gradient (the counterpart of DDP's zero-weighted
  touch, which cannot work on sharded parameters);
- ``full_parameters(root)`` makes every parameter whole in every process for a while: evaluation, which
  shares chunks out unevenly over the processes, runs the unchanged model inside it;
- ``whole`` / ``sharded_like`` move single tensors between the two forms, so that checkpoints hold whole
  tensors in the usual format (``training.checkpoint``), whatever trained them.

    root = shard(step, model, device)       # step: the module whose forward gives a batch's loss
    with full_parameters(root):
        metrics = evaluate_model(model, ...)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor, distribute_tensor


class ShardedRoot(nn.Module):
    """The root FSDP module: its forward is ``step``'s (a batch's loss). ``unshard_units`` is registered as
    a forward method too, so FSDP is always initialised from this root, whatever runs first."""

    def __init__(self, step: nn.Module, units: list[nn.Module]) -> None:
        super().__init__()
        self.step = step
        self.units = units  # a plain list: not registered twice as submodules

    def forward(self, batch: dict) -> torch.Tensor:
        return self.step(batch)

    def unshard_units(self) -> None:
        for unit in self.units:
            unit.unshard()


def shard(step: nn.Module, model: nn.Module, device: torch.device) -> ShardedRoot:
    """Shard ``model`` (a ``SequentialRecommender`` inside ``step``) in place over the default process group
    and return the root to train through: ``root(batch)`` gives the loss. Build the optimizer afterwards,
    from ``model.parameters()`` (which are then the local shards, as DTensors)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # FSDP places a CUDA mesh on the current device
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    units = [model.item_encoder, model.user_encoder]
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=True)
    # PMMRec's objective calls the multimodal encoder's ``encode`` instead of its forward.
    if hasattr(model.item_encoder, "encode"):
        register_fsdp_forward_method(model.item_encoder, "encode")
    root = ShardedRoot(step, units)
    fully_shard(root, mesh=mesh, reshard_after_forward=False)  # needed again at once by the backward
    register_fsdp_forward_method(root, "unshard_units")
    root.set_reduce_scatter_unused_params(True)
    return root


@contextlib.contextmanager
def full_parameters(module: nn.Module) -> Iterator[None]:
    """Within the context every parameter under the root ``module`` is whole in every process, and the units'
    forwards communicate nothing, so processes may run different numbers of them (sharded evaluation).
    Every process must enter it (it gathers the shards). Anything but a ``ShardedRoot``: no-op.

    Weights changed within the context are lost when it ends (the shards are kept); load weights with
    ``training.checkpoint.load_model_state`` outside it."""
    if not isinstance(module, FSDPModule):
        yield
        return
    units = [m for m in module.modules() if isinstance(m, FSDPModule) and m is not module]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        module.unshard_units()
        yield
    finally:
        # Reshards every unit and forgets the forwards run meanwhile, which FSDP would otherwise replay
        # (differently in each process) to prefetch in the next backward.
        module.reset_iter_state()
        for unit in units:
            unit.set_reshard_after_forward(True, recurse=False)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor (DTensor) gathered whole, in every process (all must call it); others as they are."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def sharded_like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``tensor`` (whole, the same in every process) held as ``reference`` is: this process's shard if
    ``reference`` is a DTensor of the same shape, else ``tensor`` itself. No communication."""
    if not isinstance(reference, DTensor) or tensor.shape != reference.shape:
        return tensor
    local = tensor.to(reference.device)
    return distribute_tensor(local, reference.device_mesh, reference.placements, src_data_rank=None)
