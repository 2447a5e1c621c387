"""Data-parallel training across processes: ``torch.distributed``, started by ``torchrun``.

:func:`flmlib.train.train` calls :func:`setup` first. Started normally (no ``WORLD_SIZE`` in the environment, or
``WORLD_SIZE=1``) it gets a one-process :class:`Context` and trains exactly as before. Started by ``torchrun`` it
joins the process group (gloo on CPU, NCCL on GPUs), and then:

* every rank draws the same shuffled order and takes its slice of each global batch (``batch_size / world_size``
  faces), so the global batch is the one a single process would use;
* the model is wrapped in ``DistributedDataParallel``, which averages the gradients of the ranks' mean losses: the
  step equals the single-process step on the global batch, up to float summation order;
* each rank augments its own slice with its own seeded stream (rank 0's is the single-process stream), so with
  augmentation on, the draws differ from a single-process run (the same distribution, not the same numbers);
* every rank validates on the whole validation split (same weights, same numbers), and only rank 0 writes the
  checkpoint, the model and the DVCLive logs. A checkpoint keeps every rank's augmentation stream, so a resume with
  the same number of processes continues exactly.

Batch-norm layers normalise with each rank's local batch on CPU (PyTorch's SyncBatchNorm needs GPUs); on GPUs they
are converted to SyncBatchNorm, so their statistics are those of the global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints progress."""
        return self.rank == 0


def setup(device_type: str) -> Context:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), or return the one-process context without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    import torch.distributed as dist

    initialised_here = not dist.is_initialized()
    if initialised_here:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")), initialised_here=initialised_here)


def local_batch_size(ctx: Context, global_batch: int) -> int:
    """Faces per rank and step; the global batch must split evenly so the averaged gradient is the global one."""
    if global_batch % ctx.world_size:
        raise ValueError(f"batch_size={global_batch} does not split over {ctx.world_size} processes; choose a "
                         f"multiple of {ctx.world_size}")
    return global_batch // ctx.world_size


def local_device(ctx: Context, device: torch.device) -> torch.device:
    """This rank's GPU (``cuda:<local_rank>``) when training on GPUs, else ``device`` unchanged."""
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device


def wrap(ctx: Context, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` itself in one process; ``DistributedDataParallel(model)`` (SyncBatchNorm on GPUs) under torchrun."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def all_sum(ctx: Context, values: list[float]) -> list[float]:
    """Sum each value over the ranks (the epoch's loss totals); identity in one process."""
    if not ctx.enabled:
        return values
    import torch.distributed as dist

    # NCCL reduces GPU tensors only; gloo takes CPU tensors.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather(ctx: Context, obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a collective: all ranks must call it); ``[obj]`` in one process."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def teardown(ctx: Context) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if ctx.enabled and ctx.initialised_here:
        import torch.distributed as dist

        dist.destroy_process_group()
