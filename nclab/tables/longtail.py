"""Tables of long-tailed learning (notebooks 07, 08): every class's training count, group, test accuracy,
classifier norm and alignment cos(w_c, μ_c − μ_G), and the same per many / medium / few group with NC1–NC3
restricted to the group."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import torch

from .. import heads
from ..collapse import centred_means, class_means, nc_metrics
from ..data import GROUPS, ImageSet, class_groups
from ..features import FeatureSet, cached_features

__all__ = ["per_class_alignment", "long_tail_groups", "long_tail_tables", "group_summary"]


def _embedded_set(head: heads.Head, fs: FeatureSet) -> FeatureSet:
    """The feature set with φ(h) in place of h (itself for a head that does not embed)."""
    return fs if not head.embeds else replace(fs, features=heads.embedded(head, fs.features))


def per_class_alignment(
    train: FeatureSet, test: FeatureSet, model_or_head, classes: list[str] | None = None
) -> pd.DataFrame:
    """One row per class: ``class``, ``train_images`` (its training count), ``group`` (many / medium / few,
    ``nclab.data.class_groups``), ``test_accuracy`` (recall on the balanced test set), ``weight_norm``
    ‖w_c‖ and ``alignment`` cos(w_c, μ_c − μ_G), with μ_c the class means of the training features (of
    φ(h), the features the classifier acts on: h/‖h‖ for a cosine head) and μ_G their mean (SPEC §6).
    Minority collapse shows as small tail norms; misalignment as low cosines."""
    head, W, _ = heads.classifier(model_or_head)
    return _per_class(_embedded_set(head, train), test, W, classes)[0]


def _per_class(train: FeatureSet, test: FeatureSet, W: torch.Tensor, classes=None) -> tuple[pd.DataFrame, torch.Tensor]:
    """(:func:`per_class_alignment`'s table, the training class means (C, p)) for classifier rows W."""
    C = W.shape[0]
    counts = torch.bincount(train.labels, minlength=C)
    means, _ = class_means(train.features, train.labels, C)
    M, _ = centred_means(means)  # (p, C)
    cosine = torch.nn.functional.cosine_similarity(W.double().cpu(), M.T.cpu(), dim=1)
    correct = (test.predictions == test.labels).double()
    recall = torch.zeros(C, dtype=torch.float64).index_add_(0, test.labels, correct)
    test_counts = torch.bincount(test.labels, minlength=C)
    recall = torch.where(test_counts > 0, recall / test_counts.clamp_min(1), torch.nan)  # no test image: NaN
    groups, _ = class_groups(counts)
    table = pd.DataFrame(
        {
            "class": classes or list(range(C)),
            "train_images": counts.tolist(),
            "group": groups,
            "test_accuracy": recall.tolist(),
            "weight_norm": W.double().norm(dim=1).cpu().tolist(),
            "alignment": cosine.tolist(),
        }
    )
    return table, means


def long_tail_groups(train: FeatureSet, test: FeatureSet, model_or_head) -> pd.DataFrame:
    """One row per group (many, medium, few, then "all"): ``classes``, ``train_images``, ``test_accuracy``
    (over the group's test images), the mean ``weight_norm`` and ``alignment`` of its classes,
    ``max_cos_means`` and ``max_cos_weights`` (the largest cosine between two of its centred class means,
    centred on all classes' μ_G, and between two of its classifier rows: near 1 when the group's classes
    merge, as in minority collapse), and ``nc1``, ``nc2_equiangular_means``, ``nc3`` computed on the
    training features of the group's classes alone, with their classifier rows, so centred on the group's
    own mean of class means, all on φ(h) as in :func:`per_class_alignment` (NaN for a group of fewer than 2
    classes, ``nc2_equiangular_means`` for fewer than 3: one pair has no spread; NaN too where a zero
    classifier row leaves them undefined)."""
    head, W, b = heads.classifier(model_or_head)
    train = _embedded_set(head, train)
    per_class, means = _per_class(train, test, W)
    unit = {
        "max_cos_means": torch.nn.functional.normalize(centred_means(means)[0].T.cpu(), dim=1),
        "max_cos_weights": torch.nn.functional.normalize(W.double().cpu(), dim=1),
    }
    grams = {key: rows @ rows.T for key, rows in unit.items()}  # cosines between classes (C, C)

    rows = []
    for group in [*GROUPS, "all"]:
        members = per_class.index[per_class["group"] == group] if group != "all" else per_class.index
        if len(members) == 0:
            continue
        index = torch.tensor(list(members))
        in_train, in_test = torch.isin(train.labels, index), torch.isin(test.labels, index)
        row = {
            "group": group,
            "classes": len(members),
            "train_images": int(per_class.loc[members, "train_images"].sum()),
            "test_accuracy": float((test.predictions[in_test] == test.labels[in_test]).double().mean()),
            "weight_norm": float(per_class.loc[members, "weight_norm"].mean()),
            "alignment": float(per_class.loc[members, "alignment"].mean()),
        }
        for key, gram in grams.items():  # the largest cosine between two different classes of the group
            pairs = gram[index][:, index][~torch.eye(len(index), dtype=torch.bool)]
            row[key] = float(pairs.max()) if len(members) >= 2 else float("nan")
        metrics = {}
        if len(members) >= 2:
            remap = torch.full((W.shape[0],), -1, dtype=torch.long)
            remap[index] = torch.arange(len(index))
            try:
                metrics = nc_metrics(
                    train.features[in_train], remap[train.labels[in_train]], W[index], None if b is None else b[index]
                )
            except ValueError:  # a zero classifier row: its cosines are undefined
                metrics = {}
            if len(members) < 3:
                metrics.pop("nc2_equiangular_means", None)
        for key in ("nc1", "nc2_equiangular_means", "nc3"):
            row[key] = metrics.get(key, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def long_tail_tables(run, train: ImageSet, test: ImageSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(:func:`per_class_alignment`, :func:`long_tail_groups`) of a trained run (``nclab.train.Run``) on its
    long-tailed ``train`` set and the balanced ``test`` set, from features cached in the run's folder."""
    train_features = cached_features(run.model, train, run.run_dir)
    test_features = cached_features(run.model, test, run.run_dir)
    return (
        per_class_alignment(train_features, test_features, run.model, train.classes),
        long_tail_groups(train_features, test_features, run.model),
    )


def group_summary(per_group: dict[str, pd.DataFrame], names: list[str], group: str = "all") -> pd.DataFrame:
    """One row per method of ``names`` (a column ``method``): its ``group`` row ("all" classes, by default)
    of :func:`long_tail_groups` in ``per_group`` ({method: table})."""
    rows = [per_group[name].set_index("group").loc[group].rename(name) for name in names]
    return pd.DataFrame(rows).rename_axis("method").reset_index()
