"""The one training loop every method plugs into: :func:`fit`, with its schedule, optimiser and precision.

:func:`fit` trains, checkpointing every epoch atomically (model, optimiser, schedule, gradient scaler, hook
states, RNG states, history); calling it again resumes where it stopped. A method never forks the loop: it
brings a head (through its model builder), a loss ``(out, y) → scalar`` (``nclab.losses``) and/or
:class:`~nclab.train.contract.Hook` objects that act after ``backward``, after the optimiser step and at
the end of an epoch, with a state that is checkpointed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..checkpoints import FORMAT, CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..data import GpuLoader
from ..losses import BatchOutput
from .contract import Hook, TrainConfig

__all__ = ["PROGRESS", "lr_factor", "make_optimizer", "amp_dtype", "loss_and_accuracy", "fit", "with_loss"]

# NCLAB_PROGRESS=final: no live progress bars, one line per run when its training ends. A static page (the
# book, executed by nclab.course.prepare.execute_notebook) keeps a live bar's widget as a blank block.
PROGRESS = "NCLAB_PROGRESS"


class _FinalLine:
    """tqdm's interface for :func:`fit` on a static page: iterates silently, then prints one line."""

    def __init__(self, iterable, desc: str, disable: bool, initial: int, total: int, unit: str):
        self.iterable, self.desc, self.disable, self.initial, self.total, self.unit = (
            iterable, desc, disable, initial, total, unit
        )  # fmt: skip
        self.postfix: dict[str, str] = {}

    def set_postfix(self, **values: str) -> None:
        self.postfix = values

    def __iter__(self):
        began, done = time.perf_counter(), self.initial
        for item in self.iterable:
            yield item
            done += 1
        if not self.disable and done > self.initial:
            values = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
            print(f"{self.desc}: {done}/{self.total} {self.unit}s, {done - self.initial} trained in "
                  f"{time.perf_counter() - began:.0f} s ({values})", flush=True)  # fmt: skip


