"""The simplex equiangular tight frame (ETF): the geometry neural collapse converges to.

C unit vectors in R^p form a simplex ETF when every pair has the same cosine −1/(C−1), the smallest
cosine that C unit vectors can all share (expand ‖Σ_c v_c‖² ≥ 0). It needs p ≥ C − 1 dimensions.
:func:`simplex_etf_gram` is its cosine Gram matrix, :func:`simplex_etf` an exact construction of its
vertices; ``nclab.collapse`` measures the distance to it and ``nclab.heads.FixedETF`` classifies with it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["simplex_etf", "simplex_etf_gram"]


def simplex_etf_gram(num_classes: int) -> torch.Tensor:
    """(I − 11ᵀ/C) · C/(C−1): the (C, C) float64 cosine Gram of a simplex ETF.

    1 on the diagonal, −1/(C−1) off it: C unit vectors as far apart as C vectors can be.
    """
    C = _check_classes(num_classes)
    return (torch.eye(C, dtype=torch.float64) - 1.0 / C) * C / (C - 1)


def simplex_etf(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """A (C, p) float64 matrix whose rows are the unit vertices of an exact simplex ETF in R^p.

    M = √(C/(C−1)) U (I − 11ᵀ/C), U (p, C) with orthonormal columns from the QR of a seeded Gaussian
    matrix (SPEC §4), so that its rows have the Gram :func:`simplex_etf_gram` (C) and sum to zero. When
    p = C − 1 there is no room for C orthonormal columns; U is then R Qᵀ, R (p, C−1) orthonormal and
    Q (C, C−1) an orthonormal basis of 1^⊥, with the same Gram. Raises ValueError when p < C − 1: a
    C-class simplex does not fit in R^p (SPEC §9).
    """
    C, p = _check_classes(num_classes), int(dim)
    if p < C - 1:
        raise ValueError(f"a simplex ETF of C = {C} classes needs p >= C - 1 = {C - 1} dimensions, got p = {p}")
    generator = torch.Generator().manual_seed(seed)
    centring = torch.eye(C, dtype=torch.float64) - 1.0 / C  # I − 11ᵀ/C (C, C)
    if p >= C:
        U, _ = torch.linalg.qr(torch.randn(p, C, dtype=torch.float64, generator=generator))
    else:
        R, _ = torch.linalg.qr(torch.randn(p, C - 1, dtype=torch.float64, generator=generator))
        Q, _ = torch.linalg.qr(centring[:, : C - 1])  # basis of 1^⊥ (C, C−1)
        U = R @ Q.T  # (p, C)
    M = math.sqrt(C / (C - 1)) * U @ centring  # (p, C)
    return M.T.contiguous()


def _check_classes(num_classes: int) -> int:
    C = int(num_classes)
    if C < 2:
        raise ValueError(f"a simplex ETF needs at least 2 classes, got C = {C}")
    return C
