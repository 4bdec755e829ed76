"""Figures of OOD detection (notebooks 03 and 04). ``scores`` is {detector: {"ID": (n,), ood set: (m,), …}},
every score higher = in-distribution. ``names`` ({set: label}, e.g. ``nclab.tables.set_names``) labels the
sets by what they are ("CIFAR-10 (stand-in: MNIST digits 8–9)"); by default, by their keys."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import ticker

from ..ood import detection_metrics, roc_curve
from .style import HALF_AXES_IN, MAX_WIDTH_IN, figure_legend, metric_label, panel_grid, symlog_bins, wrap

__all__ = [
    "plot_score_histograms",
    "plot_roc_curves",
    "plot_threshold",
    "plot_principal_plane",
    "plot_dim_sweep",
    "plot_nc5_over_training",
    "SYMLOG_DETECTORS",
]

SYMLOG_DETECTORS = ("mahalanobis",)  # scores (minus squared distances) that span orders of magnitude


def _scores_numpy(x) -> np.ndarray:
    """Scores (tensor or array) as a flat float64 numpy array."""
    return torch.as_tensor(x).detach().cpu().double().flatten().numpy()


def _score_densities(
    ax: plt.Axes, id_scores, ood_scores, ood_name: str, id_name: str = "ID", bins: int = 40, symlog: bool = False
) -> None:
    """Histograms of the ID and the OOD scores on ``ax``, over the same bins, each summing to 1 (the
    fraction of its set per bin); with ``symlog``, on a symlog x-axis with bins of equal width there."""
    ind, out = _scores_numpy(id_scores), _scores_numpy(ood_scores)
    both = np.r_[ind, out]
    frame = pd.DataFrame({"score": both, "set": [id_name] * len(ind) + [ood_name] * len(out)})
    edges = symlog_bins(both, bins) if symlog else np.histogram_bin_edges(both, bins)
    sns.histplot(
        frame,
        x="score",
        hue="set",
        bins=edges,
        stat="probability",
        common_norm=False,
        element="step",
        palette={id_name: "tab:blue", ood_name: "tab:orange"},
        ax=ax,
    )
    if symlog:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(edges[0], edges[-1])
        ax.xaxis.set_major_locator(ticker.SymmetricalLogLocator(base=10, linthresh=1.0, subs=(1.0, 3.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))  # −300, not −3×10²
    if ax.get_legend() is not None:
        ax.get_legend().set_title(None)


def _uses_symlog(detector: str, symlog) -> bool:
    """Whether a detector's scores go on a symlog axis: ``symlog`` True/False, or None for
    :data:`SYMLOG_DETECTORS`."""
    return detector.lower() in SYMLOG_DETECTORS if symlog is None else bool(symlog)


def plot_score_histograms(
    scores: dict[str, dict],
    id_name: str = "ID",
    names: dict[str, str] | None = None,
    symlog: tuple[str, ...] = SYMLOG_DETECTORS,
) -> plt.Figure:
    """A grid of score histograms: one row per detector, one column per OOD set, ID in blue in every panel,
    each set's histogram summing to 1; one legend, below. The grid fills the column's width, its titles
    wrapped to fit their panels.

    The top row's titles name the OOD sets (``names``: {OOD set: label}, by default the keys); each
    panel's title gives the AUROC of that pair (ID positive): the less the two histograms overlap, the
    closer it is to 1; an OOD histogram to the *right* of the ID one gives an AUROC below 0.5. The
    detectors named in ``symlog`` (default :data:`SYMLOG_DETECTORS`: Mahalanobis, whose scores span
    orders of magnitude) get a symlog x-axis, with bins of equal width on it.
    """
    names = names or {}
    detectors = list(scores)
    sets = [name for name in scores[detectors[0]] if name != id_name]
    fig, axes = plt.subplots(
        len(detectors),
        len(sets),
        figsize=(MAX_WIDTH_IN, 1.9 * len(detectors) + 0.9),
        squeeze=False,
        constrained_layout=True,
    )
    width = MAX_WIDTH_IN / len(sets) - 0.4  # inches of a panel's axes, without its labels
    for r, (row, detector) in enumerate(zip(axes, detectors)):
        log = detector.lower() in symlog
        for ax, name in zip(row, sets):
            ind, out = scores[detector][id_name], scores[detector][name]
            _score_densities(ax, ind, out, "the OOD set named atop the column", id_name, symlog=log)
            auroc = detection_metrics(ind, out)["auroc"]
            header = f"{wrap(names.get(name, name), width, 9)}\n" if r == 0 else ""  # the set, atop its column
            ax.set_title(header + wrap(f"{detector} · AUROC {auroc:.3f}", width, 9), fontsize=9)
            ax.set_xlabel(wrap(f"{detector} score (symlog axis)" if log else f"{detector} score", width, 9), fontsize=9)
            if log and len(sets) > 2:  # a narrow panel has room for a few powers of ten only
                ax.xaxis.set_major_locator(ticker.SymmetricalLogLocator(base=10, linthresh=1.0))
                ax.xaxis.get_major_locator().set_params(numticks=4)
            ax.set_ylabel("fraction per bin" if ax is row[0] else "", fontsize=9)
            ax.tick_params(labelsize=8)
    figure_legend(fig, axes, "below")
    fig.suptitle("score histograms, ID against each OOD set (higher = in-distribution)")
    return fig


def plot_roc_curves(scores: dict[str, dict], id_name: str = "ID", names: dict[str, str] | None = None) -> plt.Figure:
    """ROC curves (ID positive), one panel per OOD set, two to a row, one curve per detector with its AUROC
    in the legend under the panel.

    x = FPR, the fraction of OOD accepted; y = TPR, the fraction of ID kept. The dotted line is TPR = 95 %:
    where a curve crosses it, x is that detector's FPR@95. ``names``: {OOD set: label} for the titles.
    """
    names = names or {}
    detectors = list(scores)
    sets = [name for name in scores[detectors[0]] if name != id_name]
    rows = -(-len(detectors) // 2)  # legend rows under each panel
    fig, axes = panel_grid(len(sets), per_row=2, row_height=4.2 + 0.2 * rows)
    for ax, name in zip(axes, sets):
        for detector in detectors:
            fpr, tpr, _ = roc_curve(scores[detector][id_name], scores[detector][name])
            auroc = detection_metrics(scores[detector][id_name], scores[detector][name])["auroc"]
            ax.plot(fpr, tpr, label=f"{detector} ({auroc:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="FPR (fraction of OOD accepted)", ylabel="TPR (fraction of ID kept)", xlim=(0, 1), ylim=(0, 1.01))
        ax.set_title(wrap(f"ID against {names.get(name, name)}", 2.7, 10), fontsize=10)  # the axes: 2.7 in
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, title="detector (AUROC)",
                  title_fontsize=8, frameon=False)  # fmt: skip
    return fig


def plot_threshold(
    id_scores,
    ood_scores,
    threshold: float,
    detector: str = "score",
    ood_name: str = "OOD",
    id_name: str = "ID",
    symlog: bool | None = None,
) -> plt.Figure:
    """ID and OOD score histograms with the threshold τ: inputs scoring ≥ τ are accepted as ID.

    The title gives TPR = fraction of ID with score ≥ τ (kept) and FPR = fraction of OOD with score ≥ τ
    (wrongly accepted). ``symlog``: a symlog x-axis (None: for the detectors of :data:`SYMLOG_DETECTORS`).
    """
    tpr = float((_scores_numpy(id_scores) >= threshold).mean())
    fpr = float((_scores_numpy(ood_scores) >= threshold).mean())
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 3.6), constrained_layout=True)
    log = _uses_symlog(detector, symlog)
    _score_densities(ax, id_scores, ood_scores, ood_name, id_name, symlog=log)
    left, right = ax.get_xlim()
    ax.axvspan(threshold, right, color="tab:green", alpha=0.08, label="accepted as ID")
    ax.set_xlim(left, right)
    ax.axvline(threshold, color="black", linewidth=1.5)
    ax.set(xlabel=f"{detector} score{' (symlog axis)' if log else ''}", ylabel="fraction of the set per bin")
    ax.set_title(wrap(f"{detector}, τ = {threshold:.4g}:\nTPR {tpr:.1%} of {id_name} kept, "
                      f"FPR {fpr:.1%} of {ood_name} accepted", MAX_WIDTH_IN - 1, 10), fontsize=10)  # fmt: skip
    figure_legend(fig, [ax], "below")
    return fig


def plot_principal_plane(
    points: dict[str, torch.Tensor],
    title: str | None = None,
    max_points: int = 1_500,
    names: dict[str, str] | None = None,
) -> plt.Figure:
    """Scatter of 2-D points per set (e.g. standardised features on the first two principal axes); the
    legend on the right.

    ``points``: {set name: (n, 2)}; at most ``max_points`` per set are drawn (a fixed random sample).
    ``names``: {set: label} for the legend.
    """
    names = names or {}
    generator = torch.Generator().manual_seed(0)
    frames = []
    for name, xy in points.items():
        xy = torch.as_tensor(xy).detach().cpu().double()
        xy = xy[torch.randperm(len(xy), generator=generator)[:max_points]]
        frames.append(
            pd.DataFrame({"axis 1": xy[:, 0].numpy(), "axis 2": xy[:, 1].numpy(), "set": names.get(name, name)})
        )
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 5.2), constrained_layout=True)
    sns.scatterplot(
        pd.concat(frames, ignore_index=True), x="axis 1", y="axis 2", hue="set", s=8, alpha=0.5, linewidth=0, ax=ax
    )
    ax.set(xlabel="first principal axis", ylabel="second principal axis")
    ax.set_title(wrap(title or "", MAX_WIDTH_IN - 2.5, 12))  # over the axes, left of the legend
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), markerscale=2, fontsize=8, frameon=False)
    return fig


def plot_dim_sweep(
    frame: pd.DataFrame, mark: int | None = None, mark_label: str = "d = C − 1", names: dict[str, str] | None = None
) -> plt.Figure:
    """AUROC against a dimension d (log scale), one line per OOD set; a dashed line at d = ``mark``, named
    in the legend (right of the axes) and by a tick on the top edge, off the curves.

    ``frame``: columns "d", "auroc" and "OOD set" (e.g. NECO's AUROC for d = 1 … p); ``names``: {OOD set:
    label} for the legend.
    """
    frame = frame.assign(**{"OOD set": frame["OOD set"].map(lambda s: (names or {}).get(s, s))})
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 4), constrained_layout=True)
    sns.lineplot(frame, x="d", y="auroc", hue="OOD set", ax=ax)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance (0.5)")
    ax.set(xscale="log", xlabel="dimension d (log scale)", ylabel="AUROC (ID against the OOD set)")
    if mark is not None:
        ax.axvline(mark, color="black", linestyle="--", linewidth=1, label=f"{mark_label} = {mark}")
        top = ax.secondary_xaxis("top")  # the mark's name in the margin, above the curves
        top.set_xticks([mark], [mark_label], minor=False)
        top.set_xticks([], minor=True)
        top.tick_params(length=4, labelsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return fig


def plot_nc5_over_training(frame: pd.DataFrame, names: dict[str, str] | None = None) -> plt.Figure:
    """NC5 (left, ideal 0) and, if the frame has it, NECO's AUROC (right) against the epoch, per set; one
    legend, below the panels.

    ``frame``: columns "epoch", "OOD set", "nc5" and optionally "neco_auroc"; ``names``: {set: label}.
    """
    frame = frame.assign(**{"OOD set": frame["OOD set"].map(lambda s: (names or {}).get(s, s))})
    panels = [
        ("nc5", "NC5 = mean |cos(μ_c, μ_OOD)|\n(ideal 0)", metric_label("nc5")),
        ("neco_auroc", "NECO AUROC", "AUROC of NECO (ID against the set)"),
    ]
    panels = [panel for panel in panels if panel[0] in frame]
    fig, axes = panel_grid(len(panels), per_row=2, row_height=4.0)
    for ax, (column, title, label) in zip(axes, panels):
        sns.lineplot(frame, x="epoch", y=column, hue="OOD set", marker="o", ax=ax)
        ax.set(ylabel=wrap(label, 2.8, 12), xscale="log" if frame["epoch"].max() > 20 else "linear")
        ax.set_title(wrap(title, HALF_AXES_IN if len(panels) > 1 else MAX_WIDTH_IN - 1, 12))
        if frame["epoch"].max() <= 20:
            ax.set_xticks(sorted(frame["epoch"].unique()))
    figure_legend(fig, axes, "below", title="set")
    return fig
