"""Figures of the unconstrained-features model (notebook 00): every NC metric along gradient descent on
log scales, the simplex appearing in 2-D and 3-D, the pairwise-cosine bound, the weight-decay sweep
against the closed form, and minority collapse under imbalance."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..collapse import class_means
from ..features import FeatureSet
from ..ufm import optimum
from .style import HALF_AXES_IN, MAX_WIDTH_IN, figure_legend, metric_label, panel_grid, wrap

__all__ = ["plot_ufm_trajectory", "plot_simplex", "plot_cosine_search", "plot_lambda_sweep", "plot_imbalance_sweep"]

ZERO = 1e-16  # an exact 0 (NC4's mismatch once every sample agrees) is drawn here on a log axis

_UFM_PANELS = {  # title (the formula): {legend label: column}; the y-axis names the metric in words
    "Tr(Σ_W Σ_B†)/C": {"": "nc1"},
    "CoV of the norms": {"means": "nc2_equinorm_means", "weights": "nc2_equinorm_weights"},
    "std of the pairwise cosines": {"means": "nc2_equiangular_means", "weights": "nc2_equiangular_weights"},
    "mean |cos + 1/(C−1)|": {"means": "nc2_maxangle_means", "weights": "nc2_maxangle_weights"},
    "‖WWᵀ/‖WWᵀ‖ − ETF‖ (normalised)": {"": "nc2_etf_distance"},
    "‖Wᵀ/‖W‖ − M/‖M‖‖²": {"": "nc3"},
    "fraction where argmax Wh + b ≠ argmin ‖h − μ_c‖": {"": "nc4_ncc_mismatch"},
    "objective − closed-form optimum": {"": "gap"},
}
_CURVE_NAMES = {"means": "class means μ_c − μ_G", "weights": "classifier rows w_c"}
_LABELS = {"gap": "distance to the optimum (objective gap)"}


def plot_ufm_trajectory(trajectory: pd.DataFrame, optimum: float | None = None, title: str | None = None) -> plt.Figure:
    """Every SPEC §1 metric of a UFM run (``UFM.fit``'s trajectory) against the gradient step, both axes
    logarithmic, in the layout of ``plot_collapse`` (two panels to a row): each y-axis names its metric in
    words, each title gives its formula; one legend (NC2 of the class means and of the classifier rows), in
    the empty cell after the last panel (below when there is none). ``optimum``:
    the closed-form objective (``ufm.optimum(...)["objective"]``), whose gap to the objective gets the
    last panel. Step 0 has no place on a log axis and is left out; an exact 0 is drawn at 10⁻¹⁶
    (:data:`ZERO`)."""
    frame = trajectory[trajectory["step"] > 0].copy()
    if optimum is not None:
        frame["gap"] = frame["objective"] - optimum
    panels = {name: columns for name, columns in _UFM_PANELS.items() if set(columns.values()) <= set(frame)}
    fig, axes = panel_grid(len(panels), per_row=2, row_height=2.8)
    for ax, (name, columns) in zip(axes, panels.items()):
        for label, column in columns.items():
            ax.plot(frame["step"], frame[column].clip(lower=ZERO), marker="o", markersize=3,
                    label=_CURVE_NAMES.get(label))  # fmt: skip
        column = next(iter(columns.values()))
        ylabel = _LABELS.get(column) or metric_label(column, log=True, wrap=True)
        ax.set(xscale="log", yscale="log", xlabel="gradient step (log scale)", ylabel=wrap(ylabel, 2.6, 12))
        ax.set_title(wrap(name, HALF_AXES_IN, 10), fontsize=10)
    figure_legend(fig, axes, "cell", title="NC2 of the")
    if title:
        fig.suptitle(title)
    return fig


def plot_simplex(snapshots: dict[int, FeatureSet], steps: list[int], title: str | None = None) -> plt.Figure:
    """The free features themselves at the given ``steps`` of a UFM with p = 2 (a plane) or p = 3 (3-D
    axes): one colour per class, the class means as stars joined by the edges of their simplex — a triangle
    for C = 3, a tetrahedron for C = 4 once collapsed; two steps to a row. ``snapshots``: ``UFM.snapshots``."""
    dim = next(iter(snapshots.values())).features.shape[1]
    if dim not in (2, 3):
        raise ValueError(f"plot_simplex draws features of 2 or 3 dimensions, not {dim}: use plot_geometry")
    missing = [step for step in steps if step not in snapshots]
    if missing:
        raise ValueError(f"steps {missing} were not recorded; recorded: {sorted(snapshots)}")
    projection = "3d" if dim == 3 else None
    fig, axes = panel_grid(len(steps), per_row=2, row_height=3.4, subplot_kw={"projection": projection})
    for ax, step in zip(axes, steps):
        fs = snapshots[step]
        H, y = fs.features.double(), fs.labels
        means, _ = class_means(H, y)
        colours = sns.color_palette(n_colors=len(means))
        for c, mean in enumerate(means):
            ax.scatter(*H[y == c].T, s=10, alpha=0.5, color=colours[c])
            ax.scatter(*mean[:, None], s=220, marker="*", color=colours[c], edgecolor="k", label=f"class {c}")
        for i in range(len(means)):
            for j in range(i + 1, len(means)):
                ax.plot(*torch.stack([means[i], means[j]]).T, color="grey", linewidth=1)
        ax.set_title(f"step {step}")
        if dim == 2:
            ax.set_aspect("equal", adjustable="datalim")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    if title:
        fig.suptitle(title)
    return fig


def plot_cosine_search(frame: pd.DataFrame) -> plt.Figure:
    """The pairwise cosines of the best configurations of ``ufm.cosine_table``: the mean (left) and the
    largest (right) against C, one line per dimension, the bound −1/(C−1) dashed; the legend below."""
    fig, axes = panel_grid(2, per_row=2, row_height=3.4, sharey=True)
    bound = frame.drop_duplicates("C").sort_values("C")
    for ax, (column, what) in zip(axes, (("mean", "mean"), ("largest", "largest"))):
        shown = frame[frame["target"] == column]
        sns.lineplot(shown, x="C", y=column, hue="dimension", marker="o", ax=ax)
        ax.plot(bound["C"], bound["bound"], "k--", label="−1/(C−1)")
        ax.set(xlabel="number of vectors C", ylabel=f"{what} pairwise cosine")
        ax.set_title(wrap(f"the {what} pairwise cosine, made as small as possible", 2.9, 12))  # its axes: 3 in
    figure_legend(fig, axes, "below", title="dimension p")
    return fig


def plot_lambda_sweep(frame: pd.DataFrame) -> plt.Figure:
    """``ufm.lambda_sweep``: the norms gradient descent reaches (markers) on the closed form (lines, from
    ``ufm.optimum`` on a fine grid of λ), against λ; the dotted line is κ = √n λ = 1/C, past which the
    optimum is W = 0, H = 0. The legend below."""
    C, n = int(frame["C"].iloc[0]), int(frame["n"].iloc[0])
    grid = np.geomspace(frame["lambda"].min(), frame["lambda"].max(), 200)
    closed = pd.DataFrame([optimum(C, n, lam, lam) for lam in grid])
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 4), constrained_layout=True)
    for name, colour in (("w_norm", "tab:blue"), ("h_norm", "tab:orange")):
        ax.plot(grid, closed[name], color=colour, label=f"{name}: closed form")
        ax.plot(frame["lambda"], frame[name], "o", color=colour, label=f"{name}: gradient descent")
    ax.axvline(1 / (C * math.sqrt(n)), color="grey", linestyle=":", label="κ = 1/C")
    ax.set(xscale="log", xlabel="weight decay λ (= λ_H = λ_W = λ_b), log scale", ylabel="mean norm",
           title=f"norms at the optimum (C = {C}, n = {n})")  # fmt: skip
    figure_legend(fig, [ax], "below", ncol=3)
    return fig


def plot_imbalance_sweep(frame: pd.DataFrame) -> plt.Figure:
    """``ufm.imbalance_sweep``: the cosine between the minority classifier rows and between the minority
    class means against the imbalance ratio (left; dashed: the ETF's −1/(C−1)), and the minority classes'
    training accuracy (right); the legend below."""
    fig, (ax, ax_acc) = panel_grid(2, per_row=2, row_height=3.6)
    ax.plot(frame["ratio"], frame["cos_minority_weights"], "o-", label="minority rows of W")
    ax.plot(frame["ratio"], frame["cos_minority_means"], "s-", label="minority class means")
    ax.axhline(frame["cos_etf"].iloc[0], color="k", linestyle="--", label="ETF: −1/(C−1)")
    ax.axhline(1, color="grey", linestyle=":", label="merged")
    ax.set(xscale="log", xlabel="majority / minority size\n(log scale)", ylabel="cosine between\nminority classes",
           title="minority collapse")  # fmt: skip
    figure_legend(fig, [ax, ax_acc], "below")
    ax_acc.plot(frame["ratio"], frame["minority_accuracy"], "o-", color="tab:red")
    ax_acc.set(xscale="log", xlabel="majority / minority size\n(log scale)", ylabel="accuracy", ylim=(-0.05, 1.05),
               title="training accuracy of\nthe minority classes")  # fmt: skip
    return fig
