"""Figures of long-tailed learning (notebook 07): the class histogram, the per-class alignment and norms
of the classifier, accuracy per group, and accuracy against alignment (the seed's Figure 1)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import MAX_WIDTH_IN, figure_legend, panel_grid, wrap

__all__ = ["plot_class_histogram", "plot_class_alignment", "plot_group_accuracy", "plot_accuracy_vs_alignment"]

GROUP_COLOURS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}


def plot_class_histogram(counts, groups: list[str], title: str = "training images per class") -> plt.Figure:
    """Bars of the training images of every class (log scale, in class order: the profile's), coloured by
    group. ``counts``: (C,) images per class; ``groups``: the group of every class
    (``nclab.data.class_groups``)."""
    counts = [int(n) for n in counts]
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 3.5), constrained_layout=True)
    ax.bar(range(len(counts)), counts, color=[GROUP_COLOURS[g] for g in groups], width=0.9)
    for group, colour in GROUP_COLOURS.items():
        ax.bar([], [], color=colour, label=f"{group} ({groups.count(group)} classes)")
    ax.set(xlabel="class", ylabel="training images\n(log scale)", yscale="log", title=wrap(title, MAX_WIDTH_IN - 2, 12))
    figure_legend(fig, [ax], "right", title="group")
    return fig


def plot_class_alignment(per_class: dict[str, pd.DataFrame]) -> plt.Figure:
    """Two panels, one line per method, classes ordered by training size: the alignment cos(w_c, μ_c − μ_G)
    (left) and the classifier norm ‖w_c‖ (right, minority collapse); the legend below. ``per_class``:
    {method: the output of ``nclab.tables.per_class_alignment``}."""
    frame = pd.concat(
        [table.reset_index(names="rank").assign(method=name) for name, table in per_class.items()], ignore_index=True
    )
    fig, axes = panel_grid(2, per_row=2, row_height=3.6)
    for ax, column, label, symbol in [
        (axes[0], "alignment", "alignment", "cos(w_c, μ_c − μ_G)"),
        (axes[1], "weight_norm", "classifier norm", "‖w_c‖"),
    ]:
        sns.lineplot(frame, x="rank", y=column, hue="method", ax=ax, marker="o", markersize=4, legend=ax is axes[1])
        ax.set(xlabel="class, from the largest\nto the smallest", ylabel=f"{label} {symbol}")
        ax.set_title(f"{symbol} by class")
    figure_legend(fig, axes, "below")
    return fig


def plot_group_accuracy(groups: dict[str, pd.DataFrame]) -> plt.Figure:
    """Test accuracy per group (x: many, medium, few, all), one bar per method; the legend below.
    ``groups``: {method: the output of ``nclab.tables.long_tail_groups``}."""
    frame = pd.concat([table.assign(method=name) for name, table in groups.items()], ignore_index=True)
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 4), constrained_layout=True)
    sns.barplot(frame, x="group", y="test_accuracy", hue="method", ax=ax)
    ax.set(ylim=(0, 1), xlabel="", ylabel="test accuracy", title="accuracy per group (balanced test set)")
    figure_legend(fig, [ax], "below")
    return fig


def plot_accuracy_vs_alignment(summary: pd.DataFrame) -> plt.Figure:
    """One point per method: its mean alignment cosine (x) against its test accuracy (y), labelled: the seed's
    Figure 1 (baseline, aligned and deliberately misaligned models). ``summary``: columns ``method``,
    ``alignment`` and ``test_accuracy`` (the "all" rows of ``long_tail_groups``)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.3), constrained_layout=True)
    sns.scatterplot(summary, x="alignment", y="test_accuracy", hue="method", s=90, ax=ax, legend=False)
    for row in summary.itertuples():
        ax.annotate(
            row.method, (row.alignment, row.test_accuracy), fontsize=8, xytext=(5, 3), textcoords="offset points"
        )
    ax.set(
        xlabel="mean cos(w_c, μ_c − μ_G) over the classes", ylabel="test accuracy", title="accuracy against alignment"
    )
    return fig
