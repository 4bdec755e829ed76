"""Tables that several notebooks need, each one tested function returning a pandas DataFrame.

- :func:`nc_over_training`: every NC metric of every saved epoch of every run (notebooks 02, 05, 08);
- :func:`fit_detectors`, :func:`score_sets`, :func:`detection_table`: fit every OOD detector on the
  training features, score every set, and evaluate each (detector, OOD set) pair, with bootstrap
  intervals (notebooks 03, 04, 05);
- :func:`detection_report`, :func:`styled_report`: the same results in the layout of the practical-work
  report's table, the second with "0.930 [0.910, 0.950]" cells and the best detector in bold;
- :func:`set_names`: what each set is, for labels: "CIFAR-10 (stand-in: MNIST digits 8–9)" offline;
- :func:`layer_features`, :func:`layerwise_nc`, :func:`layerwise_probes`, :func:`tradeoff`: every layer of a
  network, from the first residual stage to the features its classifier acts on, measured by NC and by
  linear probes (detection with the energy of an ID probe, transfer with a probe on another data set)
  (notebook 05);
- :func:`ood_generalization`, :func:`partition_rounds`: accuracy and ETF distance of every method in every
  Colored-MNIST environment, and what environment inference put where, round by round (notebook 06);
- :func:`per_class_alignment`, :func:`long_tail_groups`: every class's training count, group, test
  accuracy, classifier norm and alignment cos(w_c, μ_c − μ_G), and the same summarised per many / medium /
  few group with NC1–NC3 restricted to the group (notebook 07);
- :func:`model_nc`, :func:`first_match`, :func:`prototype_vs_probe`, :func:`transfer_probes`: one model's NC
  metrics, how early each loss reaches the baseline's final NC, a trained head vs class-mean prototypes vs a
  linear probe, and linear-probe transfer to another data set (notebook 08);
- :func:`collapse_references`: the practical-work report's NC table beside the same quantities measured
  here, on a network or on the unconstrained-features model (notebooks 00 and 02);
- :func:`versus_claim`: a method's gain over its baseline next to the gain a paper claims, with a verdict
  that does not round a small gain up to agreement (notebooks 05–08).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import pandas as pd
import torch

from . import heads, ood
from .collapse import PRACTICAL_WORK_REPORT, centred_means, class_means, nc_metrics, variability_metrics
from .data import DATASETS, GROUPS, ImageSet, class_groups
from .data.mnist import COLOR_FLIPS
from .data.standin import SHORT, SOURCES
from .features import FeatureSet, cached_features
from .probe import LinearProbe

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler  # needs jinja2: imported only for the annotation

__all__ = [
    "model_nc",
    "nc_over_training",
    "fit_detectors",
    "score_sets",
    "detection_table",
    "detection_report",
    "styled_report",
    "set_names",
    "layer_features",
    "layerwise_nc",
    "layerwise_probes",
    "tradeoff",
    "ood_generalization",
    "partition_rounds",
    "per_class_alignment",
    "long_tail_groups",
    "first_match",
    "prototype_vs_probe",
    "transfer_probes",
    "versus_claim",
    "collapse_references",
]


def _classifier(model_or_head) -> tuple[heads.Head, torch.Tensor, torch.Tensor | None]:
    """(head, W, b) with logits = W·φ(h) + b, φ = head.embed (the identity for a linear head)."""
    head = heads.head_of(model_or_head)
    return (head, *heads.weight_and_bias(head, embedded=head.embeds))


@torch.no_grad()
def _embedded(head: heads.Head | None, features: torch.Tensor) -> torch.Tensor:
    """φ(h) of features (N, p), on the CPU: the features the classifier acts on (h itself for most heads)."""
    if head is None or not head.embeds:
        return features
    device = next(itertools.chain(head.parameters(), head.buffers())).device
    return head.embed(features.to(device)).float().cpu()


def model_nc(model_or_head, features: FeatureSet) -> dict[str, float]:
    """``accuracy`` and every ``nc_metrics`` key of one model on one feature set, measured on the features
    its classifier acts on (φ(h) = ``head.embed(h)``: h itself for a linear head, h/‖h‖ for a cosine or
    prototype head) with the head's W and b and the class means of ``features``."""
    head, W, b = _classifier(model_or_head)
    return {"accuracy": features.accuracy, **nc_metrics(_embedded(head, features.features), features.labels, W, b)}


def _embedded_set(head: heads.Head, fs: FeatureSet) -> FeatureSet:
    """The feature set with φ(h) in place of h (itself for a head that does not embed)."""
    return fs if not head.embeds else replace(fs, features=_embedded(head, fs.features))


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


