"""Checks of notebook 02's exercises (measuring neural collapse): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import collapse, etf
from .core import Exercise, Question, call, compare, compare_close, draw_int, generator


def _collapse_case(C: int = 4, p: int = 6, per_class: int = 5, seed: int = 0):
    """Features of C classes around random means in R^p, with their class means, Σ_W and Σ_B."""
    rng = generator(seed)
    labels = torch.arange(C).repeat(per_class)
    features = 3 * torch.randn(C, p, generator=rng, dtype=torch.float64)[labels] + torch.randn(
        C * per_class, p, generator=rng, dtype=torch.float64
    )
    means, _ = collapse.class_means(features, labels)
    Sigma_W = collapse.within_class_covariance(features, labels, means)
    Sigma_B = collapse.between_class_covariance(means)
    return features, labels, means, Sigma_W, Sigma_B


def check_nc1(nc1_from_covariances: Callable) -> tuple[bool, str]:
    """02_nc1: ``nc1_from_covariances(Sigma_W, Sigma_B, C)`` = Tr(Σ_W Σ_B†)/C, Σ_B† from the top C − 1
    eigenpairs of Σ_B.

    Compared with ``nclab.collapse.nc_metrics`` on a hand case (Σ_W = I₂, Σ_B = diag(2, 0), C = 2:
    Tr(I · diag(½, 0))/2 = ¼) and on random 4-class features in R⁶; recognises the missing 1/C, a full
    pseudo-inverse that inverts Σ_B's rounding-error eigenvalues, and Tr(Σ_W)/Tr(Σ_B).
    """
    hand = (
        "hand case: Σ_W = I₂, Σ_B = diag(2, 0), C = 2",
        torch.eye(2, dtype=torch.float64),
        torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64)),
        2,
        torch.tensor(0.25, dtype=torch.float64),
    )
    features, labels, means, Sigma_W, Sigma_B = _collapse_case()
    expected = torch.tensor(collapse.nc_metrics(features, labels)["nc1"], dtype=torch.float64)
    random_case = ("random 4-class features in R^6", Sigma_W, Sigma_B, 4, expected)
    for case, S_W, S_B, C, nc1 in (hand, random_case):
        mistakes = {
            "you forgot to divide by C: NC1 = Tr(Σ_W Σ_B†) / C.": nc1 * C,
            "that is Tr(Σ_W)/Tr(Σ_B), the trace ratio; NC1 uses the pseudo-inverse: Tr(Σ_W Σ_B†)/C.": torch.trace(S_W)
            / torch.trace(S_B),
        }
        got = call(nc1_from_covariances, case, S_W, S_B, C)
        if (
            isinstance(got, (torch.Tensor, float))
            and getattr(got, "numel", lambda: 1)() == 1
            and abs(float(got)) > 1e3 * float(nc1)
        ):
            return False, (
                f"{case}: got {float(got):.4g}, expected {float(nc1):.6g}. Σ_B has rank C − 1 = {C - 1} "
                f"in R^{S_B.shape[0]}: keep only its top C − 1 eigenpairs when building Σ_B†, or the "
                f"inverted rounding-error eigenvalues blow NC1 up."
            )
        wrong = compare_close(got, nc1, case, mistakes, rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "Tr(Σ_W Σ_B†)/C with Σ_B† from the top C − 1 eigenpairs: the NC1 of Papyan et al., divided by C."


def check_ncc(ncc_classify: Callable) -> tuple[bool, str]:
    """02_ncc: ``ncc_classify(features, means)`` → (N,) int, argmin_c ‖h − μ_c‖.

    Compared with ``nclab.collapse.ncc_predictions`` on a hand case (means (0, 0), (4, 0), (0, 4) in R²)
    and random features (each nearer to one centre than to the next by at least 1e-3, so that the answer
    is the same in any precision and summation order); recognises argmax of the distance and argmax of
    the dot product h·μ_c (which ignores ‖μ_c‖²).
    """
    hand_means = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    hand_h = torch.tensor([[0.5, 0.5], [3.0, 1.0], [1.0, 3.5], [2.1, 0.0], [5.0, 5.0]], dtype=torch.float64)
    features, _, means, _, _ = _collapse_case(seed=1)
    gap = torch.cdist(features, means).topk(2, dim=1, largest=False).values.diff(dim=1)[:, 0]
    features = features[gap >= 1e-3]  # no near-tie that rounding could break either way
    for case, h, mu in (
        ("hand case: means (0, 0), (4, 0), (0, 4)", hand_h, hand_means),
        ("random 4-class features in R^6", features, means),
    ):
        expected = collapse.ncc_predictions(h, mu)
        distances = torch.cdist(h, mu)
        mistakes = {
            "that picks the *farthest* class centre: use argmin of the distance.": distances.argmax(1),
            "argmax of h·μ_c ignores the ‖μ_c‖² term of ‖h − μ_c‖²: compare distances.": (h @ mu.T).argmax(1),
        }
        got = call(ncc_classify, case, h, mu)
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.is_floating_point():
            got = got.long()
        wrong = compare(got, expected, case, mistakes)
        if wrong:
            return False, wrong
    return True, "argmin_c ‖h − μ_c‖: the nearest-class-centre classifier that NC4 compares the network with."


def check_etf_gram(simplex_gram: Callable) -> tuple[bool, str]:
    """02_etf_gram: ``simplex_gram(C)`` → (C, C), the cosine Gram of a simplex ETF: 1 on the diagonal,
    −1/(C − 1) off it.

    Compared with ``nclab.etf.simplex_etf_gram`` for C = 2, 3, 10 and a random C among 4 … 9, 11, 12 (while
    grading, one the student cannot know in advance); recognises the centring matrix I − 11ᵀ/C without its
    scale C/(C − 1) and off-diagonal entries −1/C.
    """
    fixed = [2, 3, 10]
    drawn = draw_int(72, 3, 65, avoid=fixed)  # never one of the notebook's: a lookup of those fails
    for C in [*fixed, drawn]:
        case = f"C = {C}" if C in fixed else f"random case: C = {C}"
        expected = etf.simplex_etf_gram(C)
        eye = torch.eye(C, dtype=torch.float64)
        mistakes = {
            "that is the centring matrix I − 11ᵀ/C: scale it by C/(C − 1) so the diagonal is 1.": eye - 1.0 / C,
            "off the diagonal a simplex ETF has cosine −1/(C − 1), not −1/C.": eye * (1 + 1.0 / C) - 1.0 / C,
        }
        wrong = compare_close(call(simplex_gram, case, C), expected, case, mistakes, rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "C/(C − 1) · (I − 11ᵀ/C): unit diagonal, every pair at the widest angle, cos = −1/(C − 1)."


EXERCISES = {
    "02_nc1": Exercise(
        "nc1_from_covariances",
        check_nc1,
        points=2,
        references=("nclab.collapse.nc_metrics", "nclab.collapse.variability_metrics"),
    ),
    "02_ncc": Exercise("ncc_classify", check_ncc, points=1, references=("nclab.collapse.ncc_predictions",)),
    "02_etf_gram": Exercise(
        "simplex_gram", check_etf_gram, points=1, references=("nclab.etf.simplex_etf_gram", "nclab.etf.simplex_etf")
    ),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "02_q_pinv_sigma_b": Question("dc4aa7d8", points=2),
    "02_q_ncc_agreement": Question("eb5baa4b", points=1),
    "02_q_train_test_nc1": Question("46584d61", points=2),
    "02_q_etf_cosine": Question("273f2802", points=2),
    "02_q_depth_regimes": Question("c7c814a3", points=3),
}
