"""Figures of out-of-distribution generalisation on Colored-MNIST (notebook 06): every method in every
environment, the ETF distance against the test accuracy, the inferred environments round by round, and
the learnt input mask."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from .style import MAX_WIDTH_IN, figure_legend, panel_grid, wrap

__all__ = ["plot_ood_generalization", "plot_etf_vs_accuracy", "plot_partition", "plot_mask", "plot_masked_sample"]


def plot_ood_generalization(frame: pd.DataFrame, ceiling: float = 0.75) -> plt.Figure:
    """Bars of accuracy per method (x), one bar per environment (hue), with chance (0.5) and the best an
    invariant predictor can do (``ceiling``, 1 − the label noise) as lines; the legend below. ``frame``: the
    output of ``nclab.tables.ood_generalization``."""
    fig, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 4.2), constrained_layout=True)
    sns.barplot(frame, x="method", y="accuracy", hue="environment", ax=ax)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.axhline(ceiling, color="black", linestyle="--", label=f"shape only ({ceiling:.0%})")
    ax.set(ylim=(0, 1), xlabel="", ylabel="accuracy", title="accuracy in each environment")
    ax.tick_params(axis="x", rotation=20)
    figure_legend(fig, [ax], "below")
    return fig


def plot_etf_vs_accuracy(frame: pd.DataFrame, environment: str | None = None) -> plt.Figure:
    """One point per method: the ETF distance of ``environment``'s class means (x, default the test
    environment, the last in ``frame``) against the accuracy there (y). Aligned with the classifier's
    ETF = left."""
    environment = frame["environment"].iloc[-1] if environment is None else environment
    part = frame[frame["environment"] == environment]
    fig, ax = plt.subplots(figsize=(6.5, 4.3), constrained_layout=True)
    sns.scatterplot(part, x="etf_distance", y="accuracy", hue="method", s=90, ax=ax, legend=False)
    for row in part.itertuples():
        ax.annotate(row.method, (row.etf_distance, row.accuracy), fontsize=8, xytext=(5, 3), textcoords="offset points")
    ax.set(
        xlabel=f"‖P − Ŵ‖_F in {environment} (class means vs the classifier's ETF)",
        ylabel=f"accuracy in {environment}",
        title="alignment with the ETF against OOD accuracy",
    )
    return fig


def plot_partition(frame: pd.DataFrame) -> plt.Figure:
    """Environment inference round by round: the size of each inferred environment (left) and the fraction
    of its samples whose colour agrees with their label (right); the legend below. ``frame``: the output of
    ``nclab.tables.partition_rounds``."""
    fig, axes = panel_grid(2, per_row=2, row_height=3.4)
    frame = frame.assign(environment=frame["environment"].astype(str))
    sns.lineplot(frame, x="round", y="samples", hue="environment", marker="o", ax=axes[0])
    axes[0].set(title="samples per inferred environment", xlabel="round (0 = the starting split)",
                ylabel="samples")  # fmt: skip
    if "colour_agrees" in frame:
        sns.lineplot(frame, x="round", y="colour_agrees", hue="environment", marker="o", ax=axes[1], legend=False)
        axes[1].set(ylim=(-0.02, 1.02), title="colour agrees with the label", xlabel="round",
                    ylabel="fraction whose colour agrees")  # fmt: skip
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    figure_legend(fig, axes, "below", title="inferred environment")
    return fig


def plot_mask(mask: torch.Tensor, channels: list[str], title: str = "the learnt mask m") -> plt.Figure:
    """The mask (3, H, W) in [0, 1], one panel per channel of its basis (``channels``), white = kept."""
    fig, axes = panel_grid(len(channels), per_row=3, row_height=2.6)
    for ax, values, name in zip(axes, mask.detach().cpu(), channels):
        image = ax.imshow(values.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set(xticks=[], yticks=[])
        ax.set_title(f"{name}:\nmean {values.mean():.2f}", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(title)
    return fig


def plot_masked_sample(image: torch.Tensor, masked: torch.Tensor, caption: str) -> plt.Figure:
    """One image (3, H, W) in [0, 1] beside what the encoder sees after the mask, and the difference."""
    fig, axes = panel_grid(3, per_row=3, row_height=3.0)
    panels = {"input x": image, "masked input (what the encoder sees)": masked, "removed: x − masked": image - masked}
    for ax, (name, picture) in zip(axes, panels.items()):
        ax.imshow(picture.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
        ax.set(xticks=[], yticks=[])
        ax.set_title(wrap(name, MAX_WIDTH_IN / 3 - 0.2, 9), fontsize=9)
    fig.suptitle(wrap(caption, MAX_WIDTH_IN - 0.5, 10), fontsize=10)
    return fig
