"""Figures of the course, drawn with seaborn/matplotlib. Each function returns its Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .collapse import class_means, gram_of_means
from .data import ImageSet
from .etf import simplex_etf_gram
from .ood import detection_metrics, roc_curve

__all__ = [
    "history_frame",
    "plot_history",
    "show_images",
    "plot_collapse",
    "plot_geometry",
    "plot_stages",
    "plot_class_variability",
    "plot_score_histograms",
    "plot_roc_curves",
    "plot_threshold",
    "plot_principal_plane",
    "plot_dim_sweep",
    "plot_nc5_over_training",
    "plot_layerwise",
    "plot_tradeoff",
]

sns.set_theme(context="notebook", style="whitegrid")


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


def plot_history(histories: dict[str, list[dict]], title: str | None = None) -> plt.Figure:
    """Loss, accuracy and learning rate against the epoch for each run (colour) and split (dashes).

    ``histories``: {"regime A": run.history, …}. Train metrics are averaged over the augmented batches
    of the epoch; test metrics are measured after it, without augmentation.
    """
    frame = history_frame(histories)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    markers = frame["epoch"].nunique() <= 12  # few epochs: show the points
    for ax, metric in zip(axes[:2], ("loss", "accuracy")):
        sns.lineplot(frame, x="epoch", y=metric, hue="run", style="split", ax=ax, marker="o" if markers else None)
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, 1)
    lrs = frame.drop_duplicates(["run", "epoch"])
    sns.lineplot(lrs, x="epoch", y="lr", hue="run", ax=axes[2], drawstyle="steps-post", legend=False)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate (start of epoch)")
    if title:
        fig.suptitle(title)
    return fig


def show_images(
    images: ImageSet | torch.Tensor, labels=None, classes=None, count: int = 16, title: str | None = None
) -> plt.Figure:
    """A grid of ``count`` images with their class names.

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
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].clamp(0, 1).permute(1, 2, 0).numpy())
            if labels is not None:
                label = int(labels[i])
                ax.set_title(classes[label] if classes is not None else str(label), fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# Neural collapse

_COLLAPSE_PANELS = [  # (title, columns: {label: key}, log scale)
    ("NC1: Tr(Σ_W Σ_B†)/C", {"": "nc1"}, True),
    ("NC2: equinorm (CoV of norms)", {"means": "nc2_equinorm_means", "weights": "nc2_equinorm_weights"}, False),
    (
        "NC2: equiangularity (std of cosines)",
        {"means": "nc2_equiangular_means", "weights": "nc2_equiangular_weights"},
        False,
    ),
    (
        "NC2: max-angle (mean |cos + 1/(C−1)|)",
        {"means": "nc2_maxangle_means", "weights": "nc2_maxangle_weights"},
        False,
    ),
    ("NC3: ‖Wᵀ/‖W‖ − M/‖M‖‖²", {"": "nc3"}, True),
    ("NC4: mismatch with the NCC classifier", {"": "nc4_ncc_mismatch"}, False),
    ("accuracy", {"": "accuracy"}, False),
]


def plot_collapse(frame: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """NC1–NC4 and accuracy against the epoch, in the style of Papyan et al. (2020), Figs. 2–7.

    ``frame``: the output of ``nclab.tables.nc_over_training`` (rows with stage "output"). Colour = run,
    line style = split (or means/weights for NC2). Every metric's ideal value is 0 (accuracy: 1).
    """
    frame = frame[frame.get("stage", "output") == "output"] if "stage" in frame else frame
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5), constrained_layout=True)
    for ax, (panel, columns, log) in zip(axes.flat, _COLLAPSE_PANELS):
        long = frame.melt(
            id_vars=["run", "epoch", "split"],
            value_vars=[c for c in columns.values() if c in frame],
            var_name="metric",
            value_name="value",
        )
        long = long[~(long["metric"].str.endswith("_weights") & (long["split"] != "train"))]  # W: one per epoch
        long["curve"] = long["split"] + long["metric"].map({v: f" {k}" if k else "" for k, v in columns.items()})
        long.loc[long["metric"].str.endswith("_weights"), "curve"] = "weights"
        sns.lineplot(long, x="epoch", y="value", hue="run", style="curve", marker="o", ax=ax)
        ax.set(title=panel, ylabel="", xscale="log" if frame["epoch"].max() > 20 else "linear")
        if log and (long["value"] > 0).all():
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes.flat[-1].axis("off")
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
    """Left: the cosine Gram of the centred class means next to the simplex ETF's (diagonal 1,
    off-diagonal −1/(C−1)). Right: the features of the ``shown`` classes projected on the plane spanned by
    their centred means — under collapse, three tight clusters at the corners of an equilateral triangle."""
    means, _ = class_means(features, labels)  # (C, p)
    G, C = gram_of_means(means).cpu(), len(means)
    fig, (ax_gram, ax_etf, ax_proj) = plt.subplots(1, 3, figsize=(15, 4.3), constrained_layout=True)
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
    ax_proj.set(title="features of three classes, on the plane of their means", aspect="equal")
    ax_proj.legend(fontsize=8, markerscale=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_stages(frame: pd.DataFrame, metric: str = "nc1") -> plt.Figure:
    """``metric`` at the output of every residual stage (x) for each run and saved epoch (colour)."""
    stages = frame[frame["stage"] != "output"]
    fig, axes = plt.subplots(
        1,
        stages["run"].nunique(),
        figsize=(6 * stages["run"].nunique(), 4),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    for ax, (run, part) in zip(axes.flat, stages.groupby("run", sort=False)):
        sns.lineplot(part, x="stage", y=metric, hue="epoch", style="split", marker="o", ax=ax, palette="viridis")
        ax.set(title=f"run {run}: {metric} by depth", yscale="log" if (part[metric] > 0).all() else "linear")
    return fig


def plot_class_variability(variability: torch.Tensor, classes: list[str], top: int = 20) -> plt.Figure:
    """Per-class within-class variability Tr(Σ_W,c)/Tr(Σ_B), sorted: the tallest bars collapse last."""
    order = torch.argsort(variability.cpu(), descending=True)[:top]
    frame = pd.DataFrame({"class": [classes[i] for i in order], "variability": variability.cpu()[order].numpy()})
    fig, ax = plt.subplots(figsize=(min(0.45 * len(frame) + 2, 14), 3.5), constrained_layout=True)
    sns.barplot(frame, x="class", y="variability", ax=ax, color="tab:blue")
    ax.set(ylabel="Tr(Σ_W,c) / Tr(Σ_B)", title=f"the {len(frame)} least collapsed classes")
    ax.tick_params(axis="x", rotation=60)
    return fig


# ----------------------------------------------------------------------------------------------------
# OOD detection (notebooks 03 and 04). ``scores`` is {detector: {"ID": (n,), ood set: (m,), …}}, every
# score higher = in-distribution.


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


# ----------------------------------------------------------------------------------------------------
# Layer by layer (notebook 05)


def plot_layerwise(frame: pd.DataFrame, metrics: tuple[str, ...] = ("nc1", "ncc_accuracy")) -> plt.Figure:
    """Each of ``metrics`` against the depth (x: the layers in network order), one line per model.

    ``frame``: the tidy output of ``nclab.tables.layerwise_nc`` (model, stage, metric, value). NC grows
    with depth when nc1 falls (log scale) and the nearest-class-centre accuracy rises.
    """
    order = list(dict.fromkeys(frame["stage"]))  # stem … layer4, then the projector
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4), squeeze=False, constrained_layout=True)
    for ax, metric in zip(axes[0], metrics):
        part = frame[frame["metric"] == metric]
        sns.pointplot(part, x="stage", y="value", hue="model", order=order, ax=ax, markers="o")
        ax.set(title=metric, xlabel="layer", ylabel="")
        if metric.startswith("nc") and (part["value"] > 0).all() and metric != "ncc_accuracy":
            ax.set_yscale("log")
    return fig


def plot_tradeoff(frame: pd.DataFrame, tasks: dict[str, str] | None = None) -> plt.Figure:
    """One panel per task: its score against the layer's NC1 (log x), one point per (model, layer).

    ``frame``: one row per (model, stage) with ``nc1`` and the task columns (default "auroc" = mean
    detection AUROC, "transfer_accuracy"). More collapse = further left.
    """
    tasks = tasks or {"auroc": "detection AUROC (energy of an ID probe)", "transfer_accuracy": "transfer accuracy"}
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.3), squeeze=False, constrained_layout=True)
    for ax, (column, label) in zip(axes[0], tasks.items()):
        sns.scatterplot(frame, x="nc1", y=column, hue="model", style="model", s=80, ax=ax, legend=ax is axes[0, -1])
        for row in frame.itertuples():
            point = (row.nc1, getattr(row, column))
            ax.annotate(row.stage, point, fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set(xscale="log", xlabel="NC1 of the layer (log; left = more collapsed)", ylabel=label)
    return fig
