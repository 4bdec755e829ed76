"""Training: the contract a method follows, the recipes, one loop, and the run cache.

- ``contract``: :class:`TrainConfig` (every hyperparameter of a run) and :class:`Method`, :class:`Hook`,
  :class:`EpochMeans`, :data:`ERM` (what a method brings to the loop);
- ``regimes``: :func:`regime` (regimes A and B of the practical-work report), :func:`regime_data`,
  :func:`terminal_phase`, and :class:`Scale`, the shape of every method's recipe;
- ``loop``: :func:`fit`, the one training loop, with its schedule, optimiser and precision;
- ``runs``: :func:`load_or_train` (a run loaded from its checkpoint folder, resumed, or trained, and which
  of the three it does), :func:`train_recipe`, :class:`Run`;
- ``packs`` and ``fetch``: run packs, an instructor's trained runs written once (``nclab runs pack``) and
  downloaded by ``load_or_train`` in place of training (:class:`PackError` when a download is unusable).
"""

from ..config import log_spaced_epochs
from .contract import ERM, EpochMeans, Hook, Method, TrainConfig, standard_model, standard_training
from .fetch import PackUnavailable
from .loop import amp_dtype, fit, loss_and_accuracy, lr_factor, make_optimizer
from .packs import PackError
from .regimes import Scale, regime, regime_data, terminal_phase
from .runs import Run, load_or_train, run_directory, train_recipe

__all__ = [
    "TrainConfig",
    "Method",
    "Hook",
    "EpochMeans",
    "ERM",
    "standard_model",
    "standard_training",
    "Scale",
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
    "train_recipe",
    "PackError",
    "PackUnavailable",
]