def lr_factor(config: TrainConfig, steps_per_epoch: int):
    """The learning-rate multiplier as a function of the optimisation step (for LambdaLR)."""
    total, warmup = config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch)
    milestones = [int(m * total) for m in config.milestones]  # fractions of all steps (350 epochs: ≈116, 233)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
        return config.gamma ** sum(step >= m for m in milestones)

    return factor


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters (frozen ones are left out).

    Weight decay on every parameter (``decay_norm_and_bias=True``, the sources' setting), or on the
    weight matrices and convolution kernels only (not on BatchNorm parameters or biases).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.decay_norm_and_bias:
        groups = [{"params": trainable, "weight_decay": config.weight_decay}]
    else:
        groups = [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (T4, with a GradScaler); None (off) on the CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        native_bf16 = torch.cuda.get_device_capability(device)[0] >= 8  # Ampere+; a T4 (7.5) only emulates it
        return torch.bfloat16 if native_bf16 else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@torch.inference_mode()
def loss_and_accuracy(model: nn.Module, loader: GpuLoader) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` over ``loader``, in eval mode (the test metrics of a run)."""
    was_training = model.training
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y, _ in loader:
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    model.train(was_training)
    return loss / count, correct / count


class _FeaturesAndLogits(nn.Module):
    """(features h, logits) of one batch, the encoder once then the head, in one forward call: what
    DistributedDataParallel wraps (it synchronises the gradients of what its forward computes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model.features(x)
        return h, self.model.head(h)


def _whole_batch(h, logits, y, extras, x) -> tuple:
    """Under DDP, this rank's shard of the batch completed with the other ranks' (``distributed.gather``):
    the loss and the hooks see the global batch, as in a single process."""
    extras = {key: distributed.gather(values) for key, values in extras.items()}
    return distributed.gather(h), distributed.gather(logits), distributed.gather(y), extras, distributed.gather(x)


def fit(
    model: nn.Module,
    config: TrainConfig,
    train_loader: GpuLoader,
    test_loader: GpuLoader | None = None,
    run_dir: str | Path | None = None,
    *,
    loss: Callable | None = None,
    hooks: list[Hook] | None = None,
    progress: bool = True,
    until: int | None = None,
    sync_batchnorm: bool = True,
) -> list[dict]:
    """Train ``model`` as ``config`` says; return the history (one dict of metrics per epoch).

    ``loss`` and ``hooks`` default to what the config's method builds (``config.method.training(config,
    train_loader.data)``); pass them to share them with the caller (``load_or_train`` does), or to
    experiment, knowing that their hyperparameters are then not in the run key. A loss that is also a
    :class:`Hook` runs and is checkpointed as one. The loss is computed outside autocast (in float32 for
    float32 inputs) from the batch's :class:`BatchOutput`. With ``run_dir``, every epoch ends with an atomic
    checkpoint ``last.pt`` (and ``epoch_XXXX.pt`` weights at the snapshot epochs); if ``last.pt`` is there
    when ``fit`` starts, training resumes after its epoch, hooks' states included, giving the same weights
    as an uninterrupted run. ``until`` stops after that epoch (of ``config.epochs``, whose schedule is
    kept): a later call resumes from there.

    Under DistributedDataParallel (``torchrun``, see ``nclab.distributed``) ``train_loader`` is this rank's
    shard (``GpuLoader(rank=…, world_size=…)``): the model is wrapped in DDP, the loss and the hooks see
    the global batch gathered from every rank, BatchNorm becomes SyncBatchNorm on GPUs (unless
    ``sync_batchnorm=False``; the model passed in is changed in place), only rank 0 writes checkpoints and
    shows progress, and every rank ends ``fit`` together.
    """
    device, sharded = train_loader.device, train_loader.world_size > 1
    _check_arguments(config, train_loader, until)
    _place(model, config, device, sync_batchnorm=sharded and sync_batchnorm)
    loss, hooks = _loss_and_hooks(config, train_loader, loss, hooks)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, len(train_loader)))
    autocast_dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    history, start = _restore(last, config, model, optimizer, scheduler, scaler, hooks, device)
    forward = _forward(model, config, device, sharded)
    progress = progress and distributed.is_main()

    final_only = os.environ.get(PROGRESS, "") == "final"
    bar = _FinalLine if final_only else tqdm
    epochs = bar(
        range(start, (until or config.epochs) + 1),
        desc=f"{config.method.name} {config.regime}",
        disable=not progress,
        initial=start - 1,
        total=config.epochs,
        unit="epoch",
    )
    for epoch in epochs:
        model.train()
        train_loader.set_epoch(epoch)
        began, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for x, y, extras in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=final_only or not progress):
            with torch.autocast(device.type, autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                h, logits = forward(x)
            if sharded:
                h, logits, y, extras, x = _whole_batch(h, logits, y, extras, x)
            out = BatchOutput(h, logits, extras, model, x)
            value = loss(out, y)  # outside autocast: a loss's own matmuls and norms are not cast down
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            if hooks:
                scaler.unscale_(optimizer)  # hooks see (and change) the true gradients
                for hook in hooks:
                    hook.after_backward(out, y)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for hook in hooks:
                hook.after_step(out, y)
            if any(hook.restart_optimizer() for hook in hooks):
                optimizer.state.clear()  # moments start again from zero at the next step
            loss_sum += value.detach() * len(y)  # stays on the device: no sync per step
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the steps' time, not the time to queue them
        seconds = time.perf_counter() - began
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": loss_sum.item() / seen,
            "train_acc": correct.item() / seen,
            "seconds": seconds,
            "images_per_s": seen / seconds,
        }
        for hook in hooks:
            record.update(hook.end_epoch(epoch, model, train_loader) or {})
        if test_loader is not None:
            record["test_loss"], record["test_acc"] = loss_and_accuracy(model, test_loader)
        history.append(record)
        shown = {"loss": f"{record['train_loss']:.3f}", "acc": f"{record['train_acc']:.3f}"}
        if "test_acc" in record:  # no test set, no test column (never a "nan" for a value that is absent)
            shown["test"] = f"{record['test_acc']:.3f}"
        epochs.set_postfix(**shown, lr=f"{record['lr']:.3g}")
        if last is not None and distributed.is_main():
            _save(last, config, epoch, model, optimizer, scheduler, scaler, hooks, history, device)
    distributed.barrier()  # no rank goes on (to read a checkpoint) before rank 0 has written it
    return history


def _check_arguments(config: TrainConfig, train_loader: GpuLoader, until: int | None) -> None:
    """ValueError for a loader split over another number of processes than are training, or an ``until``
    outside the run."""
    if train_loader.world_size > 1 and train_loader.world_size != distributed.world_size():
        raise ValueError(
            f"train_loader is split over {train_loader.world_size} processes but {distributed.world_size()} "
            f"are training: build it with rank=distributed.rank(), world_size=distributed.world_size()."
        )
    if until is not None and not 1 <= until <= config.epochs:
        raise ValueError(f"until must lie in 1..{config.epochs} (the config's epochs), got {until}")


def _place(model: nn.Module, config: TrainConfig, device: torch.device, sync_batchnorm: bool) -> None:
    """``model`` on ``device``: with SyncBatchNorm (a sharded run on GPUs) and channels-last memory on GPUs."""
    model.to(device)
    if sync_batchnorm and device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BatchNorm statistics of the global batch
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)


def _loss_and_hooks(config: TrainConfig, train_loader: GpuLoader, loss, hooks) -> tuple[Callable, list[Hook]]:
    """The loss and hooks given, or the config's method's for what is not given; the loss first among the
    hooks when it is a Hook itself."""
    if loss is None or hooks is None:
        method_loss, method_hooks = config.method.training(config, train_loader.data)
        loss = method_loss if loss is None else loss
        hooks = method_hooks if hooks is None else hooks
    return loss, with_loss(loss, hooks)


def _forward(model: nn.Module, config: TrainConfig, device: torch.device, sharded: bool) -> Callable:
    """What computes (features, logits) of a batch: the model, wrapped in DDP for a sharded run, compiled
    when the config asks."""
    net = _FeaturesAndLogits(model)
    if sharded:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(net) if config.compile else net


def _save(last: Path, config, epoch, model, optimizer, scheduler, scaler, hooks, history, device) -> None:
    """The epoch's checkpoints, atomically: ``last.pt`` (everything a resume needs) and, at a snapshot
    epoch, ``epoch_XXXX.pt`` (the weights)."""
    weights = {"format": FORMAT, "config": config.key(), "epoch": epoch, "model": model.state_dict()}
    if epoch in config.snapshot_epochs:
        save_checkpoint(weights, last.with_name(f"epoch_{epoch:04d}.pt"))
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "hooks": [hook.state_dict() for hook in hooks],
        "rng": rng_state(device),
        "history": history,
    }
    save_checkpoint({**weights, **state}, last)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process that is writing ``tmp`` (``<name>.<pid>.tmp``, ``save_checkpoint``) still runs on
    this machine: another job training the same run keeps its file."""
    try:
        os.kill(int(tmp.suffixes[-2].lstrip(".")), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def with_loss(loss: Callable, hooks: list[Hook]) -> list[Hook]:
    """The hooks of a run: ``hooks``, preceded by the loss when the loss is a Hook itself."""
    hooks = list(hooks)
    return [loss, *hooks] if isinstance(loss, Hook) and not any(hook is loss for hook in hooks) else hooks


def _to_device(state, device: torch.device):
    """``state`` (tensors in dicts, lists and tuples) with every tensor moved to ``device``."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {key: _to_device(value, device) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_device(value, device) for value in state)
    return state


def _restore(last: Path | None, config, model, optimizer, scheduler, scaler, hooks, device) -> tuple[list[dict], int]:
    """(history, first epoch still to train): ([], 1) for a run without ``last.pt``, else :func:`_resume`.
    Rank 0 first removes the temporary files of writers that were stopped."""
    if last is not None and distributed.is_main():
        for stale in last.parent.glob("*.pt.*.tmp"):
            if not _writer_alive(stale):  # half-written by a process that was stopped
                stale.unlink(missing_ok=True)
    if last is None or not last.exists():
        return [], 1
    return _resume(last, config, model, optimizer, scheduler, scaler, hooks, device)


def _resume(last: Path, config, model, optimizer, scheduler, scaler, hooks, device) -> tuple[list[dict], int]:
    """Restore everything ``fit`` saved in ``last``; return (history, first epoch still to train).

    Hook states come back on the training ``device``; the RNG states stay on the CPU, where
    ``torch.set_rng_state`` wants them.
    """
    state = load_checkpoint(last)  # on the CPU, where torch.set_rng_state wants it
    if state["config"] != config.key():
        raise CheckpointError(f"{last} was written by another configuration; use another run_dir.")
    if len(state["hooks"]) != len(hooks):
        raise CheckpointError(
            f"{last} was written with {len(state['hooks'])} hook(s), this run has {len(hooks)}: use another run_dir."
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] or not scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    else:  # written with AMP off or bf16, resumed with fp16 (a Colab session back on another GPU)
        print(
            f"Note: {last.name} was written without fp16 loss scaling; resuming with fp16, so the gradient "
            f"scaler starts afresh."
        )
    for hook, hook_state in zip(hooks, state["hooks"]):
        hook.load_state_dict(_to_device(hook_state, device))
    set_rng_state(state["rng"], device)
    return state["history"], state["epoch"] + 1
