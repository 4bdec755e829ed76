"""Tables of OOD detection (notebooks 03, 04, 05, 09): every detector fitted on the training features and
a model's head, every set scored, every (detector, OOD set) pair evaluated with bootstrap intervals
(:func:`detection_results` does the four steps at once), the practical-work report's layout of them, and
the names of the sets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn as nn

from .. import heads, ood
from ..data import DATASETS, ImageSet
from ..data.standin import SHORT, SOURCES
from ..features import FeatureSet, cached_features

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler  # needs jinja2: imported only for the annotation

__all__ = [
    "OnEmbedding",
    "fit_detectors",
    "score_sets",
    "detection_table",
    "detection_results",
    "REPORT_METRICS",
    "LOWER_IS_BETTER",
    "detection_report",
    "styled_report",
    "set_names",
]


class OnEmbedding:
    """A fitted detector that scores φ(h) = ``head.embed(h)`` instead of h: what :func:`fit_detectors` gives
    for a head that embeds its features first (Cosine, Prototype, a projector), as scikit-learn's
    ``Pipeline`` chains a transform and an estimator. ``score(features)`` takes the penultimate h, like
    every detector; the detector itself is :attr:`detector`, whose fitted attributes (``covariance_``,
    ``alpha_``, …) are read through this object too."""

    def __init__(self, detector: ood.Detector, head: heads.Head):
        self.detector, self.head = detector, head

    def score(self, features) -> torch.Tensor:
        """The detector's scores of φ(features): (N,), higher = in-distribution."""
        return self.detector.score(heads.embedded(self.head, torch.as_tensor(features)))

    def __getattr__(self, name: str):
        if name in ("detector", "head"):  # not set yet (unpickling, copying): no recursion
            raise AttributeError(name)
        return getattr(self.detector, name)

    def __repr__(self) -> str:
        return f"OnEmbedding({self.detector!r}, {type(self.head).__name__})"


def fit_detectors(train: FeatureSet, model_or_head, detectors: dict | None = None) -> dict:
    """Every detector fitted on the training features and the model's head: {name: fitted detector}.

    ``detectors``: {name: detector instance or class} (default: one of each in ``nclab.ood.DETECTORS``).
    The head is read with ``nclab.heads.classifier``; for a head that embeds its features first (Cosine,
    Prototype, a projector) the detectors are fitted on φ(h) and come back as :class:`OnEmbedding`, which
    embeds the features it scores the same way.
    """
    head, W, b = heads.classifier(model_or_head)
    chosen = {name: cls() for name, cls in ood.DETECTORS.items()} if detectors is None else detectors
    fitted = {}
    for name, detector in chosen.items():
        detector = detector() if isinstance(detector, type) else detector
        detector.fit(heads.embedded(head, train.features), train.labels, W, b)
        fitted[name] = OnEmbedding(detector, head) if head.embeds else detector
    return fitted


def score_sets(detectors: dict, sets: dict[str, FeatureSet]) -> dict[str, dict]:
    """{detector: {set: (n,) scores}} for every fitted detector and every named feature set (higher = ID)."""
    return {name: {s: detector.score(fs.features) for s, fs in sets.items()} for name, detector in detectors.items()}


def detection_table(
    scores: dict[str, dict], id_name: str = "ID", n_bootstrap: int = 200, seed: int = 0
) -> pd.DataFrame:
    """One row per (detector, OOD set): every metric of ``nclab.ood.detection_metrics`` (ID positive), and
    the 95 % percentile bootstrap interval of AUROC and FPR@95 (``auroc_lo``, ``auroc_hi``, ``fpr95_lo``,
    ``fpr95_hi``; ``nclab.ood.bootstrap_intervals``, ``n_bootstrap`` resamples drawn with ``seed``; none
    with ``n_bootstrap=0``).

    ``scores``: {detector: {id_name: (n,), ood set: (m,), …}} as :func:`score_sets` returns.
    """
    return pd.DataFrame(
        [
            {
                "detector": name,
                "OOD set": s,
                **ood.detection_metrics(by_set[id_name], by_set[s], n_bootstrap=n_bootstrap, seed=seed),
            }
            for name, by_set in scores.items()
            for s in by_set
            if s != id_name
        ]
    )


