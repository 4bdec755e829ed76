"""Training losses: callables ``loss(out, y) → scalar`` that plug into ``nclab.train.fit``.

The training loop runs the model once per batch and hands what it produced to the loss (and to the
hooks) as one :class:`BatchOutput`: the penultimate features, the logits, the batch's per-sample extras
(``index``, an environment id, …) and the model itself, for a loss that needs its head's class vectors
or a per-environment choice. A loss is any callable of ``(out, y)``; it keeps no state of its own
(state that must survive a resume belongs in a hook, ``nclab.train.Hook``).

Under mixed precision (AMP) the model runs under autocast and the features and logits may be float16 or
bfloat16; the loss itself is called *outside* autocast, so ``.float()`` really gives float32 arithmetic
(:class:`CrossEntropy` does that), which a loss with its own matmuls and norms needs.

The losses of "neural collapse by design" (SPEC §7, seed 004; notebook 08) come twice: as functions of
tensors (:func:`normface`, :func:`ntce`, :func:`nonl`, :func:`dot_regression`, :func:`supcon`), written as
their formulas, and as ``torch.nn.Module`` wrappers that plug into ``fit`` (:class:`NormFaceLoss`, …), which
read the class vectors from the model's head. The normalised ones take raw features and class vectors and
normalise them themselves, and every softmax denominator is a ``logsumexp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.loader import random_crop, random_flip
from .heads import head_of

__all__ = [
    "BatchOutput",
    "CrossEntropy",
    "normface",
    "ntce",
    "nonl",
    "dot_regression",
    "supcon",
    "class_vectors",
    "NormFaceLoss",
    "NTCELoss",
    "NONLLoss",
    "DotRegressionLoss",
    "SupConLoss",
]


@dataclass
class BatchOutput:
    """What the model produced for one batch, as the loss and the hooks see it.

    features: h = model.features(x), (B, p); logits: model.head(h), (B, C); extras: the loader's
    per-sample extras, each (B, …) and aligned with the labels ("index" = position in the data set);
    model: the model being trained (its head, its parameters and their gradients); inputs: the batch's
    images x (B, C, H, W), for a loss that runs other modules on them (a per-environment model).
    """

    features: torch.Tensor
    logits: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    model: nn.Module | None = None
    inputs: torch.Tensor | None = None


class CrossEntropy:
    """Cross-entropy of the logits with label smoothing ε: (1 − ε)·CE(l, y) + ε·mean_c(−log softmax(l)_c).

    The default loss of ``nclab.train.fit`` (ε = ``TrainConfig.label_smoothing``, 0 in regimes A and B).
    Computed in float32 from the logits (never from a softmax: ``F.cross_entropy`` includes it, SPEC §9).
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.logits.float(), y, label_smoothing=self.label_smoothing)

    def __repr__(self) -> str:
        return f"CrossEntropy(label_smoothing={self.label_smoothing})"


# ----------------------------------------------------------------------------------------------------
# Neural collapse by design (SPEC §7): the losses as functions of tensors


def _checked(u: torch.Tensor, y: torch.Tensor, tau: float | None, w: torch.Tensor | None = None) -> None:
    if u.ndim != 2 or y.ndim != 1 or len(u) != len(y):
        raise ValueError(f"features must be (B, p) with one label each, got {tuple(u.shape)} and {tuple(y.shape)}")
    if w is not None and (w.ndim != 2 or w.shape[1] != u.shape[1]):
        raise ValueError(f"class vectors must be (C, {u.shape[1]}), got {tuple(w.shape)}")
    if w is not None and len(y) and y.device.type == "cpu" and not 0 <= int(y.min()) <= int(y.max()) < len(w):
        # (checked on the CPU only: on a GPU the check would wait for the device at every step)
        raise ValueError(f"labels must lie in 0..{len(w) - 1} (one class vector each), got {y.min()}..{y.max()}")
    if tau is not None and not tau > 0:
        raise ValueError(f"the temperature tau must be > 0, got {tau!r}")


