"""Figures of the layer-by-layer study (notebook 05): NC at every layer, and the detection/transfer
trade-off."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import figure_legend, is_accuracy, metric_label, panel_grid, wrap

__all__ = ["plot_layerwise", "plot_tradeoff"]


def plot_layerwise(frame: pd.DataFrame, metrics: tuple[str, ...] = ("nc1", "ncc_accuracy")) -> plt.Figure:
    """Each of ``metrics`` against the depth (x: the layers in network order), one line per model, two
    panels to a row; one legend, right of the panels.

    ``frame``: the tidy output of ``nclab.tables.layerwise_nc`` (model, stage, metric, value). NC grows
    with depth when nc1 falls (log scale) and the nearest-class-centre accuracy rises (linear, [0, 1]).
    """
    order = list(dict.fromkeys(frame["stage"]))  # stem … layer4, then the projector
    fig, axes = panel_grid(len(metrics), per_row=2, row_height=3.6)
    for ax, metric in zip(axes, metrics):
        part = frame[frame["metric"] == metric]
        log = metric.startswith("nc") and not is_accuracy(metric) and bool((part["value"] > 0).all())
        sns.pointplot(part, x="stage", y="value", hue="model", order=order, ax=ax, markers="o")
        ax.set(title=f"{metric} by layer", xlabel="layer", ylabel=metric_label(metric, log, wrap=True))
        ax.tick_params(axis="x", rotation=40)
        if log:
            ax.set_yscale("log")
        if is_accuracy(metric):
            ax.set_ylim(0, 1.02)
    figure_legend(fig, axes, "right", title="model")
    return fig


def plot_tradeoff(frame: pd.DataFrame, tasks: dict[str, str] | None = None) -> plt.Figure:
    """One panel per task: its score against the layer's NC1 (log x), one point per (model, layer).

    ``frame``: one row per (model, stage) with ``nc1`` and the task columns (default "auroc" = mean
    detection AUROC, "transfer_accuracy"). More collapse = further left. Two panels to a row; one legend,
    right of the panels.
    """
    tasks = tasks or {"auroc": "detection AUROC (energy of an ID probe)", "transfer_accuracy": "transfer accuracy"}
    fig, axes = panel_grid(len(tasks), per_row=2, row_height=3.9)
    for ax, (column, label) in zip(axes, tasks.items()):
        sns.scatterplot(frame, x="nc1", y=column, hue="model", style="model", s=80, ax=ax, legend=ax is axes[-1])
        below = frame["model"] != frame["model"].iloc[0]  # the second model's labels go under its points
        for row, under in zip(frame.itertuples(), below):
            point = (row.nc1, getattr(row, column))
            ax.annotate(row.stage, point, fontsize=8, xytext=(4, -10 if under else 3), textcoords="offset points")
        ax.set(xscale="log", xlabel="NC1 of the layer, log scale\n(left = more collapsed)", ylabel=wrap(label, 2.8, 12))
    figure_legend(fig, axes, "right", title="model")
    return fig
