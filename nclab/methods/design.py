"""Neural collapse by design (seed 004, "Neural Collapse by Design", SPEC §7): losses whose optimum is the
simplex ETF, and classifiers that are their class means.

Cross-entropy reaches neural collapse only late, in the terminal phase, and leaves the norms of the
features free. Seed 004 fixes each of the two usual paradigms where it fails:

- from the cross-entropy side, **normalised losses** on the unit sphere (features and class vectors
  normalised, a temperature τ): NormFace (softmax over the C class vectors), **NTCE** (the class vector is
  the anchor, contrasted against the B samples of the batch: more negatives) and **NONL** (the same with
  the negatives alone in the denominator: the alignment and uniformity terms decoupled);
- from the contrastive side, **SupCon** trains an encoder without a classifier; its class-mean prototypes
  (``heads.Prototype``) classify as well as a linear probe trained afterwards.

And a baseline that *fixes* the geometry instead of learning it: a frozen simplex-ETF head
(``heads.FixedETF``) trained by dot regression. :func:`by_design` builds each as a :class:`Method` (model,
loss, hooks), with :class:`NCTrace`, a hook that measures every NC metric of the training features at
log-spaced optimisation steps (learning is unchanged), and :class:`RunningPrototypes`, which keeps a
SupCon model's prototype head at its running class means. :func:`recipe` gives the common budget;
the seed's claims and their verdicts are in ``nclab.tables`` (``CLAIMS``, ``design_differences``). Book
chapter "Neural collapse by design"; notebook 08.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from .. import heads, losses, models
from ..collapse import class_means, nc_metrics, ncc_predictions
from ..config import Profile, get_profile, log_spaced_epochs
from ..data import GpuLoader, ImageSet
from ..features import extract_features
from ..train import Hook, Method, Run, Scale, TrainConfig, standard_model, train_recipe
from .spa import ClassCentres

__all__ = [
    "LOSSES",
    "NCTrace",
    "RunningPrototypes",
    "by_design",
    "traces",
    "SCALES",
    "recipe",
    "load_or_train",
    "TRACED_METRICS",
    "MORE_METRICS",
]

LOSSES = {  # name → what it trains
    "ce": "cross-entropy, linear head",
    "normface": "NormFace: cross-entropy over cosines / τ, cosine head",
    "ntce": "NTCE: class vector against every sample of the batch, cosine head",
    "nonl": "NONL: class vector against the negatives of the batch only, cosine head",
    "etf-dr": "dot regression onto a frozen simplex-ETF head",
    "supcon": "supervised contrastive, two views, class-mean prototype head",
}


class NCTrace(Hook):
    """Every NC metric (SPEC §1) of a fixed set of training images at chosen optimisation steps.

    After the optimiser steps listed in ``steps`` (counted from 1), the model runs in eval mode over
    ``data`` (un-augmented) and ``nclab.collapse.nc_metrics`` measures the features its classifier acts on;
    BatchNorm's running statistics and the random generators are left untouched, so the run learns
    exactly what it would learn without the trace. ``records`` (one dict per traced step: ``step``,
    ``accuracy`` and every ``nc_metrics`` key) is checkpointed, so a resumed run keeps its earlier points.
    """

    def __init__(self, data: ImageSet, steps, batch_size: int = 500):
        self.data, self.steps, self.batch_size = data, frozenset(int(s) for s in steps), int(batch_size)
        self.step, self.records, self._loader = 0, [], None

    def after_step(self, out, y) -> None:
        self.step += 1
        if self.step in self.steps:
            device = y.device
            if self._loader is None or self._loader.device != device:
                self._loader = GpuLoader(
                    self.data, self.batch_size, shuffle=False, augment=False, drop_last=False, device=device
                )
            fs = extract_features(out.model, self._loader)
            head, W, b = heads.classifier(out.model)  # the features its classifier acts on, φ(h), and W, b
            embedded = heads.embedded(head, fs.features)
            metrics = nc_metrics(embedded, fs.labels, W, b)
            self.records.append({"step": self.step, "accuracy": fs.accuracy, **metrics, **_on_sphere(embedded, fs, W)})

    def frame(self) -> pd.DataFrame:
        """The records as a table, one row per traced step."""
        return pd.DataFrame(self.records)

    def state_dict(self) -> dict:
        return {"step": self.step, "records": self.records}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.records = int(state["step"]), list(state["records"])


def _on_sphere(embedded: torch.Tensor, fs, W: torch.Tensor) -> dict[str, float]:
    """Every NC metric of the unit features φ(h)/‖φ(h)‖, keys "sphere:<metric>": the same space for every
    loss. NC4 compares the network's own decisions with the nearest class mean on the sphere (its logits
    divided by ‖φ(h)‖ keep their argmax, which a bias would not allow as W φ̂ + b)."""
    unit = F.normalize(embedded.double(), dim=1)
    metrics = nc_metrics(unit, fs.labels, W.double())  # NC2 of W and NC3 as in the classifier's space
    nearest = ncc_predictions(unit, class_means(unit, fs.labels)[0])
    metrics["nc4_ncc_mismatch"] = (fs.predictions != nearest).double().mean().item()
    return {f"sphere:{k}": v for k, v in metrics.items()}


class RunningPrototypes(ClassCentres):
    """Keeps a ``heads.Prototype`` head at p_c = normalise(EMA of the normalised features of class c).

    After every step, the batch's normalised features update the running class means (momentum 0.9, as
    ``spa.ClassCentres``) and the head's prototypes become those means, normalised: the classifier that a
    contrastive loss optimises without training it (seed 004). Classes not seen yet keep their initial
    prototype.
    """

    def update(self, features: torch.Tensor, y: torch.Tensor) -> None:
        super().update(F.normalize(features.detach().float(), dim=1), y)

    def after_step(self, out, y) -> None:
        self.update(out.features, y)
        head = heads.head_of(out.model)
        with torch.no_grad():
            seen = self.seen.to(head.prototypes.device)
            head.prototypes[seen] = F.normalize(self.means[self.seen], dim=1).to(head.prototypes)


def _model(loss: str, config, train_set: ImageSet, tau: float, etf_scale: float, dr: str):
    C, p = train_set.num_classes, 8 * config.width  # ResNet-18's penultimate width
    with torch.random.fork_rng(devices=[]):  # the head's random draws leave the encoder's initialisation alone
        if loss in ("normface", "ntce", "nonl"):
            head = heads.Cosine(p, C, tau)
        elif loss == "etf-dr":
            head = heads.FixedETF(p, C, scale=etf_scale, normalize=dr == "authors")
        else:  # supcon: prototypes start as random unit vectors and follow the class means from the first step
            head = heads.Prototype(p, C)
            head.prototypes.copy_(F.normalize(torch.randn(C, p), dim=1))
            head.fitted.fill_(True)
    return models.resnet18(C, config.width, head=head, normalization=train_set.normalization)


def by_design(
    loss: str = "ntce",
    *,
    tau: float = 0.1,
    trace: int = 16,
    trace_images: int = 5_000,
    views: int = 2,
    etf_scale: float = 1.0,
    dr: str = "authors",
) -> Method:
    """A ResNet-18 trained by one of :data:`LOSSES`, with the head that loss needs (the encoder starts from
    the same weights whatever the loss, for a given seed).

    ``loss``: "ce" (linear head, cross-entropy), "normface", "ntce", "nonl" (``heads.Cosine(τ)``: its rows
    are the class vectors, its logits ŵ_c·ĥ/τ), "etf-dr" (``heads.FixedETF(scale=etf_scale)``, dot
    regression), "supcon" (``losses.SupConLoss(τ, views)``, a ``heads.Prototype`` head kept at the running
    class means by :class:`RunningPrototypes`). ``dr``, for "etf-dr": "authors" (Yang et al.'s released
    code: the features batch-normalised, then L2-normalised, before the dot regression) or "raw" (the
    regression on h itself, ‖h‖ detached: its gradient moves h only along its class vertex, so the part of
    h orthogonal to it and the features' norms barely change). ``tau``: the temperature (SPEC §7: 0.1–0.2). ``trace``:
    how many log-spaced optimisation steps :class:`NCTrace` measures (0: none) on a stratified subset of
    at most ``trace_images`` training images. Every hyperparameter that applies enters the run key; with
    ``trace=0``, ``by_design("ce")`` is the plain cross-entropy method ``spa.long_tail_method()`` (the same
    run).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, not {loss!r}")
    if dr not in ("authors", "raw"):
        raise ValueError(f"dr must be 'authors' (batch norm + L2 normalisation, as Yang et al.) or 'raw', not {dr!r}")
    if not tau > 0 or trace < 0 or trace_images < 1:
        raise ValueError(f"need tau > 0, trace ≥ 0 and trace_images ≥ 1, got {tau!r}, {trace!r}, {trace_images!r}")
    params = {
        "normface": {"tau": tau},
        "ntce": {"tau": tau},
        "nonl": {"tau": tau},
        "etf-dr": {"etf_scale": etf_scale, "dr": dr},
        "supcon": {"tau": tau, "views": views},
    }.get(loss, {})
    if trace:
        params.update(trace=int(trace), trace_images=int(trace_images), spaces="classifier+sphere")

    def build_model(config, train_set: ImageSet):
        if loss == "ce":
            return standard_model(config, train_set)
        return _model(loss, config, train_set, tau, etf_scale, dr)

    def training(config, train_set: ImageSet):
        C = train_set.num_classes
        built = {
            "ce": (losses.CrossEntropy(config.label_smoothing), []),
            "normface": (losses.NormFaceLoss(tau), []),
            "ntce": (losses.NTCELoss(tau), []),
            "nonl": (losses.NONLLoss(tau), []),
            "etf-dr": (losses.DotRegressionLoss(), []),
            "supcon": (losses.SupConLoss(tau, views), [RunningPrototypes(C)]),
        }
        criterion, hooks = built[loss]
        if trace:
            total = config.epochs * max(len(train_set) // config.batch_size, 1)
            traced = train_set if len(train_set) <= trace_images else train_set.subset(trace_images, seed=0)
            hooks = [*hooks, NCTrace(traced, log_spaced_epochs(total, trace))]
        return criterion, hooks

    return Method(loss, params, build_model, training)


def traces(runs: dict) -> pd.DataFrame:
    """The :class:`NCTrace` records of every run as one long table: ``run``, ``step``, ``epoch`` (steps
    counted in epochs: 1.0 = the end of the first), ``accuracy`` and every NC metric. ``runs``: {name: Run}
    whose method traced (``by_design(..., trace > 0)``)."""
    frames = []
    for name, run in runs.items():
        trace = next((hook for hook in run.hooks if isinstance(hook, NCTrace)), None)
        if trace is None:
            raise ValueError(f"run {name!r} was not traced: train it with by_design(..., trace=16)")
        frame = trace.frame()
        frame.insert(0, "run", name)
        frame.insert(2, "epoch", frame["step"] / (max(trace.steps) / run.config.epochs))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# The same budget for every loss, with the profile's width. quick and full train with random crops and
# flips, as the seed's CIFAR runs; smoke trains 6 epochs of 10 steps on 320 images without augmentation
# (SPEC §8 says 1–2 epochs: in 2 no loss would reach the terminal phase, whose speed is what notebook 08
# compares; Papyan et al. also train without augmentation).
SCALES = {
    "smoke": Scale(epochs=6, batch_size=32, images=320, augment=False),
    "quick": Scale(epochs=15, images=10_000),
    "full": Scale(epochs=200),
}


def recipe(
    profile: Profile | str | None = None, method: Method | None = None, *, dataset: str = "cifar100", **overrides
) -> TrainConfig:
    """The TrainConfig of every run of notebook 08 at the scale of ``profile``, the same budget for every
    loss: SGD (momentum 0.9) at lr 0.1, weight decay 5·10⁻⁴, a cosine schedule after a linear warm-up over
    5 % of training, the profile's width, :data:`SCALES`'s epochs, batch size and augmentation. ``method``
    defaults to ``by_design("ntce")``; ``dataset`` names the training set; the training images are the
    caller's (notebook 08 takes ``SCALES[profile].subset(train_set)``)."""
    scale = SCALES[get_profile(profile).name]
    epochs = overrides.pop("epochs", scale.epochs)
    settings = dict(
        regime="design",
        dataset=dataset,
        method=by_design() if method is None else method,
        **scale.settings(profile, epochs),
        lr=0.1,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=0.05 * epochs,
    )
    return TrainConfig(**{**settings, **overrides})


def load_or_train(method: Method | None, train_set: ImageSet, test_set: ImageSet | None = None, **options) -> Run:
    """The run of ``method`` (default ``by_design("ntce")``) on ``train_set`` with :func:`recipe`: loaded
    from the cache, resumed or trained, and which (``nclab.train.train_recipe``; ``options``: ``profile``,
    ``device``, ``overrides``, …)."""
    return train_recipe(recipe, method, train_set, test_set, **options)


TRACED_METRICS = {  # the five NC metrics of the "time to collapse" comparison → what each measures
    "nc1": "NC1: within-class variability",
    "nc2_equinorm_means": "NC2: equal norms of the class means",
    "nc2_maxangle_means": "NC2: class means at the ETF's angles",
    "nc3": "NC3: classifier ∝ class means",
    "nc4_ncc_mismatch": "NC4: classifier = nearest class mean",
}

MORE_METRICS = {  # the other NC metrics of the trace (nc_metrics' keys) → what each measures
    "nc1_trace_ratio": "NC1: Tr Σ_W / Tr Σ_B",
    "nc2_equiangular_means": "NC2: equal angles of the means",
    "nc2_equinorm_weights": "NC2: equal norms of the rows",
    "nc2_etf_distance": "NC2: classifier Gram vs ETF",
}
