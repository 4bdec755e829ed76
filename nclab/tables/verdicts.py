"""Verdicts on a paper's claims, calibrated to noise (notebooks 05–08).

A claim compares a method with a baseline. Its verdict comes from an interval of the difference
method − baseline, never from the difference alone:

- **paired over the test images**: both networks are scored on the same images, and every bootstrap
  resample draws the same images for both, so what the two share (an easy image, a hard one) cancels;
- **over seeds** where the profile trains several: a two-stage bootstrap, seeds drawn with replacement,
  then images within each seed (``config.Profile.seeds``: one in ``smoke`` and ``quick``, three in ``full``).
  With one seed the interval holds the test-image noise only: it says nothing of how much another
  initialisation would move the result, and a notebook says so beside it.

With a two-sided interval at ``LEVEL`` = 90 %, each side is a one-sided test at 5 %, and :func:`judge`
reads it the same way for every claim (``tests/test_verdicts.py`` checks the calibration by simulation):

- a **direction** claim (the method is better): "reproduced" if lo > 0, "contradicted" if hi < 0;
- a **size** claim (better by δ): "reproduced" if lo > 0 and hi ≥ δ (a gain, and δ within the interval's
  reach), "contradicted" if hi < δ (δ is ruled out, even where a smaller gain is real);
- a **best-case** claim ("up to δ"): the largest gain over many settings is not what one setting should
  give, so it is judged by its direction only and δ is shown, not tested;
- a **match** claim (as good as, within a tolerance δ the course states where the source gives none):
  "reproduced" if the whole interval lies within ±δ, "contradicted" if it lies wholly outside;
- anything else is "inconclusive": the run cannot tell the claim from noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ood.metrics import detection_metrics, resample_counts, resampled_auroc

__all__ = [
    "LEVEL",
    "VERDICTS",
    "KINDS",
    "Difference",
    "accuracy_difference",
    "auroc_difference",
    "judge",
]

LEVEL = 0.90  # two-sided: a one-sided 5 % test on each side
VERDICTS = ("reproduced", "inconclusive", "contradicted")
KINDS = ("direction", "size", "best case", "match")
_BLOCK = 2**22  # entries of a (resamples, images) count matrix held at once


@dataclass(frozen=True)
class Difference:
    """method − baseline (in the measure's units, e.g. percentage points), with its bootstrap interval."""

    estimate: float  # on the whole test set, averaged over the seeds
    lo: float  # the interval's lower end, at ``level``
    hi: float  # its upper end
    seeds: int  # independent training runs per network
    images: int  # test images per seed (ID + OOD for a detection score)
    level: float = LEVEL

    def __str__(self) -> str:
        seeds = "1 seed" if self.seeds == 1 else f"{self.seeds} seeds"
        return f"{self.estimate:+.1f} [{self.lo:+.1f}, {self.hi:+.1f}] ({self.level:.0%}, {seeds})"


def judge(difference: Difference, kind: str = "direction", size: float | None = None) -> str:
    """The verdict of a claim on a measured difference: "reproduced", "inconclusive" or "contradicted"
    (the module's docstring gives the rule). ``size`` (δ > 0, in the difference's units) is needed for a
    "size" or "match" claim and ignored for a "best case" one. A claim that the method is *lower* (a smaller NC1)
    is judged on baseline − method."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind in ("size", "match") and (size is None or not size > 0):
        raise ValueError(f"a {kind} claim needs its size as a positive number, got size={size!r}")
    lo, hi = difference.lo, difference.hi
    if kind == "match":
        if -size < lo and hi < size:
            return "reproduced"
        return "contradicted" if lo > size or hi < -size else "inconclusive"
    if kind == "size":
        if hi < size:
            return "contradicted"
        return "reproduced" if lo > 0 else "inconclusive"
    if lo > 0:
        return "reproduced"
    return "contradicted" if hi < 0 else "inconclusive"


def accuracy_difference(
    baseline,
    method,
    *,
    relative: bool = False,
    scale: float = 100.0,
    n_bootstrap: int = 2_000,
    seed: int = 0,
    level: float = LEVEL,
) -> Difference:
    """Difference of two accuracies (method − baseline, × ``scale``: percentage points by default), or with
    ``relative`` the relative gain method / baseline − 1 (× ``scale``: % of the baseline's accuracy).

    ``baseline`` and ``method`` are each one network's per-image correctness on the test set, (N,) of 0/1
    (or any per-image score whose mean is the measure), or a list of them, one per seed; seed k of the
    method is paired with seed k of the baseline, on the same N images in the same order.
    """
    pairs = _pairs(baseline, method, _per_image)
    rng = np.random.default_rng(seed)
    replicates, estimates = [], []
    for b, m in pairs:
        if len(b) != len(m):
            raise ValueError(f"baseline and method must be scored on the same images, got {len(b)} and {len(m)}")
        if relative:
            if not b.sum() > 0:
                raise ValueError("a relative gain needs a baseline that gets at least one image right")
            estimates.append(scale * (m.sum() / b.sum() - 1))
            values = []
            for (c,) in _resamples([len(b)], n_bootstrap, rng):
                hits = c @ b  # the baseline's correct images in each resample
                values.append(np.divide(c @ m, hits, out=np.full(len(c), np.nan), where=hits > 0) - 1)
            replicates.append(scale * np.concatenate(values))
        else:
            d = m - b  # (N,) per-image differences: the pairing
            estimates.append(scale * d.mean())
            replicates.append(
                scale * np.concatenate([c @ d / len(d) for (c,) in _resamples([len(d)], n_bootstrap, rng)])
            )
    return _interval(np.stack(replicates), estimates, len(pairs[0][0]), rng, level)


def auroc_difference(
    baseline, method, *, scale: float = 100.0, n_bootstrap: int = 2_000, seed: int = 0, level: float = LEVEL
) -> Difference:
    """Difference of two detection AUROCs (ID positive; × ``scale``: points by default), averaged over OOD sets.

    Each network gives ``(id_scores, ood_scores)``: its scores of the ID test images (n,) and of the OOD
    images, (m,) or a dict {OOD set: (m_k,)} whose AUROCs are averaged; or a list of such pairs, one per
    seed. Both networks score the same images in the same order; every resample draws the same ID and
    OOD images for both.
    """
    pairs = _pairs(baseline, method, _detection_scores)
    rng = np.random.default_rng(seed)
    replicates, estimates = [], []
    for (b_id, b_ood), (m_id, m_ood) in pairs:
        if b_ood.keys() != m_ood.keys() or len(b_id) != len(m_id):
            raise ValueError("baseline and method must score the same ID images and the same OOD sets")
        per_set, estimate = [], []
        for name in b_ood:
            if len(b_ood[name]) != len(m_ood[name]):
                raise ValueError(f"baseline and method scored different numbers of {name!r} images")
            auroc = detection_metrics(m_id, m_ood[name])["auroc"] - detection_metrics(b_id, b_ood[name])["auroc"]
            estimate.append(auroc)
            values = [
                resampled_auroc(m_id, m_ood[name], w, v) - resampled_auroc(b_id, b_ood[name], w, v)
                for w, v in _resamples([len(b_id), len(b_ood[name])], n_bootstrap, rng)
            ]
            per_set.append(np.concatenate(values))
        replicates.append(scale * np.mean(per_set, axis=0))
        estimates.append(scale * float(np.mean(estimate)))
    images = len(pairs[0][0][0]) + sum(len(v) for v in pairs[0][0][1].values())
    return _interval(np.stack(replicates), estimates, images, rng, level)


def _interval(replicates: np.ndarray, estimates: list[float], images: int, rng, level: float) -> Difference:
    """replicates (S, B): the per-seed bootstrap differences. With several seeds, replicate b averages
    seeds drawn with replacement (the two-stage bootstrap), so the spread between seeds enters the interval."""
    if not 0 < level < 1:
        raise ValueError(f"level is the interval's coverage, in (0, 1), got {level!r}")
    S, B = replicates.shape
    if S > 1:
        values = replicates[rng.integers(0, S, size=(B, S)), np.arange(B)[:, None]].mean(1)
    else:
        values = replicates[0]
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])  # NaN: a resample with no baseline hit
    return Difference(float(np.mean(estimates)), float(lo), float(hi), S, images, level)


def _resamples(sizes: list[int], B: int, rng):
    """Yield, block by block (bounded memory), one (b, n) count matrix per sample size n in ``sizes``:
    bootstrap resamples of each group of items, b ≤ B resamples in all."""
    block = max(1, _BLOCK // sum(sizes))
    for start in range(0, B, block):
        yield tuple(resample_counts(n, min(block, B - start), rng) for n in sizes)


def _pairs(baseline, method, convert) -> list[tuple]:
    """[(baseline, method)] per seed, each converted; a single run on each side is one seed."""
    single = not isinstance(baseline, list)
    baseline, method = ([baseline], [method]) if single else (baseline, method)
    if not isinstance(method, list) or len(baseline) != len(method) or not baseline:
        raise ValueError(
            "give one run on each side, or two lists with one run per seed, the same seeds in the same order"
        )
    return [(convert(b, "baseline"), convert(m, "method")) for b, m in zip(baseline, method)]


def _per_image(x, name: str) -> np.ndarray:
    x = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"{name}: one finite value per test image, a non-empty 1-D array, got shape {x.shape}")
    return x


def _detection_scores(pair, name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise ValueError(f"{name}: (id_scores, ood_scores) per seed, ood_scores an array or a dict of arrays")
    id_scores, ood_scores = pair
    ood_scores = ood_scores if isinstance(ood_scores, dict) else {"OOD": ood_scores}
    if not ood_scores:
        raise ValueError(f"{name}: no OOD set")
    return _per_image(id_scores, name), {k: _per_image(v, f"{name} {k}") for k, v in ood_scores.items()}
