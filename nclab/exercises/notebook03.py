"""Checks of notebook 03's exercises (OOD detection): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import ood
from .core import Exercise, Question, call, compare_close, generator, on_grid


def check_energy(energy_score: Callable) -> tuple[bool, str]:
    """03_energy: ``energy_score(logits, T=1.0)`` = T · logsumexp(l / T) over the classes, (n, C) → (n,).

    Compared with ``nclab.ood.Energy`` on a hand case (logits [0, 0], [1000, 1000], [2, −1] at T = 1:
    log 2, 1000 + log 2, log(e² + e⁻¹)) and on random logits at T = 1 and T = 2.5; recognises the free
    energy E (sign flipped), the max logit, the temperature in the wrong place, the sum over the samples
    instead of the classes, and an overflowing exp.
    """
    hand = torch.tensor([[0.0, 0.0], [1000.0, 1000.0], [2.0, -1.0]])
    logits = torch.randn(7, 5, generator=generator(4)) * 3
    cases = [
        ("hand case: logits [[0, 0], [1000, 1000], [2, -1]], T = 1", hand, 1.0),
        ("random (7, 5) logits, T = 1", logits, 1.0),
        ("random (7, 5) logits, T = 2.5", logits, 2.5),
    ]
    for case, l, T in cases:
        expected = ood.Energy(temperature=T).fit(None, weight=torch.eye(l.shape[1])).score(l)
        mistakes = {
            "your score is the free energy E = −T log Σ exp(l/T): flip its sign, so that higher means "
            "in-distribution (with E the AUROC becomes 1 − AUROC).": -expected,
            "that is the max logit: the energy is a *smooth* maximum, T · log Σ_c exp(l_c / T).": l.amax(1),
            "the temperature is missing outside: T · logsumexp(l / T).": torch.logsumexp(l / T, 1),
            "the temperature divides the logits inside the log-sum-exp, not the result: "
            "T · logsumexp(l / T).": torch.logsumexp(l, 1) / T,
            "the logits must be divided by T inside the log-sum-exp: T · logsumexp(l / T).": T * torch.logsumexp(l, 1),
        }
        got = call(energy_score, case, l, T) if T != 1.0 else call(energy_score, case, l)
        if isinstance(got, torch.Tensor) and got.shape == (l.shape[1],):
            return False, (
                f"{case}: your output has shape {tuple(got.shape)}: sum over the classes (dim=1), one score per sample."
            )
        if isinstance(got, torch.Tensor) and l.abs().max() >= 1000 and not torch.isfinite(got).all():
            return False, (
                f"{case}: your output is {got.tolist()}: exp(1000) overflows. Use torch.logsumexp, "
                f"which subtracts the largest logit before exponentiating."
            )
        wrong = compare_close(got, expected, case, mistakes, rtol=1e-5, atol=1e-4)
        if wrong:
            return False, wrong
    return True, "T · logsumexp(l / T): higher = in-distribution, finite even for logits of 1000."


def _pooled_covariance_mistakes(h: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    N, C = len(h), int(y.max()) + 1
    means = torch.stack([h[y == c].mean(0) for c in range(C)])
    within = (h - means[y]).T @ (h - means[y])
    total = (h - h.mean(0)).T @ (h - h.mean(0))
    per_class = torch.stack([torch.cov(h[y == c].T, correction=0) for c in range(C)])
    return {
        "you centred every feature on the global mean: that is the total covariance, which also contains the "
        "spread *between* the class means. Subtract each sample's own class mean μ_{y_i}.": total / N,
        "that is torch.cov of all features (global mean, N − 1): subtract each sample's own class mean, "
        "divide by N.": total / (N - 1),
        "divided by N − 1: the shared covariance divides by the total N.": within / (N - 1),
        "divided by N − C: the shared covariance divides by the total N (no degrees-of-freedom correction).": within
        / (N - C),
        "you averaged the C class covariances with equal weights: on unbalanced classes that differs from "
        "the pooled sum over all samples divided by N (weight N_c / N each).": per_class.mean(0),
        "you kept only the diagonal (the variances): Mahalanobis needs the full matrix, with the "
        "correlations.": torch.diag(torch.diagonal(within / N)),
        "you forgot to divide by N.": within,
    }


def check_covariance(shared_covariance: Callable) -> tuple[bool, str]:
    """03_covariance: ``shared_covariance(features, labels)`` = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ.

    Compared with ``nclab.ood.Mahalanobis().fit(...).covariance_`` on a hand case (4 points in 2-D, two
    classes: Σ = ½ I) and on unbalanced random classes (5, 20 and 40 samples in 4-D); recognises the total
    covariance (with N or N − 1), the divisors N − 1 and N − C, the unweighted mean of per-class
    covariances, the diagonal only and a missing division.
    """
    hand = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    rng = generator(5)
    y = torch.repeat_interleave(torch.arange(3), torch.tensor([5, 20, 40]))
    h = torch.randn(65, 4, generator=rng, dtype=torch.float64) @ torch.randn(4, 4, generator=rng, dtype=torch.float64)
    h = on_grid(h + 3 * torch.randn(3, 4, generator=rng, dtype=torch.float64)[y])
    cases = [
        (
            "hand case: features [[0, 0], [2, 0], [0, 1], [0, 3]], labels [0, 0, 1, 1] (Σ = ½ I)",
            hand,
            torch.tensor([0, 0, 1, 1]),
        ),
        ("unbalanced random classes (5, 20, 40 samples, p = 4)", h, y),
    ]
    for case, features, labels in cases:
        expected = ood.Mahalanobis().fit(features, labels).covariance_
        got = call(shared_covariance, case, features, labels)
        wrong = compare_close(got, expected, case, _pooled_covariance_mistakes(features, labels), rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "the pooled within-class covariance, divided by the total N: Σ_W of notebook 02."


def _drawn_scores(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float64 scores: 50 ID scores, so τ = the 48th largest, s_(3) in ascending order, and 23 OOD
    scores: τ itself, s_(3) + 0.2Δ and s_(3) + 0.7Δ (Δ = s_(4) − s_(3); the interpolated 5 % quantile is
    s_(3) + 0.45Δ), one below every ID score, 10 copies of ID scores and 9 normal draws. So every mistake
    of 03_fpr95 gives another value than the right one, and than each other's for > τ, the quantile and
    ⌊0.95 n⌋; the FPR k/23, 0 < k < 23, is never a fraction j/50 of the ID scores."""
    rng = generator(seed)
    ind = 2 * torch.randn(50, generator=rng, dtype=torch.float64)
    s = ind.sort().values
    gap = s[3] - s[2]
    ood = torch.cat(
        [
            torch.stack([s[2], s[2] + 0.2 * gap, s[2] + 0.7 * gap, s[0] - 1]),
            ind[torch.randperm(50, generator=rng)[:10]],
            2 * torch.randn(9, generator=rng, dtype=torch.float64) - 1,
        ]
    )
    return ind, ood[torch.randperm(23, generator=rng)]


