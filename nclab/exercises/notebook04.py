"""Checks of notebook 04's exercises (NECO and NC5): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import collapse, ood
from .core import Exercise, Question, Wrong, as_float_tensor, call, compare_close, generator, on_grid


def _drawn_nc5_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nonnegative random features (28, 6) of 4 unbalanced classes (3, 8, 5, 12 samples) and OOD features
    (15, 6), drawn again while a class mean or the OOD mean is (nearly) 0, whose cosines are undefined."""
    rng = generator(seed)
    y = torch.repeat_interleave(torch.arange(4), torch.tensor([3, 8, 5, 12]))
    while True:
        h = (
            torch.randn(28, 6, generator=rng, dtype=torch.float64)
            + 2 * torch.randn(4, 6, generator=rng, dtype=torch.float64)[y]
        ).relu()
        o = torch.randn(15, 6, generator=rng, dtype=torch.float64).relu()
        means = torch.stack([h[y == c].mean(0) for c in range(4)] + [o.mean(0)])
        if bool((means.norm(dim=1) > 0.1).all()):
            return h, y, o


def check_nc5(nc5_score: Callable) -> tuple[bool, str]:
    """04_nc5: ``nc5_score(id_features, id_labels, ood_features)`` = (1/C) Σ_c |cos(μ_c, μ_OOD)|.

    Compared with ``nclab.collapse.nc5`` on a hand case (μ_0 = [2, 0, 0], μ_1 = [0, 2, 0], OOD samples
    [2, −2, 0] and [0, 0, 2] of mean [1, −1, 1]: NC5 = 1/√3) and on nonnegative random features of 4
    unbalanced classes; recognises centred class means, cosines without the absolute value, cosines with
    each OOD sample instead of their mean, and the maximum over the classes.
    """
    hand_id = torch.tensor([[2.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 3.0, 0]], dtype=torch.float64)
    hand_ood = torch.tensor([[2.0, -2.0, 0], [0, 0, 2.0]], dtype=torch.float64)
    h, y, o = _drawn_nc5_case(7)
    cases = [
        (
            "hand case: class means [2, 0, 0] and [0, 2, 0], OOD samples [2, -2, 0] and [0, 0, 2]",
            hand_id,
            torch.tensor([0, 0, 1, 1]),
            hand_ood,
        ),
        ("nonnegative random features, 4 unbalanced classes, p = 6", h, y, o),
    ]
    for case, features, labels, ood_features in cases:
        means = torch.stack([features[labels == c].mean(0) for c in range(int(labels.max()) + 1)])  # (C, p)
        mu_ood = ood_features.mean(0)
        cos = torch.nn.functional.cosine_similarity(means, mu_ood[None], dim=1)  # (C,)
        centred = torch.nn.functional.cosine_similarity(means - means.mean(0), mu_ood[None], dim=1)
        per_sample = torch.nn.functional.cosine_similarity(means[:, None], ood_features[None], dim=2)  # (C, M)
        mistakes = {
            "you centred the class means (μ_c − μ_G): NC5 uses the uncentred ID class means μ_c.": centred.abs().mean(),
            "take the absolute value of each cosine before averaging: opposite directions are not "
            "orthogonal.": cos.mean(),
            "cosine with the *mean* OOD feature μ_OOD, not the mean of the cosines with each OOD "
            "sample.": per_sample.abs().mean(),
            "average over the classes (1/C) Σ_c, not the maximum.": cos.abs().max(),
        }
        expected = torch.tensor(collapse.nc5(features, labels, ood_features), dtype=torch.float64)
        wrong = compare_close(
            call(nc5_score, case, features, labels, ood_features), expected, case, mistakes, rtol=1e-6, atol=1e-9
        )
        if wrong:
            return False, wrong
    return True, "(1/C) Σ_c |cos(μ_c, μ_OOD)| with uncentred class means: 0 when OOD is orthogonal to every class."


def reference_principal_axes(S: torch.Tensor, d: int) -> torch.Tensor:
    """The top-``d`` principal axes of ``S`` as rows, by ``nclab.ood.NECO``: the stand-in for ``principal_axes``."""
    return ood.NECO(dim=d, standardize=False).fit(S).components_


