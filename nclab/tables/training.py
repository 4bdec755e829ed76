"""Tables of training: one model's NC metrics, every NC metric of every saved epoch of every run (notebooks
02, 05, 08), and the practical-work report's NC table beside the same quantities measured here (notebooks 00 and 02)."""

from __future__ import annotations

import pandas as pd

from .. import heads
from ..collapse import PRACTICAL_WORK_REPORT, nc_metrics, variability_metrics
from ..features import FeatureSet, cached_features

__all__ = ["model_nc", "nc_over_training", "collapse_references"]


def model_nc(model_or_head, features: FeatureSet) -> dict[str, float]:
    """``accuracy`` and every ``nc_metrics`` key of one model on one feature set, measured on the features
    its classifier acts on (φ(h) = ``head.embed(h)``: h itself for a linear head, h/‖h‖ for a cosine or
    prototype head) with the head's W and b and the class means of ``features``."""
    head, W, b = heads.classifier(model_or_head)
    return {"accuracy": features.accuracy, **nc_metrics(heads.embedded(head, features.features), features.labels, W, b)}


def nc_over_training(runs: dict, datasets: dict, stages: bool = False) -> pd.DataFrame:
    """NC metrics of every saved epoch of every run: a long table.

    runs: {"A": Run, …} from ``nclab.train.load_or_train``; datasets: {"train": ImageSet, "test": …}.
    One row per (run, epoch, split) with the accuracy and every ``nc_metrics`` key, measured on the
    features the classifier acts on (the penultimate h; φ(h) for a head that embeds first, e.g. h/‖h‖ for
    a cosine classifier) with the head at that epoch (``nclab.heads.weight_and_bias``) and the class means
    of *that split*. With ``stages``, one row per residual stage too (column ``stage``; "layer4" are the
    penultimate features) with ``variability_metrics``. Features are extracted once per snapshot and
    cached in the run's folder.
    """
    rows = []
    for name, run in runs.items():
        for epoch in sorted(run.snapshots):
            model = run.load_snapshot(epoch)
            for split, data in datasets.items():
                fs = cached_features(model, data, run.run_dir, stages=stages)
                row = {"run": name, "epoch": epoch, "split": split, "accuracy": fs.accuracy}
                rows.append({**row, "stage": "output", **model_nc(model, fs)})
                for stage, H in fs.stages.items():
                    rows.append({**row, "stage": stage, **variability_metrics(H, fs.labels)})
    return pd.DataFrame(rows)


def collapse_references(measured: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The practical-work report's NC table (``collapse.PRACTICAL_WORK_REPORT``: ResNet-18, CIFAR-100, 400
    epochs) as its last column, after one column per ``measured`` entry ({name: the output of
    ``collapse.practical_work_metrics``}), one row per quantity. The report's NCC training accuracy is
    printed as the report gives it, although it contradicts its own NCC agreement."""
    for name, values in measured.items():
        missing = set(PRACTICAL_WORK_REPORT) - set(values)
        if missing:
            raise ValueError(f"{name!r} lacks {sorted(missing)}: pass collapse.practical_work_metrics(...) outputs")
    columns = {name: pd.Series(values) for name, values in measured.items()}
    columns["report (seed 002): ResNet-18, CIFAR-100, 400 epochs"] = pd.Series(PRACTICAL_WORK_REPORT)
    return pd.DataFrame(columns).loc[list(PRACTICAL_WORK_REPORT)]
