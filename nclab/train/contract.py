"""The contract between the training loop and every method: what a run is and what a method brings.

:class:`TrainConfig` holds every hyperparameter of a run, its :class:`Method` included (a name, its own
hyperparameters, and what it brings to the loop: a model builder, a loss, :class:`Hook` objects). They
refer to each other, so they share this file; the loop (``nclab.train.loop``) reads them, and every method
(``nclab.methods``) imports them from here.

A method brings what differs from plain cross-entropy training, and nothing else:

- a :class:`Method`, put into ``TrainConfig(method=…)``: its name and hyperparameters enter the run key,
  so two runs that differ only there never share a checkpoint folder;
- ``build_model(config, train_set)``: the model (an encoder and a head of ``nclab.heads``, see
  ``nclab.models``); ``load_or_train`` and ``Run.load_snapshot`` always build through it;
- ``training(config, train_set)`` → ``(loss, hooks)``, built together so that they can share state
  (class centres a hook keeps and a loss reads): the loss is a callable ``(out, y) → scalar``
  (``nclab.losses``), the hooks are :class:`Hook` objects that act after backward, after the optimiser
  step and at the end of an epoch, with a state that ``last.pt`` saves and a resume restores. A loss
  that is itself a :class:`Hook` is run and checkpointed as one.

A method that needs the loop to do something new changes this contract once, for every method, with a
test; it never copies ``fit``. The default method, :data:`ERM`, trains a ResNet-18 with a linear head on
cross-entropy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from .. import models
from ..data import GpuLoader, ImageSet
from ..losses import BatchOutput, CrossEntropy

__all__ = ["TrainConfig", "Method", "Hook", "EpochMeans", "ERM", "standard_model", "standard_training"]


class Hook:
    """Code a method runs inside ``nclab.train.fit``, with a state that survives an interrupted run.

    ``out`` is the batch's :class:`nclab.losses.BatchOutput` (the one the loss saw: its tensors are part of
    the autograd graph, so use ``.detach()``; under mixed precision features and logits may be float16 or
    bfloat16), ``y`` its labels.

    - ``after_backward(out, y)``: the gradients are in ``.grad``, unscaled when a GradScaler is active, and
      the optimiser has not stepped yet: change them here (a gradient projection);
    - ``after_step(out, y)``: the optimiser step is done (with fp16 loss scaling it may have been skipped
      for inf/NaN gradients; the hook still runs): move weights, update running statistics;
    - ``restart_optimizer()`` → bool, asked right after ``after_step``: True makes the loop forget the
      optimiser's state (SGD's momentum, Adam's moments) before the next step, as when a penalty's weight
      jumps and the moments built under the old objective would damp the new one (DomainBed does this
      for IRM); the learning-rate schedule goes on;
    - ``end_epoch(epoch, model, train_loader)`` → dict or None, after the epoch's last step: what it returns
      is added to the epoch's history record; ``train_loader.data`` is the training ImageSet (for a pass
      over the un-augmented data, build a ``GpuLoader(..., augment=False)`` from it);
    - ``state_dict()`` / ``load_state_dict(state)``: saved in ``last.pt`` every epoch and restored on
      resume, its tensors moved to the training device (tensors, numbers, strings, lists, dicts).
    """

    def after_backward(self, out: BatchOutput, y: torch.Tensor) -> None:
        pass

    def after_step(self, out: BatchOutput, y: torch.Tensor) -> None:
        pass

    def restart_optimizer(self) -> bool:
        return False

    def end_epoch(self, epoch: int, model: nn.Module, train_loader: GpuLoader) -> dict | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EpochMeans:
    """Running means of a loss's named terms over one epoch, kept on the device (no sync per step).

    ``add(*values)`` after each batch (scalar tensors, detached here), ``pop()`` at the end of the epoch →
    {name: mean} or None when nothing was added, and a fresh start; ``reset()`` forgets an interrupted
    epoch (a resume starts at an epoch boundary).
    """

    def __init__(self, *names: str):
        self.names = names
        self.reset()

    def reset(self) -> None:
        self._sums, self._count = None, 0

    def add(self, *values: torch.Tensor) -> None:
        terms = torch.stack([value.detach() for value in values])
        self._sums = terms if self._sums is None else self._sums + terms
        self._count += 1

    def pop(self) -> dict | None:
        if not self._count:
            return None
        means = dict(zip(self.names, (self._sums / self._count).tolist()))
        self.reset()
        return means


def standard_model(config: TrainConfig, train_set: ImageSet) -> nn.Module:
    """ResNet-18 (CIFAR stem, ``config.width``) with a trained linear head, normalising its inputs with
    the training set's mean and std."""
    return models.resnet18(train_set.num_classes, config.width, normalization=train_set.normalization)


def standard_training(config: TrainConfig, train_set: ImageSet) -> tuple[Callable, list[Hook]]:
    """Cross-entropy with ``config.label_smoothing``, and no hooks."""
    return CrossEntropy(config.label_smoothing), []


@dataclass(frozen=True)
class Method:
    """A training method: its name and hyperparameters (both part of the run key) and what it brings.

    ``build_model(config, train_set)`` → a model (``model.features``, ``model.head``; see ``nclab.models``);
    ``training(config, train_set)`` → ``(loss, hooks)``: a callable ``(out, y) → scalar`` and a list of
    :class:`Hook`. ``params`` (a dict of numbers, strings, booleans, or tuples of them) names the run: two
    methods with one name and equal params must be the same method.
    """

    name: str = "erm"
    params: Mapping = ()
    build_model: Callable[[TrainConfig, ImageSet], nn.Module] = standard_model
    training: Callable[[TrainConfig, ImageSet], tuple[Callable, list[Hook]]] = standard_training

    def __post_init__(self):
        if not self.name or not all(ch.isalnum() or ch in "-_." for ch in self.name):
            raise ValueError(f"a method's name is a short word (letters, digits, - _ .), got {self.name!r}")
        params = tuple(sorted(dict(self.params).items()))
        try:
            json.dumps(params)
            hash(params)
        except TypeError:
            raise ValueError(
                f"method {self.name!r}: params must be numbers, strings, booleans or tuples of "
                f"them (they name the run's folder), got {dict(params)}"
            ) from None
        object.__setattr__(self, "params", params)

    @property
    def hparams(self) -> dict:
        """The method's hyperparameters as a dict."""
        return dict(self.params)

    def __repr__(self) -> str:
        return f"Method({self.name!r}, {self.hparams})"


ERM = Method("erm")  # empirical risk minimisation: cross-entropy, ResNet-18, a linear head


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
