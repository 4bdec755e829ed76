"""Figures of neural collapse by design (notebook 08): every NC metric along training for every loss, how
early each loss reaches cross-entropy's final collapse, and the accuracy of each classifier."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import HALF_AXES_IN, MAX_WIDTH_IN, figure_legend, panel_grid, wrap

__all__ = ["plot_nc_trace", "plot_first_match", "plot_accuracies"]

FLOOR = 1e-6  # NC values below this are 0 up to float32 rounding (a frozen ETF's NC2): not drawn on a log axis


def plot_nc_trace(trace: pd.DataFrame, metrics: dict[str, str], reference: str = "CE") -> plt.Figure:
    """One panel per NC metric (log scales), two to a row, one line per run, against the optimisation step
    (log): the reference run's final value is a dashed line, the level the others race to; one legend, in
    the empty cell after the last panel (below when there is none).
    ``trace``: the long table of ``methods.design.traces``; ``metrics``: {column: "NC1: what it measures"}
    (``methods.design.TRACED_METRICS``), the title of each panel and, split at the colon, its y-label.
    Values below :data:`FLOOR` (zero up to float rounding) are left out."""
    fig, axes = panel_grid(len(metrics), per_row=2, row_height=3.2)
    final = trace[trace["run"] == reference].sort_values("step").iloc[-1]
    runs = list(dict.fromkeys(trace["run"]))  # one colour per run in every panel, whichever runs a panel shows
    for ax, (metric, title) in zip(axes, metrics.items()):
        shown = trace[trace[metric] > FLOOR]  # 0 up to rounding (a frozen ETF's own NC2) has no place on a log axis
        sns.lineplot(shown, x="step", y=metric, hue="run", hue_order=runs, ax=ax, marker="o", markersize=3,
                     legend=ax is axes[-1])  # fmt: skip
        if final[metric] > FLOOR:
            ax.axhline(final[metric], color="black", linestyle="--", linewidth=1)
        name, _, words = title.partition(": ")
        ax.set(xscale="log", yscale="log", xlabel="optimisation step\n(log scale)",
               ylabel=wrap(f"{name}, log scale\n({words})" if words else f"{name}, log scale", 2.6, 12))  # fmt: skip
        ax.set_title(wrap(title, HALF_AXES_IN, 10), fontsize=10)
    axes[-1].plot([], [], color="black", linestyle="--", linewidth=1, label=f"{reference}, final value")
    figure_legend(fig, axes, "cell", title="run")
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
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 4), constrained_layout=True)
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
    title = f"how early each loss reaches cross-entropy's final collapse, {space} (hatched: never)"
    ax.set(ylim=(0, 1.05), xlabel="", ylabel="fraction of the\nreference's steps")
    ax.set_title(wrap(title, MAX_WIDTH_IN - 1, 12))
    figure_legend(fig, [ax], "below")
    return fig


def plot_accuracies(frame: pd.DataFrame, x: str, hue: str, title: str, y: str = "test_accuracy") -> plt.Figure:
    """Bars of an accuracy column (``y``) grouped by ``x`` and coloured by ``hue``, on [0, 1], the value on
    each bar: the classifiers of each encoder (``tables.prototype_vs_probe``), or transfer accuracies. The
    legend below."""
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 4), constrained_layout=True)
    sns.barplot(frame, x=x, y=y, hue=hue, ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.2f", fontsize=8, rotation=90, padding=2)
    ax.set(ylim=(0, 1.2), xlabel="", ylabel=y.replace("_", " "), title=wrap(title, MAX_WIDTH_IN - 1, 12))
    figure_legend(fig, [ax], "below")
    return fig
