"""Figures of training and collapse (notebooks 01 and 02): histories, images, NC over training, the
geometry of the class means, NC by stage."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib import ticker

from ..collapse import class_means, gram_of_means
from ..data import ImageSet
from ..etf import simplex_etf_gram
from .style import HALF_AXES_IN, MAX_WIDTH_IN, figure_legend, is_accuracy, metric_label, panel_grid, wrap

__all__ = [
    "history_frame",
    "plot_history",
    "show_images",
    "plot_collapse",
    "plot_geometry",
    "plot_stages",
    "plot_class_variability",
]


def history_frame(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Long table of training histories: one row per (run, epoch, split) with loss, accuracy and lr."""
    rows = []
    for run, history in histories.items():
        for record in history:
            for split in ("train", "test"):
                if f"{split}_loss" in record:
                    rows.append(
                        {
                            "run": run,
                            "epoch": record["epoch"],
                            "split": split,
                            "lr": record["lr"],
                            "loss": record[f"{split}_loss"],
                            "accuracy": record[f"{split}_acc"],
                        }
                    )
    return pd.DataFrame(rows)


def _epoch_axis(ax: plt.Axes) -> None:
    """Ticks at whole epochs only (a run of 2 epochs has no epoch 1.5), written 1, 10, 100 on a log axis."""
    if ax.get_xscale() == "log":
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))


def plot_history(histories: dict[str, list[dict]], title: str | None = None) -> plt.Figure:
    """Loss, accuracy and learning rate against the epoch for each run (colour) and split (dashes), two
    panels to a row; one legend, in the empty cell beside the learning rate.

    ``histories``: {"regime A": run.history, …}. Train metrics are averaged over the augmented batches
    of the epoch; test metrics are measured after it, without augmentation.
    """
    frame = history_frame(histories)
    fig, axes = panel_grid(3, per_row=2, row_height=3.0)
    markers = frame["epoch"].nunique() <= 12  # few epochs: show the points
    for ax, metric in zip(axes[:2], ("loss", "accuracy")):
        sns.lineplot(frame, x="epoch", y=metric, hue="run", style="split", ax=ax, marker="o" if markers else None)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss, log scale\n(cross-entropy)")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("accuracy")
    lrs = frame.drop_duplicates(["run", "epoch"])
    sns.lineplot(lrs, x="epoch", y="lr", hue="run", ax=axes[2], drawstyle="steps-post", legend=False)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate, log scale\n(at the start of each epoch)")
    for ax in axes:
        _epoch_axis(ax)
    figure_legend(fig, axes, "cell")
    if title:
        fig.suptitle(title)
    return fig


def show_images(
    images: ImageSet | torch.Tensor, labels=None, classes=None, count: int = 16, title: str | None = None
) -> plt.Figure:
    """A grid of ``count`` images with their class names (wrapped at their spaces and underscores), eight
    to a row, the figure at most :data:`~nclab.plots.style.MAX_WIDTH_IN` wide.

    ``images`` is an ImageSet (a fixed random sample of it is shown), or a (B, 3, H, W) tensor: uint8
    (0–255), or floats in [0, 1] as a GpuLoader yields them.
    """
    if isinstance(images, ImageSet):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
        images, labels, classes = images.images[pick], images.labels[pick], images.classes
    images = images[:count].detach().cpu()
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    columns = min(8, len(images))
    rows = -(-len(images) // columns)
    side = min(1.6, MAX_WIDTH_IN / columns)  # inches per image
    height = side + (0.35 if labels is not None else 0.05)  # an image and its title
    fig, axes = plt.subplots(
        rows, columns, figsize=(side * columns, height * rows + 0.4 * bool(title)), squeeze=False, layout="compressed"
    )
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].clamp(0, 1).permute(1, 2, 0).numpy())
            if labels is not None:
                label = int(labels[i])
                name = classes[label].replace("_", " ") if classes is not None else str(label)
                ax.set_title(wrap(name, side, 9), fontsize=9)  # "aquarium_fish" on two lines: "aquarium", "fish"
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------------
# Neural collapse

_COLLAPSE_PANELS = [  # (title: the formula, columns: {line label: key}, log scale); y-label from METRIC_LABELS
    ("Tr(Σ_W Σ_B†)/C", {"": "nc1"}, True),
    ("CoV of the norms of μ_c − μ_G and of w_c", {"means": "nc2_equinorm_means", "weights": "nc2_equinorm_weights"},
     False),
    ("std of the pairwise cosines", {"means": "nc2_equiangular_means", "weights": "nc2_equiangular_weights"}, False),
    ("mean |cos + 1/(C−1)|", {"means": "nc2_maxangle_means", "weights": "nc2_maxangle_weights"}, False),
    ("‖Wᵀ/‖W‖ − M/‖M‖‖²", {"": "nc3"}, True),
    ("fraction where argmax Wh + b ≠ argmin ‖h − μ_c‖", {"": "nc4_ncc_mismatch"}, False),
    ("top-1 accuracy", {"": "accuracy"}, False),
]  # fmt: skip
_CURVES = {"train": "", "test": (4, 2), "classifier W": (1, 2)}  # line style of each curve, in every panel


