"""Figures of OOD detection (notebooks 03 and 04). ``scores`` is {detector: {"ID": (n,), ood set: (m,), …}},
every score higher = in-distribution."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..ood import detection_metrics, roc_curve

__all__ = [
    "plot_score_histograms",
    "plot_roc_curves",
    "plot_threshold",
    "plot_principal_plane",
    "plot_dim_sweep",
    "plot_nc5_over_training",
]


def _scores_numpy(x) -> np.ndarray:
    """Scores (tensor or array) as a flat float64 numpy array."""
    return torch.as_tensor(x).detach().cpu().double().flatten().numpy()


def _score_densities(ax: plt.Axes, id_scores, ood_scores, ood_name: str, id_name: str = "ID", bins: int = 40) -> None:
    """Density histograms of the ID and the OOD scores on ``ax``, over the same bins."""
    ind, out = _scores_numpy(id_scores), _scores_numpy(ood_scores)
    frame = pd.DataFrame({"score": np.r_[ind, out], "set": [id_name] * len(ind) + [ood_name] * len(out)})
    sns.histplot(
        frame,
        x="score",
        hue="set",
        bins=np.histogram_bin_edges(frame["score"], bins),
        stat="density",
        common_norm=False,
        element="step",
        palette={id_name: "tab:blue", ood_name: "tab:orange"},
        ax=ax,
    )


def plot_score_histograms(scores: dict[str, dict], id_name: str = "ID") -> plt.Figure:
    """A grid of score histograms: one row per detector, one column per OOD set, ID in blue in every panel.

    Each panel's title gives the AUROC of that pair (ID positive): the less the two histograms overlap,
    the closer it is to 1; an OOD histogram to the *right* of the ID one gives an AUROC below 0.5.
    """
    detectors = list(scores)
    sets = [name for name in scores[detectors[0]] if name != id_name]
    fig, axes = plt.subplots(
        len(detectors),
        len(sets),
        figsize=(3.6 * len(sets), 2.3 * len(detectors)),
        squeeze=False,
        constrained_layout=True,
    )
    for row, detector in zip(axes, detectors):
        for ax, name in zip(row, sets):
            _score_densities(ax, scores[detector][id_name], scores[detector][name], name, id_name)
            auroc = detection_metrics(scores[detector][id_name], scores[detector][name])["auroc"]
            ax.set_title(f"{detector} · {name}: AUROC {auroc:.3f}", fontsize=9)
            ax.set(xlabel="", ylabel=detector if ax is row[0] else "")
            if ax.get_legend() is not None and detector != detectors[0]:
                ax.get_legend().remove()
    fig.suptitle("score histograms, ID against each OOD set (higher = in-distribution)")
    return fig


def plot_roc_curves(scores: dict[str, dict], id_name: str = "ID") -> plt.Figure:
    """ROC curves (ID positive), one panel per OOD set, one curve per detector with its AUROC.

    x = FPR, the fraction of OOD accepted; y = TPR, the fraction of ID kept. The dotted line is TPR = 95 %:
    where a curve crosses it, x is that detector's FPR@95.
    """
    detectors = list(scores)
    sets = [name for name in scores[detectors[0]] if name != id_name]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.2), squeeze=False, constrained_layout=True)
    for ax, name in zip(axes[0], sets):
        for detector in detectors:
            fpr, tpr, _ = roc_curve(scores[detector][id_name], scores[detector][name])
            auroc = detection_metrics(scores[detector][id_name], scores[detector][name])["auroc"]
            ax.plot(fpr, tpr, label=f"{detector} ({auroc:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set(
            title=f"ID against {name}",
            xlabel="FPR (OOD accepted)",
            ylabel="TPR (ID kept)",
            aspect="equal",
            xlim=(0, 1),
            ylim=(0, 1.01),
        )
        ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_threshold(
    id_scores, ood_scores, threshold: float, detector: str = "score", ood_name: str = "OOD", id_name: str = "ID"
) -> plt.Figure:
    """ID and OOD score histograms with the threshold τ: inputs scoring ≥ τ are accepted as ID.

    The title gives TPR = fraction of ID with score ≥ τ (kept) and FPR = fraction of OOD with score ≥ τ
    (wrongly accepted).
    """
    tpr = float((_scores_numpy(id_scores) >= threshold).mean())
    fpr = float((_scores_numpy(ood_scores) >= threshold).mean())
    fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
    _score_densities(ax, id_scores, ood_scores, ood_name, id_name)
    ax.axvspan(threshold, ax.get_xlim()[1], color="tab:green", alpha=0.08, label="accepted as ID")
    ax.axvline(threshold, color="black", linewidth=1.5)
    ax.set(
        xlabel=f"{detector} score",
        title=f"{detector}, τ = {threshold:.4g}: TPR {tpr:.1%} of {id_name} kept, FPR {fpr:.1%} of {ood_name} accepted",
    )
    return fig


def plot_principal_plane(
    points: dict[str, torch.Tensor], title: str | None = None, max_points: int = 1_500
) -> plt.Figure:
    """Scatter of 2-D points per set (e.g. standardised features on the first two principal axes).

    ``points``: {set name: (n, 2)}; at most ``max_points`` per set are drawn (a fixed random sample).
    """
    generator = torch.Generator().manual_seed(0)
    frames = []
    for name, xy in points.items():
        xy = torch.as_tensor(xy).detach().cpu().double()
        xy = xy[torch.randperm(len(xy), generator=generator)[:max_points]]
        frames.append(pd.DataFrame({"axis 1": xy[:, 0].numpy(), "axis 2": xy[:, 1].numpy(), "set": name}))
    fig, ax = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
    sns.scatterplot(
        pd.concat(frames, ignore_index=True), x="axis 1", y="axis 2", hue="set", s=8, alpha=0.5, linewidth=0, ax=ax
    )
    ax.set(xlabel="first principal axis", ylabel="second principal axis", title=title)
    ax.legend(markerscale=2, fontsize=8)
    return fig


def plot_dim_sweep(frame: pd.DataFrame, mark: int | None = None, mark_label: str = "d = C − 1") -> plt.Figure:
    """AUROC against a dimension d (log scale), one line per OOD set; a dashed line at d = ``mark``.

    ``frame``: columns "d", "auroc" and "OOD set" (e.g. NECO's AUROC for d = 1 … p).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    sns.lineplot(frame, x="d", y="auroc", hue="OOD set", ax=ax)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    if mark is not None:
        ax.axvline(mark, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            mark_label, (mark, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -14), textcoords="offset points"
        )
    ax.set(xscale="log", xlabel="dimension d", ylabel="AUROC")
    return fig


def plot_nc5_over_training(frame: pd.DataFrame) -> plt.Figure:
    """NC5 (left, ideal 0) and, if the frame has it, NECO's AUROC (right) against the epoch, per OOD set.

    ``frame``: columns "epoch", "OOD set", "nc5" and optionally "neco_auroc".
    """
    panels = [("nc5", "NC5 = mean |cos(μ_c, μ_OOD)|  (ideal 0)"), ("neco_auroc", "NECO AUROC")]
    panels = [(column, title) for column, title in panels if column in frame]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False, constrained_layout=True)
    for ax, (column, title) in zip(axes[0], panels):
        sns.lineplot(frame, x="epoch", y=column, hue="OOD set", marker="o", ax=ax, legend=ax is axes[0, -1])
        ax.set(title=title, ylabel="", xscale="log" if frame["epoch"].max() > 20 else "linear")
        if frame["epoch"].max() <= 20:
            ax.set_xticks(sorted(frame["epoch"].unique()))
    sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1, 1))
    return fig
