"""Checks of notebook 05's exercises (layer-wise NC control): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import etf, methods
from .core import Exercise, Question, Wrong, call, compare_close, compare_gradient, generator


def _nearest(z: torch.Tensor, *, normalise: bool = True, farthest: bool = False) -> torch.Tensor:
    """The index of each row's nearest other row by cosine (its farthest with ``farthest``); without
    ``normalise``, by the raw dot product z_i·z_j (a mistake)."""
    u = F.normalize(z, dim=1) if normalise else z
    similarity = u @ u.T  # (B, B)
    similarity.fill_diagonal_(math.inf if farthest else -math.inf)
    return similarity.argmin(1) if farthest else similarity.argmax(1)


# Whole-number rows whose norm is a whole number (2² + 4² + 5² + 6² = 9²): normalising one is exact in
# every summation order and precision, so two copies stay bit-identical on any machine.
_PYTHAGOREAN = [(2.0, 4.0, 5.0, 6.0), (1.0, 2.0, 4.0, 10.0), (1.0, 1.0, 3.0, 5.0), (2.0, 2.0, 4.0, 5.0)]


def _exact_unit_multiple(rng: torch.Generator) -> torch.Tensor:
    """A row of R⁴ drawn from ``rng`` that normalises exactly: a Pythagorean quadruple, its entries permuted
    and signed at random, times a power of two."""
    row = torch.tensor(_PYTHAGOREAN[int(torch.randint(len(_PYTHAGOREAN), (), generator=rng))], dtype=torch.float64)
    signs = torch.randint(0, 2, (4,), generator=rng) * 2 - 1
    return row[torch.randperm(4, generator=rng)] * signs * 2.0 ** int(torch.randint(-2, 3, (), generator=rng))


def _merge_twins(gradient: torch.Tensor) -> torch.Tensor:
    """The part of the gradient of L_ent that is defined where rows 0 and 5 are equal: the other rows, and
    the sum of the two twins' rows.

    At that point L_ent is not differentiable: ‖ẑ_0 − ẑ_5‖ = 0 (any subgradient of the norm is as right as
    torch's 0), and a row whose nearest neighbour is the pair may pick either twin (a tie that rounding
    breaks, differently on another machine). Every choice moves the gradient between the twins' rows only,
    and leaves their sum and the other rows as they are."""
    return torch.cat([gradient[1:5], gradient[0:1] + gradient[5:6]])


def check_entropy(entropy_estimate: Callable) -> tuple[bool, str]:
    """05_entropy: ``entropy_estimate(z)`` = −(1/B) Σ_i log(‖ẑ_i − ẑ_nn(i)‖ + 1e-8), ẑ = z/‖z‖, nn(i) the
    nearest other row by cosine, as a scalar tensor that back-propagates into z.

    Compared with ``nclab.methods.control.entropy_regularizer``, value and gradient, on a hand case (four
    vectors at 0°, 60°, 180°, 250° of norms 2, 0.5, 3, 1, no ties: nearest distances 1, 1, 2 sin 35°,
    2 sin 35°, so L = −½ log(2 sin 35°)), on a random (12, 5) batch with rows of very different norms
    (so that normalising matters) and on a batch with two equal rows (distance 0: the value must be
    finite, −log 1e-8 for each, and so must the gradient; the rows normalise exactly, and only the part of
    the gradient defined there is compared, see :func:`_merge_twins`); recognises a row taken as its own
    neighbour (also when it gives inf), no normalisation, the farthest row, squared distances, 1 − cos
    instead of the distance, log10, a sum instead of a mean, the sign, and a missing or wrong gradient.
    """
    angles = torch.tensor([0.0, 60.0, 180.0, 250.0], dtype=torch.float64).deg2rad()
    norms = torch.tensor([2.0, 0.5, 3.0, 1.0], dtype=torch.float64)[:, None]
    hand = norms * torch.stack([angles.cos(), angles.sin()], dim=1)
    rng = generator(11)
    scales = torch.logspace(-1, 1, 12, dtype=torch.float64)[:, None]
    random = torch.randn(12, 5, generator=rng, dtype=torch.float64) * scales
    twins = torch.randn(6, 4, generator=rng, dtype=torch.float64)
    twins[0] = twins[5] = _exact_unit_multiple(rng)  # a duplicate: distance exactly 0 (in any precision)
    cases = [
        ("hand case: four vectors at 0°, 60°, 180°, 250° with norms 2, 0.5, 3, 1", hand),
        ("random (12, 5) batch with row norms from 0.1 to 10", random),
        ("a (6, 4) batch whose rows 0 and 5 are equal (distance 0)", twins),
    ]
    own_neighbour = (
        "each row is its own nearest neighbour here (distance 0): leave i out of the search, e.g. set the "
        "diagonal of the cosine matrix to −inf before the argmax."
    )
    for case, z in cases:
        z_ref = z.clone().requires_grad_(True)
        expected = methods.control.entropy_regularizer(z_ref)
        (gradient,) = torch.autograd.grad(expected, z_ref)
        u = F.normalize(z, dim=1)
        d = (u - u[_nearest(z)]).norm(dim=1)  # the right distances
        raw = (z - z[_nearest(z, normalise=False)]).norm(dim=1)  # neighbour by the dot product z_i·z_j
        euclidean = torch.cdist(z, z).fill_diagonal_(math.inf).min(1).values  # by the raw distance
        cosine = (u * u[_nearest(z)]).sum(1)
        mistakes = {
            own_neighbour: -torch.log(torch.tensor(1e-8)).double(),
            "normalise the rows first (ẑ = z/‖z‖), for the search and for the distance: the estimator measures "
            "how the *directions* spread on the sphere, not the raw vectors.": -torch.log(raw + 1e-8).mean(),
            "normalise the rows first (ẑ = z/‖z‖): the nearest neighbour and its distance are measured on the "
            "unit sphere, not between the raw vectors.": -torch.log(euclidean + 1e-8).mean(),
            "that is the *farthest* row: the estimator uses the nearest neighbour (largest cosine, smallest "
            "distance).": -torch.log((u - u[_nearest(z, farthest=True)]).norm(dim=1) + 1e-8).mean(),
            "use the distance ‖ẑ_i − ẑ_nn(i)‖ itself, not its square.": -torch.log(d**2 + 1e-8).mean(),
            "use the distance ‖ẑ_i − ẑ_nn(i)‖, not 1 − cos (its square is 2 − 2 cos).": -torch.log(
                1 - cosine + 1e-8
            ).mean(),
            "use the natural logarithm (torch.log), not log10.": -torch.log10(d + 1e-8).mean(),
            "average over the batch (1/B) Σ_i, not the sum.": -torch.log(d + 1e-8).sum(),
            "mind the sign: L = −mean log(distance), so that spreading the batch *lowers* the loss.": torch.log(
                d + 1e-8
            ).mean(),
        }
        z_in = z.clone().requires_grad_(True)
        try:
            got = call(entropy_estimate, case, z_in)
        except Wrong as wrong:
            return False, str(wrong)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not torch.isfinite(got).all():
            return False, (
                f"{case}: your value is {got.item()}. Either a row is its own neighbour ({own_neighbour}) or the "
                f"+ 1e-8 is missing from inside the log: it keeps log finite when two rows coincide."
            )
        wrong = compare_close(got, expected.detach(), case, mistakes, rtol=1e-5, atol=1e-6)
        if wrong:
            return False, wrong
        wrong = compare_gradient(
            got,
            z_in,
            gradient,
            case,
            no_gradient=": return a torch tensor computed from z (no .item(), no float(), no torch.no_grad() "
            "around the distances), so that it can be trained.",
            not_finite="its gradient is NaN or inf where the distance is 0: compute the distance with .norm() "
            "(its gradient at 0 is 0), not with the square root of a sum of squares.",
            wrong_gradient="its gradient is not: only the *choice* of the neighbour (an index) may be made "
            "without gradient; ẑ_i and ẑ_nn(i) in the distance must both come from z (no .detach() on the "
            "neighbour).",
            defined=_merge_twins if z is twins else None,
        )
        if wrong:
            return False, wrong
    return True, "−mean log ‖ẑ_i − ẑ_nn(i)‖: low when the batch spreads over the sphere, high when it clumps."


def check_etf(etf_from_basis: Callable) -> tuple[bool, str]:
    """05_etf: ``etf_from_basis(U)`` = M = √(K/(K−1)) U (I − 11ᵀ/K), U (p, K) with orthonormal columns → (p, K),
    whose columns are the K unit vertices of a simplex ETF.

    Compared with the formula on a hand case (U = I₃: M = √(3/2) (I − 11ᵀ/3)) and on a random U (7, 4)
    (orthonormal columns from a QR), both float32 (so that ``torch.eye(K)`` works as well as
    ``torch.eye(K, dtype=U.dtype)``), also through the Gram of the columns (1 on the diagonal, −1/(K−1)
    off it); recognises the missing scale, the inverted scale, no centring, M transposed, and another
    simplex ETF than the one this U gives (−M, columns reordered).
    """
    rng = generator(12)
    random, _ = torch.linalg.qr(torch.randn(7, 4, generator=rng, dtype=torch.float64))
    cases = [("hand case: U = I (p = K = 3)", torch.eye(3)), ("random U (7, 4)", random.float())]
    for case, U in cases:
        K = U.shape[1]
        U64 = U.double()
        centring = torch.eye(K, dtype=torch.float64) - 1.0 / K
        expected = math.sqrt(K / (K - 1)) * U64 @ centring
        try:
            got = call(etf_from_basis, case, U)
        except Wrong as wrong:
            hint = " (build I and 11ᵀ/K with dtype=U.dtype)" if "dtype" in str(wrong) else ""
            return False, f"{wrong}{hint}"
        if isinstance(got, torch.Tensor) and got.shape == (K, U.shape[0]) != expected.shape:
            return (
                False,
                f"{case}: your output has shape {tuple(got.shape)}: return M as (p, K), one vertex per column.",
            )
        mistakes = {
            "the columns are centred but not unit vectors: multiply by √(K/(K−1)).": U64 @ centring,
            "the scale is inverted: it is √(K/(K−1)) (> 1), which makes each centred column a unit vector.": math.sqrt(
                (K - 1) / K
            )
            * U64
            @ centring,
            "centre with (I − 11ᵀ/K): without it the columns stay orthogonal (cosine 0, not −1/(K−1)).": math.sqrt(
                K / (K - 1)
            )
            * U64,
        }
        wrong = compare_close(got, expected, case, mistakes, rtol=1e-5, atol=1e-6)
        if wrong:
            if isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.isfinite(got).all():
                gram = got.detach().double().T @ got.detach().double()
                if torch.allclose(gram, etf.simplex_etf_gram(K), atol=1e-5):
                    return False, (
                        f"{case}: your columns do form a simplex ETF, but not the one this U gives: M must be "
                        f"√(K/(K−1)) U (I − 11ᵀ/K), with U's columns in their order and sign."
                    )
            return False, wrong
    return True, "M = √(K/(K−1)) U (I − 11ᵀ/K): K unit vectors with pairwise cosine −1/(K−1), in any p ≥ K."


EXERCISES = {
    "05_entropy": Exercise(
        "entropy_estimate", check_entropy, points=2, references=("nclab.methods.control.entropy_regularizer",)
    ),
    "05_etf": Exercise("etf_from_basis", check_etf, points=2),  # no library function builds M from a given U
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "05_q_entropy_cost": Question("a6273b66", points=3),
    "05_q_etf_basis": Question("f8ae1032", points=3),
    "05_q_entropy_trend": Question("3d489ed7", points=2),
    "05_q_nc1_by_depth": Question("78e0680a", points=3),
    "05_q_detect_norms": Question("969ac9ac", points=2),
    "05_q_tradeoff_rho": Question("28074bfd", points=3),
    "05_q_claim_check": Question("e8b8cb9d", points=3),
}
