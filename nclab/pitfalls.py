"""Wrong on purpose: the pitfalls of SPEC §9, each as the short computation another implementation of this
practical work got wrong, for notebook 09 to set beside nclab's own. Never measure with these.

Each function names the mistake it makes; the right version is the one in ``collapse`` or ``ood`` that its
docstring points to. ``ncc_accuracy_bounds`` is the exception: a correct bound, used to audit a report.
``REPORT_DIAGNOSES`` is that audit (seed 002, the practical-work report): what is wrong in each excerpt
notebook 09 quotes, and what the report should have said; ``REPORT_OOD_AUROC`` its OOD results as printed.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch
import torch.nn.functional as F

from . import collapse, data, ood

__all__ = [
    "nc1_full_pinv",
    "nc1_without_one_over_c",
    "MahalanobisDiagonal",
    "MahalanobisTotal",
    "softmax_then_cross_entropy",
    "nc4_as_bias_norm",
    "augmented",
    "ncc_accuracy_bounds",
    "REPORT_OOD_AUROC",
    "REPORT_DIAGNOSES",
    "report_errata",
]

REPORT_OOD_AUROC = {  # seed 002, section 1.1: CIFAR-100 (ID) against CIFAR-10, model 1, as printed
    "msp": 0.7028,
    "maxlogit": 0.6850,
    "energy": 0.2971,  # the free energy ranked as if higher were ID: the score's AUROC is 1 − 0.2971
    "mahalanobis": (0.5779, 0.3759),  # two values in one paragraph
    "vim": 0.4886,
}

REPORT_DIAGNOSES = {  # excerpt of notebook 09 → (kind of error, what the report should have said)
    "E1": ("sign flipped", "energy AUROC 1 − 0.2971 = 0.7029, beside MSP's 0.7028: the free energy was ranked"),
    "E2": ("two values for one quantity", "one Mahalanobis AUROC, from one results table, naming the variant"),
    "E3": (
        "impossible given the other numbers",
        "NCC training accuracy in [0.99948, 0.99988] given 0.99968 and an agreement of 0.9998: 0.99972",
    ),
    "E4": ("definition mislabelled", "NC4: the network decides as the nearest-class-centre classifier"),
    "E5": ("labels swapped", "MSP lies in [0, 1], the maximum logit does not: the two score ranges swapped"),
    "E6": ("correct", "−1/(C − 1) = −0.0101 for C = 100: the mean cosine of a simplex ETF"),
    "E7": ("correct", "MSP and MaxLogit rank by the same largest logit: close AUROCs are expected"),
}


def _covariances(features, labels) -> tuple[torch.Tensor, torch.Tensor, int]:
    means, _ = collapse.class_means(features, labels)
    Sigma_W = collapse.within_class_covariance(features, labels, means)
    return Sigma_W, collapse.between_class_covariance(means), len(means)


def nc1_full_pinv(features, labels, rtol: float = 1e-18) -> float:
    """(1/C) Tr(Σ_W Σ_B⁺) with ``torch.linalg.pinv``'s cut-off at ``rtol``: eigenvalues of Σ_B that are
    rounding noise (Σ_B has rank ≤ C − 1) survive, and their inverses, ~10¹⁵, blow NC1 up.
    Right: :func:`nclab.collapse.nc_metrics` keeps only the top C − 1 eigenpairs."""
    Sigma_W, Sigma_B, C = _covariances(features, labels)
    return float(torch.trace(Sigma_W @ torch.linalg.pinv(Sigma_B, rtol=rtol, hermitian=True)) / C)


def nc1_without_one_over_c(features, labels) -> float:
    """Tr(Σ_W Σ_B⁺) with the right (top C − 1) pseudo-inverse but without the 1/C, as the official NC
    notebook plots it: C times ``nc_metrics``'s ``nc1``."""
    Sigma_W, Sigma_B, C = _covariances(features, labels)
    values, vectors = torch.linalg.eigh(Sigma_B)  # ascending
    values, vectors = values[-(C - 1) :], vectors[:, -(C - 1) :]
    return float(torch.trace(Sigma_W @ (vectors / values) @ vectors.T))


class MahalanobisDiagonal(ood.Mahalanobis):
    """Mahalanobis with only the diagonal of the inverse covariance Σ⁺: the cross terms between features
    dropped. Right: :class:`nclab.ood.Mahalanobis`."""

    def _fit(self, h, y):
        super()._fit(h, y)
        self.precision_ = torch.diag(torch.diagonal(self.precision_))


class MahalanobisTotal(ood.Mahalanobis):
    """Mahalanobis with the total covariance of the training features (about their global mean) in place
    of the pooled within-class one: the between-class spread inflates Σ exactly along the directions
    that separate the classes. Right: :class:`nclab.ood.Mahalanobis`."""

    def _fit(self, h, y):
        super()._fit(h, y)
        centred = h.double() - h.double().mean(0)
        self.covariance_ = centred.T @ centred / len(h)
        self.precision_ = torch.linalg.pinv(self.covariance_, hermitian=True)


def softmax_then_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``cross_entropy(softmax(logits))``: a second softmax on top of the one ``cross_entropy`` applies.
    Its inputs lie in [0, 1], so the loss cannot fall below log(1 + (C − 1)/e) and its gradient
    vanishes long before the network is confident. Right: ``F.cross_entropy(logits, labels)``."""
    return F.cross_entropy(logits.softmax(dim=1), labels)


def nc4_as_bias_norm(bias: torch.Tensor) -> float:
    """‖b‖, reported as "NC4" in place of the disagreement between the network and the nearest-class-
    centre classifier. Right: ``nc_metrics(...)["nc4_ncc_mismatch"]``."""
    return float(torch.linalg.vector_norm(bias.double()))


def augmented(images: data.ImageSet, seed: int = 0, padding: int = 4) -> data.ImageSet:
    """``images`` randomly cropped and flipped once, as a loader with training augmentation shows them:
    features of these are *not* the training set's features (fitting a detector or measuring NC on them
    is the pitfall). Deterministic for a ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    n = len(images.images)
    shifts = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    pictures = data.random_flip(data.random_crop(images.images, shifts, padding), flips)
    return dataclasses.replace(images, images=pictures.contiguous(), name=f"{images.name} (augmented)")


def ncc_accuracy_bounds(network_accuracy: float, agreement: float) -> tuple[float, float]:
    """The range the nearest-class-centre classifier's accuracy must lie in, given the network's accuracy
    r and the fraction a of samples on which the two classifiers agree: [max(0, a + r − 1), 1 − |a − r|].

    Where the two agree they are right or wrong together; where they disagree at most one is right. So the
    NCC is right at least where both agree and the network is right (≥ a + r − 1), and at most there plus
    on the disagreements where the network is wrong."""
    r, a = float(network_accuracy), float(agreement)
    if not (0 <= r <= 1 and 0 <= a <= 1):
        raise ValueError(f"accuracy and agreement are fractions in [0, 1], got {r} and {a}")
    return max(0.0, a + r - 1), 1 - abs(a - r)


def report_errata() -> pd.DataFrame:
    """The audit of the practical-work report as a table: excerpt, kind of error, what it should say."""
    return pd.DataFrame(
        [(key, kind, fix) for key, (kind, fix) in REPORT_DIAGNOSES.items()],
        columns=["excerpt", "what went wrong", "what the report should say"],
    ).set_index("excerpt")
