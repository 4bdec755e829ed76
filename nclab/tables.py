"""Tables that several notebooks need, each one tested function returning a pandas DataFrame.

- :func:`nc_over_training`: every NC metric of every saved epoch of every run (notebooks 02, 05, 08);
- :func:`fit_detectors`, :func:`score_sets`, :func:`detection_table`: fit every OOD detector on the
  training features, score every set, and evaluate each (detector, OOD set) pair (notebooks 03, 04, 05);
- :func:`detection_report`: the same results in the layout of the practical-work report's table.
"""

from __future__ import annotations

import pandas as pd
import torch.nn.functional as F

from . import heads, ood
from .collapse import nc_metrics, variability_metrics
from .features import FeatureSet, cached_features

__all__ = ["nc_over_training", "fit_detectors", "score_sets", "detection_table", "detection_report"]


def nc_over_training(runs: dict, datasets: dict, stages: bool = False) -> pd.DataFrame:
    """NC metrics of every saved epoch of every run: a long table.

    runs: {"A": Run, …} from ``nclab.train.load_or_train``; datasets: {"train": ImageSet, "test": …}.
    One row per (run, epoch, split) with the accuracy and every ``nc_metrics`` key (the head at that
    epoch, read with ``nclab.heads.weight_and_bias``; the class means of *that split*; for a head on
    normalised features, W are its class vectors: NC4's argmax does not change). With ``stages``, one row
    per residual stage too (column ``stage``; "layer4" are the penultimate features) with
    ``variability_metrics``. Features are extracted once per snapshot and cached in the run's folder.
    """
    rows = []
    for name, run in runs.items():
        for epoch in sorted(run.snapshots):
            model = run.load_snapshot(epoch)
            W, b = heads.weight_and_bias(model, normalized_features=heads.normalizes_features(model))
            for split, data in datasets.items():
                fs = cached_features(model, data, run.run_dir, stages=stages)
                row = {"run": name, "epoch": epoch, "split": split, "accuracy": fs.accuracy}
                rows.append({**row, "stage": "output", **nc_metrics(fs.features, fs.labels, W, b)})
                for stage, H in fs.stages.items():
                    rows.append({**row, "stage": stage, **variability_metrics(H, fs.labels)})
    return pd.DataFrame(rows)


def fit_detectors(train: FeatureSet, model_or_head, detectors: dict | None = None) -> dict[str, ood.MSP]:
    """Every detector fitted on the training features and the model's head: {name: fitted detector}.

    ``detectors``: {name: detector instance or class} (default: one of each in ``nclab.ood.DETECTORS``).
    The head is read with ``nclab.heads.weight_and_bias``; for a head on normalised features (Cosine,
    Prototype) the detectors see normalised features (see :func:`score_sets`).
    """
    normalized = heads.normalizes_features(model_or_head)
    W, b = heads.weight_and_bias(model_or_head, normalized_features=normalized)
    chosen = {name: cls() for name, cls in ood.DETECTORS.items()} if detectors is None else detectors
    fitted = {}
    for name, detector in chosen.items():
        detector = detector() if isinstance(detector, type) else detector
        fitted[name] = detector.fit(_inputs(train, normalized), train.labels, W, b)
        detector.normalized_features_ = normalized  # score_sets feeds it features of the same kind
    return fitted


def _inputs(fs: FeatureSet, normalized: bool):
    return F.normalize(fs.features, dim=1) if normalized else fs.features


def score_sets(detectors: dict, sets: dict[str, FeatureSet]) -> dict[str, dict]:
    """{detector: {set: (n,) scores}} for every fitted detector and every named feature set (higher = ID)."""
    return {
        name: {
            s: detector.score(_inputs(fs, getattr(detector, "normalized_features_", False))) for s, fs in sets.items()
        }
        for name, detector in detectors.items()
    }


def detection_table(scores: dict[str, dict], id_name: str = "ID") -> pd.DataFrame:
    """One row per (detector, OOD set): every metric of ``nclab.ood.detection_metrics`` (ID positive).

    ``scores``: {detector: {id_name: (n,), ood set: (m,), …}} as :func:`score_sets` returns.
    """
    return pd.DataFrame(
        [
            {"detector": name, "OOD set": s, **ood.detection_metrics(by_set[id_name], by_set[s])}
            for name, by_set in scores.items()
            for s in by_set
            if s != id_name
        ]
    )


REPORT_METRICS = {"fpr95": "FPR@95 ↓", "auroc": "AUROC ↑", "aupr_in": "AUPR-in ↑"}


def detection_report(table: pd.DataFrame, metrics: dict[str, str] | None = None) -> pd.DataFrame:
    """:func:`detection_table` in the layout of the practical-work report: one block of rows per OOD set
    (one row per metric, labelled with the direction that is better), one column per detector."""
    metrics = metrics or REPORT_METRICS
    sets, detectors = list(dict.fromkeys(table["OOD set"])), list(dict.fromkeys(table["detector"]))
    order = pd.MultiIndex.from_product([sets, list(metrics.values())], names=["OOD set", "metric"])
    return (
        table.rename(columns=metrics)
        .melt(["OOD set", "detector"], list(metrics.values()), var_name="metric")
        .pivot(index=["OOD set", "metric"], columns="detector", values="value")
        .reindex(index=order, columns=detectors)
    )
