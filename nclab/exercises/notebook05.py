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
from .core import Exercise, Wrong, call, compare_close


def _nearest_distances(z: torch.Tensor, *, normalise: bool = True, farthest: bool = False) -> torch.Tensor:
    """‖ẑ_i − ẑ_nn(i)‖ for every row (the farthest row instead with ``farthest``), for the known mistakes."""
    u = F.normalize(z, dim=1) if normalise else z
    distances = torch.cdist(u, u)  # (B, B)
    distances.fill_diagonal_(-math.inf if farthest else math.inf)
    return distances.max(1).values if farthest else distances.min(1).values


def check_entropy(entropy_estimate: Callable) -> tuple[bool, str]:
    """05_entropy: ``entropy_estimate(z)`` = −(1/B) Σ_i log(‖ẑ_i − ẑ_nn(i)‖ + 1e-8), ẑ = z/‖z‖, nn(i) the
    nearest other row by cosine, as a scalar tensor that back-propagates into z.

    Compared with ``nclab.methods.control.entropy_regularizer``, value and gradient, on a hand case (four
    vectors at 0°, 60°, 180°, 250° of norms 2, 0.5, 3, 1, no ties: nearest distances 1, 1, 2 sin 35°,
    2 sin 35°, so L = −½ log(2 sin 35°)) and on a random (12, 5) batch with rows of very different norms
    (so that normalising matters); recognises a row taken as its own neighbour (also when it gives inf),
    no normalisation, the farthest row, squared distances, a sum instead of a mean, the sign, and a value
    without its gradient or with a wrong one.
    """
    angles = torch.tensor([0.0, 60.0, 180.0, 250.0], dtype=torch.float64).deg2rad()
    norms = torch.tensor([2.0, 0.5, 3.0, 1.0], dtype=torch.float64)[:, None]
    hand = norms * torch.stack([angles.cos(), angles.sin()], dim=1)
    generator = torch.Generator().manual_seed(11)
    scales = torch.logspace(-1, 1, 12, dtype=torch.float64)[:, None]
    random = torch.randn(12, 5, generator=generator, dtype=torch.float64) * scales
    cases = [
        ("hand case: four vectors at 0°, 60°, 180°, 250° with norms 2, 0.5, 3, 1", hand),
        ("random (12, 5) batch with row norms from 0.1 to 10", random),
    ]
    own_neighbour = (
        "each row is its own nearest neighbour here (distance 0): leave i out of the search, e.g. set the "
        "diagonal of the cosine matrix to −inf before the argmax."
    )
    for case, z in cases:
        z_ref = z.clone().requires_grad_(True)
        expected = methods.control.entropy_regularizer(z_ref)
        (gradient,) = torch.autograd.grad(expected, z_ref)
        d = _nearest_distances(z)
        mistakes = {
            own_neighbour: -torch.log(torch.tensor(1e-8)).double(),
            "normalise the rows first (ẑ = z/‖z‖): the estimator measures how the *directions* spread on the "
            "sphere, not the raw norms.": -torch.log(_nearest_distances(z, normalise=False) + 1e-8).mean(),
            "that is the *farthest* row: the estimator uses the nearest neighbour (largest cosine, smallest "
            "distance).": -torch.log(_nearest_distances(z, farthest=True) + 1e-8).mean(),
            "use the distance ‖ẑ_i − ẑ_nn(i)‖ itself, not its square.": -torch.log(d**2 + 1e-8).mean(),
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
            return False, f"{case}: your value is {got.item()}. {own_neighbour} And keep the + 1e-8 inside the log."
        wrong = compare_close(got, expected.detach(), case, mistakes, rtol=1e-5, atol=1e-6)
        if wrong:
            return False, wrong
        if not (isinstance(got, torch.Tensor) and got.requires_grad):
            return False, (
                f"{case}: your value is right but carries no gradient: return a torch tensor computed from z "
                f"(no .item(), no float(), no torch.no_grad() around the distances), so that it can be trained."
            )
        (yours,) = torch.autograd.grad(got.sum(), z_in, allow_unused=True)
        if yours is None or not torch.allclose(yours.double(), gradient, rtol=1e-4, atol=1e-6):
            return False, (
                f"{case}: your value is right but its gradient is not: only the *choice* of the neighbour (an "
                f"index) may be made without gradient; ẑ_i and ẑ_nn(i) in the distance must both come from z "
                f"(no .detach() on the neighbour)."
            )
    return True, "−mean log ‖ẑ_i − ẑ_nn(i)‖: low when the batch spreads over the sphere, high when it clumps."


def check_etf(etf_from_basis: Callable) -> tuple[bool, str]:
    """05_etf: ``etf_from_basis(U)`` = M = √(C/(C−1)) U (I − 11ᵀ/C), U (p, C) with orthonormal columns → (p, C),
    whose columns are the C unit vertices of a simplex ETF.

    Compared with the formula on a hand case (U = I₃: M = √(3/2) (I − 11ᵀ/3)) and on a random U (7, 4)
    (orthonormal columns from a QR), also checked through the Gram of the columns (1 on the diagonal,
    −1/(C−1) off it); recognises the missing scale, the inverted scale, no centring, and M transposed.
    """
    generator = torch.Generator().manual_seed(12)
    random, _ = torch.linalg.qr(torch.randn(7, 4, generator=generator, dtype=torch.float64))
    cases = [("hand case: U = I (p = C = 3)", torch.eye(3, dtype=torch.float64)), ("random U (7, 4)", random)]
    for case, U in cases:
        C = U.shape[1]
        centring = torch.eye(C, dtype=torch.float64) - 1.0 / C
        expected = math.sqrt(C / (C - 1)) * U @ centring
        try:
            got = call(etf_from_basis, case, U)
        except Wrong as wrong:
            hint = " (build I and 11ᵀ/K with dtype=U.dtype: U is float64)" if "dtype" in str(wrong) else ""
            return False, f"{wrong}{hint}"
        if isinstance(got, torch.Tensor) and got.shape == (C, U.shape[0]) != expected.shape:
            return (
                False,
                f"{case}: your output has shape {tuple(got.shape)}: return M as (p, C), one vertex per column.",
            )
        mistakes = {
            "the columns are centred but not unit vectors: multiply by √(C/(C−1)).": U @ centring,
            "the scale is inverted: it is √(C/(C−1)) (> 1), which makes each centred column a unit vector.": math.sqrt(
                (C - 1) / C
            )
            * U
            @ centring,
            "centre with (I − 11ᵀ/C): without it the columns stay orthogonal (cosine 0, not −1/(C−1)).": math.sqrt(
                C / (C - 1)
            )
            * U,
        }
        wrong = compare_close(got, expected, case, mistakes, rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
        gram = got.double().T @ got.double()
        if not torch.allclose(gram, etf.simplex_etf_gram(C), atol=1e-6):
            return False, f"{case}: the columns' Gram is not the simplex ETF's (1 on the diagonal, −1/(C−1) off it)."
    return True, "M = √(C/(C−1)) U (I − 11ᵀ/C): C unit vectors with pairwise cosine −1/(C−1), in any p ≥ C."


EXERCISES = {
    "05_entropy": Exercise("entropy_estimate", check_entropy, points=2),
    "05_etf": Exercise("etf_from_basis", check_etf, points=2),
}
