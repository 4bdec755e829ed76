"""One readable training loop that every method plugs into, and the run cache.

:class:`TrainConfig` holds every hyperparameter of a run, its method included (``nclab.methods.Method``: a
name, its own hyperparameters, and what it brings to the loop: a model builder, a loss, hooks);
:func:`regime` gives the two regimes of the practical-work report. :func:`fit` trains, checkpointing every
epoch atomically (model, optimiser, schedule, gradient scaler, hook states, RNG states, history); calling
it again resumes where it stopped. :func:`load_or_train` keys the checkpoint folder by the config and the
data, so a later notebook reuses the run of notebook 01, or trains it, and says which.

A method never forks the loop: it brings a head (through its model builder), a loss ``(out, y) → scalar``
(``nclab.losses``) and/or ``nclab.methods.Hook`` objects that act after ``backward``, after the optimiser
step and at the end of an epoch, with a state that is checkpointed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__, distributed, models
from .checkpoints import FORMAT, CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Profile, cache_dir, get_profile
from .data import GpuLoader, ImageSet, train_test_sets
from .losses import BatchOutput
from .methods import ERM, Hook, Method

__all__ = [
    "TrainConfig",
    "regime",
    "regime_data",
    "log_spaced_epochs",
    "terminal_phase",
    "lr_factor",
    "make_optimizer",
    "amp_dtype",
    "loss_and_accuracy",
    "fit",
    "Run",
    "run_directory",
    "load_or_train",
]


# ----------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a training run. Its key (all fields but the speed-only ones, the method's
    name and hyperparameters included) names the run's checkpoint folder.

    Weight decay applies to every parameter by default, BatchNorm's and the biases included, as in the
    source setups (Papyan et al.; the practical-work report); ``decay_norm_and_bias=False`` spares them.
    """

    regime: str = "A"  # a label: "A", "B" (seed report 002) or your own
    dataset: str = "cifar100"  # training data set (nclab.data.DATASETS)
    method: Method = ERM  # what the run trains: model builder, loss, hooks, hyperparameters
    width: int = 64  # ResNet-18 width: 64 standard, 16 in the smoke profile
    pretrained: bool = False  # start from torchvision's ImageNet weights (width 64 only)
    epochs: int = 350  # passes over the training set
    batch_size: int = 128  # images per SGD step
    augment: bool = True  # random crop (padding 4) and horizontal flip of training batches
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov off) or "adamw"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    weight_decay: float = 5e-4  # L2 for SGD, decoupled for AdamW
    decay_norm_and_bias: bool = True  # weight decay on BatchNorm parameters and biases too (the sources)
    schedule: str = "multistep"  # "multistep" or "cosine" (per step, after the warm-up)
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)  # multistep: fractions of training where lr ×= gamma
    gamma: float = 0.1  # multistep decay factor
    warmup_epochs: float = 0.0  # linear warm-up from ~0 to lr, in epochs
    label_smoothing: float = 0.0  # cross-entropy label smoothing (the default loss)
    snapshot_epochs: tuple[int, ...] = ()  # epochs whose weights are kept for later notebooks
    seed: int = 0  # model initialisation and data order
    amp: str = "auto"  # "auto" (bf16 / fp16+GradScaler on GPU, off on CPU), "bf16", "fp16", "off"
    channels_last: bool = True  # NHWC memory format on the GPU (ignored on the CPU)
    compile: bool = False  # torch.compile the forward pass (GPU; first epoch slower)

    SPEED_ONLY = ("amp", "channels_last", "compile")  # fields that do not change what is learned (much)

    def __post_init__(self):
        checks = [
            (isinstance(self.method, Method), f"method must be an nclab.methods.Method, not {self.method!r}"),
            (self.optimizer in ("sgd", "adamw"), f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}"),
            (
                self.schedule in ("multistep", "cosine"),
                f"schedule must be 'multistep' or 'cosine', not {self.schedule!r}",
            ),
            (self.amp in ("auto", "bf16", "fp16", "off"), f"amp must be auto/bf16/fp16/off, not {self.amp!r}"),
            (self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0, "epochs, batch_size and lr must be positive"),
            (all(0 < m < 1 for m in self.milestones), "milestones are fractions of training, in (0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must lie in [0, 1)"),
            (all(1 <= e <= self.epochs for e in self.snapshot_epochs), "snapshot_epochs must lie in 1..epochs"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def key(self) -> dict:
        """The fields that define what is learned (all but the speed-only ones), as plain values; the
        method as its name plus one ``method.<hyperparameter>`` entry per hyperparameter."""
        key = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "method":
                key["method"] = value.name
                key.update({f"method.{name}": param for name, param in value.params})
            elif f.name not in self.SPEED_ONLY:
                key[f.name] = value
        return key


def log_spaced_epochs(epochs: int, count: int) -> tuple[int, ...]:
    """About ``count`` distinct epochs from 1 to ``epochs``, log-spaced (NC happens late: keep early and late)."""
    return tuple(sorted({int(round(e)) for e in np.geomspace(1, epochs, max(count, 1))} | {epochs}))


def terminal_phase(history: list[dict]) -> int | None:
    """The epoch at which the terminal phase of training starts in ``history`` (``Run.history``): the first
    epoch from which the training accuracy stays at 100 % to the end; None if the last epoch is below it.

    The accuracy is the one the history records, averaged over the epoch's batches in train mode (augmented
    when the run augments, so a run with augmentation may never reach 100 % although it fits its clean
    training set)."""
    start = None
    for record in history:
        start = (start or record["epoch"]) if record["train_acc"] >= 1.0 else None
    return start


def regime(name: str, profile: Profile | str | None = None, **overrides) -> TrainConfig:
    """Regime "A" or "B" of the practical-work report, at the scale of ``profile``.

    A (Papyan et al.): SGD lr 0.1, momentum 0.9, weight decay 5e-4, lr × 0.1 at 1/3 and 2/3 of training.
    B: SGD lr 0.01, cosine schedule, from ImageNet weights (only width 64 has them: the smoke profile
    trains B from scratch). Augmentation as the profile says (off in ``smoke``, so that its runs reach the
    terminal phase). ``overrides`` replace any field (``method=…`` included).
    """
    profile = get_profile(profile)
    common = dict(
        width=profile.width,
        epochs=profile.epochs,
        batch_size=profile.batch_size,
        augment=profile.augment,
        snapshot_epochs=log_spaced_epochs(profile.epochs, profile.snapshots),
    )
    regimes = {
        "A": dict(lr=0.1, schedule="multistep"),
        "B": dict(lr=0.01, schedule="cosine", pretrained=profile.width == 64),
    }
    if name.upper() not in regimes:
        raise ValueError(f"Unknown regime {name!r}: 'A' or 'B' (or build a TrainConfig yourself).")
    if "epochs" in overrides and "snapshot_epochs" not in overrides:
        overrides["snapshot_epochs"] = log_spaced_epochs(overrides["epochs"], profile.snapshots)
    return TrainConfig(regime=name.upper(), **{**common, **regimes[name.upper()], **overrides})


def regime_data(profile: Profile | str | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of CIFAR-100 as regimes A and B see them at the scale of ``profile``: its
    ``regime_train_size`` training images (1,000 in ``smoke``, so that 20 epochs reach the terminal phase;
    the whole set in ``quick`` and ``full``) and its test images. Notebooks 01–04 use these sets."""
    profile = get_profile(profile)
    if profile.regime_train_size is not None:
        profile = replace(profile, train_size=profile.regime_train_size)
    return train_test_sets("cifar100", profile)


# ----------------------------------------------------------------------------------------------------
# Schedule, optimiser, precision, evaluation


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


# ----------------------------------------------------------------------------------------------------
# The loop


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
    device = train_loader.device
    sharded = train_loader.world_size > 1
    if sharded and train_loader.world_size != distributed.world_size():
        raise ValueError(
            f"train_loader is split over {train_loader.world_size} processes but {distributed.world_size()} "
            f"are training: build it with rank=distributed.rank(), world_size=distributed.world_size()."
        )
    if until is not None and not 1 <= until <= config.epochs:
        raise ValueError(f"until must lie in 1..{config.epochs} (the config's epochs), got {until}")
    model.to(device)
    if sharded and sync_batchnorm and device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # BatchNorm statistics of the global batch
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    if loss is None or hooks is None:
        method_loss, method_hooks = config.method.training(config, train_loader.data)
        loss = method_loss if loss is None else loss
        hooks = method_hooks if hooks is None else hooks
    hooks = _with_loss(loss, hooks)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, len(train_loader)))
    autocast_dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    history, start = [], 1
    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    if last is not None and distributed.is_main():
        for stale in last.parent.glob("*.pt.*.tmp"):
            if not _writer_alive(stale):  # half-written by a process that was stopped
                stale.unlink(missing_ok=True)
    if last is not None and last.exists():
        history, start = _resume(last, config, model, optimizer, scheduler, scaler, hooks, device)
    net = _FeaturesAndLogits(model)
    if sharded:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    forward = torch.compile(net) if config.compile else net
    progress = progress and distributed.is_main()

    epochs = tqdm(
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
        for x, y, extras in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=not progress):
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
        epochs.set_postfix(
            loss=f"{record['train_loss']:.3f}",
            acc=f"{record['train_acc']:.3f}",
            test=f"{record.get('test_acc', float('nan')):.3f}",
            lr=f"{record['lr']:.3g}",
        )
        if last is not None and distributed.is_main():
            weights = {"format": FORMAT, "config": config.key(), "epoch": epoch, "model": model.state_dict()}
            if epoch in config.snapshot_epochs:
                save_checkpoint(weights, last.with_name(f"epoch_{epoch:04d}.pt"))
            save_checkpoint(
                {
                    **weights,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "hooks": [hook.state_dict() for hook in hooks],
                    "rng": rng_state(device),
                    "history": history,
                },
                last,
            )
    distributed.barrier()  # no rank goes on (to read a checkpoint) before rank 0 has written it
    return history


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


def _with_loss(loss: Callable, hooks: list[Hook]) -> list[Hook]:
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


# ----------------------------------------------------------------------------------------------------
# The run cache


def run_directory(
    config: TrainConfig, train_set: ImageSet, root: str | Path | None = None, max_steps: int | None = None
) -> Path:
    """The folder of the run defined by ``config`` on ``train_set``:
    ``<cache>/runs/<dataset>-<method>-<regime>-w<width>-<hash of the config key, the data and nclab's version>``
    (and of ``max_steps``, the step limit of a dry run, when there is one)."""
    data = {
        "name": train_set.name,
        "size": len(train_set),
        "standin": train_set.standin,
        "content": train_set.fingerprint,
    }
    key = {"config": config.key(), "data": data, "nclab": __version__}
    key = json.dumps(key if max_steps is None else {**key, "max_steps": max_steps}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    name = f"{config.dataset}-{config.method.name}-{config.regime}-w{config.width}-{digest}"
    return Path(root or cache_dir() / "runs") / name


@dataclass
class Run:
    """A trained (or resumed) run: its config, final model, history, data, snapshot files, and the
    method's loss and hooks (a hook's state, e.g. class centres, is there after loading too)."""

    config: TrainConfig
    model: nn.Module
    history: list[dict]
    run_dir: Path
    train_set: ImageSet
    snapshots: dict[int, Path] = field(default_factory=dict)  # epoch → weights file
    loss: Callable | None = None  # the method's loss, as trained
    hooks: list[Hook] = field(default_factory=list)  # the method's hooks, with their final (restored) state

    @property
    def final(self) -> dict:
        """The last epoch's metrics."""
        return self.history[-1]

    def load_snapshot(self, epoch: int) -> nn.Module:
        """A copy of the model with the weights saved at ``epoch`` (one of ``snapshots``), built by the
        run's own method."""
        if epoch not in self.snapshots:
            raise KeyError(f"No snapshot at epoch {epoch}; this run kept {sorted(self.snapshots)}.")
        model = self.config.method.build_model(self.config, self.train_set)
        model.load_state_dict(load_checkpoint(self.snapshots[epoch])["model"])
        return model.to(next(self.model.parameters()).device).eval()


def _imagenet_weights(width: int) -> tuple[dict | None, str | None]:
    """(torchvision's ImageNet weights for ``width``, None), or (None, why they cannot be had)."""
    try:
        return models.imagenet_weights(width), None
    except models.PretrainedWeightsUnavailable as reason:
        return None, str(reason)


def _shared_epochs_done(run_dir: Path) -> int:
    """The epochs ``run_dir`` holds, as rank 0 (which writes the checkpoints) reads them, on every rank."""
    return distributed.from_main(_epochs_done(run_dir) if distributed.is_main() else None)


def _epochs_done(run_dir: Path) -> int:
    last = run_dir / "last.pt"
    return load_checkpoint(last)["epoch"] if last.exists() else 0


def load_or_train(
    config: TrainConfig,
    train_set: ImageSet,
    test_set: ImageSet | None = None,
    *,
    device: str | torch.device | None = None,
    root: str | Path | None = None,
    eval_batch_size: int | None = None,
    progress: bool = True,
    until: int | None = None,
    max_steps: int | None = None,
) -> Run:
    """The run ``config`` on ``train_set``: loaded from its checkpoint folder, resumed, or trained.

    Says which of the three it does. The model is built by ``config.method.build_model`` after seeding
    with ``config.seed``. Regime B's ImageNet weights are fetched only when there is no checkpoint to
    resume; when they cannot be fetched (offline, or a narrow network), the run trains from scratch under
    its own key, with the reason printed. Test metrics use batches of ``eval_batch_size`` images (default:
    the profile's). ``until`` stops after that epoch, leaving the run to be resumed by a later call (a
    Colab session at a time). ``max_steps`` makes a dry run: at most that many steps per epoch (and test
    batches per evaluation), in a run folder of its own.

    Under ``torchrun`` (``nclab.distributed``) every process calls this with the same arguments: each
    trains on its shard of every batch (when ``config.batch_size`` splits evenly over the processes; else
    each trains the whole run, as one process would), and only rank 0 prints and writes.
    """
    device = distributed.setup(device)  # config.get_device's choice, this process's GPU under torchrun
    say = distributed.say
    if config.dataset != train_set.name.split("/")[0]:
        raise ValueError(f"config.dataset is {config.dataset!r} but train_set is {train_set.name!r}.")
    run_dir = run_directory(config, train_set, root, max_steps)
    if distributed.from_main(run_dir.name) != run_dir.name:
        raise RuntimeError(
            f"rank {distributed.rank()} is to train {run_dir.name} but rank 0 another run: under torchrun every "
            f"process must train the same runs on the same data (compute what precedes training identically "
            f"on every rank, or train this notebook in one process)."
        )
    done, weights = _shared_epochs_done(run_dir), None
    if config.pretrained and not done:
        weights, reason = _imagenet_weights(config.width) if distributed.is_main() else (None, None)
        reason = distributed.from_main(reason)  # the others fetch only after rank 0 has, from its download
        if reason is None and weights is None:
            weights, reason = _imagenet_weights(config.width)
            if reason is not None:
                raise RuntimeError(f"rank {distributed.rank()} could not load the ImageNet weights: {reason}")
        if reason is not None:
            say(f"Regime {config.regime}: {reason}\n→ training regime {config.regime} from scratch instead.")
            config = replace(config, pretrained=False)
            run_dir = run_directory(config, train_set, root, max_steps)
            done = _shared_epochs_done(run_dir)
    torch.manual_seed(config.seed)
    model = config.method.build_model(config, train_set)
    if weights is not None:
        models.load_imagenet_weights(model, weights)

    last = run_dir / "last.pt"
    ranks = distributed.world_size()
    shard = dict(rank=distributed.rank(), world_size=ranks) if config.batch_size % ranks == 0 else {}
    where = f"{device}" + (f" × {ranks} processes" if shard.get("world_size", 1) > 1 else "")
    images = f"{config.epochs} epochs × {len(train_set):,} images on {where}"
    if done >= (until or config.epochs):
        say(f"Found checkpoint {last} (epoch {done}): loading, no training needed.")
    elif done:
        say(f"Found checkpoint {last} at epoch {done}/{config.epochs}: resuming ({images}).")
    else:
        say(
            f"No checkpoint for {config.method.name} regime {config.regime} in {run_dir}: training {images}. "
            f"The progress bar shows the time left; rerunning this cell resumes after a disconnect."
        )
    if ranks > 1 and not shard:
        say(f"Note: a batch of {config.batch_size} does not split over {ranks} processes: each trains this run whole.")
    options = dict(channels_last=config.channels_last and device.type == "cuda", device=device, max_batches=max_steps)
    train_loader = GpuLoader(
        train_set,
        config.batch_size,
        shuffle=True,
        augment=config.augment,
        drop_last=True,
        seed=config.seed,
        **options,
        **shard,
    )
    test_loader = None
    if test_set is not None:
        batch_size = eval_batch_size or get_profile().eval_batch_size
        test_loader = GpuLoader(test_set, batch_size, shuffle=False, augment=False, drop_last=False, **options)
    loss, hooks = config.method.training(config, train_set)
    hooks = _with_loss(loss, hooks)
    history = fit(
        model,
        config,
        train_loader,
        test_loader,
        run_dir=run_dir,
        loss=loss,
        hooks=hooks,
        progress=progress,
        until=until,
    )
    if ranks > 1 and not shard:
        distributed.share_weights(model)  # rank 0's: the processes go on with one model, not N near-copies
    model.eval()
    snapshots = {
        e: run_dir / f"epoch_{e:04d}.pt" for e in config.snapshot_epochs if (run_dir / f"epoch_{e:04d}.pt").exists()
    }
    return Run(config, model, history, run_dir, train_set, snapshots, loss, hooks)
