"""Tables of NC by design (notebook 08): how early each loss reaches the baseline's final NC, a trained head
vs class-mean prototypes vs a linear probe on one encoder, and linear-probe transfer to another data set."""

from __future__ import annotations

import time

import pandas as pd
import torch

from .. import heads
from ..data import ImageSet
from ..features import FeatureSet, cached_features
from ..methods.design import MORE_METRICS, TRACED_METRICS
from ..probe import LinearProbe
from .verdicts import Difference, accuracy_difference

__all__ = [
    "first_match",
    "SPACES",
    "race_table",
    "race",
    "final_table",
    "prototype_vs_probe",
    "transfer_probes",
    "by_loss",
    "head_correct",
    "design_differences",
]


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


SPACES = {"classifier's space": "", "unit sphere": "sphere:"}  # a trace's column prefix for each space


def race_table(trace: pd.DataFrame, metrics, reference: str = "CE", within: float = 0.075) -> pd.DataFrame:
    """:func:`first_match` in both spaces of an ``NCTrace``: each run's own classifier space (CE on h, a
    cosine head on h/‖h‖) and the unit sphere, the same for every loss (the ``sphere:`` columns). One row
    per run, columns (space, metric): the fraction of the reference's steps, NaN where never reached."""
    frames = {}
    for space, prefix in SPACES.items():
        matches = first_match(trace, [prefix + m for m in metrics], reference, within)
        matches["metric"] = matches["metric"].str.removeprefix(prefix)
        frames[space] = matches.pivot(index="run", columns="metric", values="fraction")[list(metrics)]
    runs = list(dict.fromkeys(trace["run"]))
    return pd.concat(frames, axis=1, names=["space", "metric"]).reindex(runs)


def final_table(runs: dict, trace: pd.DataFrame, test: ImageSet) -> pd.DataFrame:
    """One row per run of ``runs`` ({name: Run}): its ``train accuracy (traced images)`` and every NC metric
    at its last traced step (``trace``: ``methods.design.traces(runs)``), and its ``test accuracy`` on
    ``test`` (features cached in the run's folder)."""
    last = trace.sort_values("step").groupby("run").tail(1).set_index("run")
    metrics = [*TRACED_METRICS, *MORE_METRICS]
    rows = {name: {"train accuracy (traced images)": last.loc[name, "accuracy"],
                   "test accuracy": cached_features(run.model, test, run.run_dir).accuracy,
                   **last.loc[name, metrics]} for name, run in runs.items()}  # fmt: skip
    return pd.DataFrame(rows).T


def prototype_vs_probe(train: FeatureSet, test: FeatureSet) -> pd.DataFrame:
    """Three classifiers on one encoder's penultimate features: its own head (the logits of ``test``), the
    class-mean prototypes
    (``heads.Prototype``: normalised means of the normalised training features, argmax cosine) and a
    linear probe (``probe.LinearProbe``, logistic regression on the standardised training features).

    One row each: ``classifier``, ``test_accuracy``, ``fit_seconds`` (the time to build it from the
    training features; the head was trained with the network: NaN), and ``correct``, its (N,) 0/1
    correctness on each test image (for a paired comparison, ``nclab.tables.verdicts``).
    """
    rows = [_classifier_row("trained head", test.predictions, test.labels, float("nan"))]
    began = time.perf_counter()
    prototypes = heads.Prototype.from_features(train.features, train.labels, test.logits.shape[1])
    seconds = time.perf_counter() - began
    rows.append(_classifier_row("class-mean prototypes", prototypes(test.features).argmax(1), test.labels, seconds))
    began = time.perf_counter()
    probe = LinearProbe().fit(train.features, train.labels, test.logits.shape[1])
    seconds = time.perf_counter() - began
    rows.append(_classifier_row("linear probe", probe.predict(test.features).cpu(), test.labels, seconds))
    return pd.DataFrame(rows)


def _classifier_row(name: str, predictions: torch.Tensor, labels: torch.Tensor, seconds: float) -> dict:
    correct = (predictions.cpu() == labels.cpu()).to(torch.uint8)
    return {"classifier": name, "test_accuracy": correct.double().mean().item(), "fit_seconds": seconds,
            "correct": correct}  # fmt: skip


