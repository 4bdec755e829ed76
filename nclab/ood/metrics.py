"""The metrics that compare OOD detectors (SPEC §2), ID the positive class: AUROC (equal to scikit-learn's
``roc_auc_score`` with ties), AUPR-in and AUPR-out, FPR@95 in both conventions, the ROC curve, the
threshold that keeps a fraction of ID, and percentile bootstrap intervals of AUROC and FPR@95 computed
without resampling the scores themselves (weights of the sorted scores).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "detection_metrics",
    "bootstrap_intervals",
    "resampled_auroc",
    "resample_counts",
    "threshold_at_tpr",
    "roc_curve",
]


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


def resample_counts(n: int, B: int, rng: np.random.Generator) -> np.ndarray:
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
        w, v = resample_counts(len(x), B, rng), resample_counts(len(y), B, rng)  # (B, n), (B, m)
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


def resampled_auroc(id_scores, ood_scores, id_counts: np.ndarray, ood_counts: np.ndarray) -> np.ndarray:
    """The AUROC of each of B resamples given by counts over the samples in their original order:
    id_scores (n,), ood_scores (m,), id_counts (B, n), ood_counts (B, m) → (B,). Two detectors scored on
    the same images and resampled with the same counts give a *paired* bootstrap of their difference
    (``nclab.tables.verdicts``)."""
    x, y = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    if id_counts.shape[1:] != x.shape or ood_counts.shape[1:] != y.shape or len(id_counts) != len(ood_counts):
        raise ValueError(
            f"counts (B, n) and (B, m) must match the scores: got {id_counts.shape} and {ood_counts.shape} "
            f"for {len(x)} ID and {len(y)} OOD scores"
        )
    i, j = np.argsort(x, kind="mergesort"), np.argsort(y, kind="mergesort")
    return _weighted_auroc(x[i], y[j], id_counts[:, i], ood_counts[:, j])
