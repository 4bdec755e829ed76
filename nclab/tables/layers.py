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
from .verdicts import Difference, accuracy_difference, auroc_difference

__all__ = [
    "etf_rows",
    "layer_features",
    "layerwise_nc",
    "probe_items",
    "layerwise_probes",
    "probe_summary",
    "tradeoff",
    "control_differences",
]


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


def probe_items(
    runs: dict,
    train: ImageSet,
    test: ImageSet,
    ood_sets: dict[str, ImageSet],
    target: tuple[ImageSet, ImageSet],
    l2: float = 1e-4,
) -> dict[tuple[str, str], dict]:
    """What every layer's linear probes give image by image, for a paired comparison of two layers or two
    networks (``nclab.tables.verdicts``). {(model, stage): {"id_correct": (N,) 0/1, the ID probe's
    correctness on ``test``; "id_scores": (N,) and "ood_scores": {set: (M_k,)}, the energy (``ood.Energy``)
    of that probe's logits, higher = ID (SPEC §4: energy on a linear probe); "transfer_correct": (N',) 0/1,
    a probe fitted on ``target[0]``'s features of the same layer, on ``target[1]`` (OOD generalisation, seed
    000); "converged": whether both probes' L-BFGS stopped on its tolerances, not its iteration limit}."""
    items = {}
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
            transfer = LinearProbe(l2).fit(source_layers[stage].to(device), source_labels)
            items[name, stage] = {
                "id_correct": _correct(probe, test_layers[stage], test_labels),
                "id_scores": energy.score(test_layers[stage]),
                "ood_scores": {s: energy.score(layers[stage]) for s, layers in ood_layers.items()},
                "transfer_correct": _correct(transfer, target_layers[stage], target_labels),
                "converged": probe.converged_ and transfer.converged_,
            }
    return items


def layerwise_probes(
    runs: dict,
    train: ImageSet,
    test: ImageSet,
    ood_sets: dict[str, ImageSet],
    target: tuple[ImageSet, ImageSet],
    l2: float = 1e-4,
) -> pd.DataFrame:
    """Detection and transfer of every layer of every run, measured with linear probes on frozen features.

    One row per (model, stage) of :func:`probe_items` (the arguments are the same): ``id_accuracy``, the
    test accuracy of the ID probe; ``auroc:<set>`` for every OOD set, the AUROC of its energy score (ID =
    ``test``); ``transfer_accuracy``; ``converged``. :func:`probe_summary` gives the same table from items
    already computed.
    """
    return probe_summary(probe_items(runs, train, test, ood_sets, target, l2))


def probe_summary(items: dict[tuple[str, str], dict]) -> pd.DataFrame:
    """The table of :func:`layerwise_probes` from the items of :func:`probe_items`."""
    rows = []
    for (name, stage), item in items.items():
        row = {"model": name, "stage": stage, "id_accuracy": item["id_correct"].float().mean().item()}
        for s, scores in item["ood_scores"].items():
            row[f"auroc:{s}"] = ood.detection_metrics(item["id_scores"], scores)["auroc"]
        row["transfer_accuracy"] = item["transfer_correct"].float().mean().item()
        row["converged"] = item["converged"]
        rows.append(row)
    return pd.DataFrame(rows)


def control_differences(items, nc: pd.DataFrame, sets: list[str]) -> dict[str, dict[str, Difference]]:
    """The differences that judge seed 000's claims (``tables.CLAIMS``, notebook 05), each with its paired
    bootstrap interval (``nclab.tables.verdicts``), in points: {claim key: {what is compared: Difference}}.

    ``items`` are :func:`probe_items` of the runs {"baseline", "controlled"}, or a list of them, one per
    seed; ``nc`` the :func:`layerwise_nc` table of the first seed, which says which of the controlled
    network's two last representations (layer4, projector) is the more collapsed (the smaller NC1);
    ``sets`` the OOD sets whose AUROCs are averaged. Detection: the energy of each layer's ID probe;
    transfer: each layer's probe on the other data set.
    """
    seeds = items if isinstance(items, list) else [items]

    def detection(model: str, stage: str) -> list:
        return [(i[model, stage]["id_scores"], {s: i[model, stage]["ood_scores"][s] for s in sets}) for i in seeds]

    def transfer(model: str, stage: str) -> list:
        return [i[model, stage]["transfer_correct"] for i in seeds]

    nc1 = nc[(nc.metric == "nc1") & (nc.model == "controlled")].set_index("stage")["value"]
    more, less = ("projector", "layer4") if nc1["projector"] < nc1["layer4"] else ("layer4", "projector")

    def label(first: str, second: str) -> str:
        return f"controlled: {first} (NC1 {nc1[first]:.3g}) against {second} (NC1 {nc1[second]:.3g})"

    return {
        "more collapsed detects better": {
            label(more, less): auroc_difference(detection("controlled", less), detection("controlled", more))
        },
        "less collapsed transfers better": {
            label(less, more): accuracy_difference(transfer("controlled", more), transfer("controlled", less))
        },
        "controlled detects better": {
            "controlled projector against baseline layer4": auroc_difference(
                detection("baseline", "layer4"), detection("controlled", "projector")
            )
        },
        "controlled transfers better": {
            "controlled layer4 against baseline layer4": accuracy_difference(
                transfer("baseline", "layer4"), transfer("controlled", "layer4")
            )
        },
    }


def _correct(probe: LinearProbe, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (probe.predict(features).cpu() == labels.cpu()).to(torch.uint8)


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