def fit_detectors(train: FeatureSet, model_or_head, detectors: dict | None = None) -> dict[str, ood.Detector]:
    """Every detector fitted on the training features and the model's head: {name: fitted detector}.

    ``detectors``: {name: detector instance or class} (default: one of each in ``nclab.ood.DETECTORS``).
    The head is read with ``nclab.heads.weight_and_bias``; for a head that embeds its features first
    (Cosine, Prototype, a projector) the detectors are fitted on, and :func:`score_sets` feeds them, φ(h).
    """
    head, W, b = _classifier(model_or_head)
    chosen = {name: cls() for name, cls in ood.DETECTORS.items()} if detectors is None else detectors
    fitted = {}
    for name, detector in chosen.items():
        detector = detector() if isinstance(detector, type) else detector
        fitted[name] = detector.fit(_embedded(head, train.features), train.labels, W, b)
        detector.embedding_ = head if head.embeds else None  # score_sets embeds the features the same way
    return fitted


def score_sets(detectors: dict, sets: dict[str, FeatureSet]) -> dict[str, dict]:
    """{detector: {set: (n,) scores}} for every fitted detector and every named feature set (higher = ID).

    A detector fitted by :func:`fit_detectors` on a head that embeds scores φ(h), as it was fitted.
    """
    return {
        name: {
            s: detector.score(_embedded(getattr(detector, "embedding_", None), fs.features)) for s, fs in sets.items()
        }
        for name, detector in detectors.items()
    }


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


# ----------------------------------------------------------------------------------------------------
# Layer by layer (notebook 05)


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
        layers[getattr(head, "embedding_name", "embedding")] = _embedded(head, fs.features)
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
        head, W, b = _classifier(run.model)
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


