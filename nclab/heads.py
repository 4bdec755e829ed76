"""Classifier heads: the last layer, logits = head(h) for penultimate features h (B, p) → (B, C).

Every nclab model is an encoder and a head (``nclab.models``): ``model.features(x)`` gives h,
``model.head(h)`` the logits. The head is where several methods differ:

- :class:`Linear`: logits = W h + b, W (C, p) and b (C,) trained (the standard network);
- :class:`FixedETF`: logits = s · M h, M the rows of an exact simplex ETF (``nclab.etf``), frozen, no bias;
- :class:`Cosine`: logits = cos(w_c, h) / τ, normalised features and rows, no bias (NormFace);
- :class:`Prototype`: logits = p_c · ĥ, p_c the normalised mean of the normalised features of class c,
  set from a trained encoder's features (argmax = nearest prototype by cosine).

Every head computes logits = W·φ(h) + b, with φ = ``head.embed`` the identity (Linear, FixedETF), the L2
normalisation (Cosine, Prototype) or a method's own map (a frozen projector). Detectors and metrics read a
head through one accessor, :func:`weight_and_bias`, which says when the head has no bias (``None``), no W
yet (an unfitted Prototype) or acts on φ(h) rather than on h.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .etf import simplex_etf

__all__ = ["Head", "Linear", "FixedETF", "Cosine", "Prototype", "head_of", "weight_and_bias", "classifier", "embedded"]


class Head(nn.Module):
    """A classifier head: ``forward(h)`` (B, p) → logits (B, C) = W·φ(h) + b.

    Subclasses set ``num_classes`` and ``in_features``, implement ``linear()`` → (W (C, d), b (C,) or None)
    and, when φ is not the identity, set ``embeds = True`` and implement ``embed(h)`` → φ(h) (B, d): the
    features the classifier W acts on (ĥ = h/‖h‖ for a cosine classifier, a projector's output, …).
    """

    embeds = False  # True: the logits are computed from embed(h), not from h

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """φ(h): the features the classifier's W acts on (the identity unless ``embeds``)."""
        return h

    def linear(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class Linear(Head, nn.Linear):
    """logits = W h + b: W (C, p) and b (C,) trained (torch's ``nn.Linear``, same initialisation).

    ``bias=False`` drops b (``weight_and_bias`` then returns None for it).
    """

    def __init__(self, in_features: int, num_classes: int, bias: bool = True):
        nn.Linear.__init__(self, in_features, num_classes, bias=bias)
        self.num_classes = num_classes

    def linear(self):
        return self.weight, self.bias


class FixedETF(Head):
    """logits = s · M φ(h): the rows of M (C, p) are the unit vertices of an exact simplex ETF, frozen.

    M comes from ``nclab.etf.simplex_etf(C, p, seed)`` and is a buffer, not a parameter: no optimiser
    moves it, and it is saved with the model. ``scale`` s > 0 sets the logits' range. No bias. Needs
    p ≥ C − 1. ``normalize``: φ(h) = BN(h)/‖BN(h)‖, a trained BatchNorm1d then an L2 normalisation, as
    Yang et al.'s released code feeds its dot-regression loss (the authors' form, ``embeds``); without it
    φ(h) = h (the raw form: the features' norms are left free).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 1.0, seed: int = 0, normalize: bool = False):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"FixedETF scale must be > 0, got {scale!r}")
        self.in_features, self.num_classes, self.scale = in_features, num_classes, float(scale)
        self.register_buffer("weight", self.scale * simplex_etf(num_classes, in_features, seed).float())
        self.embeds = bool(normalize)
        self.norm = nn.BatchNorm1d(in_features) if normalize else None

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(h), dim=1) if self.embeds else h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.embed(h) @ self.weight.T.to(h.dtype)

    def linear(self):
        return self.weight, None


class Cosine(Head):
    """logits = ŵ_c · ĥ / τ = cos(w_c, h) / τ: normalised features and rows, no bias (NormFace).

    W (C, p) is trained (initialised as ``nn.Linear``'s weight); the temperature τ > 0 (0.1–0.2 in SPEC
    §7) sets how peaked the softmax can get. Wang et al., "NormFace", ACM MM 2017.
    """

    embeds = True

    def __init__(self, in_features: int, num_classes: int, tau: float = 0.1):
        super().__init__()
        if not tau > 0:
            raise ValueError(f"Cosine temperature tau must be > 0, got {tau!r}")
        self.in_features, self.num_classes, self.tau = in_features, num_classes, float(tau)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """ĥ = h / ‖h‖."""
        return F.normalize(h, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.embed(h) @ F.normalize(self.weight, dim=1).T.to(h.dtype) / self.tau

    def linear(self):
        return F.normalize(self.weight, dim=1) / self.tau, None


class Prototype(Head):
    """logits = p_c · ĥ: cosine to class prototypes p_c = normalise(mean of ĥ_i over y_i = c) (SPEC §7).

    Not trained by gradient: :meth:`fit` sets the prototypes from the features of a trained encoder
    (``Prototype.from_features(features, labels)`` builds and fits one). The predicted class is the
    nearest prototype by cosine.
    """

    embeds = True

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.register_buffer("prototypes", torch.zeros(num_classes, in_features))
        self.register_buffer("fitted", torch.tensor(False))

    @classmethod
    def from_features(cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> Prototype:
        """A Prototype head fitted on features (N, p) and labels (N,) (C = max label + 1 by default)."""
        C = int(labels.max()) + 1 if num_classes is None else num_classes
        return cls(features.shape[1], C).fit(features, labels)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> Prototype:
        """Set p_c = normalise((1/N_c) Σ_{y_i = c} h_i/‖h_i‖) from features (N, p), labels (N,); returns self."""
        if features.ndim != 2 or features.shape[1] != self.in_features or len(labels) != len(features):
            raise ValueError(
                f"features must be (N, {self.in_features}) with one label each, got "
                f"{tuple(features.shape)} and {len(labels)} labels"
            )
        counts = torch.bincount(labels, minlength=self.num_classes)
        if len(counts) > self.num_classes or bool((counts == 0).any()):
            raise ValueError(
                f"every class 0..{self.num_classes - 1} needs at least one feature, got counts {counts.tolist()[:10]}"
            )
        u = F.normalize(features.double(), dim=1)  # ĥ_i (N, p)
        sums = torch.zeros(self.num_classes, self.in_features, dtype=torch.float64, device=u.device)
        sums.index_add_(0, labels.to(u.device), u)  # Σ ĥ_i per class
        self.prototypes.copy_(F.normalize(sums / counts[:, None].to(u.device), dim=1))
        self.fitted.fill_(True)
        return self

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """ĥ = h / ‖h‖."""
        return F.normalize(h, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self.embed(h) @ self.prototypes.T.to(h.dtype)

    def linear(self):
        self._check_fitted()
        return self.prototypes, None

    def _check_fitted(self):
        if not bool(self.fitted):
            raise RuntimeError(
                "this Prototype head has no prototypes yet: call head.fit(features, labels) with "
                "the training features of the encoder (or use Prototype.from_features)."
            )


def head_of(model_or_head: nn.Module) -> Head:
    """The head of an nclab model (``model.head``), or the head itself."""
    head = model_or_head if isinstance(model_or_head, Head) else getattr(model_or_head, "head", None)
    if not isinstance(head, Head):
        raise TypeError(
            f"{type(model_or_head).__name__} has no nclab head: build the model with a head from "
            f"nclab.heads (an nclab model has model.features(x) and model.head(h))."
        )
    return head


def weight_and_bias(model_or_head: nn.Module, *, embedded: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head as a linear map: (W (C, d), b (C,) or None), detached, with logits = W h + b.

    b is None when the head has no bias (FixedETF, Cosine, Prototype, ``Linear(bias=False)``); the
    detectors of ``nclab.ood`` and ``nclab.collapse.nc_metrics`` then take b = 0. A head that computes its
    logits from φ(h) = ``head.embed(h)`` (Cosine, Prototype: h/‖h‖; a projector) is not W h + b: for it
    this raises unless ``embedded=True`` says the caller feeds φ(h) (``nclab.tables`` does). An unfitted
    Prototype head has no W yet and raises too.
    """
    head = head_of(model_or_head)
    name = type(head).__name__
    if head.embeds and not embedded:
        raise ValueError(
            f"a {name} head computes its logits from φ(h) = head.embed(h) (for a cosine classifier h/‖h‖), "
            f"not from h: call weight_and_bias(model, embedded=True) and give the detector head.embed(h)."
        )
    if embedded and not head.embeds:
        raise ValueError(
            f"a {name} head acts on the features h themselves: call weight_and_bias(model) and use the raw features."
        )
    W, b = head.linear()
    return W.detach(), None if b is None else b.detach()


def classifier(model_or_head: nn.Module) -> tuple[Head, torch.Tensor, torch.Tensor | None]:
    """(head, W, b) with logits = W·φ(h) + b, φ = ``head.embed`` (the identity for a head that does not
    embed): the classifier as the NC metrics and the OOD detectors read it."""
    head = head_of(model_or_head)
    return (head, *weight_and_bias(head, embedded=head.embeds))


@torch.no_grad()
def embedded(head: Head | None, features: torch.Tensor) -> torch.Tensor:
    """φ(h) of features (N, p), on the CPU: the features the classifier acts on (h itself for a head that
    does not embed, or for no head)."""
    if head is None or not head.embeds:
        return features
    device = next(itertools.chain(head.parameters(), head.buffers())).device
    return head.embed(features.to(device)).float().cpu()