def check_fpr95(fpr_at_95_tpr: Callable) -> tuple[bool, str]:
    """03_fpr95: ``fpr_at_95_tpr(id_scores, ood_scores)`` = (1/m) #{OOD ≥ τ}, τ the ⌈0.95 n⌉-th largest ID.

    Compared with ``nclab.ood.detection_metrics(...)["fpr95"]`` on a hand case (ID scores 1…20, so τ = 2;
    OOD scores with values equal to τ and just below it), on shuffled distinct ID scores (n = 30, so
    ⌈28.5⌉ = 29) with OOD scores tied to them, and on a random case (:func:`_drawn_scores`; while grading,
    one the student cannot know in advance); recognises the other convention (``fpr95_oodpos``), a
    strict > at the threshold, an interpolated quantile, ⌊0.95 n⌋ instead of ⌈0.95 n⌉, the TPR, and 1 − FPR.
    """
    rng = generator(6)
    cases = [
        (
            "hand case: ID scores 1, 2, …, 20 (τ = 2) and OOD scores [0, 1, 2, 2, 3, 10, 25, -5, 1.5, 2.5, 1.97]",
            torch.arange(1.0, 21.0, dtype=torch.float64),
            torch.tensor([0, 1, 2, 2, 3, 10, 25, -5, 1.5, 2.5, 1.97], dtype=torch.float64),
        ),
        (
            "ID scores 0, 1, …, 29 shuffled (n = 30: τ is the 29th largest, 1) and 17 OOD scores, some equal "
            "to ID scores",
            torch.randperm(30, generator=rng).double(),
            torch.tensor([-3, 0, 1, 1, 2, 5, 9, 12, 29, 30, -1, 7, 1, 3, 0.5, 1.5, 8], dtype=torch.float64),
        ),
        (
            "random case: 50 distinct ID scores (τ is the 48th largest) and 23 OOD scores, some equal to ID "
            "scores, one of them τ",
            *_drawn_scores(75),
        ),
    ]
    for case, ind, out in cases:
        metrics = ood.detection_metrics(ind, out)
        expected = torch.tensor(metrics["fpr95"], dtype=torch.float64)
        floor_tau = ind.sort(descending=True).values[int(0.95 * len(ind)) - 1]
        ceil_tau = ood.threshold_at_tpr(ind, 0.95)  # the ⌈0.95 n⌉-th largest ID score
        mistakes = {
            "that is the other convention (fraction of ID rejected at 95 % OOD recall, `fpr95_oodpos`): here ID "
            "is positive, count the OOD scores ≥ τ where τ keeps 95 % of ID.": torch.tensor(
                metrics["fpr95_oodpos"], dtype=torch.float64
            ),
            "an OOD score equal to τ is accepted too: count score ≥ τ, not > τ.": (out > ceil_tau).double().mean(),
            "an interpolated quantile (np.quantile / torch.quantile) is not an ID score: take the ⌈0.95 n⌉-th "
            "largest ID score itself.": (out >= torch.quantile(ind, 0.05)).double().mean(),
            "⌊0.95 n⌋ keeps fewer than 95 % of ID when 0.95 n is not an integer: use ⌈0.95 n⌉.": (out >= floor_tau)
            .double()
            .mean(),
            "that is the TPR (fraction of ID kept), not the FPR: count the OOD scores ≥ τ.": (ind >= ceil_tau)
            .double()
            .mean(),
            "that is 1 − FPR, the fraction of OOD rejected: count the OOD scores ≥ τ (accepted).": 1
            - (out >= ceil_tau).double().mean(),
        }
        wrong = compare_close(call(fpr_at_95_tpr, case, ind, out), expected, case, mistakes, rtol=0, atol=1e-6)
        if wrong:
            return False, wrong
    return True, "FPR@95 with ID positive: the fraction of OOD accepted at the threshold that keeps 95 % of ID."


EXERCISES = {
    "03_energy": Exercise("energy_score", check_energy, points=1, references=("nclab.ood.Energy",)),
    "03_covariance": Exercise(
        "shared_covariance",
        check_covariance,
        points=2,
        references=("nclab.ood.Mahalanobis", "nclab.collapse.within_class_covariance"),
    ),
    "03_fpr95": Exercise(
        "fpr_at_95_tpr",
        check_fpr95,
        points=2,
        references=(
            "nclab.ood.detection_metrics",
            "nclab.ood.threshold_at_tpr",
            "nclab.ood.roc_curve",
            "nclab.ood.metrics._fpr_at_95",
        ),
    ),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "03_q_energy_sign": Question("96d3bee6", points=3),
    "03_q_total_cov": Question("df44fb75", points=3),
    "03_q_fpr95_convention": Question("674855fc", points=2),
    "03_q_auroc_below_half": Question("595ee5e4", points=3),
    "03_q_near_vs_far": Question("03d9faf7", points=3),
    "03_q_threshold_99": Question("aac05871", points=2),
    "03_q_training_gain": Question("1bfbad8c", points=3),
}