def plot_collapse(frame: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """NC1–NC4 and accuracy against the epoch, in the style of Papyan et al. (2020), Figs. 2–7.

    ``frame``: the output of ``nclab.tables.nc_over_training`` (rows with stage "output"). Colour = run,
    line style = split (train solid, test dashed; the classifier's own NC2, dotted); two panels to a row,
    one legend in the empty cell after the last. Each y-axis names its metric in words; every metric's
    ideal value is 0 (accuracy: 1, on a linear axis).
    """
    frame = frame[frame.get("stage", "output") == "output"] if "stage" in frame else frame
    fig, axes = panel_grid(len(_COLLAPSE_PANELS), per_row=2, row_height=2.8)
    for ax, (panel, columns, log) in zip(axes, _COLLAPSE_PANELS):
        long = frame.melt(
            id_vars=["run", "epoch", "split"],
            value_vars=[c for c in columns.values() if c in frame],
            var_name="metric",
            value_name="value",
        )
        long = long[~(long["metric"].str.endswith("_weights") & (long["split"] != "train"))]  # W: one per epoch
        long["curve"] = long["split"].where(~long["metric"].str.endswith("_weights"), "classifier W")
        curves = [c for c in _CURVES if c in set(long["curve"])]
        sns.lineplot(long, x="epoch", y="value", hue="run", style="curve", style_order=curves,
                     dashes={c: _CURVES[c] for c in curves}, marker="o", ax=ax)  # fmt: skip
        metric = next(iter(columns.values()))
        log = log and not is_accuracy(metric) and (long["value"] > 0).all()
        ax.set(xscale="log" if frame["epoch"].max() > 20 else "linear")
        ax.set_title(wrap(panel, HALF_AXES_IN, 10), fontsize=10)
        ax.set_ylabel(wrap(metric_label(metric, log, wrap=True), 2.6, 12))
        if log:
            ax.set_yscale("log")
        if is_accuracy(metric):
            ax.set_ylim(0, 1.02)
        _epoch_axis(ax)
    figure_legend(fig, axes, "cell")
    if title:
        fig.suptitle(title)
    return fig


def plot_geometry(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    shown: tuple[int, ...] = (0, 1, 2),
    title: str | None = None,
) -> plt.Figure:
    """Top: the cosine Gram of the centred class means next to the simplex ETF's (diagonal 1,
    off-diagonal −1/(C−1)). Below: the features of the ``shown`` classes projected on the plane spanned by
    their centred means — under collapse, three tight clusters at the corners of an equilateral triangle;
    their legend in the empty cell beside it."""
    means, _ = class_means(features, labels)  # (C, p)
    G, C = gram_of_means(means).cpu(), len(means)
    fig, (ax_gram, ax_etf, ax_proj) = panel_grid(3, per_row=2, row_height=3.3)
    for ax, matrix, name in (
        (ax_gram, G, "cosines of centred class means"),
        (ax_etf, simplex_etf_gram(C), "simplex ETF"),
    ):
        sns.heatmap(
            matrix.numpy(),
            ax=ax,
            vmin=-1,
            vmax=1,
            cmap="RdBu_r",
            square=True,
            xticklabels=C <= 20,
            yticklabels=C <= 20,
            cbar=ax is ax_etf,
        )
        ax.set_title(name)
    chosen = torch.tensor(shown)
    centre = means[chosen].mean(0)  # (p,)
    basis, _ = torch.linalg.qr((means[chosen[1:]] - means[chosen[0]]).T)  # (p, 2) orthonormal
    for c in shown:
        points = (features[labels == c].double() - centre) @ basis  # (N_c, 2)
        dots = ax_proj.scatter(points[:, 0], points[:, 1], s=6, alpha=0.4, label=classes[c])
        mean = (means[c] - centre) @ basis
        ax_proj.scatter(mean[0], mean[1], s=160, marker="*", color=dots.get_facecolor()[0][:3], edgecolor="k")
    ax_proj.set(title="features of three classes,\non the plane of their means", aspect="equal")
    figure_legend(fig, [ax_proj], "cell", markerscale=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_stages(frame: pd.DataFrame, metric: str = "nc1") -> plt.Figure:
    """``metric`` at the output of every residual stage (x) for each run and saved epoch (colour), two
    runs to a row; one legend, right of the panels. NC metrics on a log axis; an accuracy
    (``ncc_accuracy``) on [0, 1]."""
    stages = frame[frame["stage"] != "output"]
    fig, axes = panel_grid(stages["run"].nunique(), per_row=2, row_height=3.4, sharey=True)
    log = not is_accuracy(metric) and bool((stages[metric] > 0).all())
    for ax, (run, part) in zip(axes, stages.groupby("run", sort=False)):
        sns.lineplot(part, x="stage", y=metric, hue="epoch", style="split", marker="o", ax=ax, palette="viridis")
        ax.set(
            title=f"run {run}: {metric} by depth",
            xlabel="stage (network depth)",
            ylabel=metric_label(metric, log, wrap=True),
        )
        ax.set_yscale("log" if log else "linear")
        ax.tick_params(axis="x", rotation=30)
        if is_accuracy(metric):
            ax.set_ylim(0, 1.02)
    figure_legend(fig, axes, "right")
    return fig


def plot_class_variability(variability: torch.Tensor, classes: list[str], top: int = 20) -> plt.Figure:
    """Per-class within-class variability Tr(Σ_W,c)/Tr(Σ_B), sorted: the tallest bars collapse last."""
    order = torch.argsort(variability.cpu(), descending=True)[:top]
    frame = pd.DataFrame({"class": [classes[i] for i in order], "variability": variability.cpu()[order].numpy()})
    fig, ax = plt.subplots(figsize=(min(0.45 * len(frame) + 2, MAX_WIDTH_IN), 3.5), constrained_layout=True)
    sns.barplot(frame, x="class", y="variability", ax=ax, color="tab:blue")
    ax.set(ylabel="within-class variability\nTr(Σ_W,c) / Tr(Σ_B)", title=f"the {len(frame)} least collapsed classes")
    ax.tick_params(axis="x", rotation=60)
    return fig
