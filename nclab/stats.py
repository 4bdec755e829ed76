"""Input checks, class sums and scatter matrices shared by ``nclab.collapse`` and ``nclab.ood``.

Both measure features h_i ∈ R^p (rows of an (N, p) tensor) with labels y_i ∈ {0..C−1}, and both need the
same few statistics: class sums Σ_{y_i = c} h_i and scatter matrices Σ_i (h_i − c_i)(h_i − c_i)ᵀ. They
are computed here, once, in the way SPEC §1 asks: sums accumulated in float64, a block of rows at a
time, never an N×C×p tensor. Inputs are torch tensors or numpy arrays on any device; the work runs on
the features' device.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "as_matrix",
    "as_labels",
    "row_blocks",
    "class_sums",
    "class_means",
    "centred_blocks",
    "scatter",
    "decompose",
    "eigh",
    "pinv_psd",
]


def as_tensor(x, name: str) -> torch.Tensor:
    """``x`` (a torch tensor or a numpy array) as a detached tensor; anything else raises ValueError."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or a numpy array, got {type(x).__name__}")
    return x.detach()


def as_matrix(x, name: str, ndim: int = 2, device=None, check_finite: bool = True) -> torch.Tensor:
    """``x`` as a float32/float64 tensor with ``ndim`` dimensions and at least one row.

    Half precision becomes float32, integers become float64 (exact). With ``check_finite``, NaN or inf
    raise ValueError (the sum is tested first: ten times cheaper than a full scan when all is well).
    """
    x = as_tensor(x, name)
    x = x if device is None else x.to(device)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float() if x.is_floating_point() else x.double()
    if check_finite and not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def as_labels(labels, count: int, name: str = "labels", device=None) -> torch.Tensor:
    """``labels`` as a 1-D int64 tensor of ``count`` non-negative class indices on ``device``."""
    y = as_tensor(labels, name)
    y = y if device is None else y.to(device)
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a 1-D array of integer class indices, got shape {tuple(y.shape)} and dtype {y.dtype}"
        )
    if len(y) != count:
        raise ValueError(f"features have {count} rows but {name} have {len(y)} entries")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{name} must be class indices in 0..C-1, found the negative label {int(y.min())}")
    return y


def row_blocks(count: int, device: torch.device) -> Iterator[slice]:
    """Consecutive slices of rows: cache-sized on a CPU (1,024), large on a GPU (65,536)."""
    step = 1024 if device.type == "cpu" else 65_536
    return (slice(start, start + step) for start in range(0, count, step))


def class_sums(H: torch.Tensor, y: torch.Tensor, C: int) -> torch.Tensor:
    """Σ_{i: y_i = c} h_i: features (N, p), labels (N,) in 0..C−1 → (C, p) float64.

    Each block of rows is converted to float64 before ``index_add_``, so the sums are float64 throughout.
    """
    sums = torch.zeros(C, H.shape[1], dtype=torch.float64, device=H.device)
    for rows in row_blocks(len(H), H.device):
        sums.index_add_(0, y[rows], H[rows].double())
    return sums


def class_means(H: torch.Tensor, y: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means μ_c (C, p) float64 and counts N_c (C,) int64; NaN/inf features raise ValueError."""
    sums = class_sums(H, y, C)  # Σ_{i∈c} h_i (C, p)
    bad = torch.nonzero(~torch.isfinite(sums).all(dim=1)).flatten().tolist()  # NaN/inf reach the sums
    if bad:
        raise ValueError(f"features contain NaN or inf values (in class(es) {bad[:10]})")
    counts = torch.bincount(y, minlength=C)  # N_c (C,)
    return sums / counts[:, None].clamp_min(1), counts


def centred_blocks(H: torch.Tensor, y: torch.Tensor, means: torch.Tensor, dtype=torch.float64):
    """Yield (labels (b,), h_i − μ_{y_i} (b, p) in ``dtype``) for consecutive blocks of rows."""
    means = means.to(device=H.device, dtype=dtype)  # (C, p)
    for rows in row_blocks(len(H), H.device):
        yield y[rows], H[rows].to(dtype) - means.index_select(0, y[rows])  # index_select: 1.5× faster than [y]


def scatter(
    H: torch.Tensor, center: torch.Tensor, labels: torch.Tensor | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Σ_i (h_i − c_i)(h_i − c_i)ᵀ: (p, p) float64, c_i = center (p,), or center[labels[i]] (C, p).

    Differences and products are computed in ``dtype`` (default: the features', float32 BLAS being twice
    as fast on a CPU), block sums added in float64. Pass ``dtype=torch.float64`` where small eigenvalues
    matter (the Mahalanobis precision): float32 products blur a spectrum wider than about 10⁶.
    """
    dtype = dtype or H.dtype
    S = torch.zeros(H.shape[1], H.shape[1], dtype=torch.float64, device=H.device)
    center = center.to(device=H.device, dtype=dtype)
    for rows in row_blocks(len(H), H.device):
        x = H[rows].to(dtype) - (center if labels is None else center[labels[rows]])
        S += (x.T @ x).double()
    return S


def decompose(decomposition, A: torch.Tensor):
    """``decomposition(A)`` (``torch.linalg.eigh``, ``pinv``, …), on one CPU thread for a CPU matrix.

    As fast for a few hundred rows, while MKL's threaded eigh/SVD stalls for seconds (0.05 s → 7 s for
    p = 512) when the cores are shared.
    """
    if A.device.type != "cpu":
        return decomposition(A)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return decomposition(A)
    finally:
        torch.set_num_threads(threads)


def eigh(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric matrix A, on one CPU thread."""
    return decompose(torch.linalg.eigh, A)


def pinv_psd(Sigma: torch.Tensor, rtol: float) -> torch.Tensor:
    """Σ⁺ of a symmetric (p, p) matrix from its eigh, dropping eigenvalues with |λ| ≤ rtol · max |λ|.

    The cut-off of scikit-learn's ``scipy.linalg.pinvh`` (and so of the Mahalanobis reference code of Lee
    et al. and OpenOOD) is rtol = p · ε(float64) on a float64 Σ.
    """
    lam, V = eigh(Sigma)
    largest = lam.abs().max()
    if largest <= 0:
        raise ValueError("the matrix to pseudo-invert is zero")
    keep = lam.abs() > rtol * largest
    return (V[:, keep] / lam[keep]) @ V[:, keep].T
