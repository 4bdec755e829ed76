"""Long-tailed versions of balanced data sets (CIFAR-100-LT and its stand-in), and the class groups.

The exponential profile of Cao et al. (2019), used by every CIFAR-LT paper (SPEC §6): class c keeps
n_c = ⌊n_max · IF^(−c/(C−1))⌋ training images, c = 0 … C−1, drawn without replacement, so the head class
keeps n_max and the last one n_max / IF. With CIFAR-100's 500 images per class, IF = 100 keeps 10,847
images. The test set stays balanced: long-tailed training, balanced evaluation.

The classes are grouped by their number of training images: **many** (> 100), **medium** (20–100) and
**few** (< 20). On a set with another n_max (the offline stand-in) the thresholds are scaled by
n_max / 500, and :func:`class_groups` says which thresholds it used. Book chapter "Long-tailed learning";
notebook 07.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .sets import ImageSet

__all__ = ["long_tailed_counts", "long_tailed", "class_groups", "GROUPS", "CIFAR_N_MAX"]

GROUPS = ("many", "medium", "few")
CIFAR_N_MAX = 500  # images per class of CIFAR-100's training set: the thresholds 100 and 20 refer to it


def long_tailed_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """n_c = ⌊n_max · IF^(−c/(C−1))⌋ for c = 0 … C−1 (IF ≥ 1; IF = 1 keeps every class at n_max), at least
    1 image per class (the floor alone would give 0 where n_max < IF)."""
    if not imbalance_factor >= 1:
        raise ValueError(f"imbalance_factor is n_max / n_min ≥ 1, got {imbalance_factor!r}")
    if num_classes < 2 or n_max < 1:
        raise ValueError(f"need at least 2 classes and n_max ≥ 1, got C = {num_classes}, n_max = {n_max}")
    exponent = [c / (num_classes - 1) for c in range(num_classes)]
    # a hair of slack so that exact values (IF^0 = 1, IF^1) are not floored one below by rounding
    return [max(1, math.floor(n_max * imbalance_factor ** (-e) + 1e-9)) for e in exponent]


def long_tailed(data: ImageSet, imbalance_factor: float, seed: int = 0) -> ImageSet:
    """The long-tailed subset of a training set: class c keeps n_c of its images (:func:`long_tailed_counts`,
    n_max = the size of the smallest class, so that every class can give its n_c), chosen uniformly
    without replacement with ``seed``. The name becomes ``<name>-lt<IF>/<split>`` (e.g.
    ``cifar100-lt100/train``); extras and normalisation travel along (the normalisation is recomputed)."""
    counts = torch.bincount(data.labels, minlength=data.num_classes)
    if bool((counts == 0).any()):
        raise ValueError(
            f"{data.name}: every class needs images before it can be made long-tailed, got {counts.tolist()}"
        )
    wanted = long_tailed_counts(int(counts.min()), data.num_classes, imbalance_factor)
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c, n_c in enumerate(wanted):
        members = torch.nonzero(data.labels == c).flatten()
        keep.append(members[torch.randperm(len(members), generator=generator)[:n_c]])
    chosen = torch.cat(keep).sort().values
    base, _, split = data.name.partition("/")
    factor = f"{imbalance_factor:g}".replace(".", "p")
    return replace(data.select(chosen), name=f"{base}-lt{factor}/{split or 'train'}", normalization=None)


def class_groups(counts, n_max_reference: int = CIFAR_N_MAX) -> tuple[list[str], tuple[float, float]]:
    """(group of every class, (many threshold, few threshold)): "many" above 100, "few" below 20,
    "medium" in between, thresholds scaled by max(counts) / ``n_max_reference`` (1 for CIFAR-100-LT;
    the stand-in's n_max of about 250 in smoke halves them). ``counts``: training images per class."""
    counts = torch.as_tensor(counts)
    scale = float(counts.max()) / n_max_reference
    many, few = 100 * scale, 20 * scale
    groups = ["many" if n > many else "few" if n < few else "medium" for n in counts.tolist()]
    return groups, (many, few)