def reference_neco_ratio(S: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """‖P s‖ / ‖s‖ for each row s of S: the stand-in for ``neco_ratio``."""
    return (S @ P.T).norm(dim=1) / S.norm(dim=1)


def check_pca(principal_axes: Callable) -> tuple[bool, str]:
    """04_pca: ``principal_axes(S, d)`` → (d, p), orthonormal rows spanning the top-d eigenvectors of the
    centred covariance (1/N) Σ_i (s_i − s̄)(s_i − s̄)ᵀ.

    Compared with ``nclab.ood.NECO(dim=d, standardize=False).fit(S).components_`` through the projector
    P_dᵀ P_d (eigenvector signs are arbitrary) on a hand case (±1, ±2, ±3 along the three axes: the top
    axis is e₃, then e₂) and on random data with an offset (so that centring matters); recognises the
    smallest eigenvalues (eigh sorts ascending), axes as columns, no centring and non-unit rows.
    """
    hand = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 3], [0, 0, -3]], dtype=torch.float64)
    rng = generator(8)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=rng, dtype=torch.float64))
    scales = torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=torch.float64)
    S = on_grid((torch.randn(200, 6, generator=rng, dtype=torch.float64) * scales) @ Q.T + 4 * Q[:, 5])
    cases = [
        ("hand case: the points ±1·e₁, ±2·e₂, ±3·e₃, d = 1", hand, 1),
        ("hand case: the points ±1·e₁, ±2·e₂, ±3·e₃, d = 2", hand, 2),
        ("random (200, 6) data with a mean offset, d = 3", S, 3),
    ]
    for case, data_, d in cases:
        reference = ood.NECO(dim=d, standardize=False).fit(data_).components_  # (d, p)
        got = call(principal_axes, case, data_, d)
        p = data_.shape[1]
        if isinstance(got, torch.Tensor) and got.shape == (p, d) and d != p:
            return False, (
                f"{case}: your output has shape {tuple(got.shape)}: return the axes as rows, (d, p) — e.g. V[:, idx].T."
            )
        try:
            got = as_float_tensor(got, case, reference)
        except Wrong as wrong:
            return False, str(wrong)
        if not torch.allclose(got @ got.T, torch.eye(d, dtype=torch.float64), atol=1e-6):
            return False, (
                f"{case}: your rows are not orthonormal (P Pᵀ ≠ I): return unit eigenvectors, not scaled ones."
            )
        lam, V = torch.linalg.eigh(torch.cov(data_.T, correction=0))
        smallest, uncentred = V[:, :d].T, torch.linalg.eigh(data_.T @ data_ / len(data_))[1][:, -d:].T
        mistakes = {
            "these are the axes of the *smallest* variance: torch.linalg.eigh sorts the eigenvalues in ascending "
            "order, so the principal axes are its *last* columns.": smallest.T @ smallest,
            "centre the data first (subtract the mean of each coordinate): without it the first axis points "
            "at the mean instead of along the largest variance.": uncentred.T @ uncentred,
        }
        wrong = compare_close(
            got.T @ got,
            reference.T @ reference,
            f"{case} (compared as the projector P_dᵀ P_d)",
            mistakes,
            rtol=1e-5,
            atol=1e-6,
        )
        if wrong:
            return False, wrong
    return True, "the top-d eigenvectors of the centred covariance, as orthonormal rows (d, p)."


def check_neco(neco_ratio: Callable) -> tuple[bool, str]:
    """04_neco: ``neco_ratio(S, P)`` = ‖P s‖ / ‖s‖ for each row s of S (n, p), P (d, p) → (n,).

    Compared on a hand case (s = [3, 4, 0], [0, 0, 2], [1, 1, 1], P = the first two axes: 1, 0, √(2/3))
    and with ``nclab.ood.NECO().fit(h).score(h)`` on random features (S standardised with the fitted mean
    and std, P its components); recognises the unnormalised ‖P s‖, the squared ratio, the share outside
    the subspace, and norms over the wrong dimension.
    """
    hand = torch.tensor([[3.0, 4, 0], [0, 0, 2], [1, 1, 1]], dtype=torch.float64)
    axes = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=torch.float64)
    rng = generator(9)
    scales = torch.linspace(3, 0.5, 8, dtype=torch.float64)
    h = torch.randn(50, 8, generator=rng, dtype=torch.float64) * scales + 1
    neco = ood.NECO(dim=3).fit(h)
    cases = [
        ("hand case: s = [3, 4, 0], [0, 0, 2], [1, 1, 1] with P = the first two axes", hand, axes, None),
        (
            "random (50, 8) features, standardised, d = 3 (compared with nclab.ood.NECO)",
            (h - neco.mean_) / neco.std_,
            neco.components_,
            neco.score(h),
        ),
    ]
    for case, S, P, expected in cases:
        inside, norm = (S @ P.T).norm(dim=1), S.norm(dim=1)
        expected = inside / norm if expected is None else expected
        outside = (S - S @ P.T @ P).norm(dim=1)
        mistakes = {
            "divide by ‖s‖: NECO is the *share* of the norm inside the principal subspace, in [0, 1].": inside,
            "that is the squared ratio ‖P s‖² / ‖s‖²: take the ratio of the norms themselves.": (inside / norm) ** 2,
            "that is the share *outside* the subspace, ‖s − Pᵀ P s‖ / ‖s‖: NECO measures the part inside, "
            "‖P s‖.": outside / norm,
        }
        got = call(neco_ratio, case, S, P)
        if isinstance(got, torch.Tensor) and got.shape in ((P.shape[0],), (S.shape[1],)) and got.shape != (len(S),):
            return False, (
                f"{case}: your output has shape {tuple(got.shape)}: take the norms of the rows (dim=1), "
                f"one score per sample."
            )
        wrong = compare_close(got, expected, case, mistakes, rtol=1e-5, atol=1e-7)
        if wrong:
            return False, wrong
    return True, "‖P_d s‖ / ‖s‖: the share of each standardised feature inside the principal subspace."


EXERCISES = {
    "04_nc5": Exercise("nc5_score", check_nc5, points=2, references=("nclab.collapse.nc5",)),
    "04_pca": Exercise(
        "principal_axes", check_pca, points=2, reference=reference_principal_axes, references=("nclab.ood.NECO",)
    ),
    "04_neco": Exercise(
        "neco_ratio", check_neco, points=1, reference=reference_neco_ratio, references=("nclab.ood.NECO",)
    ),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "04_q_nc5_relu_sign": Question("ec2bb4b8", points=3),
    "04_q_nc5_over_training": Question("eac17ce2", points=3),
    "04_q_standardise_pca": Question("22df388b", points=2),
    "04_q_random_baseline": Question("dcc6021d", points=2),
    "04_q_principal_plane": Question("926a4c08", points=2),
    "04_q_neco_vs_logits": Question("48743261", points=3),
    "04_q_choose_dim": Question("3bef0111", points=3),
}
