"""One readable training loop, with checkpoints that survive a Colab disconnect.

:class:`TrainConfig` holds every hyperparameter of a run; :func:`regime` gives the two regimes of the
practical-work report. :func:`fit` trains, checkpointing every epoch atomically (model, optimiser,
schedule, gradient scaler, RNG states, history); calling it again resumes where it stopped.
:func:`load_or_train` keys the checkpoint folder by the config and the data, so a later notebook reuses
the run of notebook 01, or trains it, and says which.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import __version__
from .config import Profile, cache_dir, get_device, get_profile
from .data import GpuLoader, ImageSet
from .models import CifarResNet, PretrainedWeightsUnavailable, resnet18

__all__ = ["TrainConfig", "regime", "log_spaced_epochs", "fit", "evaluate", "lr_factor", "amp_dtype", "make_optimizer", "Run",
           "load_or_train", "run_directory", "save_checkpoint", "load_checkpoint", "CheckpointError"]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a training run. Its hash (less the speed-only fields) names the run."""

    regime: str = "A"                          # a label: "A", "B" (seed report 002) or your own
    dataset: str = "cifar100"                  # training data set (nclab.data.DATASETS)
    width: int = 64                            # ResNet-18 width: 64 standard, 16 in the smoke profile
    pretrained: bool = False                   # start from torchvision's ImageNet weights (width 64 only)
    epochs: int = 350                          # passes over the training set
    batch_size: int = 128                      # images per SGD step
    optimizer: str = "sgd"                     # "sgd" (momentum, Nesterov off) or "adamw"
    lr: float = 0.1                            # peak learning rate
    momentum: float = 0.9                      # SGD momentum (AdamW: beta1)
    weight_decay: float = 5e-4                 # L2 for SGD, decoupled for AdamW
    schedule: str = "multistep"                # "multistep" or "cosine" (per step, after the warm-up)
    milestones: tuple[float, ...] = (1 / 3, 2 / 3)  # multistep: fractions of training where lr ×= gamma
    gamma: float = 0.1                         # multistep decay factor
    warmup_epochs: float = 0.0                 # linear warm-up from ~0 to lr, in epochs
    label_smoothing: float = 0.0               # cross-entropy label smoothing
    snapshot_epochs: tuple[int, ...] = ()      # epochs whose weights are kept for later notebooks
    seed: int = 0                              # model initialisation and data order
    amp: str = "auto"                          # "auto" (bf16 / fp16+GradScaler on GPU, off on CPU), "bf16", "fp16", "off"
    channels_last: bool = True                 # NHWC memory format on the GPU (ignored on the CPU)
    compile: bool = False                      # torch.compile the model (GPU; first epoch slower)

    SPEED_ONLY = ("amp", "channels_last", "compile")  # fields that do not change what is learned (much)

    def __post_init__(self):
        checks = [(self.optimizer in ("sgd", "adamw"), f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}"),
                  (self.schedule in ("multistep", "cosine"), f"schedule must be 'multistep' or 'cosine', not {self.schedule!r}"),
                  (self.amp in ("auto", "bf16", "fp16", "off"), f"amp must be auto/bf16/fp16/off, not {self.amp!r}"),
                  (self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0, "epochs, batch_size and lr must be positive"),
                  (all(0 < m < 1 for m in self.milestones), "milestones are fractions of training, in (0, 1)"),
                  (all(1 <= e <= self.epochs for e in self.snapshot_epochs), "snapshot_epochs must lie in 1..epochs")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def key(self) -> dict:
        """The fields that define what is learned (everything but the speed-only ones)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.SPEED_ONLY}


def log_spaced_epochs(epochs: int, count: int) -> tuple[int, ...]:
    """About ``count`` distinct epochs from 1 to ``epochs``, log-spaced (NC happens late: keep early and late)."""
    return tuple(sorted({int(round(e)) for e in np.geomspace(1, epochs, max(count, 1))} | {epochs}))


def regime(name: str, profile: Profile | str | None = None, **overrides) -> TrainConfig:
    """Regime "A" or "B" of the practical-work report, at the scale of ``profile``.

    A (Papyan et al.): SGD lr 0.1, momentum 0.9, weight decay 5e-4, lr × 0.1 at 1/3 and 2/3 of training.
    B: SGD lr 0.01, cosine schedule, from ImageNet weights (only width 64 has them: the smoke profile
    trains B from scratch). ``overrides`` replace any field.
    """
    profile = get_profile(profile)
    common = dict(width=profile.width, epochs=profile.epochs, batch_size=profile.batch_size,
                  snapshot_epochs=log_spaced_epochs(profile.epochs, profile.snapshots))
    regimes = {"A": dict(lr=0.1, schedule="multistep"),
               "B": dict(lr=0.01, schedule="cosine", pretrained=profile.width == 64)}
    if name.upper() not in regimes:
        raise ValueError(f"Unknown regime {name!r}: 'A' or 'B' (or build a TrainConfig yourself).")
    if "epochs" in overrides and "snapshot_epochs" not in overrides:
        overrides["snapshot_epochs"] = log_spaced_epochs(overrides["epochs"], profile.snapshots)
    return TrainConfig(regime=name.upper(), **{**common, **regimes[name.upper()], **overrides})


# ----------------------------------------------------------------------------------------------------
# Schedule, precision, evaluation


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


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; weight decay on weights only (not on BatchNorm parameters or biases)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
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
def evaluate(model: torch.nn.Module, loader: GpuLoader) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` over ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    model.train(was_training)
    return loss / count, correct / count


# ----------------------------------------------------------------------------------------------------
# Checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupted, truncated, or from another run."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", keys: tuple[str, ...] = ("model",)) -> dict:
    """Read a checkpoint with ``weights_only=True``; a damaged file (or one lacking ``keys``) raises
    :class:`CheckpointError`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Checkpoint {path} is corrupted or truncated (torch.load failed: {type(error).__name__}). It was left "
            f"untouched. Delete it (or its run folder) to train that run again, or restore a good copy.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or not all(k in state for k in keys):
        raise CheckpointError(f"{path} is not an nclab checkpoint (format {CHECKPOINT_FORMAT}). Delete it to retrain.")
    return state


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
            "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------------------------------
# The loop


def fit(model: CifarResNet, config: TrainConfig, train_loader: GpuLoader, test_loader: GpuLoader | None = None,
        run_dir: str | Path | None = None, progress: bool = True) -> list[dict]:
    """Train ``model`` as ``config`` says; return the history (one dict of metrics per epoch).

    With ``run_dir``, every epoch ends with an atomic checkpoint ``last.pt`` (and ``epoch_XXXX.pt``
    weights at the snapshot epochs); if ``last.pt`` is there when ``fit`` starts, training resumes
    after its epoch, giving the same weights as an uninterrupted run.
    """
    device = train_loader.device
    model.to(device)
    if config.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, len(train_loader)))
    autocast_dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    step = torch.compile(model) if config.compile else model

    history, start = [], 1
    last = Path(run_dir) / "last.pt" if run_dir is not None else None
    if last is not None and last.exists():
        state = load_checkpoint(last)                      # on the CPU, where torch.set_rng_state wants it
        if state["config"] != config.key():
            raise CheckpointError(f"{last} was written by another configuration; use another run_dir.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        history, start = state["history"], state["epoch"] + 1

    epochs = tqdm(range(start, config.epochs + 1), desc=f"regime {config.regime}", disable=not progress,
                  initial=start - 1, total=config.epochs, unit="epoch")
    for epoch in epochs:
        model.train()
        train_loader.set_epoch(epoch)
        began, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for x, y in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=not progress):
            with torch.autocast(device.type, autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                logits = step(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach() * len(y)                     # stays on the device: no sync per step
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        seconds = time.perf_counter() - began
        record = {"epoch": epoch, "lr": lr, "train_loss": loss_sum.item() / seen,
                  "train_acc": correct.item() / seen, "seconds": seconds, "images_per_s": seen / seconds}
        if test_loader is not None:
            record["test_loss"], record["test_acc"] = evaluate(model, test_loader)
        history.append(record)
        epochs.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                           test=f"{record.get('test_acc', float('nan')):.3f}", lr=f"{record['lr']:.3g}")
        if last is not None:
            if epoch in config.snapshot_epochs:
                save_checkpoint({"format": CHECKPOINT_FORMAT, "config": config.key(), "epoch": epoch,
                                 "model": model.state_dict()}, last.with_name(f"epoch_{epoch:04d}.pt"))
            save_checkpoint({"format": CHECKPOINT_FORMAT, "config": config.key(), "epoch": epoch,
                             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "rng": _rng_state(), "history": history}, last)
    return history


# ----------------------------------------------------------------------------------------------------
# The run cache


def _data_fingerprint(data: ImageSet) -> str:
    digest = hashlib.sha1(data.images.cpu().numpy().tobytes())
    digest.update(data.labels.cpu().numpy().tobytes())
    return f"{data.name}:{len(data)}:{'standin' if data.standin else 'real'}:{digest.hexdigest()[:16]}"


def run_directory(config: TrainConfig, train_set: ImageSet, root: str | Path | None = None) -> Path:
    """The folder of the run defined by ``config`` on ``train_set``: ``<cache>/runs/<regime>-<hash>``."""
    key = json.dumps({"config": config.key(), "data": _data_fingerprint(train_set), "nclab": __version__},
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(root or cache_dir() / "runs") / f"{config.dataset}-{config.regime}-w{config.width}-{digest}"


@dataclass
class Run:
    """A trained (or resumed) run: its config, final model, history and snapshot files."""

    config: TrainConfig
    model: CifarResNet
    history: list[dict]
    run_dir: Path
    snapshots: dict[int, Path] = field(default_factory=dict)  # epoch → weights file

    @property
    def final(self) -> dict:
        """The last epoch's metrics."""
        return self.history[-1]

    def load_snapshot(self, epoch: int) -> CifarResNet:
        """A copy of the model with the weights saved at ``epoch`` (one of ``snapshots``)."""
        if epoch not in self.snapshots:
            raise KeyError(f"No snapshot at epoch {epoch}; this run kept {sorted(self.snapshots)}.")
        model = resnet18(self.model.num_classes, self.config.width)
        model.load_state_dict(load_checkpoint(self.snapshots[epoch])["model"])
        return model.to(next(self.model.parameters()).device).eval()


def load_or_train(config: TrainConfig, train_set: ImageSet, test_set: ImageSet | None = None, *,
                  device: str | torch.device | None = None, root: str | Path | None = None,
                  progress: bool = True) -> Run:
    """The run ``config`` on ``train_set``: loaded from its checkpoint folder, resumed, or trained.

    Says which of the three it does. Regime B's ImageNet weights fall back to training from scratch,
    with the reason printed, when they cannot be fetched (offline, or a narrow network).
    """
    device = get_device(device)
    if config.dataset != train_set.name.split("/")[0]:
        raise ValueError(f"config.dataset is {config.dataset!r} but train_set is {train_set.name!r}.")
    model = None
    if config.pretrained:
        try:
            model = resnet18(train_set.num_classes, config.width, pretrained=True)
        except PretrainedWeightsUnavailable as reason:
            print(f"Regime {config.regime}: {reason}\n→ training regime {config.regime} from scratch instead.")
            config = replace(config, pretrained=False)
    if model is None:
        torch.manual_seed(config.seed)
        model = resnet18(train_set.num_classes, config.width)
    run_dir = run_directory(config, train_set, root)
    last = run_dir / "last.pt"
    done = load_checkpoint(last)["epoch"] if last.exists() else 0
    images = f"{config.epochs} epochs × {len(train_set):,} images on {device}"
    if done >= config.epochs:
        print(f"Found checkpoint {last} (epoch {done}): loading, no training needed.")
    elif done:
        print(f"Found checkpoint {last} at epoch {done}/{config.epochs}: resuming ({images}).")
    else:
        print(f"No checkpoint for regime {config.regime} in {run_dir}: training {images}. "
              f"The progress bar shows the time left; rerunning this cell resumes after a disconnect.")
    options = dict(channels_last=config.channels_last and device.type == "cuda", device=device)
    train_loader = GpuLoader(train_set, config.batch_size, shuffle=True, augment=True, drop_last=True,
                             seed=config.seed, **options)
    test_loader = (GpuLoader(test_set, 1_000, shuffle=False, augment=False, drop_last=False, **options)
                   if test_set is not None else None)
    history = fit(model, config, train_loader, test_loader, run_dir=run_dir, progress=progress)
    model.eval()
    snapshots = {e: run_dir / f"epoch_{e:04d}.pt" for e in config.snapshot_epochs
                 if (run_dir / f"epoch_{e:04d}.pt").exists()}
    return Run(config, model, history, run_dir, snapshots)
