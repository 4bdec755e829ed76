"""Tables of a network layer by layer (notebook 05): every layer, from the first residual stage to the
features its classifier acts on, measured by NC and by linear probes (detection with the energy of an ID
probe, transfer with a probe on another data set), and the detection/transfer trade-off they draw."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from .. import heads, ood
from ..collapse import nc_metrics, variability_metrics
from ..data import ImageSet
from ..features import cached_features
from ..probe import LinearProbe

__all__ = ["etf_rows", "layer_features", "layerwise_nc", "layerwise_probes", "tradeoff"]


def etf_rows(matrices: dict[str, torch.Tensor]) -> pd.DataFrame:
    """How close the rows of each matrix are to a simplex ETF: one row per ``matrices`` entry ({label: (k, d)
    matrix}) with its ``rows`` k, the ``min cosine`` and ``max cosine`` between two different rows, the
    number of ``distinct rows``, and the ``exact ETF cosine`` −1/(k − 1) that every pair would have."""
    table = []
    for name, matrix in matrices.items():
        unit = F.normalize(matrix, dim=1)
        cosines = (unit @ unit.T)[~torch.eye(len(matrix), dtype=torch.bool)]
        table.append({"matrix": name, "rows": len(matrix), "min cosine": cosines.min().item(),
                      "max cosine": cosines.max().item(), "distinct rows": len(torch.unique(matrix, dim=0)),
                      "exact ETF cosine": -1 / (len(matrix) - 1)})  # fmt: skip
    return pd.DataFrame(table).set_index("matrix")


def layer_features(run, data: ImageSet) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({layer: (N, d) features}, labels (N,)) of ``run.model`` on ``data``, from the first layer to the last.

    The layers are the stem and the residual stages ("stem" … "layer4", global-average-pooled; "layer4"
    is the penultimate h) and, for a head that embeds its features first, φ(h) under the head's
    ``embedding_name`` ("projector" for ``nclab.methods.control.EtfProjector``, "embedding" otherwise).
    Cached in the run's folder.
    """
    fs = cached_features(run.model, data, run.run_dir, stages=True)
    layers = dict(fs.stages)
    head = heads.head_of(run.model)
    if head.embeds:
        layers[getattr(head, "embedding_name", "embedding")] = heads.embedded(head, fs.features)
    return layers, fs.labels


def layerwise_nc(runs: dict, data: ImageSet) -> pd.DataFrame:
    """The NC metrics of every layer of every run on ``data``: a tidy table (model, stage, metric, value).

    ``runs``: {"baseline": Run, "controlled": Run, …}. At every layer of :func:`layer_features`:
    ``variability_metrics`` (nc1, nc1_trace_ratio, ncc_accuracy, defined at any width) and, where the
    layer has d ≥ C − 1 dimensions, ``nc_metrics`` (NC2 of the class means); at the layer the classifier
    acts on, ``nc_metrics`` with the classifier (NC2 of the weights, NC3, NC4). SPEC §1 and §4.
    """
    rows = []
    for name, run in runs.items():
        layers, labels = layer_features(run, data)
        _, W, b = heads.classifier(run.model)
        last = list(layers)[-1]  # the features the classifier acts on
        C = int(labels.max()) + 1
        for stage, H in layers.items():
            metrics = variability_metrics(H, labels)
            if H.shape[1] >= C - 1:
                metrics.update(nc_metrics(H, labels, *((W, b) if stage == last else ())))
            rows += [{"model": name, "stage": stage, "metric": k, "value": v} for k, v in metrics.items()]
    return pd.DataFrame(rows)


def layerwise_probes(
    runs: dict,
    train: ImageSet,
    test: ImageSet,
    ood_sets: dict[str, ImageSet],
    target: tuple[ImageSet, ImageSet],
    l2: float = 1e-4,
) -> pd.DataFrame:
    """Detection and transfer of every layer of every run, measured with linear probes on frozen features.

    One row per (model, stage): ``id_accuracy``, the test accuracy of a linear probe
    (``nclab.probe.LinearProbe``) fitted on that layer's ``train`` features; ``auroc:<set>`` for every OOD
    set, the AUROC of the energy score (``nclab.ood.Energy``) of that probe's logits, ID = ``test``
    (SPEC §4: energy on a linear probe); ``transfer_accuracy``, the accuracy on ``target[1]`` of a probe
    fitted on ``target[0]``'s features of the same layer (OOD generalisation, seed 000); ``converged``,
    whether both probes' L-BFGS stopped on its tolerances (not on its iteration limit).
    """
    rows = []
    for name, run in runs.items():
        device = next(run.model.parameters()).device
        train_layers, train_labels = layer_features(run, train)
        test_layers, test_labels = layer_features(run, test)
        ood_layers = {s: layer_features(run, data)[0] for s, data in ood_sets.items()}
        source_layers, source_labels = layer_features(run, target[0])
        target_layers, target_labels = layer_features(run, target[1])
        for stage, H in train_layers.items():
            probe = LinearProbe(l2).fit(H.to(device), train_labels)
            energy = ood.Energy().fit(H, train_labels, probe.weight_.cpu(), probe.bias_.cpu())
            id_scores = energy.score(test_layers[stage])
            row = {"model": name, "stage": stage, "id_accuracy": probe.accuracy(test_layers[stage], test_labels)}
            for s, layers in ood_layers.items():
                row[f"auroc:{s}"] = ood.detection_metrics(id_scores, energy.score(layers[stage]))["auroc"]
            transfer = LinearProbe(l2).fit(source_layers[stage].to(device), source_labels)
            row["transfer_accuracy"] = transfer.accuracy(target_layers[stage], target_labels)
            row["converged"] = probe.converged_ and transfer.converged_
            rows.append(row)
    return pd.DataFrame(rows)


def tradeoff(nc: pd.DataFrame, probes: pd.DataFrame, sets: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, stage): the layer's ``nc1`` (from :func:`layerwise_nc`), ``auroc`` (the mean of
    the ``auroc:<set>`` columns of :func:`layerwise_probes` over ``sets``, default every OOD set),
    ``transfer_accuracy`` and ``id_accuracy``: the points of the detection/transfer trade-off."""
    columns = [f"auroc:{s}" for s in sets] if sets is not None else [c for c in probes if c.startswith("auroc:")]
    missing = [c for c in columns if c not in probes]
    if missing:
        raise ValueError(f"no AUROC column {missing} in the probes table; it has {list(probes.columns)}")
    nc1 = nc[nc["metric"] == "nc1"].rename(columns={"value": "nc1"})[["model", "stage", "nc1"]]
    scores = probes.assign(auroc=probes[columns].mean(axis=1))[
        ["model", "stage", "auroc", "transfer_accuracy", "id_accuracy"]
    ]
    return nc1.merge(scores, on=["model", "stage"], how="inner", validate="one_to_one")
