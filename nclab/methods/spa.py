"""Space alignment for long-tailed learning (Wang, Gao & Xie, "Space Alignment Matters", seed 003), SPEC §6.

Under a long-tailed training set the classifier rows w_c and the class means μ_c of the features drift
apart, most for the tail classes; neural collapse would have them aligned (NC3). Three plug-ins align
them, each on top of any loss (plain cross-entropy, or the logit-adjusted one of :class:`LogitAdjusted`):

- **SpA-Proj** (:func:`spa_project`, hook :class:`SpAProj`): between backward and the optimiser step, the
  gradient of every classifier row loses the part of its tangent component that would turn the row
  *away* from its class centre, then is mixed with the raw gradient (SPEC §6, the seed's rule);
- **SpA-Reg** (:class:`SpARegLoss`): a loss term λ (1/C) Σ_c (1 − cos(w_c, μ_c − μ_G)) (nclab's own
  version: the seed's exact definition is not public); a negative λ *misaligns*, for the seed's Figure 1;
- **SpA-SLERP** (hook :class:`SpASLERP`): every k steps, each row's direction moves a fraction t of the way
  along the great circle toward its centre's (nclab's own version, likewise).

The class centres are an exponential moving average (momentum 0.9) of the batch class means of the
penultimate features, kept by :class:`ClassCentres`, a hook whose state is checkpointed. Book chapter
"Long-tailed learning"; notebook 07.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import Profile, get_profile
from ..data import ImageSet
from ..losses import BatchOutput, CrossEntropy
from ..train import EpochMeans, Hook, Method, Run, Scale, TrainConfig, standard_model, train_recipe

__all__ = [
    "spa_project",
    "ClassCentres",
    "SpAProj",
    "SpARegLoss",
    "SpASLERP",
    "slerp",
    "LogitAdjusted",
    "long_tail_method",
    "SCALES",
    "PUBLISHED_ANCHOR",
    "recipe",
    "load_or_train",
]


def spa_project(weight: torch.Tensor, grad: torch.Tensor, centres: torch.Tensor, keep: float = 0.4) -> torch.Tensor:
    """SPEC §6's SpA-Proj rule for every classifier row at once → the new gradient (C, p).

    weight, grad: (C, p), the rows w_c and their gradients g; centres: (C, p), the class centres μ̂_c
    (centred by the mean of the class means; a zero row = no centre yet, that row's gradient is only
    mixed). With ŵ = w/‖w‖: the tangent part g_t = g − (g·ŵ)ŵ; the direction toward the centre on the
    sphere d = normalise(μ̂ − (μ̂·ŵ)ŵ); if g_t·d > 0 (a descent step −g_t would turn w_c *away* from its
    centre) that component is removed from g_t; the result is keep·g_t + (1 − keep)·g.
    """
    if not (weight.shape == grad.shape == centres.shape and weight.ndim == 2):
        raise ValueError(
            f"weight, grad and centres must all be (C, p), got {tuple(weight.shape)}, {tuple(grad.shape)}, "
            f"{tuple(centres.shape)}"
        )
    w_hat = F.normalize(weight.float(), dim=1)
    g = grad.float()
    mu = centres.float()
    tangent = g - (g * w_hat).sum(1, keepdim=True) * w_hat
    direction = F.normalize(mu - (mu * w_hat).sum(1, keepdim=True) * w_hat, dim=1)  # 0 where mu ∥ w or mu = 0
    along = (tangent * direction).sum(1, keepdim=True)
    tangent = tangent - along.clamp_min(0) * direction  # remove only a component that opposes the centre
    return (keep * tangent + (1 - keep) * g).to(grad.dtype)


class ClassCentres(Hook):
    """EMA (``momentum``) of every class's mean penultimate feature over the batches, after each step.

    ``centres()`` → (C, p) float32: the EMA means minus their mean over the classes seen so far (μ_c −
    μ_G, SPEC §1's centring), zero rows for classes not seen yet; ``normalised()`` the same rows divided
    by their norms. The EMA and which classes were seen are saved in the checkpoint. Rows of non-finite
    features (an fp16 overflow) are left out of the update.
    """

    def __init__(self, num_classes: int, momentum: float = 0.9):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.num_classes, self.momentum = int(num_classes), float(momentum)
        self.means, self.seen = None, None

    def update(self, features: torch.Tensor, y: torch.Tensor) -> None:
        h = features.detach().float()
        finite = torch.isfinite(h).all(1)  # an overflowed half-precision row must not poison every centre
        h, y = h[finite], y[finite]
        if self.means is None:
            self.means = torch.zeros(self.num_classes, h.shape[1], device=h.device)
            self.seen = torch.zeros(self.num_classes, dtype=torch.bool, device=h.device)
        sums = torch.zeros_like(self.means).index_add_(0, y, h)
        counts = torch.bincount(y, minlength=self.num_classes)
        present = counts > 0
        batch = sums / counts.clamp_min(1)[:, None]
        blended = self.momentum * self.means + (1 - self.momentum) * batch
        first = present & ~self.seen  # a class seen for the first time starts at its batch mean
        self.means = torch.where(first[:, None], batch, torch.where(present[:, None], blended, self.means))
        self.seen = self.seen | present

    def centres(self) -> torch.Tensor:
        if self.means is None or not bool(self.seen.any()):
            raise RuntimeError("no class centre yet: the hook has not seen a batch")
        mu_G = self.means[self.seen].mean(0)
        return torch.where(self.seen[:, None], self.means - mu_G, torch.zeros_like(self.means))

    def normalised(self) -> torch.Tensor:
        return F.normalize(self.centres(), dim=1)

    def after_step(self, out: BatchOutput, y: torch.Tensor) -> None:
        self.update(out.features, y)

    def state_dict(self) -> dict:
        return {"means": self.means, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.means, self.seen = state["means"], state["seen"]


def _classifier_weight(model) -> torch.nn.Parameter:
    head = model.head
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.nn.Parameter):
        raise ValueError(f"SpA moves the rows of a trained linear classifier; this {type(head).__name__} head has none")
    return weight


class SpAProj(ClassCentres):
    """SpA-Proj as a hook: before each optimiser step, the classifier's gradient becomes
    ``spa_project(W, ∇W, μ̂, keep)`` with the EMA centres μ̂ (updated from the batch first)."""

    def __init__(self, num_classes: int, keep: float = 0.4, momentum: float = 0.9):
        super().__init__(num_classes, momentum)
        if not 0 <= keep <= 1:
            raise ValueError(f"keep must lie in [0, 1], got {keep!r}")
        self.keep = float(keep)

    def after_backward(self, out: BatchOutput, y: torch.Tensor) -> None:
        self.update(out.features, y)
        weight = _classifier_weight(out.model)
        if weight.grad is not None and self.means is not None and bool(self.seen.any()):
            projected = spa_project(weight.detach(), weight.grad, self.normalised(), self.keep)
            if bool(torch.isfinite(projected).all()):  # else leave the gradient to the scaler's inf check
                weight.grad.copy_(projected)

    def after_step(self, out, y) -> None:  # the centres were updated before the step
        pass


class SpARegLoss(ClassCentres):
    """``base`` loss + λ (1/C') Σ_c (1 − cos(w_c, μ_c − μ_G)) over the C' classes seen so far (nclab's
    SpA-Reg; the seed's exact form is not public). μ_c is the batch mean of class c's features when c is
    in the batch (so the term trains the features and the classifier) and its running centre otherwise
    (so a tail class's row is aligned at every step, not only when one of its rare images is drawn);
    μ_G is the mean of the running centres (a constant). λ < 0 pushes rows and means apart: the seed's
    "misaligned" model. Reports the epoch means of ``base`` and ``alignment`` (the mean cosine)."""

    def __init__(self, base, num_classes: int, weight: float = 1.0, momentum: float = 0.9):
        super().__init__(num_classes, momentum)
        self.base, self.weight, self._terms = base, float(weight), EpochMeans("base", "alignment")

    def __call__(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        base = self.base(out, y)
        h = out.features.float()
        onehot = F.one_hot(y, self.num_classes).float()  # (B, C)
        counts = onehot.sum(0)
        batch_means = (onehot.T @ h) / counts.clamp_min(1)[:, None]  # (C, p), differentiable where present
        present = counts > 0
        if self.means is None or not bool(self.seen.any()):  # the very first batch: its own means only
            means, mu_G, rows = batch_means, batch_means[present].mean(0).detach(), present
        else:
            means = torch.where(present[:, None], batch_means, self.means)
            mu_G, rows = self.means[self.seen].mean(0), present | self.seen
        W = _classifier_weight(out.model).float()
        cosine = F.cosine_similarity(W[rows], (means - mu_G)[rows], dim=1)
        self._terms.add(base.detach(), cosine.mean().detach())
        return base + self.weight * (1 - cosine).mean()

    def end_epoch(self, epoch, model, train_loader) -> dict | None:
        return self._terms.pop()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._terms.reset()


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Rows of unit vectors a and b (n, p) → the unit vectors a fraction t of the way from a to b along
    the great circle (a where b = 0 or a = ±b)."""
    cos = (a * b).sum(1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    moving = (sin > 1e-6) & (b.norm(dim=1, keepdim=True) > 0)
    safe = torch.where(moving, sin, torch.ones_like(sin))
    out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe
    return torch.where(moving, out, a)


class SpASLERP(ClassCentres):
    """Every ``every`` optimiser steps, each classifier row keeps its norm and turns a fraction ``t`` of the
    way along the great circle toward its EMA class centre (nclab's SpA-SLERP; the seed's schedule is not
    public)."""

    def __init__(self, num_classes: int, t: float = 0.2, every: int = 20, momentum: float = 0.9):
        super().__init__(num_classes, momentum)
        if not 0 <= t <= 1 or every < 1:
            raise ValueError(f"t must lie in [0, 1] and every ≥ 1, got t={t!r}, every={every!r}")
        self.t, self.every, self.steps = float(t), int(every), 0

    def after_step(self, out: BatchOutput, y: torch.Tensor) -> None:
        self.update(out.features, y)
        self.steps += 1
        if self.steps % self.every == 0:
            weight = _classifier_weight(out.model)
            with torch.no_grad():
                norms = weight.norm(dim=1, keepdim=True)
                turned = slerp(F.normalize(weight.float(), dim=1), self.normalised(), self.t)
                weight.copy_((turned * norms).to(weight.dtype))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.steps = int(state["steps"])


class LogitAdjusted:
    """Logit-adjusted cross-entropy (Menon et al., ICLR 2021): CE(l + τ log π, y), π the training class
    frequencies. It trains the raw logits to be balanced: predictions use l itself, unadjusted."""

    def __init__(self, counts, tau: float = 1.0):
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if bool((counts <= 0).any()):
            raise ValueError(f"every class needs a positive count, got {counts.tolist()[:10]}")
        self.tau, self.log_prior = float(tau), (counts / counts.sum()).log().float()

    def __call__(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        logits = out.logits.float()
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.device), y)


def long_tail_method(
    spa: str | None = None,
    base: str = "ce",
    *,
    keep: float = 0.4,
    reg_weight: float = 1.0,
    t: float = 0.2,
    every: int = 20,
    tau: float = 1.0,
) -> Method:
    """A ResNet-18 with a linear head trained with ``base`` loss ("ce", or "la": :class:`LogitAdjusted`
    with ``tau``) and one SpA plug-in: ``spa`` = None, "proj" (``keep``), "reg" (``reg_weight``; negative
    misaligns) or "slerp" (``t``, ``every``). Its name says both ("ce", "la-spa-proj", …); the
    hyperparameters of the chosen pieces enter the run key."""
    if base not in ("ce", "la"):
        raise ValueError(f"base must be 'ce' (cross-entropy) or 'la' (logit-adjusted), not {base!r}")
    if spa not in (None, "proj", "reg", "slerp"):
        raise ValueError(f"spa must be None, 'proj', 'reg' or 'slerp', not {spa!r}")
    params = {"tau": float(tau)} if base == "la" else {}
    params.update({"proj": {"keep": float(keep)}, "reg": {"reg_weight": float(reg_weight)},
                   "slerp": {"t": float(t), "every": int(every)}}.get(spa, {}))  # fmt: skip

    def training(config, train_set: ImageSet):
        C = train_set.num_classes
        loss = CrossEntropy(config.label_smoothing)
        if base == "la":
            loss = LogitAdjusted(torch.bincount(train_set.labels, minlength=C), tau)
        if spa == "reg":
            return SpARegLoss(loss, C, reg_weight), []
        hooks = {"proj": [SpAProj(C, keep)], "slerp": [SpASLERP(C, t, every)]}.get(spa, [])
        return loss, hooks

    name = base if spa is None else f"{base}-spa-{spa}"
    return Method(name, params, standard_model, training)


# The seed's anchor: GLMC (Du et al., CVPR 2023), top-1 on CIFAR-100-LT at IF 100, ResNet-32, 200 epochs;
# "source" is its key in book/references.bib, which the notebook and the chapter cite beside the number.
PUBLISHED_ANCHOR = {"method": "GLMC", "dataset": "CIFAR-100-LT, IF 100", "network": "ResNet-32", "epochs": 200,
                    "top1": 0.559, "source": "du2023glmc"}  # fmt: skip

# Per run, with the profile's width and batch size, random crop and flip; 9 runs in notebook 07; the seed
# trains 200 epochs. The smoke profile trains 8, not SPEC §8's 1–2: its long-tailed stand-in has 512 images
# (8 steps an epoch, about a second on a CPU), and in 2 epochs nothing but the head classes would be learnt.
SCALES = {"smoke": Scale(epochs=8), "quick": Scale(epochs=12), "full": Scale(epochs=200)}


def recipe(
    profile: Profile | str | None = None,
    method: Method | None = None,
    *,
    dataset: str = "cifar100-lt100",
    **overrides,
) -> TrainConfig:
    """The TrainConfig of every long-tailed run at the scale of ``profile``, the same budget for every
    method: SGD (momentum 0.9) at lr 0.1, weight decay 5·10⁻⁴, a cosine schedule after a linear warm-up
    over 5 % of training, random crop and flip, the profile's width and batch size, :data:`SCALES`'s
    epochs (the seed trains 200). ``dataset``: the long-tailed set's name (``cifar100-lt100`` for
    ``data.long_tailed(cifar100, 100)``); ``method`` defaults to plain cross-entropy."""
    scale = SCALES[get_profile(profile).name]
    epochs = overrides.pop("epochs", scale.epochs)
    settings = dict(
        regime="lt",
        dataset=dataset,
        method=long_tail_method() if method is None else method,
        **scale.settings(profile, epochs),
        lr=0.1,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=0.05 * epochs,
    )
    return TrainConfig(**{**settings, **overrides})


def load_or_train(method: Method | None, train_set: ImageSet, test_set: ImageSet | None = None, **options) -> Run:
    """The run of ``method`` (default :func:`long_tail_method`, plain cross-entropy) on ``train_set`` with
    :func:`recipe`: loaded from the cache, resumed or trained, and which (``nclab.train.train_recipe``;
    ``options``: ``profile``, ``device``, ``overrides``, …)."""
    return train_recipe(recipe, method, train_set, test_set, **options)