def versus_claim(baseline: dict[str, float], method: dict[str, float], claimed: dict[str, float]) -> pd.DataFrame:
    """One row per task: ``baseline``, ``method``, their ``difference`` (method − baseline), the ``claimed``
    difference, and a ``verdict``:

    - "reproduced": same sign as the claim and at least half its size;
    - "same sign, under half the claim": too small to call a reproduction from one run;
    - "not reproduced": no gain, or a gain of the opposite sign.

    The three dicts are keyed by task, in the same units (e.g. AUROC in percentage points).
    """
    if not set(baseline) == set(method) == set(claimed):
        raise ValueError(
            f"baseline, method and claimed must name the same tasks, got {sorted(baseline)}, {sorted(method)} "
            f"and {sorted(claimed)}"
        )
    rows = []
    for task in claimed:
        difference, claim = method[task] - baseline[task], claimed[task]
        if difference * claim <= 0:
            verdict = "not reproduced"
        elif abs(difference) >= abs(claim) / 2:
            verdict = "reproduced"
        else:
            verdict = "same sign, under half the claim"
        rows.append(
            {
                "task": task,
                "baseline": baseline[task],
                "method": method[task],
                "difference": difference,
                "claimed": claim,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows).set_index("task")


def first_match(trace: pd.DataFrame, metrics, reference: str = "CE", within: float = 0.075) -> pd.DataFrame:
    """How early each run reaches the reference run's final value of each NC metric.

    ``trace``: a long table with columns ``run``, ``step`` and the ``metrics`` (every run traced at the
    same optimisation steps, e.g. ``methods.design.traces``). The target of a metric is its value at the
    reference run's last traced step; a run *reaches* it at the first traced step from which the metric
    stays at or below the target until the end (a value that dips below and comes back up does not
    count). One row per (run, metric): ``target``, ``step`` (NaN if never), ``fraction`` = step / the
    reference run's last step, and ``within`` (fraction ≤ ``within``, 7.5 % in seed 004).
    """
    if reference not in set(trace["run"]):
        raise ValueError(f"no run {reference!r} in the trace: it has {sorted(set(trace['run']))}")
    final = trace[trace["run"] == reference].sort_values("step").iloc[-1]
    rows = []
    for run, part in trace.groupby("run", sort=False):
        part = part.sort_values("step")
        for metric in metrics:
            above = ~(part[metric] <= final[metric]).to_numpy()  # NaN counts as not reached
            stays = len(above) - int(above[::-1].argmax()) if above.any() else 0  # first index after the last miss
            step = float(part["step"].iloc[stays]) if stays < len(part) else float("nan")
            fraction = step / float(final["step"])
            rows.append({"run": run, "metric": metric, "target": float(final[metric]), "step": step,
                         "fraction": fraction, "within": bool(fraction <= within)})  # fmt: skip
    return pd.DataFrame(rows)


def prototype_vs_probe(train: FeatureSet, test: FeatureSet) -> pd.DataFrame:
    """Three classifiers on one encoder's penultimate features: its own head (the logits of ``test``), the
    class-mean prototypes
    (``heads.Prototype``: normalised means of the normalised training features, argmax cosine) and a
    linear probe (``probe.LinearProbe``, logistic regression on the standardised training features).

    One row each: ``classifier``, ``test_accuracy``, ``fit_seconds`` (the time to build it from the
    training features; the head was trained with the network: NaN).
    """
    rows = [{"classifier": "trained head", "test_accuracy": test.accuracy, "fit_seconds": float("nan")}]
    began = time.perf_counter()
    prototypes = heads.Prototype.from_features(train.features, train.labels, test.logits.shape[1])
    seconds = time.perf_counter() - began
    accuracy = (prototypes(test.features).argmax(1) == test.labels).double().mean().item()
    rows.append({"classifier": "class-mean prototypes", "test_accuracy": accuracy, "fit_seconds": seconds})
    began = time.perf_counter()
    probe = LinearProbe().fit(train.features, train.labels, test.logits.shape[1])
    seconds = time.perf_counter() - began
    accuracy = probe.accuracy(test.features, test.labels)
    rows.append({"classifier": "linear probe", "test_accuracy": accuracy, "fit_seconds": seconds})
    return pd.DataFrame(rows)


def transfer_probes(runs: dict, target_train: ImageSet, target_test: ImageSet, reference: str = "CE") -> pd.DataFrame:
    """Linear-probe transfer: each run's frozen encoder, a ``probe.LinearProbe`` on its penultimate
    features of ``target_train``, evaluated on ``target_test``.

    ``runs``: {name: Run}. One row per run: ``run``, ``accuracy`` on the target's test set and
    ``relative_gain`` = accuracy / the ``reference`` run's − 1 (seed 004 reports this, averaged). Features
    are cached in each run's folder.
    """
    rows = []
    for name, run in runs.items():
        train = cached_features(run.model, target_train, run.run_dir)
        test = cached_features(run.model, target_test, run.run_dir)
        probe = LinearProbe().fit(train.features, train.labels, target_train.num_classes)
        rows.append({"run": name, "accuracy": probe.accuracy(test.features, test.labels)})
    table = pd.DataFrame(rows)
    if reference in set(table["run"]):
        table["relative_gain"] = table["accuracy"] / float(table.set_index("run").loc[reference, "accuracy"]) - 1
    return table


ENVIRONMENT_NAMES = {  # Colored-MNIST's environments, named by their colour flip e
    env: f"{'test' if env == 2 else 'train'} (e = {flip:g})" for env, flip in enumerate(COLOR_FLIPS)
}


def ood_generalization(entries: dict[str, tuple], names: dict[int, str] | None = None) -> pd.DataFrame:
    """One row per (method, environment): ``accuracy``, ``etf_distance`` (``nclab.methods.ncfal.
    environment_metrics``) and ``samples``. ``entries``: {method: (model, [train, test])}, each model
    measured on its own sets (the grayscale oracle on the grayscale ones) and on their **true**
    environments (the extra ``env`` of the sets as ``nclab.data.colored_mnist`` made them); ``names``
    labels the environments (default: Colored-MNIST's colour flips)."""
    from .methods.ncfal import environment_metrics

    names = ENVIRONMENT_NAMES if names is None else names
    frames = []
    for method, (model, sets) in entries.items():
        if any("true_env" in s.extras for s in sets):
            raise ValueError(
                f"{method}: measure on the original sets (true environments), not on a set whose 'env' was replaced"
            )
        frame = environment_metrics(model, sets)
        frames.append(frame.assign(method=method, environment=frame["environment"].map(lambda e: names.get(e, e))))
    return pd.concat(frames, ignore_index=True)[["method", "environment", "samples", "accuracy", "etf_distance"]]


def partition_rounds(data: ImageSet, history: pd.DataFrame, initial: torch.Tensor | None = None) -> pd.DataFrame:
    """What environment inference put where: one row per (round, inferred environment) with ``samples``,
    ``colour_agrees`` (the fraction whose colour agrees with their label, when ``data`` has the extra
    ``color``) and ``from_env_<k>`` (the fraction from true environment k, when it has ``env``). Round 0
    is ``initial`` (the starting split) when given. ``history``: the table of
    ``nclab.methods.ncfal.infer_environments`` (its ``assigned`` column)."""
    rounds = [(0, initial)] if initial is not None else []
    rounds += list(zip(history["round"], history["assigned"]))
    labels, color, true = data.labels.cpu(), data.extras.get("color"), data.extras.get("env")
    rows = []
    for round_, assigned in rounds:
        assigned = assigned.cpu()
        for e in torch.unique(assigned).tolist():
            inside = assigned == e
            row = {"round": int(round_), "environment": e, "samples": int(inside.sum())}
            if color is not None:
                row["colour_agrees"] = float((color.cpu()[inside] == labels[inside]).float().mean())
            if true is not None:
                for k in torch.unique(true).tolist():
                    row[f"from_env_{k}"] = float((true.cpu()[inside] == k).float().mean())
            rows.append(row)
    return pd.DataFrame(rows)


def per_class_alignment(
    train: FeatureSet, test: FeatureSet, model_or_head, classes: list[str] | None = None
) -> pd.DataFrame:
    """One row per class: ``class``, ``train_images`` (its training count), ``group`` (many / medium / few,
    ``nclab.data.class_groups``), ``test_accuracy`` (recall on the balanced test set), ``weight_norm``
    ‖w_c‖ and ``alignment`` cos(w_c, μ_c − μ_G), with μ_c the class means of the training features (of
    φ(h), the features the classifier acts on: h/‖h‖ for a cosine head) and μ_G their mean (SPEC §6).
    Minority collapse shows as small tail norms; misalignment as low cosines."""
    head, W, _ = _classifier(model_or_head)
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
    head, W, b = _classifier(model_or_head)
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