def _unit(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows divided by their norms, in ``dtype`` (default: float64 for float64 input, else float32)."""
    dtype = dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
    return F.normalize(x.to(dtype), dim=1)


def _dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32 (half-precision features are computed in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def normface(u: torch.Tensor, w: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """NormFace: cross-entropy over the logits ŵ_c·û/τ (cosines over a temperature).

    u: (B, p) features, w: (C, p) class vectors (both normalised here), y: (B,) labels, τ > 0 (0.1–0.2).
    = −(1/B) Σ_i log( exp(ŵ_{y_i}·û_i/τ) / Σ_c exp(ŵ_c·û_i/τ) ). Wang et al., "NormFace", ACM MM 2017.
    """
    _checked(u, y, tau, w)
    dtype = _dtype(u, w)
    return F.cross_entropy(_unit(u, dtype) @ _unit(w, dtype).T / tau, y)


def _anchor_scores(u: torch.Tensor, w: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """s_ij = ŵ_{y_i}·û_j/τ: (B, B), row i the class vector of sample i against every sample of the batch."""
    dtype = _dtype(u, w)
    return _unit(w, dtype)[y] @ _unit(u, dtype).T / tau


def ntce(u: torch.Tensor, w: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """NTCE: the class vector is the anchor, contrasted against every sample of the batch (SPEC §7).

    −(1/B) Σ_i log( exp(s_ii) / Σ_{j=1..B} exp(s_ij) ), s_ij = ŵ_{y_i}·û_j/τ. The denominator holds the
    batch's B samples, the other samples of class y_i included, instead of CE's C class vectors: a larger
    set of negatives for each class vector. u: (B, p), w: (C, p), y: (B,).
    """
    _checked(u, y, tau, w)
    s = _anchor_scores(u, w, y, tau)  # (B, B)
    return (torch.logsumexp(s, dim=1) - s.diagonal()).mean()


def nonl(u: torch.Tensor, w: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """NONL: as NTCE, with only the *negatives* j (y_j ≠ y_i) in the denominator (SPEC §7).

    (1/B) Σ_i (−s_ii) + mean over the i that have a negative of log Σ_{j: y_j ≠ y_i} exp(s_ij),
    s_ij = ŵ_{y_i}·û_j/τ: an alignment term (pull û_i to its class vector) and a uniformity term (push
    the class vector away from the other classes' samples), decoupled. When every sample of the batch has
    a negative this is the mean of −log(exp(s_ii) / Σ_{y_j ≠ y_i} exp(s_ij)); a sample whose class fills
    the whole batch has nothing to push against and contributes its alignment term only (a batch of one
    class: the alignment term alone). u: (B, p), w: (C, p), y: (B,).
    """
    _checked(u, y, tau, w)
    s = _anchor_scores(u, w, y, tau)  # (B, B)
    negative = y[None, :] != y[:, None]  # (B, B): j is a negative of i
    has = negative.any(dim=1, keepdim=True)  # (B, 1)
    # a row without negatives keeps finite entries (its log-sum-exp is then discarded, gradient 0 included)
    push = torch.logsumexp(s.masked_fill(~negative & has, -math.inf), dim=1)
    uniformity = torch.where(has[:, 0], push, torch.zeros_like(push)).sum() / has.sum().clamp_min(1)
    return -s.diagonal().mean() + uniformity  # no branch on the data: no wait for the device


def dot_regression(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dot regression, for a fixed-ETF head: ½ mean_i (h_iᵀŵ_{y_i} − ‖ŵ_{y_i}‖‖h_i‖)² / ‖h_i‖, ‖h_i‖ detached.

    h: (B, p) raw features (not normalised: the loss sets their direction, their norm is free), w: (C, p)
    the head's fixed class vectors, y: (B,). Zero when every h_i points along its ŵ_{y_i}; with ‖h‖ a
    constant, its gradient in h_i is (cos − 1)·‖ŵ‖ŵ_{y_i}: only a pull toward its own class vector, where
    cross-entropy's gradient also pushes h_i away from every other class vector, pushes that a long tail
    makes lopsided (Yang et al., "Inducing neural collapse in imbalanced learning", NeurIPS 2022). A zero
    feature row counts as norm 10⁻⁸.
    """
    _checked(h, y, None, w)
    dtype = _dtype(h, w)  # as the normalised losses: float64 if either input is, else float32
    h, w_y = h.to(dtype), w.to(dtype)[y]  # (B, p), (B, p)
    norm_h = h.norm(dim=1).clamp_min(1e-8).detach()  # (B,), a constant
    dot = (h * w_y).sum(dim=1)
    return 0.5 * ((dot - w_y.norm(dim=1) * norm_h) ** 2 / norm_h).mean()


def supcon(u: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, their L_out), on the samples of a batch.

    For each anchor i with positives P(i) = {p ≠ i : y_p = y_i}:
    ℓ_i = −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(û_i·û_p/τ) / Σ_{a ≠ i} exp(û_i·û_a/τ) ); the loss is the mean of
    ℓ_i over the anchors that have a positive (an anchor whose class appears once in the batch has
    nothing to be pulled to and is left out; a batch without any positive gives 0, with a gradient of 0).
    u: (B, p) features of every view (two views of an image are two rows with the same label), y: (B,).
    """
    _checked(u, y, tau)
    z = _unit(u)
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
    s = (z @ z.T / tau).masked_fill(self_pair, -math.inf)  # (B, B), an anchor is not its own contrast
    log_prob = s - torch.logsumexp(s, dim=1, keepdim=True)
    positive = (y[None, :] == y[:, None]) & ~self_pair
    count = positive.sum(dim=1)
    has = count > 0
    mean_positive = log_prob.masked_fill(~positive, 0).sum(dim=1) / count.clamp_min(1)  # 0 without a positive
    return -(mean_positive * has).sum() / has.sum().clamp_min(1)  # no branch on the data: no wait for the device


# ----------------------------------------------------------------------------------------------------
# ... and as losses of ``fit``: (out, y) → scalar


def class_vectors(out: BatchOutput) -> torch.Tensor:
    """The class vectors of the model's head (``head.weight``, (C, p)), with their gradient when trained."""
    head = head_of(out.model) if out.model is not None else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(
            "this loss contrasts the features with the class vectors of the model's head: train a model whose "
            f"head has a weight (C, p) (Cosine, FixedETF, Linear), not {type(head).__name__}"
        )
    return weight


class _Normalised(nn.Module):
    """A loss of the features and the head's class vectors with a temperature τ (NormFace, NTCE, NONL)."""

    function = staticmethod(normface)

    def __init__(self, tau: float = 0.1):
        super().__init__()
        if not tau > 0:
            raise ValueError(f"the temperature tau must be > 0, got {tau!r}")
        self.tau = float(tau)

    def forward(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        return self.function(out.features, class_vectors(out), y, self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class NormFaceLoss(_Normalised):
    """:func:`normface` of the batch's features and the head's class vectors (a ``heads.Cosine`` head)."""


class NTCELoss(_Normalised):
    """:func:`ntce` of the batch's features and the head's class vectors (a ``heads.Cosine`` head)."""

    function = staticmethod(ntce)


class NONLLoss(_Normalised):
    """:func:`nonl` of the batch's features and the head's class vectors (a ``heads.Cosine`` head)."""

    function = staticmethod(nonl)


class DotRegressionLoss(nn.Module):
    """:func:`dot_regression` of the features the head classifies and its fixed class vectors
    (``heads.FixedETF``): φ(h) = BN(h)/‖BN(h)‖ for a head built with ``normalize=True`` (Yang et al.'s
    form; with unit features and unit class vectors the loss is ½ mean (φ·m_y − 1)²), h itself otherwise."""

    def forward(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        head = head_of(out.model) if out.model is not None else None
        features = head.embed(out.features) if head is not None and head.embeds else out.features
        return dot_regression(features, class_vectors(out), y)


class SupConLoss(nn.Module):
    """:func:`supcon` over ``views`` views of every image of the batch; no classifier involved.

    View 1 is the batch as the loader gave it (its features are the loop's); with ``views=2`` a second
    view is made here by a random crop (zero padding ``padding``) and flip of the same images, run through
    the encoder, and every image then has at least one positive, itself seen differently. The second view's
    randomness comes from torch's generator of the inputs' device, which ``fit`` checkpoints.

    Three differences from Khosla et al.: their two views are both drawn from the original image with strong
    augmentation (colour jitter, grey scale, resized crops), here view 2 is a crop and flip of view 1 (which
    the loader may have cropped and flipped already: a crop of a crop); the encoder runs on the two views as
    two batches, so BatchNorm normalises each view with its own statistics and updates its running ones
    twice per step; and there is no projection head, the loss acts on the penultimate features.
    """

    def __init__(self, tau: float = 0.1, views: int = 2, padding: int = 4):
        super().__init__()
        if not tau > 0 or views not in (1, 2) or padding < 0:
            raise ValueError(f"need tau > 0, views 1 or 2 and padding ≥ 0, got {tau!r}, {views!r}, {padding!r}")
        self.tau, self.views, self.padding = float(tau), int(views), int(padding)

    def forward(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        u, labels = out.features, y
        if self.views == 2:
            if out.inputs is None or out.model is None:
                raise ValueError("SupConLoss(views=2) makes a second view of the inputs: the BatchOutput has none")
            x = out.inputs
            shifts = torch.randint(0, 2 * self.padding + 1, (len(x), 2), device=x.device)
            flips = torch.rand(len(x), device=x.device) < 0.5
            second = random_flip(random_crop(x, shifts, self.padding), flips)
            half = u.dtype in (torch.float16, torch.bfloat16)  # run the second view as the loop ran the first
            with torch.autocast(x.device.type, dtype=u.dtype if half else torch.float32, enabled=half):
                u = torch.cat([u.float(), out.model.features(second).float()])
            labels = torch.cat([y, y])
        return supcon(u, labels, self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, views={self.views}"
