"""Layer-wise control of neural collapse (SPEC §4, seed 000): less collapse in the encoder, more after it.

Harun, Gallardo & Kanan ("Controlling Neural Collapse Enhances Out-of-Distribution Detection and Transfer
Learning", ICML 2025) observe that a strongly collapsed layer is good at telling ID from OOD inputs and bad
at transferring to another data set, and split the network in two:

- the **encoder** (the ResNet-18 up to its pooled features h) is kept *less* collapsed by an entropy
  regulariser on its L2-normalised embedding: :func:`entropy_regularizer`, which pushes every embedding
  away from its nearest neighbour in the batch (Kozachenko–Leonenko's nearest-neighbour estimate of the
  differential entropy, up to constants);
- after it a **frozen projector** whose two linear layers are set to simplex ETFs (ReLU between, L2
  normalisation after, :class:`EtfProjector`) makes the features the classifier sees collapse *more*.

Loss = CE (label smoothing 0.1) + α · L_ent(h), α = 0.05 (:class:`ControlLoss`). The method is
:func:`control` (a :class:`nclab.methods.Method`); :func:`recipe` gives the training configuration of the
experiment (the authors' AdamW and cosine schedule) for it and for the baseline, a ResNet-18 with a linear
head trained on cross-entropy with the same label smoothing and budget. The authors' projector is
512 → 2048 → 512 with the "rectangular" matrix √(c/(c−1)) (I − 11ᵀ/c) (:func:`rectangular_etf`), not an
exact ETF when the matrix is not square; on a ResNet's non-negative features it computes the same map as
the square exact ETF with U = I (``basis="identity"``). nclab uses exact ETFs with a random orthonormal U
by default (``nclab.etf.simplex_etf``, SPEC §4), hence a projector no wider than p + 1. Book chapter
"Controlling collapse layer by layer"; notebook 05.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import models
from ..config import Profile, get_profile
from ..data import ImageSet
from ..etf import simplex_etf
from ..heads import Head
from ..losses import BatchOutput
from ..train import EpochMeans, Hook, Method, Run, Scale, TrainConfig, train_recipe

__all__ = [
    "entropy_regularizer",
    "EtfProjector",
    "ControlLoss",
    "control",
    "SCALES",
    "recipe",
    "load_or_train",
    "rectangular_etf",
]

EPS = 1e-8  # inside the log of SPEC §4: a duplicate embedding costs −log(1e-8) ≈ 18.4, not inf


def entropy_regularizer(z: torch.Tensor) -> torch.Tensor:
    """L_ent = −(1/B) Σ_i log(‖ẑ_i − ẑ_nn(i)‖ + 1e-8), ẑ = z/‖z‖, nn(i) = argmax_{j≠i} cos(z_i, z_j).

    z: (B, d) embeddings of one batch, B ≥ 2 → a scalar tensor (float32 at least) that back-propagates
    into z. Lower when the embeddings spread over the sphere, higher when they clump (collapse): adding
    α·L_ent to the loss fights collapse. The nearest neighbour is chosen without gradient (an index) and
    the distance to it is differentiated. SPEC §4; Sablayrolles et al. (ICLR 2019) for the estimator.
    """
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"the entropy regulariser needs a batch of at least 2 embeddings (B, d), got {tuple(z.shape)}")
    z_hat = F.normalize(z.float(), dim=1)  # (B, d) unit rows
    with torch.no_grad():
        cosine = z_hat @ z_hat.T  # (B, B)
        cosine.fill_diagonal_(-math.inf)  # a point is not its own neighbour
        nearest = cosine.argmax(dim=1)  # (B,) nn(i)
    distance = (z_hat - z_hat[nearest]).norm(dim=1)  # (B,) ‖ẑ_i − ẑ_nn(i)‖
    return -torch.log(distance + EPS).mean()


def _check_basis(basis: str) -> None:
    if basis not in ("random", "identity"):
        raise ValueError(f"basis must be 'random' (a seeded orthonormal U) or 'identity' (U = I), not {basis!r}")


class EtfProjector(Head):
    """logits = W · φ(h) + b with φ(h) = normalise(M₂ ReLU(M₁ h)): a frozen ETF projector, then a trained
    linear classifier.

    M₁ (hidden, p) and M₂ (out, hidden) are exact simplex ETFs (their rows are unit vectors with pairwise
    cosine −1/(rows − 1)), stored as buffers, so no optimiser can move them and they are saved with the
    model. W (C, out) and b are an ``nn.Linear``. An exact ETF of k rows needs k − 1 ≤ its input dimension:
    hidden ≤ p + 1 and out ≤ hidden + 1 (default hidden = out = p). ``basis``: "random" builds each ETF
    from a seeded random orthonormal U (``nclab.etf.simplex_etf``, SPEC §4); "identity" uses U = I, i.e.
    M = √(p/(p−1)) (I − 11ᵀ/p) for both layers (square only), the map the authors' 512 → 2048 → 512
    projector computes on non-negative features (see :func:`rectangular_etf`). ``embed(h)`` = φ(h), the
    features the classifier acts on ("projector" in the layer-wise tables).
    """

    embeds = True
    embedding_name = "projector"  # the stage name of φ(h) in nclab.tables.layerwise_nc

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: int | None = None,
        out: int | None = None,
        seed: int = 0,
        basis: str = "random",
    ):
        super().__init__()
        hidden, out = hidden or in_features, out or in_features
        _check_basis(basis)
        if basis == "identity" and not hidden == out == in_features:
            raise ValueError(
                f"basis='identity' builds square ETFs (U = I): it needs hidden = out = p = {in_features}, "
                f"got hidden = {hidden}, out = {out}"
            )
        for rows, dim, name in ((hidden, in_features, "hidden"), (out, hidden, "out")):
            if rows - 1 > dim:
                raise ValueError(
                    f"projector {name} = {rows}: an exact simplex ETF of {rows} rows needs at least {rows - 1} "
                    f"input dimensions, it gets {dim}. Use {name} ≤ {dim + 1} (the authors' 4× wider layer "
                    f"is not an exact ETF, and on ResNet features it acts as a p-wide one: see rectangular_etf)."
                )
        self.in_features, self.num_classes, self.hidden, self.out = in_features, num_classes, hidden, out
        if basis == "identity":
            first = second = rectangular_etf(in_features, in_features)  # exact when square
        else:
            first, second = simplex_etf(hidden, in_features, seed), simplex_etf(out, hidden, seed + 1)
        self.register_buffer("first", first.float())  # M₁ (hidden, p)
        self.register_buffer("second", second.float())  # M₂ (out, hidden)
        self.classifier = nn.Linear(out, num_classes)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """φ(h) = M₂ ReLU(M₁ h) / ‖M₂ ReLU(M₁ h)‖: (B, p) → (B, out), unit rows."""
        hidden = F.relu(h @ self.first.T.to(h.dtype))  # (B, hidden)
        return F.normalize(hidden @ self.second.T.to(h.dtype), dim=1)  # (B, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(h))

    def linear(self):
        return self.classifier.weight, self.classifier.bias


class ControlLoss(Hook):
    """CE(logits, y) with label smoothing ε + α · L_ent(h), h the encoder's features (``out.features``).

    SPEC §4: ε = 0.1, α = 0.05 (the method takes ε from ``TrainConfig.label_smoothing``, as the baseline's
    cross-entropy does, so that one setting serves both). α was chosen by the authors at batch 512; the
    nearest-neighbour distances, hence L_ent, depend on the batch size.

    Also a hook: each epoch's history gets ``ce`` and ``entropy``, the epoch means of the two terms (kept
    on the device during the epoch, so no synchronisation per step).
    """

    def __init__(self, alpha: float = 0.05, label_smoothing: float = 0.1):
        if not alpha >= 0:
            raise ValueError(f"alpha (the weight of the entropy term) must be ≥ 0, got {alpha!r}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        self.alpha, self.label_smoothing = float(alpha), float(label_smoothing)
        self._means = EpochMeans("ce", "entropy")

    def __call__(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(out.logits.float(), y, label_smoothing=self.label_smoothing)
        entropy = entropy_regularizer(out.features)
        self._means.add(ce, entropy)
        return ce + self.alpha * entropy

    def load_state_dict(self, state: dict) -> None:
        """A resume starts at an epoch boundary: forget the steps of an interrupted epoch."""
        self._means.reset()

    def end_epoch(self, epoch, model, train_loader) -> dict | None:
        return self._means.pop()

    def __repr__(self) -> str:
        return f"ControlLoss(alpha={self.alpha}, label_smoothing={self.label_smoothing})"


def control(
    alpha: float = 0.05, hidden: int | None = None, out: int | None = None, seed: int = 0, basis: str = "random"
) -> Method:
    """The NC-control method: ResNet-18 encoder → :class:`EtfProjector` (hidden, out, seed, basis; default
    p, p, 0, "random") → trained linear classifier, loss :class:`ControlLoss` (α, and the config's label
    smoothing). Every argument is in the run key. Train it with :func:`recipe` (``recipe(profile)``)."""
    _check_basis(basis)  # here too: a wrong basis fails when the method is made, not when it trains

    def build_model(config, train_set: ImageSet) -> nn.Module:
        C, p = train_set.num_classes, 8 * config.width
        head = EtfProjector(p, C, hidden, out, seed, basis)
        return models.resnet18(C, config.width, head=head, normalization=train_set.normalization)

    def training(config, train_set: ImageSet):
        return ControlLoss(alpha, config.label_smoothing), []

    params = {"alpha": float(alpha), "hidden": hidden, "out": out, "seed": seed, "basis": basis}
    return Method("control", params, build_model, training)


# Per run, with the profile's width and batch size; two runs fit a T4 session in quick; the authors train 100
# epochs. The snapshots are the profile's count (6, 10 in full), log-spaced.
SCALES = {
    "smoke": Scale(epochs=2, snapshots=6),
    "quick": Scale(epochs=10, snapshots=6),
    "full": Scale(epochs=100, snapshots=10),
}


def recipe(
    profile: Profile | str | None = None, method: Method | None = None, *, dataset: str = "cifar100", **overrides
) -> TrainConfig:
    """The training configuration of the NC-control experiment at the scale of ``profile``, for ``method``
    (default :func:`control`; pass ``nclab.methods.ERM`` for the baseline).

    The authors' recipe, scaled to one GPU: AdamW (β₁ 0.9, decoupled weight decay 0.05), lr 0.01 at batch
    512 → 2.5e-3 at batch 128 (used for every batch size), cosine schedule after a linear warm-up over
    5 % of training, label smoothing 0.1 (the baseline's cross-entropy too), :data:`SCALES`'s epochs (10 in
    the quick profile, so that both runs fit a Colab session; 100 in the full one, as the authors). With
    plain SGD at lr 0.1 the classifier on the unit-norm projector output learns several times slower than
    a linear head, which would compare a half-trained model with a trained one. ``overrides`` replace any
    field.
    """
    scale = SCALES[get_profile(profile).name]
    epochs = overrides.pop("epochs", scale.epochs)
    settings = dict(
        regime="adamw",
        dataset=dataset,
        method=control() if method is None else method,
        **scale.settings(profile, epochs),
        optimizer="adamw",
        lr=2.5e-3,
        weight_decay=0.05,
        schedule="cosine",
        warmup_epochs=0.05 * epochs,
        label_smoothing=0.1,
    )
    return TrainConfig(**{**settings, **overrides})


def load_or_train(method: Method | None, train_set: ImageSet, test_set: ImageSet | None = None, **options) -> Run:
    """The run of ``method`` (default :func:`control`) on ``train_set`` with :func:`recipe`: loaded from the
    cache, resumed or trained, and which (``nclab.train.train_recipe``; ``options``: ``profile``,
    ``device``, ``overrides``, …)."""
    return train_recipe(recipe, method, train_set, test_set, **options)


def rectangular_etf(rows: int, cols: int, c: int | None = None) -> torch.Tensor:
    """The authors' projector weight: √(c/(c−1)) (I_{rows×cols} − 11ᵀ/c), float64 (rows, cols), with
    c = min(rows, cols) by default (their code uses c = the projector's output width, 512, for both the
    2048 × 512 and the 512 × 2048 layer).

    Square, it is an exact simplex ETF (U = I). Rectangular, it is not: with more rows than columns, the
    rows past ``cols`` are all one vector, −√(c/(c−1))·1/c; with more columns than rows, the rows do not
    sum to zero and their pairwise cosines are not −1/(rows − 1) (+1/257 for the 512 × 2048 layer). On
    non-negative features (a ResNet's h, after ReLU and pooling) the difference vanishes: the 1536 extra
    hidden units compute −√(c/(c−1))·mean(h) ≤ 0, which the ReLU sets to 0, so the second layer only
    reads its first 512 columns, and the 512 → 2048 → 512 map equals normalise(S ReLU(S h)) with S the
    square ETF of U = I: ``EtfProjector(..., basis="identity")``.
    """
    c = min(rows, cols) if c is None else c
    return math.sqrt(c / (c - 1)) * (torch.eye(rows, cols, dtype=torch.float64) - 1.0 / c)
