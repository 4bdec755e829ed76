"""Post-hoc OOD detectors on penultimate features, and the metrics that compare them (SPEC §2).

Every detector has scikit-learn's shape: ``ViM(dim=256).fit(train_features, train_labels, weight, bias)``
returns the detector, ``.score(features)`` a (M,) tensor, **higher = more in-distribution** (pytorch-ood's
scores are "higher = OOD": flip the sign to compare). ``fit`` takes the same four arguments everywhere and
ignores those a detector does not use, so the six of :data:`DETECTORS` are interchangeable. Fitted state
lives in ``name_`` attributes. :func:`detection_metrics` treats ID as the positive class.

Numerics: p × p matrices (covariances, precision, eigenvectors) are float64, decomposed with eigh; (N × p)
products run in the features' dtype over row blocks summed in float64 (float32 BLAS is 2× faster on a
CPU; pass float64 features for float64 throughout). Everything runs on the features' device, and no
(N, C, p) tensor is ever built.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import stats

__all__ = [
    "Detector",
    "MSP",
    "MaxLogit",
    "Energy",
    "Mahalanobis",
    "ViM",
    "NECO",
    "DETECTORS",
    "detection_metrics",
    "bootstrap_intervals",
    "threshold_at_tpr",
    "roc_curve",
]


def _tensor(x, name: str, ndim: int, device=None) -> torch.Tensor:
    """`x` (tensor or array) as a detached float32/float64 tensor of `ndim` dimensions, finite entries."""
    return stats.as_matrix(torch.as_tensor(x), name, ndim, device)


def _mean(h: torch.Tensor) -> torch.Tensor:
    """(1/N) Σ_i h_i: (N, p) → (p,) float64 (the one class sum of all rows)."""
    return stats.class_sums(h, torch.zeros(len(h), dtype=torch.long, device=h.device), 1)[0] / len(h)


def _check_dim(dim, detector: str, default: str):
    """An integer hyperparameter ≥ 1, or None for its default; anything else raises."""
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
        raise ValueError(f"{detector} dim must be an integer ≥ 1 (or None for {default}), got {dim!r}")
    return dim


# Detectors -------------------------------------------------------------------------------------------


class Detector:
    """The shape every detector shares: ``fit(train_features, train_labels, weight, bias)`` → self and
    ``score(features)`` → (M,), higher = ID; here the input checks, the linear head l = W h + b and the
    fitted-or-not guard."""

    _needs = ()  # which of train_features, train_labels, weight this detector's fit uses

    def fit(self, train_features, train_labels=None, weight=None, bias=None):
        """Fit on training features h (N, p), labels y (N,) and the head W (C, p), b (C,); returns self."""
        name = type(self).__name__
        given = {"train_features": train_features, "train_labels": train_labels, "weight": weight}
        for arg, value in given.items():
            if arg in self._needs and value is None:
                raise ValueError(
                    f"{name} needs {arg}: call {name}().fit(train_features, train_labels, W, b) with "
                    f"W, b = nclab.heads.weight_and_bias(model)"
                )
        for fitted in [key for key in vars(self) if key.endswith("_")]:  # a refit starts afresh
            delattr(self, fitted)
        h = None if train_features is None else _tensor(train_features, "train_features", 2)
        device = None if h is None else h.device
        if weight is not None:
            W = _tensor(weight, "weight", 2, device)
            if h is not None and W.shape[1] != h.shape[1]:
                raise ValueError(
                    f"feature dimension p = {h.shape[1]} differs from the weight's "
                    f"p = {W.shape[1]} (weight must be (C, p))"
                )
            b = torch.zeros_like(W[:, 0]) if bias is None else _tensor(bias, "bias", 1, device)
            if b.shape != (W.shape[0],):
                raise ValueError(
                    f"bias must have shape ({W.shape[0]},) to match weight {tuple(W.shape)}, got {tuple(b.shape)}"
                )
            self.weight_, self.bias_ = W, b
        y = None if train_labels is None or h is None else stats.as_labels(train_labels, len(h), "train_labels", device)
        self._fit(h, y)
        self.n_features_ = h.shape[1] if h is not None else self.weight_.shape[1]  # marks it fitted
        return self

    def _fit(self, h, y):
        pass

    def score(self, features) -> torch.Tensor:
        """Score of each feature h (M, p) → (M,); higher = in-distribution."""
        if not hasattr(self, "n_features_"):
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet: call "
                f".fit(train_features, train_labels, weight, bias) first"
            )
        h = _tensor(features, "features", 2)
        if h.shape[1] != self.n_features_:
            raise ValueError(
                f"features have p = {h.shape[1]} dimensions, the detector was fitted on p = {self.n_features_}"
            )
        return self._score(h)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """l = W h + b: (M, p) → (M, C), in h's dtype and on h's device."""
        return torch.addmm(self.bias_.to(h), h, self.weight_.to(h).T)

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k[0] != "_" and k[-1] != "_")
        return f"{type(self).__name__}({params})"


class MSP(Detector):
    """Maximum softmax probability: score = max_c softmax(l)_c, l = W h + b; in [1/C, 1].

    Higher = in-distribution. Uses only the head W (C, p), b (C,) (zeros if None). (M, p) → (M,).
    Hendrycks & Gimpel, "A baseline for detecting misclassified and OOD examples", ICLR 2017.
    """

    _needs = ("weight",)

    def _score(self, h):
        return torch.softmax(self._logits(h), dim=1).amax(dim=1)


class MaxLogit(Detector):
    """Maximum logit: score = max_c l_c, l = W h + b.

    Higher = in-distribution. Uses only the head W (C, p), b (C,). (M, p) → (M,).
    Hendrycks et al., "Scaling out-of-distribution detection for real-world settings", ICML 2022.
    """

    _needs = ("weight",)

    def _score(self, h):
        return self._logits(h).amax(dim=1)


class Energy(Detector):
    """Negative free energy: score = T · logsumexp(l / T), l = W h + b, temperature T > 0 (default 1).

    Higher = in-distribution: the score is −E(h; T) (with the sign of E, AUROC falls below 0.5).
    Uses only the head W (C, p), b (C,). (M, p) → (M,).
    Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020.
    """

    _needs = ("weight",)

    def __init__(self, temperature: float = 1.0):
        if not 0 < float(temperature) < float("inf"):
            raise ValueError(f"Energy temperature must be a positive finite number, got {temperature!r}")
        self.temperature = float(temperature)

    def _score(self, h):
        T = self.temperature
        return T * torch.logsumexp(self._logits(h) / T, dim=1)


class Mahalanobis(Detector):
    """Minimum Mahalanobis distance to a class mean: score = −min_c (h − μ_c)ᵀ Σ⁺ (h − μ_c).

    μ_c = class means from the true training labels; Σ = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ,
    ONE shared pooled within-class covariance (not the total covariance, not its diagonal, no ½
    factor), accumulated in float64; Σ⁺ its pseudo-inverse with the cut-off of scikit-learn's ``pinvh``,
    which the reference code (Lee et al.; OpenOOD, through ``EmpiricalCovariance``) uses: eigenvalues
    with |λ| ≤ p·ε·max|λ|, ε = 2.2e-16 of float64, are dropped, so a within-class spectrum spanning many
    decades keeps its small directions (where OOD features often stand out). Higher = in-distribution.
    (M, p) → (M,). Fit it on un-augmented training features. Fitted (float64): classes_ (C,) labels
    present, means_ (C, p), covariance_ (p, p), precision_ (p, p). Lee et al., "A simple unified framework
    for detecting OOD samples and adversarial attacks", NeurIPS 2018.
    """

    _needs = ("train_features", "train_labels")

    def _fit(self, h, y):
        counts = torch.bincount(y)
        self.classes_ = torch.nonzero(counts).squeeze(1)  # classes present: (C,)
        y = (torch.cumsum(counts > 0, 0) - 1)[y]  # label → 0..C−1: (N,)
        N_c = counts[self.classes_]  # (C,)
        self.means_ = stats.class_sums(h, y, len(N_c)) / N_c[:, None]  # μ_c: (C, p)
        self.covariance_ = stats.scatter(h, self.means_, y, dtype=torch.float64) / len(h)  # Σ: (p, p)
        eps = torch.finfo(torch.float64).eps
        self.precision_ = stats.pinv_psd(self.covariance_, rtol=h.shape[1] * eps)  # Σ⁺ as pinvh

    def _score(self, h):
        precision, mu = self.precision_.to(h.device), self.means_.to(h.device)
        mu_G = mu.mean(0)  # centring first keeps the expansion well-conditioned
        x, m = h.double() - mu_G, mu - mu_G  # (M, p), (C, p)
        xP = x @ precision  # (M, p)
        # (h − μ_c)ᵀ Σ⁺ (h − μ_c) = hᵀΣ⁺h − 2 hᵀΣ⁺μ_c + μ_cᵀΣ⁺μ_c, with no (M, C, p) tensor
        d = (xP * x).sum(1, keepdim=True) - 2 * xP @ m.T + ((m @ precision) * m).sum(1)  # (M, C)
        return -d.amin(dim=1).to(h.dtype)


class ViM(Detector):
    """Virtual-logit matching: score = logsumexp(l) − α ‖Rᵀ (h − o)‖, l = W h + b.

    o = −W⁺ b (where every logit is 0; the least-squares point when C > p); R (p, p − dim) = the
    eigenvectors of the uncentred-about-o covariance (1/N) Σ_i (h_i − o)(h_i − o)ᵀ beyond the top
    `dim`; α = mean_train max_c l_c / mean_train ‖Rᵀ(h − o)‖. Higher = in-distribution.
    (M, p) → (M,).
    dim: principal dimension, 1 ≤ dim < p; default p // 2 (256 for p = 512).
    Fitted: origin_ (p,), residual_basis_ (p, p − dim), alpha_ (float), dim_.
    Wang et al., "ViM: Out-of-distribution with virtual-logit matching", CVPR 2022.
    """

    _needs = ("train_features", "weight")

    def __init__(self, dim: int | None = None):
        self.dim = _check_dim(dim, "ViM", "p // 2")

    def _fit(self, h, y):
        p = h.shape[1]
        dim = p // 2 if self.dim is None else self.dim
        if not 1 <= dim < p:
            raise ValueError(f"ViM dim must satisfy 1 ≤ dim < p = {p}, got {dim}")
        self.origin_ = -stats.decompose(torch.linalg.pinv, self.weight_.double()) @ self.bias_.double()  # o
        lam, V = stats.eigh(stats.scatter(h, self.origin_) / len(h))  # ascending eigenvalues
        self.residual_basis_, self.dim_ = V[:, : p - dim], dim  # R: (p, p − dim)
        alpha = self._logits(h).amax(1).double().mean() / self._residual(h).double().mean()
        if not torch.isfinite(alpha):
            raise ValueError(
                f"the training features have no component outside the top {dim} principal "
                f"directions, so α is undefined: choose a smaller ViM dim"
            )
        self.alpha_ = float(alpha)

    def _residual(self, h):
        """‖Rᵀ(h − o)‖: (M, p) → (M,)."""
        return ((h - self.origin_.to(h)) @ self.residual_basis_.to(h)).norm(dim=1)

    def _score(self, h):
        return torch.logsumexp(self._logits(h), dim=1) - self.alpha_ * self._residual(h)


class NECO(Detector):
    """Neural-collapse OOD score: score = ‖P_d s‖ / ‖s‖ (× max_c l_c if times_maxlogit).

    s = (h − mean) / std with the training mean and population (1/N) std (a constant training dimension
    keeps std 1, as scikit-learn's StandardScaler does); standardize=False uses s = h. P_d (d, p) = the
    first d principal axes of a PCA of the standardised training features (centred covariance, eigh).
    Higher = in-distribution; the plain score lies in [0, 1]. (M, p) → (M,).
    dim: d, 1 ≤ d ≤ p, default C − 1 (C from weight, else from the labels). times_maxlogit needs the
    head; the NECO authors use it for ViTs, not ResNets.
    Fitted: mean_ (p,), std_ (p,), components_ (d, p), explained_variance_ (d,), dim_.
    Ben Ammar et al., "NECO: NEural Collapse based Out-of-distribution detection", ICLR 2024.
    """

    def __init__(self, dim: int | None = None, standardize: bool = True, times_maxlogit: bool = False):
        self.dim, self.standardize = _check_dim(dim, "NECO", "C − 1"), bool(standardize)
        self.times_maxlogit = bool(times_maxlogit)
        self._needs = ("train_features", "weight") if times_maxlogit else ("train_features",)

    def _fit(self, h, y):
        N, p = h.shape
        C = self.weight_.shape[0] if hasattr(self, "weight_") else None if y is None else len(y.unique())
        if self.dim is None and C is None:
            raise ValueError("NECO's default dim is C − 1: pass weight or train_labels, or set dim")
        dim = C - 1 if self.dim is None else self.dim
        if not 1 <= dim <= p:
            raise ValueError(f"NECO dim must satisfy 1 ≤ dim ≤ p = {p}, got {dim}")
        self.mean_ = _mean(h)  # (p,)
        Sigma = stats.scatter(h, self.mean_) / N  # covariance of h
        std = Sigma.diagonal().sqrt() if self.standardize else torch.ones_like(self.mean_)
        self.std_ = torch.where(std > 0, std, torch.ones_like(std))
        lam, V = stats.eigh(Sigma / torch.outer(self.std_, self.std_))  # covariance of s
        self.components_ = V.flip(1)[:, :dim].T  # P_d: (d, p)
        self.explained_variance_, self.dim_ = lam.flip(0)[:dim], dim

    def _score(self, h):
        s = h.double()  # (M, p)
        if self.standardize:
            s = (s - self.mean_.to(h.device)) / self.std_.to(h.device)
        norm_s = s.norm(dim=1).clamp_min(torch.finfo(s.dtype).tiny)
        score = ((s @ self.components_.to(h.device).T).norm(dim=1) / norm_s).to(h.dtype)
        return score * self._logits(h).amax(dim=1) if self.times_maxlogit else score


DETECTORS = {"msp": MSP, "maxlogit": MaxLogit, "energy": Energy, "mahalanobis": Mahalanobis, "vim": ViM, "neco": NECO}


# Metrics: ID is the positive class -------------------------------------------------------------------


def _scores(x, name: str) -> np.ndarray:
    x = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x.astype(np.float64)


def _counts(pos: np.ndarray, neg: np.ndarray):
    """False/true positive counts at each distinct threshold, highest first (as scikit-learn)."""
    scores, is_pos = np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, is_pos = scores[order], is_pos[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # last index of every tie group
    tps = np.cumsum(is_pos)[last]
    return 1 + last - tps, tps, scores[last]  # fps, tps, thresholds


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _aupr(pos, neg) -> float:
    """Area under precision(recall), trapezoid rule, as sklearn.metrics.auc(recall, precision)."""
    fps, tps, _ = _counts(pos, neg)
    precision = np.r_[(tps / (tps + fps))[::-1], 1.0]
    recall = np.r_[(tps / tps[-1])[::-1], 0.0]  # decreasing
    return -_trapezoid(precision, recall)


def threshold_at_tpr(id_scores, tpr: float = 0.95) -> float:
    """τ = the ⌈tpr · n⌉-th largest of the n ID scores: the highest threshold that keeps at least the
    fraction ``tpr`` of ID (an input is accepted as ID when its score ≥ τ).

    The threshold of ``fpr95`` (tpr = 0.95). It is an ID score itself, not an interpolated quantile
    (``torch.quantile`` between two scores keeps fewer than 95 % of ID when they are far apart).
    """
    scores = _scores(id_scores, "id_scores")
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr is the fraction of ID to keep, in (0, 1], got {tpr!r}")
    k = math.ceil(round(tpr * len(scores), 6))  # ⌈tpr · n⌉ ID scores to keep
    return float(np.sort(scores)[len(scores) - k])  # the k-th largest


def _fpr_at_95(pos, neg) -> float:
    """Fraction of negatives with score ≥ τ, τ the highest threshold keeping ≥ 95 % of positives."""
    return float(np.mean(neg >= threshold_at_tpr(pos, 0.95)))


def roc_curve(id_scores, ood_scores):
    """ROC curve with ID positive: (fpr, tpr, thresholds), identical to sklearn.metrics.roc_curve.

    fpr = fraction of OOD with score ≥ threshold, tpr = the same for ID; thresholds decrease from +inf.
    """
    fps, tps, thresholds = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    if len(fps) > 2:  # drop points collinear with their neighbours, as scikit-learn does
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thresholds = fps[corner], tps[corner], thresholds[corner]
    return np.r_[0.0, fps] / fps[-1], np.r_[0.0, tps] / tps[-1], np.r_[np.inf, thresholds]


def detection_metrics(id_scores, ood_scores, n_bootstrap: int = 0, seed: int = 0) -> dict[str, float]:
    """OOD metrics of scores where higher = in-distribution; ID is the positive class.

    auroc: area under the ROC curve (equals sklearn's roc_auc_score, ties included; 0.5 = chance,
    below 0.5 usually means a flipped sign); aupr_in / aupr_out: area under the precision–recall curve
    with ID / OOD positive (sklearn's precision_recall_curve + auc); fpr95: fraction of OOD accepted at
    the threshold that keeps 95 % of ID (ODIN/ViM/NECO papers); fpr95_oodpos: fraction of ID rejected
    at the threshold that flags 95 % of OOD (OpenOOD, pytorch-ood). id_scores (n,), ood_scores (m,).
    With ``n_bootstrap`` > 0, also auroc_lo, auroc_hi, fpr95_lo, fpr95_hi: the 95 % percentile bootstrap
    interval of each (:func:`bootstrap_intervals`, resamples drawn with ``seed``).
    """
    ind, ood = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    fpr, tpr, _ = roc_curve(ind, ood)
    metrics = {
        "auroc": _trapezoid(tpr, fpr),
        "aupr_in": _aupr(ind, ood),
        "aupr_out": _aupr(-ood, -ind),
        "fpr95": _fpr_at_95(ind, ood),
        "fpr95_oodpos": _fpr_at_95(-ood, -ind),
    }
    if n_bootstrap:
        metrics.update(bootstrap_intervals(ind, ood, n_bootstrap, seed))
    return metrics


# Bootstrap: B resamples as count matrices over the sorted scores, every metric from cumulative counts ---


def _resample_counts(n: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) int64 counts: how often each of n samples is drawn in each of B resamples of size n, with
    replacement (the B·n draws at once, counted with one bincount)."""
    picks = rng.integers(0, n, size=(B, n), dtype=np.int32) + n * np.arange(B, dtype=np.int64)[:, None]
    return np.bincount(picks.ravel(), minlength=B * n).reshape(B, n)


def _cumulative(counts: np.ndarray) -> np.ndarray:
    """(B, m) counts → (B, m + 1) cumulative counts with a leading 0: column k = samples among the first k."""
    total = np.zeros((len(counts), counts.shape[1] + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=total[:, 1:])
    return total


def _weighted_auroc(x: np.ndarray, y: np.ndarray, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """AUROC of B weighted samples: Σ_ij w_bi v_bj [1(x_i > y_j) + ½ 1(x_i = y_j)] / (Σ w_b · Σ v_b).

    x (n,) ID and y (m,) OOD scores, both ascending; w (B, n) and v (B, m) counts → (B,). The Mann–Whitney
    statistic through ranks: below_i / upto_i = the number of OOD scores < x_i / ≤ x_i, and V the
    cumulative OOD counts, so V[below_i] weighted OOD scores lie under x_i and V[upto_i] − V[below_i] tie.
    """
    below, upto = np.searchsorted(y, x, "left"), np.searchsorted(y, x, "right")  # (n,), (n,)
    V = _cumulative(v)  # (B, m + 1)
    twice_wins = V[:, below] + V[:, upto]  # (B, n): 2 × (OOD below x_i + ½ ties)
    return (w * twice_wins).sum(1) / (2.0 * w.sum(1) * v.sum(1))


def _weighted_fpr95(x: np.ndarray, y: np.ndarray, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """FPR@95 of B weighted samples: the weighted fraction of OOD ≥ τ_b, τ_b the ⌈0.95 Σ w_b⌉-th largest
    ID score of resample b (:func:`threshold_at_tpr` on the resample). x (n,), y (m,) ascending; w (B, n),
    v (B, m) counts → (B,)."""
    W = _cumulative(w)  # (B, n + 1)
    kept = W[:, -1:] - W[:, :-1]  # (B, n): ID scores ≥ x_i, non-increasing in i
    k = np.ceil(np.round(0.95 * W[:, -1], 6))  # (B,) ID scores to keep
    tau = x[(kept >= k[:, None]).sum(1) - 1]  # (B,): the highest x_i that still keeps k
    V = _cumulative(v)  # (B, m + 1)
    below = np.searchsorted(y, tau, "left")  # (B,): OOD scores < τ_b
    return (V[:, -1] - V[np.arange(len(v)), below]) / V[:, -1]


def bootstrap_intervals(
    id_scores, ood_scores, n_bootstrap: int = 1_000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Percentile bootstrap intervals of AUROC and FPR@95: {auroc_lo, auroc_hi, fpr95_lo, fpr95_hi}.

    The ID and the OOD scores are resampled independently, with replacement, each to its own size,
    ``n_bootstrap`` times (numpy generator seeded with ``seed``); each metric is computed on every resample
    (AUROC through ranks, FPR@95 at each resample's own threshold) and the interval runs from the
    (1 − level)/2 to the (1 + level)/2 quantile of the ``n_bootstrap`` values. Vectorised: the resamples
    are (B, n) count matrices over the sorted scores (a resample's metrics do not depend on
    the order of its scores), processed in blocks of about 2²² entries. id_scores (n,), ood_scores (m,).
    Efron & Tibshirani, "An introduction to the bootstrap", 1993, ch. 13.
    """
    x, y = np.sort(_scores(id_scores, "id_scores")), np.sort(_scores(ood_scores, "ood_scores"))
    if not isinstance(n_bootstrap, int) or isinstance(n_bootstrap, bool) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap is a number of resamples, an integer ≥ 1, got {n_bootstrap!r}")
    if not 0 < level < 1:
        raise ValueError(f"level is the interval's coverage, in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    block = max(1, 2**22 // (len(x) + len(y)))  # resamples per block: bounded memory
    auroc, fpr95 = [], []
    for start in range(0, n_bootstrap, block):
        B = min(block, n_bootstrap - start)
        w, v = _resample_counts(len(x), B, rng), _resample_counts(len(y), B, rng)  # (B, n), (B, m)
        auroc.append(_weighted_auroc(x, y, w, v))
        fpr95.append(_weighted_fpr95(x, y, w, v))
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    lo_auroc, hi_auroc = np.quantile(np.concatenate(auroc), quantiles)
    lo_fpr, hi_fpr = np.quantile(np.concatenate(fpr95), quantiles)
    return {
        "auroc_lo": float(lo_auroc),
        "auroc_hi": float(hi_auroc),
        "fpr95_lo": float(lo_fpr),
        "fpr95_hi": float(hi_fpr),
    }