def transfer_probes(runs: dict, target_train: ImageSet, target_test: ImageSet, reference: str = "CE") -> pd.DataFrame:
    """Linear-probe transfer: each run's frozen encoder, a ``probe.LinearProbe`` on its penultimate
    features of ``target_train``, evaluated on ``target_test``.

    ``runs``: {name: Run}. One row per run: ``run``, ``accuracy`` on the target's test set and
    ``relative_gain`` = accuracy / the ``reference`` run's − 1 (seed 004 reports this, averaged), and
    ``correct``, the probe's (N,) 0/1 correctness on each target test image. Features are cached in each
    run's folder.
    """
    rows = []
    for name, run in runs.items():
        train = cached_features(run.model, target_train, run.run_dir)
        test = cached_features(run.model, target_test, run.run_dir)
        probe = LinearProbe().fit(train.features, train.labels, target_train.num_classes)
        correct = (probe.predict(test.features).cpu() == test.labels.cpu()).to(torch.uint8)
        rows.append({"run": name, "accuracy": correct.double().mean().item(), "correct": correct})
    table = pd.DataFrame(rows)
    if reference in set(table["run"]):
        table["relative_gain"] = table["accuracy"] / float(table.set_index("run").loc[reference, "accuracy"]) - 1
    return table


LOSS_KEYS = {"ce": "CE", "ntce": "NTCE", "nonl": "NONL"}  # the runs that seed 004's claims compare


def by_loss(table: pd.DataFrame | pd.Series, column: str | None = "accuracy") -> dict[str, float]:
    """{"ce": …, "ntce": …, "nonl": …} for the runs ``table`` has: its ``column`` by its ``run`` column (or
    the values of a Series indexed by run, ``column=None``)."""
    values = table if column is None else table.set_index("run")[column]
    return {key: float(values[name]) for key, name in LOSS_KEYS.items() if name in values.index}


def head_correct(runs: dict, test: ImageSet) -> dict[str, torch.Tensor]:
    """{run: (N,) 0/1 correctness of its own head on each image of ``test``} (features cached per run)."""
    return {
        name: (cached_features(run.model, test, run.run_dir).predictions == test.labels.cpu()).to(torch.uint8)
        for name, run in runs.items()
    }


def design_differences(
    correct: dict[str, torch.Tensor],
    classifiers: pd.DataFrame,
    transfer: pd.DataFrame,
    transfer_imbalanced: pd.DataFrame,
) -> dict[str, dict[str, Difference]]:
    """The paired differences that judge seed 004's claims (``tables.CLAIMS``, notebook 08), in points or
    in % of CE's accuracy: {claim key: {what is compared: Difference}}.

    ``correct``: :func:`head_correct` of the balanced runs (with "CE", "NTCE", "NONL"); ``classifiers``:
    :func:`prototype_vs_probe` tables with a ``run`` column (with "SupCon"); ``transfer`` and
    ``transfer_imbalanced``: :func:`transfer_probes` of the balanced and of the long-tailed runs. Each may
    be a list, one per seed, for the two-stage bootstrap over seeds.
    """

    def seeds(x):
        return x if isinstance(x, list) else [x]

    def probe(table, run):
        return [t.set_index("run").loc[run, "correct"] for t in seeds(table)]

    def supcon(classifier):
        return [t[t["run"] == "SupCon"].set_index("classifier").loc[classifier, "correct"] for t in seeds(classifiers)]

    accuracy = {name: [c[name] for c in seeds(correct)] for name in ("CE", "NTCE", "NONL")}
    return {
        "NTCE beats CE": {"NTCE against CE": accuracy_difference(accuracy["CE"], accuracy["NTCE"])},
        "NONL beats CE": {"NONL against CE": accuracy_difference(accuracy["CE"], accuracy["NONL"])},
        "prototypes match probing": {
            "SupCon: prototypes against linear probe": accuracy_difference(
                supcon("linear probe"), supcon("class-mean prototypes")
            )
        },
        "transfer gain": {
            f"{name} encoder against CE's": accuracy_difference(
                probe(transfer, "CE"), probe(transfer, name), relative=True
            )
            for name in ("NTCE", "NONL")
        },
        "transfer gain under imbalance": {
            "NONL encoder against CE's (long tail)": accuracy_difference(
                probe(transfer_imbalanced, "CE"), probe(transfer_imbalanced, "NONL"), relative=True
            )
        },
    }


def race(matches: pd.DataFrame, reference_train_accuracy: float, within: float = 0.075) -> pd.DataFrame:
    """Seed 004's race, summarised: per run, how many metrics of :func:`first_match` it reached within
    ``within`` of the reference's steps, and whether the reference had converged (training accuracy
    ≥ 99 %: its last value is then a converged one). A missing or NaN accuracy is *not* converged. One row
    per run: ``reached within`` (count), ``of`` (metrics), ``reference converged``."""
    converged = bool(reference_train_accuracy >= 0.99)  # NaN compares False: never taken as converged
    counts = matches.assign(hit=matches["fraction"] <= within).groupby("run", sort=False)["hit"].agg(["sum", "size"])
    return pd.DataFrame(
        {"reached within": counts["sum"].astype(int), "of": counts["size"], "reference converged": converged}
    )
