"""Invariance baselines for out-of-distribution generalisation: IRMv1 and V-REx, on per-environment risks.

Both need the environment of every training sample, which Colored-MNIST's loader hands to the loop as
``out.extras["env"]`` (``nclab.data.colored_mnist``). With R^e the cross-entropy on the samples of
environment e in the batch:

- **IRMv1** (Arjovsky et al., 2019): mean_e R^e + λ mean_e ‖∂R^e(s·logits)/∂s at s = 1‖². The penalty is 0 when
  the classifier is optimal, up to a common scale, in every environment at once: a predictor that uses
  an invariant feature. :func:`irmv1_penalty`.
- **V-REx** (Krueger et al., ICML 2021): mean_e R^e + λ Var_e(R^e): equal risks everywhere. Var_e is the
  mean squared deviation of the E risks from their mean (divided by E, not E − 1), as DomainBed computes
  it. The REx authors' Colored-MNIST code minimises (R¹ + R²) + λ'(R¹ − R²)² = 2 · (mean_e R^e + 2λ' Var_e R^e):
  with two environments, nclab's λ is twice their λ' for the same objective (up to the factor 2 on the
  whole loss).

As in the IRM paper's Colored-MNIST code, λ is 1 for the first ``anneal_steps`` optimiser steps and
``penalty_weight`` after, and the loss is then divided by λ when λ > 1 (so the step size stays
comparable; the history's ``train_loss`` is that divided value, its ``risk`` and ``penalty`` columns the
undivided terms). The penalties use the whole batch of each environment: the biased estimate, as the IRM
paper's Colored-MNIST code does (its text describes an unbiased one that splits the batch in two).
As in DomainBed, the optimiser's state is restarted when λ jumps (:class:`AnnealedPenalty`): AdamW's
second moments, built on the risk alone, would otherwise damp the penalised steps for hundreds of steps.
With SGD and weight decay, the division by λ also makes the decay λ times stronger relative to the data
terms.
The digits model of all Colored-MNIST methods is ``nclab.models.small_cnn`` (:func:`digits_model`);
:data:`ERM_DIGITS` is the plain cross-entropy baseline; :func:`recipe` is the training configuration of
every Colored-MNIST run, these baselines and NCFAL (``nclab.methods.ncfal``) alike.
Book chapter "NCFAL"; notebook 06.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import models
from ..config import Profile, get_profile
from ..data import ImageSet
from ..losses import BatchOutput
from ..train import EpochMeans, Hook, Method, Run, Scale, TrainConfig, standard_training, train_recipe

__all__ = [
    "digits_model",
    "ERM_DIGITS",
    "IRM_PAPER_TEST_ACCURACY",
    "environment_risks",
    "irmv1_penalty",
    "batch_environments",
    "AnnealedPenalty",
    "InvarianceLoss",
    "irmv1",
    "vrex",
    "SCALES",
    "recipe",
    "load_or_train",
]


def digits_model(config, train_set: ImageSet) -> nn.Module:
    """A :func:`nclab.models.small_cnn` of ``config.width`` with a linear head, normalising with the
    training set's statistics: the model of every Colored-MNIST method."""
    return models.small_cnn(train_set.num_classes, config.width, normalization=train_set.normalization)


ERM_DIGITS = Method("erm-digits", build_model=digits_model, training=standard_training)

# Test-environment accuracy on Colored-MNIST in the IRM paper (Arjovsky et al., 2019, Table 1; means of
# 10 runs, full-batch MLP on 14×14 images): the reference numbers notebook 06 compares its runs with.
IRM_PAPER_TEST_ACCURACY = {"ERM": 0.171, "IRMv1": 0.669, "grayscale oracle": 0.730}


