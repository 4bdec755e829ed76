"""The notebooks' widgets, driven as a student would: each control redraws the figure it names."""

import ipywidgets
import matplotlib.pyplot as plt
import pytest
import torch

from nclab import ood, plots, widgets
from nclab.features import FeatureSet


def _find(widget, kind):
    if isinstance(widget, kind):
        yield widget
    for child in getattr(widget, "children", ()):
        yield from _find(child, kind)


def test_collapse_explorer_draws_the_geometry_of_the_chosen_epoch(monkeypatch):
    shown, drawn = [], []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(
        plots, "plot_geometry", lambda h, y, classes, chosen, title: drawn.append((h, title, chosen)) or plt.figure()
    )
    snapshots = {
        epoch: FeatureSet(torch.full((6, 4), float(epoch)), torch.zeros(6, 3), torch.arange(6) % 3)
        for epoch in (5, 1, 20)
    }
    widgets.collapse_explorer(snapshots, ["a", "b", "c"], shown=(2, 0, 1))
    slider = next(_find(shown[-1], ipywidgets.SelectionSlider))
    assert list(slider.options) == [1, 5, 20] and slider.value == 20  # sorted, the last epoch first
    assert drawn[-1][1] == "epoch 20" and drawn[-1][2] == (2, 0, 1) and drawn[-1][0][0, 0] == 20
    slider.value = 5
    assert drawn[-1][1] == "epoch 5" and drawn[-1][0][0, 0] == 5 and len(drawn) == 2
    plt.close("all")


def test_threshold_widget_starts_at_the_fpr95_threshold_and_follows_the_detector(monkeypatch, toy_scores):
    shown = []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    scores = toy_scores
    widgets.threshold_explorer(scores)
    box = shown[-1]
    slider = next(_find(box, ipywidgets.FloatSlider))
    detector, ood_set = list(_find(box, ipywidgets.Dropdown))
    ind, near = scores["good"]["ID"], scores["good"]["near"]
    assert slider.value == pytest.approx(ood.threshold_at_tpr(ind, 0.95))
    assert slider.value == pytest.approx(ind.sort(descending=True).values[190 - 1].item())  # ⌈0.95 · 200⌉
    assert (near >= slider.value).double().mean().item() == pytest.approx(ood.detection_metrics(ind, near)["fpr95"])
    detector.value = "flipped"
    both = torch.cat([scores["flipped"]["ID"], scores["flipped"]["near"]])
    assert slider.min == pytest.approx(both.min().item()) and slider.max == pytest.approx(both.max().item())
    ood_set.value = "far"
    slider.value = slider.min  # every input accepted: TPR = FPR = 100 %
    figures = [obj for obj in shown if isinstance(obj, plt.Figure)]
    assert "TPR 100.0%" in figures[-1].axes[0].get_title() and "FPR 100.0%" in figures[-1].axes[0].get_title()
    plt.close("all")
