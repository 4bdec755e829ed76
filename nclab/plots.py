"""Figures of the course, drawn with seaborn/matplotlib. Each function returns its Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from .data import CIFAR100_MEAN, CIFAR100_STD, ImageSet

__all__ = ["history_frame", "plot_history", "show_images"]

sns.set_theme(context="notebook", style="whitegrid")


def history_frame(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Long table of training histories: one row per (run, epoch, split) with loss, accuracy and lr."""
    rows = []
    for run, history in histories.items():
        for record in history:
            for split in ("train", "test"):
                if f"{split}_loss" in record:
                    rows.append({"run": run, "epoch": record["epoch"], "split": split, "lr": record["lr"],
                                 "loss": record[f"{split}_loss"], "accuracy": record[f"{split}_acc"]})
    return pd.DataFrame(rows)


def plot_history(histories: dict[str, list[dict]], title: str | None = None) -> plt.Figure:
    """Loss, accuracy and learning rate against the epoch for each run (colour) and split (dashes).

    ``histories``: {"regime A": run.history, …}. Train metrics are averaged over the augmented batches
    of the epoch; test metrics are measured after it, without augmentation.
    """
    frame = history_frame(histories)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    markers = frame["epoch"].nunique() <= 12                       # few epochs: show the points
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


def show_images(images: ImageSet | torch.Tensor, labels=None, classes=None, count: int = 16,
                normalized: bool = False, title: str | None = None) -> plt.Figure:
    """A grid of ``count`` images with their class names.

    ``images`` is an ImageSet (a fixed random sample of it is shown), or a (B, 3, H, W) tensor: uint8, or
    normalised floats from a GpuLoader (``normalized=True`` undoes the CIFAR-100 normalisation).
    """
    if isinstance(images, ImageSet):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
        images, labels, classes = images.images[pick], images.labels[pick], images.classes
    images = images[:count].detach().float().cpu()
    if normalized:
        images = images * torch.tensor(CIFAR100_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    else:
        images = images / 255
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
