"""Training on several processes with PyTorch's DistributedDataParallel, started by ``torchrun``.

    torchrun --nproc-per-node 4 -m nclab train --profile full        # 4 GPUs of one machine
    torchrun --nproc-per-node 2 -m nclab train --regime A            # 2 processes on the CPU (gloo)
    nclab train --profile full                                       # the same runs in one process

``torchrun`` starts one process per GPU and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`setup` (called by ``nclab.train.load_or_train``, so also inside the kernels of
the notebooks that ``nclab train`` executes) joins the process group from them: NCCL on GPUs, gloo on the
CPU. Without those variables nothing changes: one process, no group.

What each process does (``nclab.train.fit``): it reads its own shard of every global batch
(``GpuLoader(rank=…, world_size=…)``), DDP averages the gradients, and the loss and the hooks see the whole
batch, gathered from every rank (:func:`gather`), so a method whose loss couples the samples of a batch
(an entropy regulariser, a contrastive loss, class centres) learns what it learns in one process with the
same global batch. On GPUs BatchNorm is synchronised (``SyncBatchNorm``: statistics of the global batch);
on the CPU PyTorch has no SyncBatchNorm, so each process normalises its shard with its own statistics and
DDP copies rank 0's running statistics to the others at every step. Only rank 0 writes checkpoints
(atomically) and shows progress; every rank resumes from the same ``last.pt``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .config import get_device

__all__ = [
    "setup",
    "launched",
    "active",
    "rank",
    "world_size",
    "is_main",
    "say",
    "gather",
    "barrier",
    "from_main",
    "share_weights",
    "notebook_rendezvous",
]

INIT_VARIABLE = "NCLAB_DIST_INIT"  # an init_method URL that replaces torchrun's store (a notebook's kernels)


def setup(device: str | torch.device | None = None) -> torch.device:
    """Join the process group that ``torchrun``'s variables describe, once per process; return ``device``,
    made this process's GPU (``cuda:$LOCAL_RANK``, ``config.get_device``) when it is a plain ``cuda``.
    Without ``WORLD_SIZE`` > 1, or with a group already joined, only the device is returned."""
    device = get_device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if launched() and not dist.is_initialized():
        needed = ("RANK", "MASTER_ADDR", "MASTER_PORT") + (("LOCAL_RANK",) if device.type == "cuda" else ())
        missing = [name for name in needed if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set: start the "
                f"processes with torchrun (torchrun --nproc-per-node N -m nclab train …), or unset WORLD_SIZE."
            )
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            init_method=os.environ.get(INIT_VARIABLE, "env://"),
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            device_id=device if device.type == "cuda" else None,
        )
    return device


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launched() -> bool:
    """True in a process that torchrun started among several (before or after it joined the group)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's rank: in the group, else torchrun's ``RANK`` (before joining), else 0."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that prints and writes files."""
    return rank() == 0


def say(*args, **kwargs) -> None:
    """``print`` on rank 0 only (in a single process, always): one message per run, not one per process."""
    if is_main():
        print(*args, **kwargs)


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if active():
        dist.barrier()


class _Gather(torch.autograd.Function):
    """All ranks' (B, …) tensors stacked in rank order; the backward pass gives each rank the sum over the
    ranks of the gradient of its own rows (every rank computes the same loss of the whole batch, and DDP
    then divides the parameters' gradients by the number of ranks)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = slice(dist.get_rank() * len(tensor), (dist.get_rank() + 1) * len(tensor))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # autograd may share ``grad`` with another branch
        dist.all_reduce(grad)
        return grad[ctx.rows]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """The rows of ``tensor`` (B, …) from every rank, in rank order (B × world size, …), differentiable
    with respect to this rank's rows; ``tensor`` itself in a single process. Every rank must pass the same
    shape."""
    if not active():
        return tensor
    if tensor.requires_grad:
        return _Gather.apply(tensor)
    if tensor.dtype == torch.bool:  # gloo gathers no booleans
        return gather(tensor.to(torch.uint8)).bool()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def from_main(value):
    """Rank 0's ``value`` on every rank (``value`` itself in a single process): a decision every rank must
    share, such as how many epochs a checkpoint holds, taken where the files are written."""
    if not active():
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def share_weights(model: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (nothing in a single process)."""
    if active():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def notebook_rendezvous(index: int) -> str:
    """Where the kernels executing the ``index``-th notebook of ``nclab train`` (one per rank) meet: a port of
    their own above torchrun's, ``MASTER_PORT + 1 + index`` (each notebook's kernels are new processes, and
    torchrun's store has already seen a group). Rank 0's kernel serves it: the kernels must not use
    torchrun's agent store (``TORCHELASTIC_USE_AGENT_STORE``, which ``prepare`` turns off for them)."""
    return f"tcp://{os.environ['MASTER_ADDR']}:{int(os.environ['MASTER_PORT']) + 1 + index}"