def detection_results(
    model: nn.Module,
    cache: str | Path,
    train: ImageSet,
    evaluated: dict[str, ImageSet],
    detectors: dict | None = None,
    *,
    id_name: str = "ID",
    stages: bool = False,
    n_bootstrap: int = 200,
) -> pd.DataFrame:
    """The whole detection chain of one model: features of ``train`` and of every ``evaluated`` set (cached
    in the folder ``cache``, e.g. ``run.run_dir``; ``stages``: with the residual stages, for a later
    layer-wise look), every detector fitted (:func:`fit_detectors`), every set scored, and
    :func:`detection_table` of the scores, ``evaluated[id_name]`` the in-distribution set."""
    if id_name not in evaluated:
        raise ValueError(f"evaluated needs the in-distribution set under {id_name!r}; it has {sorted(evaluated)}")
    fs = {s: cached_features(model, data, cache, stages=stages) for s, data in {"train": train, **evaluated}.items()}
    scores = score_sets(fit_detectors(fs.pop("train"), model, detectors), fs)
    return detection_table(scores, id_name, n_bootstrap=n_bootstrap)


REPORT_METRICS = {"fpr95": "FPR@95 ↓", "auroc": "AUROC ↑", "aupr_in": "AUPR-in ↑"}
LOWER_IS_BETTER = {"fpr95", "fpr95_oodpos"}  # every other metric of detection_metrics: higher is better


def detection_report(
    table: pd.DataFrame,
    metrics: dict[str, str] | None = None,
    intervals: bool = False,
    names: dict[str, str] | None = None,
    digits: int = 3,
) -> pd.DataFrame:
    """:func:`detection_table` in the layout of the practical-work report: one block of rows per OOD set
    (one row per metric, labelled with the direction that is better), one column per detector.

    ``intervals``: cells as text, "0.930 [0.910, 0.950]" (``digits`` decimals) where the table has the
    metric's bootstrap interval (``<metric>_lo``, ``<metric>_hi``), "0.930" otherwise; else the numbers.
    ``names``: {OOD set: label} for the row labels (e.g. :func:`set_names`).
    """
    metrics = metrics or REPORT_METRICS
    sets, detectors = list(dict.fromkeys(table["OOD set"])), list(dict.fromkeys(table["detector"]))
    if intervals:
        table = table.copy()
        for metric in metrics:
            low, high = table.get(f"{metric}_lo"), table.get(f"{metric}_hi")
            cells = [f"{value:.{digits}f}" for value in table[metric]]
            if low is not None and high is not None:
                cells = [f"{c} [{lo:.{digits}f}, {hi:.{digits}f}]" for c, lo, hi in zip(cells, low, high)]
            table[metric] = cells
    order = pd.MultiIndex.from_product([sets, list(metrics.values())], names=["OOD set", "metric"])
    report = (
        table.rename(columns=metrics)
        .melt(["OOD set", "detector"], list(metrics.values()), var_name="metric")
        .pivot(index=["OOD set", "metric"], columns="detector", values="value")
        .reindex(index=order, columns=detectors)
    )
    return report.rename(index=names, level="OOD set") if names else report


def styled_report(
    table: pd.DataFrame, metrics: dict[str, str] | None = None, names: dict[str, str] | None = None, digits: int = 3
) -> Styler:
    """:func:`detection_report` with its bootstrap intervals, "0.930 [0.910, 0.950]", and in each row the
    best point estimate in bold (the lowest FPR, the highest AUROC or AUPR; every tie). For a notebook:
    add ``.set_caption(...)``."""
    metrics = metrics or REPORT_METRICS
    values = detection_report(table, metrics, names=names)
    lower = {label for metric, label in metrics.items() if metric in LOWER_IS_BETTER}
    best = values.apply(
        lambda row: row == (row.min() if row.name[1] in lower else row.max()), axis=1, result_type="broadcast"
    )
    bold = best.astype(bool).map(lambda b: "font-weight: bold" if b else "")
    return detection_report(table, metrics, intervals=True, names=names, digits=digits).style.apply(
        lambda _: bold, axis=None
    )


def set_names(sets: dict[str, ImageSet]) -> dict[str, str]:
    """{key: label} naming what each set is: "CIFAR-10" for the real data, "CIFAR-10 (stand-in: MNIST digits
    8–9)" for the offline stand-in (``ImageSet.standin``; ``nclab.data.standin``), "Gaussian noise" and
    "uniform noise" for ``data.noise_images``, the key itself otherwise. For the ``names`` of
    :func:`detection_report` and of the OOD figures (``nclab.plots``)."""
    names = {}
    for key, data in sets.items():
        base = data.name.split("/")[0]  # "cifar10/test" → "cifar10"
        if base in DATASETS:
            what = SHORT.get(base, SOURCES.get(base, "offline stand-in"))
            names[key] = f"{DATASETS[base]} (stand-in: {what})" if data.standin else DATASETS[base]
        elif base.endswith("-noise"):
            kind = base.removesuffix("-noise")
            names[key] = f"{'Gaussian' if kind == 'gaussian' else kind} noise"
        else:
            names[key] = key
    return names
