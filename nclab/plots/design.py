"""Figures of neural collapse by design (notebook 08): every NC metric along training for every loss, how
early each loss reaches cross-entropy's final collapse, and the accuracy of each classifier."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import figure_legend

__all__ = ["plot_nc_trace", "plot_first_match", "plot_accuracies"]

FLOOR = 1e-6  # NC values below this are 0 up to float32 rounding (a frozen ETF's NC2): not drawn on a log axis


def plot_nc_trace(trace: pd.DataFrame, metrics: dict[str, str], reference: str = "CE") -> plt.Figure:
    """One panel per NC metric (log scales), one line per run, against the optimisation step (log): the
    reference run's final value is a dashed line, the level the others race to; one legend, on the right.
    ``trace``: the long table of ``methods.design.traces``; ``metrics``: {column: "NC1: what it measures"}
    (``methods.design.TRACED_METRICS``), the title of each panel and, split at the colon, its y-label.
    Values below :data:`FLOOR` (zero up to float rounding) are left out."""
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.6 * len(metrics) + 1.5, 3.8), constrained_layout=True, squeeze=False
    )
    axes = axes[0]
    final = trace[trace["run"] == reference].sort_values("step").iloc[-1]
    runs = list(dict.fromkeys(trace["run"]))  # one colour per run in every panel, whichever runs a panel shows
    for ax, (metric, title) in zip(axes, metrics.items()):
        shown = trace[trace[metric] > FLOOR]  # 0 up to rounding (a frozen ETF's own NC2) has no place on a log axis
        sns.lineplot(shown, x="step", y=metric, hue="run", hue_order=runs, ax=ax, marker="o", markersize=3,
                     legend=ax is axes[-1])  # fmt: skip
        if final[metric] > FLOOR:
            ax.axhline(final[metric], color="black", linestyle="--", linewidth=1)
        name, _, words = title.partition(": ")
        ax.set(xscale="log", yscale="log", xlabel="optimisation step (log scale)",
               ylabel=f"{name}, log scale\n({words})" if words else f"{name}, log scale", title=title)  # fmt: skip
        ax.title.set_fontsize(10)
    axes[-1].plot([], [], color="black", linestyle="--", linewidth=1, label=f"{reference}, final value")
    figure_legend(fig, axes, "right", title="run")
    return fig


def _short(metric: str) -> str:
    """A metric's column name as a short, wrapped axis label: "nc2_equinorm_means" → "NC2\nequinorm" (the
    trace's "sphere:" prefix dropped: the plot's title names the space)."""
    name, *rest = metric.removeprefix("sphere:").split("_")
    return "\n".join([name.upper(), *[word for word in rest if word not in ("means", "weights")][:1]])


def plot_first_match(matches: pd.DataFrame, within: float = 0.075) -> plt.Figure:
    """For every run and NC metric, the fraction of the reference run's steps it needed to reach (and keep)
    the reference's final value (``tables.first_match``); a run that never did is drawn at 1 with a hatch.
    The dotted line is seed 004's 7.5 %. The title names the space: the unit sphere when every metric is a
    trace's ``sphere:`` column, each run's classifier space otherwise."""
    frame = matches.assign(shown=matches["fraction"].fillna(1.0), metric=matches["metric"].map(_short))
    fig, ax = plt.subplots(figsize=(10, 3.8), constrained_layout=True)
    sns.barplot(frame, x="metric", y="shown", hue="run", ax=ax)
    for bars, (_, part) in zip(ax.containers, frame.groupby("run", sort=False)):
        for bar, missing in zip(bars, part["fraction"].isna()):
            if missing:
                bar.set_hatch("//")
    ax.axhline(within, color="black", linestyle=":", linewidth=1, label=f"{within:.1%} (seed 004)")
    on_sphere = matches["metric"].str.startswith("sphere:")
    if on_sphere.any() and not on_sphere.all():
        raise ValueError("plot_first_match draws one space at a time: pass the sphere: metrics or the others")
    space = "on the unit sphere" if len(matches) and on_sphere.all() else "each in its classifier's space"
    ax.set(ylim=(0, 1.05), xlabel="", ylabel="fraction of the reference's steps",
           title=f"how early each loss reaches cross-entropy's final collapse, {space} (hatched: never)")  # fmt: skip
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    return fig


def plot_accuracies(frame: pd.DataFrame, x: str, hue: str, title: str, y: str = "test_accuracy") -> plt.Figure:
    """Bars of an accuracy column (``y``) grouped by ``x`` and coloured by ``hue``, on [0, 1], the value on
    each bar: the classifiers of each encoder (``tables.prototype_vs_probe``), or transfer accuracies."""
    fig, ax = plt.subplots(figsize=(10, 3.8), constrained_layout=True)
    sns.barplot(frame, x=x, y=y, hue=hue, ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set(ylim=(0, 1.08), xlabel="", ylabel=y.replace("_", " "), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    return fig
