"""Training: the contract a method follows, the recipes, one loop, and the run cache.

- ``contract``: :class:`TrainConfig` (every hyperparameter of a run) and :class:`Method`, :class:`Hook`,
  :class:`EpochMeans`, :data:`ERM` (what a method brings to the loop);
- ``regimes``: :func:`regime` (regimes A and B of the practical-work report), :func:`regime_data`,
  :func:`terminal_phase`, and :class:`Scale`, the shape of every method's recipe;
- ``loop``: :func:`fit`, the one training loop, with its schedule, optimiser and precision;
- ``runs``: :func:`load_or_train` (a run loaded from its checkpoint folder, resumed, or trained, and which
  of the three it does), :func:`train_recipe`, :class:`Run`.
"""

from ..config import log_spaced_epochs
from .contract import ERM, EpochMeans, Hook, Method, TrainConfig, standard_model, standard_training
from .loop import amp_dtype, fit, loss_and_accuracy, lr_factor, make_optimizer
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
]
