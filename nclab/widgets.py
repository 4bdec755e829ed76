"""Interactive views for the notebooks (ipywidgets). Each function draws with a plain function of
``nclab.plots`` that also works without widgets (the static book shows that figure)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from . import ood, plots

__all__ = ["collapse_explorer", "threshold_explorer"]


def collapse_explorer(snapshots: dict, classes: list[str], shown: tuple[int, int, int] = (0, 1, 2)):
    """A slider over the saved epochs: the cosine Gram of the class means beside the features of three
    classes projected on the plane of their centred means.

    snapshots: {epoch: FeatureSet} (training features at each saved epoch); ``shown``: the three classes.
    """
    epochs = sorted(snapshots)
    slider = widgets.SelectionSlider(options=epochs, value=epochs[-1], description="epoch", continuous_update=False)
    output = widgets.Output()

    def draw(change=None):
        with output:
            output.clear_output(wait=True)
            fs = snapshots[slider.value]
            fig = plots.plot_geometry(fs.features, fs.labels, classes, shown, title=f"epoch {slider.value}")
            display(fig)
            plt.close(fig)

    slider.observe(draw, names="value")
    draw()
    display(widgets.VBox([slider, output]))


def threshold_explorer(scores: dict[str, dict], id_name: str = "ID"):
    """Pick a detector and an OOD set, move the threshold τ: inputs scoring ≥ τ are accepted as ID.

    Draws :func:`nclab.plots.plot_threshold`: the ID and OOD histograms with τ, the fraction of ID kept
    (TPR) and of OOD accepted (FPR). The slider spans the scores of the chosen pair and starts at the τ
    that keeps 95 % of ID, where FPR is the FPR@95 of the results table.
    scores: {detector: {id_name: (n,), ood set: (m,), …}}, higher = in-distribution.
    """
    detectors = list(scores)
    sets = [name for name in scores[detectors[0]] if name != id_name]
    detector = widgets.Dropdown(options=detectors, description="detector")
    ood_set = widgets.Dropdown(options=sets, description="OOD set")
    threshold = widgets.FloatSlider(
        description="threshold τ", continuous_update=False, readout_format=".4g", layout=widgets.Layout(width="70%")
    )
    output = widgets.Output()
    updating = []  # non-empty while the slider's range is being reset

    def draw(change=None):
        if updating:
            return
        with output:
            output.clear_output(wait=True)
            fig = plots.plot_threshold(
                scores[detector.value][id_name],
                scores[detector.value][ood_set.value],
                threshold.value,
                detector.value,
                ood_set.value,
                id_name,
            )
            display(fig)
            plt.close(fig)

    def reset_range(change=None):
        ind = torch.as_tensor(scores[detector.value][id_name]).detach().double().flatten()
        both = torch.cat([ind, torch.as_tensor(scores[detector.value][ood_set.value]).detach().double().flatten()])
        low, high = both.min().item(), both.max().item()
        updating.append(True)
        threshold.max = max(high, threshold.max)  # widen first: min ≤ max always
        threshold.min = low
        threshold.max = high if high > low else low + 1
        threshold.step = (threshold.max - low) / 500
        threshold.value = ood.threshold_at_tpr(ind, 0.95)  # keeps 95 % of ID
        updating.clear()
        draw()

    detector.observe(reset_range, names="value")
    ood_set.observe(reset_range, names="value")
    threshold.observe(draw, names="value")
    reset_range()
    display(widgets.VBox([widgets.HBox([detector, ood_set]), threshold, output]))
