"""Interactive views for the notebooks (ipywidgets). Each function draws with a plain function of
``nclab.plots`` that also works without widgets (the static book shows that figure).

On the course's static site the widgets are frozen: the page shows the controls and the figure they drew
when the notebook was executed, but nothing answers a control without a kernel. Each explorer with a slider
says so once, above itself (:data:`STATIC_NOTE`)."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from . import collapse, ood, plots

__all__ = [
    "collapse_explorer",
    "threshold_explorer",
    "layer_explorer",
    "mask_explorer",
    "alignment_explorer",
    "STATIC_NOTE",
]

STATIC_NOTE = (
    "*On the course's static site these controls do not respond: the figure below is the one for the value "
    "shown. Moving them needs a running kernel: open the notebook in Colab or Jupyter.*"
)


def _static_note():
    """Display :data:`STATIC_NOTE` (once per explorer, above its controls)."""
    display(Markdown(STATIC_NOTE))


def collapse_explorer(
    snapshots: dict, classes: list[str], shown: tuple[int, int, int] = (0, 1, 2), unit: str = "epoch"
):
    """A slider over the saved epochs: the cosine Gram of the class means beside the features of three
    classes projected on the plane of their centred means.

    snapshots: {epoch: FeatureSet} (training features at each saved epoch, or at each recorded step of the
    unconstrained-features model, ``unit="step"``); ``shown``: the three classes.
    """
    epochs = sorted(snapshots)
    slider = widgets.SelectionSlider(options=epochs, value=epochs[-1], description=unit, continuous_update=False)
    output = widgets.Output()

    def draw(change=None):
        with output:
            output.clear_output(wait=True)
            fs = snapshots[slider.value]
            fig = plots.plot_geometry(fs.features, fs.labels, classes, shown, title=f"{unit} {slider.value}")
            display(fig)
            plt.close(fig)

    slider.observe(draw, names="value")
    draw()
    _static_note()
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
    _static_note()
    display(widgets.VBox([widgets.HBox([detector, ood_set]), threshold, output]))


def layer_explorer(layers: dict[str, tuple[dict, torch.Tensor]], classes: list[str], shown=(0, 1, 2)):
    """Pick a model and a layer: the cosine Gram of its class means beside the simplex ETF's, three classes
    on the plane of their means, and the layer's NC1 in the title (``nclab.plots.plot_geometry``).

    layers: {model: ({layer: (N, d) features}, labels (N,))}, as ``nclab.tables.layer_features`` returns.
    """
    model = widgets.Dropdown(options=list(layers), description="model")
    options = list(layers[model.value][0])
    stage = widgets.Dropdown(options=options, value=options[-1], description="layer")  # the deepest first
    output = widgets.Output()

    def draw(change=None):
        features, labels = layers[model.value]
        if stage.value not in features:  # a layer the other model has (the projector)
            return
        with output:
            output.clear_output(wait=True)
            H = features[stage.value]
            nc1 = collapse.variability_metrics(H, labels)["nc1"]
            title = f"{model.value}, {stage.value} ({H.shape[1]} dimensions): NC1 = {nc1:.3g}"
            fig = plots.plot_geometry(H, labels, classes, shown, title=title)
            display(fig)
            plt.close(fig)

    def new_model(change=None):
        options = list(layers[model.value][0])
        value = stage.value if stage.value in options else options[-1]
        stage.unobserve(draw, names="value")
        stage.options, stage.value = options, value
        stage.observe(draw, names="value")
        draw()

    model.observe(new_model, names="value")
    stage.observe(draw, names="value")
    draw()
    _static_note()
    display(widgets.VBox([widgets.HBox([model, stage]), output]))


def mask_explorer(model, data, classes: list[str] | None = None):
    """Browse the samples of ``data`` (an ImageSet with Colored-MNIST's extras) through NCFAL's mask: each
    image beside the masked input its encoder sees (``model.mask``, in eval mode: no noise), with its
    label, digit, colour, environment and the model's prediction (``nclab.plots.plot_masked_sample``)."""
    classes = classes or data.classes
    index = widgets.IntSlider(0, 0, len(data) - 1, description="sample", continuous_update=False)
    output = widgets.Output()
    device = next(model.parameters()).device

    def draw(change=None):
        i = index.value
        x = data.images[i : i + 1].to(device).float() / 255
        was_training = model.training
        model.eval()
        with torch.no_grad():
            masked, prediction = model.mask(x)[0], int(model(x).argmax(1))
        model.train(was_training)
        extras = {key: int(values[i]) for key, values in data.extras.items() if key in ("digit", "color", "env")}
        colour = {0: "red", 1: "green"}.get(extras.get("color"), "?")
        caption = (
            f"sample {i}: label {classes[int(data.labels[i])]!r} (digit {extras.get('digit', '?')}), {colour} ink, "
            f"environment {extras.get('env', '?')} → predicted {classes[prediction]!r}"
        )
        with output:
            output.clear_output(wait=True)
            fig = plots.plot_masked_sample(x[0], masked, caption)
            display(fig)
            plt.close(fig)

    index.observe(draw, names="value")
    draw()
    _static_note()
    display(widgets.VBox([index, output]))


def alignment_explorer(per_class: dict[tuple, pd.DataFrame]):
    """Choose an imbalance factor and methods: the per-class alignment and classifier norms of those runs
    (``nclab.plots.plot_class_alignment``). ``per_class``: {(imbalance factor, method): the output of
    ``nclab.tables.per_class_alignment``}."""
    factors = sorted({factor for factor, _ in per_class})
    factor = widgets.Dropdown(options=factors, value=factors[-1], description="IF")
    chosen = widgets.SelectMultiple(description="methods", rows=6)
    output = widgets.Output()
    updating = []  # non-empty while the method list is being reset

    def draw(change=None):
        if updating:
            return
        tables_ = {name: per_class[(factor.value, name)] for name in chosen.value if (factor.value, name) in per_class}
        with output:
            output.clear_output(wait=True)
            if not tables_:
                print("choose at least one method")
                return
            fig = plots.plot_class_alignment(tables_)
            display(fig)
            plt.close(fig)

    def new_factor(change=None):
        names = [name for f, name in per_class if f == factor.value]
        updating.append(True)
        chosen.options, chosen.value = names, tuple(names[:2])
        updating.clear()
        draw()

    factor.observe(new_factor, names="value")
    chosen.observe(draw, names="value")
    new_factor()
    _static_note()
    display(widgets.VBox([widgets.HBox([factor, chosen]), output]))
