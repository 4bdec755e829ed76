"""The notebooks' widgets, driven as a student would: each control redraws the figure it names."""

import ipywidgets
import matplotlib.pyplot as plt
import pandas as pd
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
    widgets.collapse_explorer(snapshots, ["a", "b", "c"], unit="step")  # the UFM's snapshots are steps
    assert next(_find(shown[-1], ipywidgets.SelectionSlider)).description == "step" and drawn[-1][1] == "step 20"
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


def test_layer_explorer_draws_the_chosen_model_and_layer_with_its_nc1(monkeypatch):
    shown, drawn = [], []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(
        plots, "plot_geometry", lambda h, y, classes, chosen, title: drawn.append((h, title)) or plt.figure()
    )
    y = torch.arange(12) % 3
    means = torch.eye(3, 4)[y]  # (12, 4): three classes at three corners
    collapsed, spread = means, means + torch.linspace(-0.5, 0.5, 12)[:, None]
    layers = {
        "baseline": ({"stem": spread, "layer4": collapsed}, y),
        "controlled": ({"stem": spread, "layer4": spread, "projector": collapsed}, y),
    }
    widgets.layer_explorer(layers, ["a", "b", "c"])
    model, stage = list(_find(shown[-1], ipywidgets.Dropdown))
    assert stage.value == "layer4" and drawn[-1][0] is collapsed  # the deepest layer first
    assert drawn[-1][1].startswith("baseline, layer4 (4 dimensions): NC1 = 0")
    stage.value = "stem"
    assert drawn[-1][0] is spread and "NC1 = 0 " not in drawn[-1][1]
    model.value = "controlled"  # keeps the layer when the other model has it
    assert stage.value == "stem" and list(stage.options) == ["stem", "layer4", "projector"]
    stage.value = "projector"
    assert drawn[-1][0] is collapsed and drawn[-1][1].startswith("controlled, projector")
    model.value = "baseline"  # the projector is not there: back to the deepest layer
    assert stage.value == "layer4" and drawn[-1][1].startswith("baseline, layer4")
    plt.close("all")


def _per_class(offset):
    import pandas as pd

    return pd.DataFrame({"train_images": [50, 10, 2], "group": ["many", "medium", "few"],
                         "test_accuracy": [0.9, 0.5, 0.1], "weight_norm": [2.0, 1.0, 0.5],
                         "alignment": [0.9 - offset, 0.5, 0.1]})  # fmt: skip


def test_alignment_explorer_follows_the_imbalance_factor_and_the_methods(monkeypatch):
    shown, drawn = [], []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plots, "plot_class_alignment", lambda tables: drawn.append(sorted(tables)) or plt.figure())
    per_class = {(100, "CE"): _per_class(0), (100, "SpA"): _per_class(0.1), (100, "LA"): _per_class(0.2),
                 (10, "CE"): _per_class(0.3)}  # fmt: skip
    widgets.alignment_explorer(per_class)
    factor = next(_find(shown[-1], ipywidgets.Dropdown))
    methods = next(_find(shown[-1], ipywidgets.SelectMultiple))
    assert factor.value == 100 and methods.value == ("CE", "SpA") and drawn[-1] == ["CE", "SpA"]
    methods.value = ("LA",)
    assert drawn[-1] == ["LA"]
    factor.value = 10
    assert list(methods.options) == ["CE"] and drawn[-1] == ["CE"]
    plt.close("all")


def test_mask_explorer_shows_the_chosen_sample_through_the_mask(monkeypatch):
    from nclab import data
    from nclab.methods import ncfal

    shown, drawn = [], []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(
        plots, "plot_masked_sample", lambda x, masked, caption: drawn.append((x, masked, caption)) or plt.figure()
    )
    train_set, _ = data.colored_mnist("smoke")
    part = train_set.select(torch.arange(10))
    config = ncfal.recipe("smoke", width=4)
    model = config.method.build_model(config, part).train()
    widgets.mask_explorer(model, part)
    slider = next(_find(shown[-1], ipywidgets.IntSlider))
    assert slider.max == 9 and "sample 0" in drawn[-1][2] and "environment" in drawn[-1][2]
    slider.value = 3
    x, masked, caption = drawn[-1]
    assert model.training  # the explorer restores the mode it found
    torch.testing.assert_close(masked, model.eval().mask(x[None])[0])  # no noise: the eval mask
    assert caption.startswith("sample 3")
    plt.close("all")


def _notes(shown):
    from IPython.display import Markdown

    return [obj for obj in shown if isinstance(obj, Markdown)]


def test_each_slider_explorer_says_once_that_the_static_site_is_frozen(monkeypatch, toy_scores):
    shown = []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plots, "plot_geometry", lambda *args, **kwargs: plt.figure())
    snapshots = {epoch: FeatureSet(torch.randn(6, 4), torch.zeros(6, 3), torch.arange(6) % 3) for epoch in (1, 2)}
    widgets.collapse_explorer(snapshots, ["a", "b", "c"])
    assert _notes(shown) == [shown[-2]] and isinstance(shown[-1], ipywidgets.VBox)  # just above the controls
    note = _notes(shown)[0].data
    assert "static site" in note and "do not respond" in note and "Colab or Jupyter" in note
    next(_find(shown[-1], ipywidgets.SelectionSlider)).value = 1  # a redraw does not repeat it
    assert len(_notes(shown)) == 1
    shown.clear()
    widgets.threshold_explorer(toy_scores)
    box = shown[-1]
    next(_find(box, ipywidgets.Dropdown)).value = "flipped"  # new range, new figure, no new note
    assert [note.data for note in _notes(shown)] == [widgets.STATIC_NOTE] == [shown[shown.index(box) - 1].data]
    plt.close("all")


def test_the_layer_and_alignment_explorers_say_it_too(monkeypatch):
    shown = []
    monkeypatch.setattr(widgets, "display", lambda obj: shown.append(obj))
    monkeypatch.setattr(plots, "plot_geometry", lambda *args, **kwargs: plt.figure())
    monkeypatch.setattr(plots, "plot_class_alignment", lambda *args, **kwargs: plt.figure())
    labels = torch.arange(12) % 3
    widgets.layer_explorer({"m": ({"layer4": torch.randn(12, 5)}, labels)}, ["a", "b", "c"])
    assert [note.data for note in _notes(shown)] == [widgets.STATIC_NOTE] and shown[-2].data == widgets.STATIC_NOTE
    shown.clear()
    widgets.alignment_explorer({(10, "ce"): pd.DataFrame({"x": [1]}), (10, "spa"): pd.DataFrame({"x": [2]})})
    assert [note.data for note in _notes(shown)] == [widgets.STATIC_NOTE] and shown[-2].data == widgets.STATIC_NOTE
    plt.close("all")
