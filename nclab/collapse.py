"""Neural-collapse metrics NC1–NC5 (SPEC.md §1), each written as its formula.

Late in training the penultimate features h_i of a classifier *collapse* (Papyan, Han & Donoho, 2020):

- NC1, variability collapse: features of a class shrink onto their class mean μ_c, measured by
  Tr(Σ_W Σ_B†)/C (``nc1``) and Tr(Σ_W)/Tr(Σ_B) (``nc1_trace_ratio``);
- NC2, the centred class means μ_c − μ_G (and the classifier rows w_c) become equinorm and equiangular
  with cosines −1/(C−1): a simplex equiangular tight frame (ETF);
- NC3, self-duality: the classifier Wᵀ aligns with the centred means M;
- NC4, the classifier's decision becomes the nearest-class-centre (NCC) decision;
- NC5 (Ammar et al., 2024), out-of-distribution features become orthogonal to the ID class means.

Conventions (SPEC §1): μ_G is the mean of the class means; Σ_W is divided by the total N; Σ_B = M Mᵀ/C;
Σ_B† keeps only the top min(C−1, p) eigenpairs (SPEC §9: keeping the null eigenvalue gives NC1 in the
millions); ``nc1`` is divided by C (the official NC notebook's values are C times ours); every std is the
unbiased one. Class sums accumulate in float64 and no N×C×p tensor is ever built (``nclab.stats``).
Inputs are torch tensors or numpy arrays on any device; the work runs on the features' device and plain
floats come back. This module is pure: it imports no model, data or training code (one model's metrics are
``nclab.tables.model_nc``, the metrics over training snapshots ``nclab.tables.nc_over_training``).
"""

from __future__ import annotations

import math

import torch

from . import stats
from .etf import simplex_etf_gram

__all__ = [
    "PRACTICAL_WORK_REPORT",
    "nc_metrics",
    "nc1_as_written",
    "nc4_as_written",
    "class_means",
    "centred_means",
    "within_class_covariance",
    "between_class_covariance",
    "gram_of_means",
    "per_class_variability",
    "nc5",
    "ncc_predictions",
    "variability_metrics",
    "practical_work_metrics",
]