def environment_risks(logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(R (E,), environments (E,)): the mean cross-entropy of the samples of each environment present in
    the batch. logits: (B, C); y, env: (B,) int64."""
    environments = torch.unique(env)
    risks = torch.stack([F.cross_entropy(logits[env == e].float(), y[env == e]) for e in environments])
    return risks, environments


def irmv1_penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖∂/∂s CE(s · logits, y) at s = 1‖² for one environment's samples: (n, C), (n,) → a scalar that
    back-propagates into the logits (the gradient is taken with ``create_graph``).

    ∂/∂s at s = 1 is mean_i Σ_c (softmax(l_i)_c − [c = y_i]) l_ic: zero when rescaling the logits cannot
    lower the risk to first order (the scale is stationary; a calibrated classifier is one such case).
    """
    logits = logits if logits.dtype == torch.float64 else logits.float()  # half precision → float32
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    risk = F.cross_entropy(logits * scale, y)
    (gradient,) = torch.autograd.grad(risk, scale, create_graph=True)
    return gradient.pow(2)


class AnnealedPenalty(Hook):
    """A loss mean_e R^e + λ · penalty whose weight λ is 1 for the first ``anneal_steps`` optimiser steps and
    ``penalty_weight`` after, the sum then divided by λ when λ > 1 (the IRM paper's schedule; λ = 0 gives
    ERM on the same batches). When λ jumps, the optimiser's state is restarted (``restart_optimizer``),
    as DomainBed does: Adam's moments, built on the risk alone, would otherwise damp the penalised steps
    (``restart=False`` keeps them, for the comparison).

    A hook: it counts the optimiser steps (saved in the checkpoint) and reports the epoch means of the
    ``terms`` a subclass adds with ``self.means.add``. Subclasses implement ``__call__`` with
    :meth:`combine`.
    """

    terms: tuple[str, ...] = ("risk", "penalty")

    def __init__(self, penalty_weight: float, anneal_steps: int, restart: bool = True):
        if not penalty_weight >= 0:
            raise ValueError(f"penalty_weight must be ≥ 0 (λ after the annealing), got {penalty_weight!r}")
        if not anneal_steps >= 0:
            raise ValueError(f"anneal_steps must be ≥ 0, got {anneal_steps!r}")
        self.penalty_weight, self.anneal_steps, self.restart = float(penalty_weight), int(anneal_steps), bool(restart)
        self.steps, self.means = 0, EpochMeans(*self.terms)

    @property
    def weight(self) -> float:
        """λ at the current step."""
        return self.penalty_weight if self.steps >= self.anneal_steps else 1.0

    def combine(self, risk: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
        """(risk + λ · penalty) / max(λ, 1)."""
        return (risk + self.weight * penalty) / max(self.weight, 1.0)

    def after_step(self, out, y) -> None:
        self.steps += 1

    def restart_optimizer(self) -> bool:
        return self.restart and self.steps == self.anneal_steps > 0 and self.penalty_weight != 1.0

    def end_epoch(self, epoch, model, train_loader) -> dict | None:
        return self.means.pop()

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.means.reset()


def batch_environments(out: BatchOutput) -> torch.Tensor:
    """The environment of each sample of the batch, ``out.extras["env"]`` (B,), or an error saying where
    it comes from."""
    if "env" not in out.extras:
        raise ValueError(
            "this loss needs each sample's environment: train on a data set with the extra 'env' "
            "(nclab.data.colored_mnist, or nclab.methods.ncfal.with_environments) so that the loader hands it "
            "to the loop"
        )
    return out.extras["env"]


class InvarianceLoss(AnnealedPenalty):
    """mean_e R^e + λ · penalty, with penalty = mean_e IRMv1 penalty (``kind="irm"``) or Var_e R^e (``"vrex"``),
    on :class:`AnnealedPenalty`'s schedule; reports the epoch means of ``risk`` and ``penalty``."""

    def __init__(self, kind: str, penalty_weight: float, anneal_steps: int, restart: bool = True):
        if kind not in ("irm", "vrex"):
            raise ValueError(f"kind must be 'irm' (IRMv1) or 'vrex' (V-REx), not {kind!r}")
        super().__init__(penalty_weight, anneal_steps, restart)
        self.kind = kind

    def __call__(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        env = batch_environments(out)
        risks, environments = environment_risks(out.logits, y, env)
        if self.kind == "irm":
            penalty = torch.stack([irmv1_penalty(out.logits[env == e], y[env == e]) for e in environments]).mean()
        else:
            penalty = risks.var(correction=0) if len(risks) > 1 else risks.sum() * 0  # one environment: 0
        self.means.add(risks.mean(), penalty)
        return self.combine(risks.mean(), penalty)


def _invariance(name: str, kind: str, penalty_weight: float, anneal_steps: int, restart: bool) -> Method:
    def training(config, train_set: ImageSet):
        return InvarianceLoss(kind, penalty_weight, anneal_steps, restart), []

    params = {"penalty_weight": float(penalty_weight), "anneal_steps": int(anneal_steps), "restart": bool(restart)}
    return Method(name, params, digits_model, training)


def irmv1(penalty_weight: float = 1e4, anneal_steps: int = 100, restart: bool = True) -> Method:
    """IRMv1 on the digits model: mean_e R^e + λ mean_e ‖∇_s R^e‖², λ = ``penalty_weight`` after
    ``anneal_steps`` steps, the optimiser restarted then unless ``restart=False`` (the IRM paper's
    Colored-MNIST search found λ ≈ 9·10⁴, 190 steps of full-batch training; nclab's default is a round
    value for mini-batches)."""
    return _invariance("irmv1", "irm", penalty_weight, anneal_steps, restart)


def vrex(penalty_weight: float = 1e4, anneal_steps: int = 100, restart: bool = True) -> Method:
    """V-REx on the digits model: mean_e R^e + λ Var_e R^e, with the same schedule as :func:`irmv1`.

    Var_e R^e = mean_e (R^e − mean_e' R^e')², divided by the number E of environments in the batch (DomainBed's
    convention; ``torch.var(correction=0)``). The REx authors' Colored-MNIST code adds λ'(R¹ − R²)² to the
    *sum* R¹ + R² of the two risks; since (R¹ − R²)² = 4 Var_e R^e for E = 2, their λ' is half of this λ for
    the same objective (their loss is twice nclab's, a factor that Adam's step normalisation largely
    removes)."""
    return _invariance("vrex", "vrex", penalty_weight, anneal_steps, restart)


# The digits network of every Colored-MNIST method (its width: 4·width features), without augmentation (a
# flip or crop would not touch the colour, and the digits are centred). An epoch on 2,000 images takes under
# a second on a CPU: the smoke profile trains 8, not SPEC §8's 1–2, so that the penalties' λ leaves 1.
SCALES = {
    "smoke": Scale(epochs=8, width=16, batch_size=64, augment=False),
    "quick": Scale(epochs=10, width=32, batch_size=128, augment=False),
    "full": Scale(epochs=30, width=64, batch_size=128, augment=False),
}


def recipe(
    profile: Profile | str | None = None, method: Method | None = None, *, dataset: str = "colored-mnist", **overrides
) -> TrainConfig:
    """The TrainConfig of every Colored-MNIST run at the scale of ``profile`` (the same budget for NCFAL and
    its baselines): AdamW lr 10⁻³, weight decay 10⁻⁴, cosine schedule, :data:`SCALES`'s width, epochs and
    batch size, no augmentation. ``method`` defaults to :data:`ERM_DIGITS`; ``dataset`` is
    ``"grayscale-mnist"`` for the oracle; ``overrides`` replace any field."""
    scale = SCALES[get_profile(profile).name]
    settings = dict(
        regime="adamw",
        dataset=dataset,
        method=ERM_DIGITS if method is None else method,
        **scale.settings(profile, overrides.pop("epochs", None)),
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        schedule="cosine",
    )
    return TrainConfig(**{**settings, **overrides})


def load_or_train(method: Method | None, train_set: ImageSet, test_set: ImageSet | None = None, **options) -> Run:
    """The run of ``method`` (default :data:`ERM_DIGITS`) on ``train_set`` with :func:`recipe`: loaded from
    the cache, resumed or trained, and which (``nclab.train.train_recipe``; ``options``: ``profile``,
    ``device``, ``overrides``, …)."""
    return train_recipe(recipe, method, train_set, test_set, **options)
