"""The method contract, and the source methods: one small module each, plugged into ``nclab.train.fit``.

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

A method's own data sets go to ``nclab.data``, its tables to ``nclab.tables``. A method that needs the loop
to do something new changes this contract once, for every method, with a test; it never copies ``fit``.
The default method, :data:`ERM`, trains a ResNet-18 with a linear head on cross-entropy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .. import models
from ..data import ImageSet
from ..losses import BatchOutput, CrossEntropy

if TYPE_CHECKING:
    from ..data import GpuLoader
    from ..train import TrainConfig

__all__ = [
    "Method",
    "Hook",
    "EpochMeans",
    "ERM",
    "standard_model",
    "standard_training",
    "control",
    "design",
    "invariance",
    "ncfal",
    "spa",
]


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


from . import control, design, invariance, ncfal, spa  # noqa: E402  (the methods use Method and Hook, defined above)