def _checked(features, labels, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate features (N, p) and labels (N,); return them as tensors on one device, and C.

    Every class 0..C−1 must have a sample (C = max label + 1 unless ``num_classes`` says otherwise).
    NaN/inf features are caught later, where they reach the class sums.
    """
    H = stats.as_matrix(features, "features", check_finite=False)
    y = stats.as_labels(labels, len(H), device=H.device)
    C = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if int(y.max()) >= C:
        raise ValueError(f"labels must be in 0..{C - 1} (num_classes={C}), found label {int(y.max())}")
    if C < 2:
        raise ValueError(f"neural-collapse metrics need at least 2 classes, got C = {C}")
    empty = torch.nonzero(torch.bincount(y, minlength=C) == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"class(es) {empty[:10]} have no samples (C = {C}); every class needs at least one "
            f"feature: remap the labels to 0..C-1 or pass the right num_classes"
        )
    return H, y, C


def class_means(features, labels, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means μ_c = (1/N_c) Σ_{i: y_i = c} h_i and counts N_c.

    features: (N, p) float; labels: (N,) int in 0..C−1. Returns means (C, p) float64 and counts (C,) int64
    on the features' device. Class sums are accumulated in float64 with ``index_add_``, a block of rows
    at a time (no N×C×p tensor, no loop over classes). Raises ValueError on NaN/inf features.
    """
    H, y, C = _checked(features, labels, num_classes)
    return stats.class_means(H, y, C)


def centred_means(means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """M = [μ_1 − μ_G, …, μ_C − μ_G] (p, C) and μ_G = (1/C) Σ_c μ_c (p,), the mean of the class means.

    means: (C, p). μ_G is *not* the sample mean on imbalanced data (SPEC §1).
    """
    means = stats.as_tensor(means, "means").double()
    mu_G = means.mean(dim=0)  # (p,)
    M = (means - mu_G).T  # (p, C)
    return M, mu_G


def between_class_covariance(means: torch.Tensor) -> torch.Tensor:
    """Σ_B = M Mᵀ / C (p, p), from class means (C, p). Its rank is at most C − 1."""
    M, _ = centred_means(means)  # (p, C)
    return M @ M.T / M.shape[1]


def within_class_covariance(features, labels, means: torch.Tensor) -> torch.Tensor:
    """Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ (p, p) float64, divided by the total N.

    features: (N, p); labels: (N,); means: (C, p) from :func:`class_means`. Computed from centred
    features in float64, a block of rows at a time. ``nc_metrics`` never forms this p×p matrix: it only
    needs traces of it (see :func:`nc_metrics`).
    """
    H, y, mu = _checked_with_means(features, labels, means)
    return stats.scatter(H, mu, y, dtype=torch.float64) / len(H)  # (1/N) Σ_i z_i z_iᵀ


def _checked_with_means(features, labels, means) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mu = stats.as_tensor(means, "means")
    H, y, C = _checked(features, labels, len(mu))
    if mu.shape != (C, H.shape[1]):
        raise ValueError(f"means must have shape (C, p) = ({C}, {H.shape[1]}), got {tuple(mu.shape)}")
    return H, y, mu.to(device=H.device, dtype=torch.float64)


def per_class_variability(features, labels, means: torch.Tensor) -> torch.Tensor:
    """v_c = Tr(Σ_W,c) / Tr(Σ_B) (C,) float64: which classes collapse last.

    Σ_W,c = (1/N_c) Σ_{i: y_i = c} (h_i − μ_c)(h_i − μ_c)ᵀ, so Tr(Σ_W,c) is the mean squared distance of
    class c's features to μ_c. Weighted by N_c/N the v_c add up to ``nc1_trace_ratio``.
    features: (N, p); labels: (N,); means: (C, p) from :func:`class_means`.
    """
    H, y, mu = _checked_with_means(features, labels, means)
    tr_Sigma_W_c = torch.zeros(len(mu), dtype=torch.float64, device=H.device)  # (C,)
    for y_block, Z in stats.centred_blocks(H, y, mu):  # h_i − μ_{y_i} (b, p)
        tr_Sigma_W_c.index_add_(0, y_block, (Z * Z).sum(dim=1))
    tr_Sigma_W_c /= torch.bincount(y, minlength=len(mu))
    return tr_Sigma_W_c / torch.trace(between_class_covariance(mu))


def _cosine_gram(X: torch.Tensor) -> torch.Tensor:
    """G_cc' = cos(x_c, x_c') (C, C) for the rows x_c of X (C, p)."""
    norms = torch.linalg.vector_norm(X, dim=1)  # (C,)
    if bool((norms == 0).any()):
        raise ValueError(
            f"row(s) {torch.nonzero(norms == 0).flatten().tolist()[:10]} have zero norm: "
            "their angles (and the NC2 cosines) are undefined"
        )
    X_hat = X / norms[:, None]  # (C, p)
    return X_hat @ X_hat.T


def gram_of_means(means: torch.Tensor) -> torch.Tensor:
    """G = M̂ᵀ M̂ (C, C): cosines cos(μ_c − μ_G, μ_c' − μ_G) of the centred class means; means: (C, p)."""
    M, _ = centred_means(means)  # (p, C)
    return _cosine_gram(M.T)


def _pair_stats(G: torch.Tensor) -> tuple[float, float]:
    """Unbiased std of the C(C−1)/2 cosines G_cc' (c < c') and mean of |G_cc' + 1/(C−1)|.

    With C = 2 the single pair is trivially equiangular: its std is reported as 0.
    """
    C = G.shape[0]
    rows, cols = torch.triu_indices(C, C, offset=1, device=G.device)
    cosines = G[rows, cols]  # (C(C−1)/2,)
    std = cosines.std().item() if len(cosines) > 1 else 0.0
    return std, (cosines + 1.0 / (C - 1)).abs().mean().item()


def _top_eigenpairs(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top k eigenpairs (λ (k,), V (p, k)) of Σ_B = M Mᵀ/C, M: (p, C) float64.

    Found with eigh of the C×C matrix MᵀM/C, which has the same nonzero eigenvalues, with eigenvectors
    v = M u / √(Cλ): the eigenpairs of Σ_B for the cost of a C×C (not p×p) eigh. Eigenvalues that are
    zero to float64 precision (λ ≤ λ_max·C·1e-13, e.g. two identical class means) are left out too, as
    a pinv would.
    """
    C = M.shape[1]
    lam, U = torch.linalg.eigh(M.T @ M / C)  # ascending (C,), (C, C)
    if lam[-1] <= 0:
        raise ValueError(
            "all class means coincide (Σ_B = 0): the features carry no class information, "
            "so the NC metrics are undefined"
        )
    lam, U = lam[-k:], U[:, -k:]
    keep = lam > lam[-1] * C * 1e-13
    lam, U = lam[keep], U[:, keep]
    return lam, M @ U / torch.sqrt(C * lam)  # (k,), (p, k)


def _variability(
    H: torch.Tensor,
    y: torch.Tensor,
    means: torch.Tensor,
    M: torch.Tensor,
    W: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
) -> dict[str, float]:
    """nc1 = Tr(Σ_W Σ_B†)/C, nc1_trace_ratio = Tr(Σ_W)/Tr(Σ_B) and, given a head W (C, p), b (C,) float64,
    nc4_ncc_mismatch: one pass over centred blocks of rows z_i = h_i − μ_{y_i}.

    Every product is taken on the centred z_i, in the features' precision (centring first keeps float32
    accurate, see :func:`nc_metrics`), and one (b×p)(p×(k + C)) product per block gives Pᵀz_i and W z_i:

    - Tr(Σ_W) = (1/N) Σ_i ‖z_i‖² and Tr(Σ_W Σ_B†) = (1/N) Σ_i ‖Pᵀz_i‖², Σ_B† = P Pᵀ, P = V Λ^{-1/2};
    - logits l_i = W h_i + b = W z_i + (W μ_{y_i} + b);
    - NCC: argmin_c ‖h_i − μ_c‖ = argmax_c (h_i − μ_G)·m_c − ‖m_c‖²/2, m_c = μ_c − μ_G. The m_c lie in the
      span of V, m_c = V a_c, and Vᵀ(h_i − μ_G) = Λ^{1/2} Pᵀz_i + a_{y_i}, so the NCC scores are
      (Λ^{1/2} Pᵀz_i)·a_c + a_{y_i}·a_c − ‖a_c‖²/2: a (b×k)(k×C) product instead of a second (b×p)(p×C).
    """
    (N, p), C = H.shape, M.shape[1]
    lam, V = _top_eigenpairs(M, min(C - 1, p))  # Λ (k,), V (p, k)
    k = len(lam)
    P = V / lam.sqrt()  # Σ_B† = P Pᵀ (p, k)
    Q = (P if W is None else torch.cat([P, W.T], dim=1)).to(H.dtype)  # [P, Wᵀ] (p, k + C)
    if W is not None:
        A = V.T @ M  # a_c = Vᵀ m_c (k, C)
        G = A.T @ A  # a_c·a_c' (C, C)
        ncc_weight = (lam.sqrt()[:, None] * A).to(H.dtype)  # Λ^{1/2} A (k, C)
        ncc_offset = (G - G.diagonal() / 2).to(H.dtype)  # row y: a_y·a_c − ‖a_c‖²/2 (C, C)
        logit_offset = (means @ W.T + b).to(H.dtype)  # row y: W μ_y + b (C, C)
    tr_Sigma_W = tr_Sigma_W_pinv = 0.0  # Tr(Σ_W), Tr(Σ_W Σ_B†)
    mismatches = 0  # Σ_i [argmax_c l_ic ≠ NCC_i]
    for y_block, Z in stats.centred_blocks(H, y, means, H.dtype):  # z_i = h_i − μ_{y_i} (b, p)
        ZQ = Z @ Q  # [Pᵀz_i, W z_i] (b, k + C)
        tr_Sigma_W += (torch.linalg.vector_norm(Z, dim=1).double() ** 2).sum() / N
        tr_Sigma_W_pinv += (torch.linalg.vector_norm(ZQ[:, :k], dim=1).double() ** 2).sum() / N
        if W is not None:
            logits = ZQ[:, k:] + logit_offset.index_select(0, y_block)  # l_i (b, C)
            ncc_scores = ZQ[:, :k] @ ncc_weight + ncc_offset.index_select(0, y_block)  # (b, C)
            # max(...).indices is argmax (the first on ties), twice as fast as argmax on a CPU
            mismatches += (logits.max(dim=1).indices != ncc_scores.max(dim=1).indices).sum()
    tr_Sigma_B = (M * M).sum() / C  # Tr(M Mᵀ/C)
    out = {"nc1": (tr_Sigma_W_pinv / C).item(), "nc1_trace_ratio": (tr_Sigma_W / tr_Sigma_B).item()}
    if W is not None:
        out["nc4_ncc_mismatch"] = float(mismatches) / N
    return out


def ncc_predictions(features, means) -> torch.Tensor:
    """The nearest-class-centre classifier: argmin_c ‖h − μ_c‖ for each row of features (N, p) → (N,)."""
    H = stats.as_matrix(features, "features", check_finite=False)
    mu = stats.as_tensor(means, "means").to(device=H.device, dtype=H.dtype)  # (C, p)
    return (H @ mu.T - 0.5 * (mu * mu).sum(dim=1)).argmax(dim=1)  # −½‖h − μ_c‖² + ½‖h‖²


def variability_metrics(features, labels, num_classes: int | None = None) -> dict[str, float]:
    """NC1 at any feature dimension (a residual stage may have p < C − 1): ``nc1``, ``nc1_trace_ratio``
    and ``ncc_accuracy``, the training accuracy of the nearest-class-centre classifier on these features."""
    H, y, C = _checked(features, labels, num_classes)
    means, _ = stats.class_means(H, y, C)
    M, _ = centred_means(means)
    out = _variability(H, y, means, M)
    out["ncc_accuracy"] = (ncc_predictions(H, means) == y).double().mean().item()
    return out


def _checked_head(weight, bias, C: int, p: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The head W (C, p) and b (C,) (zeros without a bias) as float64 on ``device``; bad shapes or NaN raise."""
    W = stats.as_tensor(weight, "weight").to(device=device, dtype=torch.float64)  # (C, p)
    b = (
        torch.zeros(C, dtype=torch.float64, device=device)
        if bias is None
        else stats.as_tensor(bias, "bias").to(device=device, dtype=torch.float64)
    )  # (C,)
    if W.shape != (C, p):
        raise ValueError(f"weight must have shape (C, p) = ({C}, {p}), got {tuple(W.shape)}")
    if b.shape != (C,):
        raise ValueError(f"bias must have shape (C,) = ({C},), got {tuple(b.shape)}")
    if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
        raise ValueError("weight or bias contains NaN or inf values")
    return W, b


def nc_metrics(features, labels, weight=None, bias=None, num_classes: int | None = None) -> dict[str, float]:
    """NC1–NC4 of SPEC §1 as a dict of plain floats (ideal value 0 for every key).

    features: (N, p) float; labels: (N,) int; weight W: (C, p) and bias b: (C,) of the linear head
    (bias optional, zeros without it). Keys: ``nc1``, ``nc1_trace_ratio``, ``nc2_equinorm_means``,
    ``nc2_equiangular_means``, ``nc2_maxangle_means``; with a weight also ``nc2_*_weights``,
    ``nc2_etf_distance``, ``nc3`` and ``nc4_ncc_mismatch``.

    nc1 = Tr(Σ_W Σ_B†)/C (divided by C). With Σ_B† = P Pᵀ, P = V Λ^{-1/2} from the top min(C−1, p)
    eigenpairs of Σ_B, Tr(Σ_W Σ_B†) = (1/N) Σ_i ‖Pᵀ(h_i − μ_{y_i})‖²: one (N×p)(p×(C−1)) product in the
    features' precision (float32 stays float32: centring first keeps it accurate) instead of the p×p
    matrix Σ_W. With a head, the logits' product W(h_i − μ_{y_i}) joins it (one (N×p)(p×(2C−1)) product)
    and the NCC decision reuses Pᵀ(h_i − μ_{y_i}): the features are read twice in all, once for the class
    means and once centred. Raises ValueError when p < C − 1 (no simplex ETF fits in R^p, SPEC §9).
    Papyan, Han & Donoho (2020), PNAS; book chapter "Neural collapse".
    """
    H, y, C = _checked(features, labels, num_classes)
    N, p = H.shape
    if p < C - 1:
        raise ValueError(
            f"features have p = {p} dimensions, fewer than C - 1 = {C - 1}: a {C}-class "
            "simplex ETF cannot exist in R^p, so the NC2 ETF quantities are undefined "
            "(variability_metrics gives NC1 at any p)"
        )
    W, b = (None, None) if weight is None else _checked_head(weight, bias, C, p, H.device)  # (C, p), (C,)
    means, counts = stats.class_means(H, y, C)  # μ_c (C, p), N_c (C,)
    M, mu_G = centred_means(means)  # (p, C), (p,)
    variability = _variability(H, y, means, M, W, b)  # nc1, nc1_trace_ratio (and nc4_ncc_mismatch)
    out = {key: variability[key] for key in ("nc1", "nc1_trace_ratio")}
    norms = torch.linalg.vector_norm(M, dim=0)  # ‖μ_c − μ_G‖ (C,)
    out["nc2_equinorm_means"] = (norms.std() / norms.mean()).item()
    out["nc2_equiangular_means"], out["nc2_maxangle_means"] = _pair_stats(_cosine_gram(M.T))
    if W is None:
        return out

    w_norms = torch.linalg.vector_norm(W, dim=1)  # ‖w_c‖ (C,)
    out["nc2_equinorm_weights"] = (w_norms.std() / w_norms.mean()).item()
    out["nc2_equiangular_weights"], out["nc2_maxangle_weights"] = _pair_stats(_cosine_gram(W))
    WWt = W @ W.T  # (C, C)
    G_etf = simplex_etf_gram(C).to(H.device)  # (C, C)
    etf = G_etf / torch.linalg.matrix_norm(G_etf)  # (I − 11ᵀ/C)/√(C−1)
    out["nc2_etf_distance"] = torch.linalg.matrix_norm(WWt / torch.linalg.matrix_norm(WWt) - etf).item()
    out["nc3"] = (
        torch.linalg.matrix_norm(W.T / torch.linalg.matrix_norm(W) - M / torch.linalg.matrix_norm(M)) ** 2
    ).item()
    out["nc4_ncc_mismatch"] = variability["nc4_ncc_mismatch"]  # argmax_c l_c ≠ argmin_c ‖h − μ_c‖
    return out


def nc5(id_features, id_labels, ood_features) -> float:
    """NC5 = (1/C) Σ_c |cos(μ_c, μ_OOD)| (0 = OOD orthogonal to every class mean, the ideal).

    μ_c are the *uncentred* ID class means, μ_OOD the mean OOD feature. id_features: (N, p);
    id_labels: (N,); ood_features: (N_ood, p). Ammar et al. (2024), "NECO: Neural Collapse based OOD
    detection"; book chapter "Collapse and OOD detection".
    """
    means, _ = class_means(id_features, id_labels)  # μ_c (C, p)
    O = stats.as_matrix(ood_features, "ood_features", check_finite=False).to(means.device)
    if O.shape[1] != means.shape[1]:
        raise ValueError(f"ood_features have {O.shape[1]} dimensions, ID features {means.shape[1]}")
    mu_OOD = O.sum(dim=0, dtype=torch.float64) / len(O)  # (p,)
    if not bool(torch.isfinite(mu_OOD).all()):
        raise ValueError("ood_features contain NaN or inf values")
    if not bool(mu_OOD.any()):
        raise ValueError("the mean OOD feature is zero: its cosine with the class means is undefined")
    cosines = _cosine_gram(torch.cat([means, mu_OOD[None]]))[:-1, -1]  # cos(μ_c, μ_OOD) (C,)
    return cosines.abs().mean().item()


PRACTICAL_WORK_REPORT = {  # seed 002, Table 2: ResNet-18 (ImageNet weights), CIFAR-100, 400 epochs, regime A
    "tr(S_W)/tr(S_B)": 0.542,
    "||S_W||_F/||S_B||_F": 0.326,
    "equinorm CoV": 0.057,
    "||G - G_etf||_F/||G_etf||_F": 0.840,
    "off-diagonal cosine mean": -0.01,
    "off-diagonal cosine std": 0.085,
    "||W^T/||W|| - M/||M||||_F": 0.311,
    "cos(w_c, mu_c - mu_G) mean": 0.956,
    "cos(w_c, mu_c - mu_G) min": 0.941,
    "NCC agreement": 0.9998,
    "train accuracy (network)": 0.99968,
    "train accuracy (NCC)": 0.099972,  # as printed; it cannot be, beside an NCC agreement of 0.9998
}
"""The practical-work report's NC table as printed (keys of :func:`practical_work_metrics`): the one
published run of the course's ResNet-18 on CIFAR-100 that nclab's metrics can be read against."""


def practical_work_metrics(features, labels, weight, bias=None) -> dict[str, float]:
    """The quantities of the practical-work report's NC table (seed 002), each derived from SPEC §1.

    ``tr(S_W)/tr(S_B)`` (= nc1_trace_ratio), ``||S_W||_F/||S_B||_F``, ``equinorm CoV`` (= nc2_equinorm_means),
    ``||G - G_etf||_F/||G_etf||_F`` (G the cosine Gram of the centred means), the ``mean``/``std`` of its
    off-diagonal cosines (ideal −1/(C−1) and 0), ``||W^T/||W|| - M/||M||||_F`` (the square root of nc3),
    the ``mean``/``min`` of cos(w_c, μ_c − μ_G) (ideal 1), the ``NCC agreement`` (1 − nc4) and the
    training accuracy of the network and of the NCC classifier.
    """
    H, y, C = _checked(features, labels)
    metrics = nc_metrics(H, y, weight, bias)
    means, _ = stats.class_means(H, y, C)
    M, _ = centred_means(means)  # (p, C)
    Sigma_W = within_class_covariance(H, y, means)  # (p, p)
    Sigma_B = between_class_covariance(means)  # (p, p)
    G, G_etf = gram_of_means(means), simplex_etf_gram(C).to(H.device)  # (C, C)
    off_diagonal = G[~torch.eye(C, dtype=torch.bool, device=G.device)]
    W = stats.as_tensor(weight, "weight").to(device=H.device, dtype=torch.float64)  # (C, p)
    b = torch.zeros(C) if bias is None else stats.as_tensor(bias, "bias")
    cos_w_mu = torch.nn.functional.cosine_similarity(W, M.T, dim=1)  # cos(w_c, μ_c − μ_G) (C,)
    logits = H @ W.T.to(H.dtype) + b.to(device=H.device, dtype=H.dtype)
    return {
        "tr(S_W)/tr(S_B)": metrics["nc1_trace_ratio"],
        "||S_W||_F/||S_B||_F": (torch.linalg.matrix_norm(Sigma_W) / torch.linalg.matrix_norm(Sigma_B)).item(),
        "equinorm CoV": metrics["nc2_equinorm_means"],
        "||G - G_etf||_F/||G_etf||_F": (torch.linalg.matrix_norm(G - G_etf) / torch.linalg.matrix_norm(G_etf)).item(),
        "off-diagonal cosine mean": off_diagonal.mean().item(),
        "off-diagonal cosine std": off_diagonal.std().item(),
        "||W^T/||W|| - M/||M||||_F": math.sqrt(metrics["nc3"]),
        "cos(w_c, mu_c - mu_G) mean": cos_w_mu.mean().item(),
        "cos(w_c, mu_c - mu_G) min": cos_w_mu.min().item(),
        "NCC agreement": 1 - metrics["nc4_ncc_mismatch"],
        "train accuracy (network)": (logits.argmax(1) == y).double().mean().item(),
        "train accuracy (NCC)": (ncc_predictions(H, means) == y).double().mean().item(),
    }


# ----------------------------------------------------------------------------------------------------
# The formulas as written: what nc_metrics computes in one pass, read symbol by symbol


def nc1_as_written(features, labels) -> float:
    """NC1 = Tr(Σ_W Σ_B†)/C exactly as SPEC §1 writes it: every matrix of the definition built, one line
    per symbol. :func:`nc_metrics` gives the same number (tests assert it to 1e-9) in one pass that never
    builds the p × p matrix Σ_W; this version is the one to read, not to run on 50,000 × 512 features."""
    H, y, C = _checked(features, labels)
    H = H.double()  # (N, p)
    mu_c = torch.stack([H[y == c].mean(0) for c in range(C)])  # μ_c, the class means (C, p)
    mu_G = mu_c.mean(0)  # μ_G = the mean of the class means (p,)
    M = (mu_c - mu_G).T  # M = [μ_1 − μ_G, …, μ_C − μ_G] (p, C)
    Sigma_W = (H - mu_c[y]).T @ (H - mu_c[y]) / len(H)  # Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ (p, p)
    Sigma_B = M @ M.T / C  # Σ_B = M Mᵀ / C (p, p)
    lam, V = torch.linalg.eigh(Sigma_B)  # eigenpairs, ascending
    k = min(C - 1, H.shape[1])  # Σ_B has rank ≤ C − 1: keep its top C − 1 eigenpairs only (SPEC §9)
    Sigma_B_pinv = V[:, -k:] @ torch.diag(1 / lam[-k:]) @ V[:, -k:].T  # Σ_B† (p, p)
    return (torch.trace(Sigma_W @ Sigma_B_pinv) / C).item()


def nc4_as_written(features, labels, weight, bias=None) -> float:
    """NC4 as SPEC §1 writes it: the fraction of samples whose network decision argmax_c (W h + b)_c differs
    from the nearest class centre's argmin_c ‖h − μ_c‖, with both (N, C) matrices built. Equal to
    ``nc_metrics(...)["nc4_ncc_mismatch"]`` (tested), which never builds them."""
    H, y, C = _checked(features, labels)
    H = H.double()  # (N, p)
    W, b = _checked_head(weight, bias, C, H.shape[1], H.device)  # (C, p), (C,)
    mu_c = torch.stack([H[y == c].mean(0) for c in range(C)])  # uncentred class means μ_c (C, p)
    logits = H @ W.T + b  # l_i = W h_i + b (N, C)
    distances = torch.cdist(H, mu_c)  # ‖h_i − μ_c‖ (N, C)
    return (logits.argmax(1) != distances.argmin(1)).double().mean().item()
