import io

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import RendererAgg
from PIL import Image

from nclab import collapse, data, etf, models, plots

HISTORY = [
    {"epoch": e, "lr": 0.1 / e, "train_loss": 2.0 / e, "train_acc": 0.3 * e, "test_loss": 2.2 / e, "test_acc": 0.25 * e}
    for e in (1, 2, 3)
]


def test_history_frame_has_one_row_per_run_epoch_and_split():
    frame = plots.history_frame({"A": HISTORY, "B": HISTORY[:2]})
    assert len(frame) == 2 * 3 + 2 * 2
    a_test = frame.query("run == 'A' and split == 'test'").sort_values("epoch")
    assert a_test["accuracy"].tolist() == [0.25, 0.5, 0.75]


def test_plot_history_draws_loss_accuracy_and_lr():
    fig = plots.plot_history({"A": HISTORY, "B": HISTORY}, title="t")
    loss, accuracy, lr = fig.axes[:3]
    assert loss.get_yscale() == "log" and lr.get_yscale() == "log"
    assert accuracy.get_ylim() == (0, 1)
    plotted = sorted(float(y) for line in accuracy.get_lines() for y in line.get_ydata() if len(line.get_xdata()) == 3)
    assert plotted[-1] == pytest.approx(0.9)  # train acc at epoch 3
    two = plots.plot_history({"A": HISTORY[:2]})  # a 2-epoch smoke run: ticks at epochs 1 and 2, no 1.5
    for ax in [*fig.axes[:3], *two.axes[:3]]:
        assert all(float(tick).is_integer() for tick in ax.get_xticks()), ax.get_xticks()
    plt.close("all")


def test_show_images_draws_loader_batches_and_uint8_images(small_train):
    loader = data.GpuLoader(small_train, 4, shuffle=False, augment=False, drop_last=True, device="cpu")
    x, y, _ = next(iter(loader))  # floats in [0, 1]
    fig = plots.show_images(x, y, small_train.classes, count=4)
    shown = fig.axes[0].get_images()[0].get_array()
    expected = small_train.images[0].permute(1, 2, 0).float().numpy() / 255
    assert np.allclose(shown, expected, atol=1e-6)
    assert fig.axes[0].get_title().replace("\n", " ") == small_train.classes[int(y[0])].replace("_", " ")
    plt.close(fig)
    fig = plots.show_images(small_train.images[:2], count=2)  # uint8 0..255
    assert np.allclose(fig.axes[0].get_images()[0].get_array(), expected, atol=1e-6)
    plt.close(fig)
    fig = plots.show_images(small_train, count=3)
    assert sum(bool(ax.get_images()) for ax in fig.axes) == 3
    plt.close(fig)


# --- neural-collapse figures ---------------------------------------------------------------------------


def _nc_frame():
    rows = []
    for run, scale in (("A", 1.0), ("B", 2.0)):
        for epoch in (1, 2, 3):
            for split in ("train", "test"):
                value = scale / epoch + (split == "test")
                rows.append(
                    {
                        "run": run,
                        "epoch": epoch,
                        "split": split,
                        "stage": "output",
                        "accuracy": 0.3 * epoch,
                        "nc1": value,
                        "nc2_equinorm_means": value,
                        "nc2_equinorm_weights": value / 2,
                        "nc2_equiangular_means": value,
                        "nc2_equiangular_weights": value / 2,
                        "nc2_maxangle_means": value,
                        "nc2_maxangle_weights": value / 2,
                        "nc3": value,
                        "nc4_ncc_mismatch": value / 10,
                    }
                )
                for depth, stage in enumerate(models.STAGES):
                    rows.append(
                        {
                            "run": run,
                            "epoch": epoch,
                            "split": split,
                            "stage": stage,
                            "nc1": 10.0 / (depth + 1) / epoch,
                            "ncc_accuracy": 0.2 * depth,
                        }
                    )
    return pd.DataFrame(rows)


def test_plot_collapse_draws_every_metric_per_run_and_split():
    fig = plots.plot_collapse(_nc_frame(), title="t")
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]  # long titles wrapped to fit their panel
    assert titles[:7] == [panel for panel, _, _ in plots.training._COLLAPSE_PANELS] and not fig.axes[7].axison
    nc1 = fig.axes[0]
    assert nc1.get_yscale() == "log" and nc1.get_ylabel() == "NC1, log scale\n(within-class variability)"
    curves = [np.sort(line.get_ydata()) for line in nc1.get_lines() if len(line.get_xdata()) == 3]
    assert any(np.allclose(c, [1 / 3, 1 / 2, 1]) for c in curves)  # run A, train
    assert any(np.allclose(c, [2 / 3 + 1, 2, 3]) for c in curves)  # run B, test
    nc2 = fig.axes[1]  # weights: one curve per run, dotted
    assert sum(len(line.get_xdata()) == 3 for line in nc2.get_lines()) == 2 * 2 + 2
    assert [ax.get_legend() for ax in fig.axes] == [None] * 8 and len(fig.legends) == 1  # one legend
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["run", "A", "B", "curve", "train", "test", "classifier W"]
    accuracy = fig.axes[6]
    assert accuracy.get_yscale() == "linear" and accuracy.get_ylim() == (0, 1.02)
    assert all(float(tick).is_integer() for ax in fig.axes[:7] for tick in ax.get_xticks())  # whole epochs
    plt.close(fig)


def test_plot_stages_draws_one_panel_per_run_with_the_stages_in_order():
    fig = plots.plot_stages(_nc_frame(), "nc1")
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "run A: nc1 by depth"
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == list(models.STAGES)
    values = sorted(
        round(float(v), 9)
        for line in fig.axes[0].get_lines()
        for v in line.get_ydata()
        if len(line.get_xdata()) == len(models.STAGES)
    )
    assert values[-1] == 10.0 and values[0] == round(2.0 / 3, 9)  # stem at epoch 1, layer4 at 3
    plt.close(fig)


def test_plot_geometry_shows_the_gram_next_to_the_etf_and_three_classes():
    C, p = 4, 6
    E = etf.simplex_etf(C, p).float()
    labels = torch.arange(C).repeat(5)
    features = E[labels] + 0.01 * torch.randn(len(labels), p, generator=torch.Generator().manual_seed(0))
    fig = plots.plot_geometry(features, labels, ["a", "b", "c", "d"], title="g")
    gram, etf_ax, projection = fig.axes[:3]
    assert np.allclose(
        gram.collections[0].get_array().reshape(C, C),
        collapse.gram_of_means(collapse.class_means(features, labels)[0]).numpy(),
        atol=1e-6,
    )
    assert np.allclose(etf_ax.collections[0].get_array().reshape(C, C), etf.simplex_etf_gram(C).numpy())
    points = [c for c in projection.collections if len(c.get_offsets()) == 5]
    assert len(points) == 3 and [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    plt.close(fig)


def test_plot_class_variability_sorts_the_bars():
    variability = torch.tensor([0.1, 0.5, 0.3], dtype=torch.float64)
    fig = plots.plot_class_variability(variability, ["x", "y", "z"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["y", "z", "x"]
    assert [round(bar.get_height(), 9) for bar in ax.patches] == [0.5, 0.3, 0.1]
    plt.close(fig)


LAYERWISE = pd.DataFrame(
    [
        {"model": model, "stage": stage, "metric": metric, "value": value}
        for model, stages in {
            "baseline": {"stem": 50.0, "layer1": 10.0, "layer4": 1.0},
            "controlled": {"stem": 60.0, "layer1": 20.0, "layer4": 3.0, "projector": 0.5},
        }.items()
        for stage, nc1 in stages.items()
        for metric, value in (("nc1", nc1), ("ncc_accuracy", 1 / (1 + nc1)))
    ]
)


def test_plot_layerwise_keeps_the_network_order_and_logs_nc1_only():
    fig = plots.plot_layerwise(LAYERWISE)
    nc1, ncc = fig.axes[:2]
    assert [t.get_text() for t in nc1.get_xticklabels()] == ["stem", "layer1", "layer4", "projector"]
    assert nc1.get_yscale() == "log" and ncc.get_yscale() == "linear"
    assert nc1.get_title() == "nc1 by layer" and ncc.get_ylabel() == "nearest-class-centre accuracy"
    heights = sorted(y for line in nc1.get_lines() for y in line.get_ydata() if np.isfinite(y))
    assert heights[0] == pytest.approx(0.5) and heights[-1] == pytest.approx(60.0)  # the projector, the stem
    plt.close(fig)


def test_plot_tradeoff_puts_nc1_on_a_log_x_and_labels_every_layer():
    points = pd.DataFrame(
        {
            "model": ["baseline", "baseline", "controlled"],
            "stage": ["layer3", "layer4", "projector"],
            "nc1": [5.0, 1.0, 0.2],
            "auroc": [0.6, 0.7, 0.8],
            "transfer_accuracy": [0.9, 0.8, 0.5],
        }
    )
    fig = plots.plot_tradeoff(points)
    detection, transfer = fig.axes[:2]
    assert detection.get_xscale() == "log" and transfer.get_xscale() == "log"
    assert sorted(t.get_text() for t in transfer.texts) == ["layer3", "layer4", "projector"]
    offsets = np.concatenate([c.get_offsets() for c in transfer.collections])
    assert sorted(map(tuple, offsets.tolist())) == [(0.2, 0.5), (1.0, 0.8), (5.0, 0.9)]
    plt.close(fig)


def test_the_generalization_and_long_tail_figures_draw_what_they_name():
    frame = pd.DataFrame({"method": ["ERM", "ERM", "NCFAL", "NCFAL"], "environment": ["train", "test"] * 2,
                          "accuracy": [0.9, 0.1, 0.7, 0.6], "etf_distance": [0.5, 2.7, 0.8, 1.0]})  # fmt: skip
    fig = plots.plot_ood_generalization(frame)
    assert [line.get_ydata()[0] for line in fig.axes[0].lines[-2:]] == [0.5, 0.75]  # chance and the shape ceiling
    fig = plots.plot_etf_vs_accuracy(frame)
    assert "test" in fig.axes[0].get_xlabel() and len(fig.axes[0].texts) == 2
    partition = pd.DataFrame({"round": [0, 0, 1, 1], "environment": [0, 1, 0, 1], "samples": [5, 5, 2, 8],
                              "colour_agrees": [0.8, 0.9, 0.0, 1.0]})  # fmt: skip
    assert len(plots.plot_partition(partition).axes) == 2
    fig = plots.plot_mask(torch.rand(3, 4, 4), ["luminance", "red − green", "blue − yellow"])
    assert fig.axes[0].get_title().startswith("luminance")
    assert len(plots.plot_masked_sample(torch.rand(3, 4, 4), torch.rand(3, 4, 4), "a caption").axes) == 3
    per_class = pd.DataFrame({"train_images": [50, 10, 2], "group": ["many", "medium", "few"],
                              "test_accuracy": [0.9, 0.5, 0.1], "weight_norm": [2.0, 1.0, 0.5],
                              "alignment": [0.9, 0.5, 0.1]})  # fmt: skip
    fig = plots.plot_class_histogram(per_class["train_images"], per_class["group"].tolist())
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].patches) == 3
    assert len(plots.plot_class_alignment({"CE": per_class, "SpA": per_class}).axes) == 2
    groups = pd.DataFrame(
        {"group": ["many", "few", "all"], "test_accuracy": [0.9, 0.1, 0.5], "alignment": [0.9, 0.2, 0.6]}
    )
    assert plots.plot_group_accuracy({"CE": groups}).axes[0].get_ylim() == (0, 1)
    summary = pd.DataFrame({"method": ["CE", "SpA"], "alignment": [0.5, 0.8], "test_accuracy": [0.4, 0.5]})
    assert len(plots.plot_accuracy_vs_alignment(summary).axes[0].texts) == 2
    plt.close("all")


def test_the_design_figures_draw_the_trace_the_race_and_the_accuracies():
    trace = pd.DataFrame({"run": ["CE"] * 3 + ["NTCE"] * 3, "step": [1, 4, 16] * 2,
                          "nc1": [5.0, 1.0, 0.5, 2.0, 0.3, 0.1],
                          "nc4_ncc_mismatch": [0.5, 0.1, 0.0, 0.4, 0.0, 0.0]})  # fmt: skip
    fig = plots.plot_nc_trace(trace, {"nc1": "NC1", "nc4_ncc_mismatch": "NC4"})
    assert [ax.get_title() for ax in fig.axes[:2]] == ["NC1", "NC4"]
    assert fig.axes[0].get_xscale() == "log" == fig.axes[0].get_yscale()
    assert 0.5 in [line.get_ydata()[0] for line in fig.axes[0].lines]  # CE's final NC1, dashed
    assert len(plots.plot_nc_trace(trace, {"nc1": "NC1"}).axes) == 1  # one metric: one panel
    # a run whose values are 0 up to rounding is left out of a panel, but keeps its colour in the legend
    fig = plots.plot_nc_trace(trace.assign(nc1=[1e-9] * 3 + [2.0, 0.3, 0.1]), {"nc1": "NC1: within-class variability"})
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["CE", "NTCE", "CE, final value"]
    assert fig.axes[0].get_legend() is None and fig.axes[0].get_ylabel() == "NC1, log scale\n(within-class variability)"
    matches = pd.DataFrame({"run": ["CE", "CE", "NTCE", "NTCE"], "metric": ["nc1", "nc3"] * 2,
                            "fraction": [1.0, 1.0, 0.05, np.nan]})  # fmt: skip
    fig = plots.plot_first_match(matches)
    hatched = [bar.get_hatch() for bar in fig.axes[0].patches if bar.get_height() > 0]
    assert hatched.count("//") == 1  # the metric NTCE never reached
    assert [tick.get_text() for tick in fig.axes[0].get_xticklabels()] == ["NC1", "NC3"]
    assert plots.design._short("nc2_equinorm_means") == "NC2\nequinorm"
    accuracies = pd.DataFrame({"run": ["CE", "CE", "SupCon", "SupCon"], "classifier": ["head", "probe"] * 2,
                               "test_accuracy": [0.8, 0.82, 0.7, 0.75]})  # fmt: skip
    fig = plots.plot_accuracies(accuracies, x="run", hue="classifier", title="t")
    assert fig.axes[0].get_ylim() == (0, 1.2) and len(fig.axes[0].texts) == 4  # room for the upright values
    plt.close("all")


def test_the_theory_figures_draw_the_ufm_collapse_simplex_bound_and_sweeps():
    from nclab import ufm

    model = ufm.UFM(3, 2, per_class=4)
    trajectory = model.fit(30, records=5, snapshots=True)
    fig = plots.plot_ufm_trajectory(trajectory, optimum=0.0, title="t")
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(shown) == 8 and all(ax.get_xscale() == "log" == ax.get_yscale() for ax in shown)
    nc4 = next(ax for ax in shown if ax.get_ylabel().startswith("NC4"))
    assert [ax.get_legend() for ax in fig.axes] == [None] * 8 and len(fig.legends) == 1  # one legend, below
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["class means μ_c − μ_G", "classifier rows w_c"]
    assert min(nc4.lines[0].get_ydata()) == plots.theory.ZERO  # an exact 0 on the floor, not dropped
    assert 0 not in nc4.lines[0].get_xdata()  # step 0 has no place on a log axis
    steps = sorted(model.snapshots)
    fig = plots.plot_simplex(model.snapshots, [steps[0], steps[-1]])
    assert [ax.get_title() for ax in fig.axes] == [f"step {steps[0]}", f"step {steps[-1]}"]
    assert len(fig.axes[0].lines) == 3  # the triangle's edges
    with pytest.raises(ValueError, match="not recorded"):
        plots.plot_simplex(model.snapshots, [12345])
    wide = ufm.UFM(3, 5, per_class=2)
    wide.fit(2, records=2, snapshots=True)
    with pytest.raises(ValueError, match="2 or 3 dimensions"):
        plots.plot_simplex(wide.snapshots, [2])
    cosines = pd.DataFrame({"C": [3, 3, 3, 3], "dimension": ["p = C − 1", "p = C − 1", "p = 2", "p = 2"],
                            "target": ["mean", "largest"] * 2, "mean": [-0.5] * 4, "largest": [-0.5] * 4,
                            "bound": [-0.5] * 4})  # fmt: skip
    assert len(plots.plot_cosine_search(cosines).axes) == 2
    sweep = pd.DataFrame({"lambda": [1e-3, 1e-1], "kappa": [10**0.5 * 1e-3, 10**0.5 * 1e-1], "C": 4, "n": 10,
                          "w_norm": [3.0, 0.0], "h_norm": [1.0, 0.0]})  # fmt: skip
    ax = plots.plot_lambda_sweep(sweep).axes[0]
    threshold = [line for line in ax.lines if line.get_linestyle() == ":"][0].get_xdata()[0]
    assert threshold * 10**0.5 == pytest.approx(1 / 4)  # κ = √n λ = 1/C
    closed = ax.lines[0]  # w_norm's closed form on a fine grid: exactly 0 past the threshold, positive before
    assert len(closed.get_xdata()) == 200 and closed.get_ydata()[-1] == 0 and closed.get_ydata()[0] > 3
    imbalance = pd.DataFrame({"ratio": [1, 40], "cos_minority_weights": [-0.33, 1.0], "cos_minority_means": [-0.33, 1],
                              "cos_etf": [-1 / 3] * 2, "minority_accuracy": [1.0, 0.0]})  # fmt: skip
    fig = plots.plot_imbalance_sweep(imbalance)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_ylim()[1] > 1
    plt.close("all")


# --- the conventions of every figure (nclab.plots.style) -------------------------------------------------


def _one_figure_legend(fig) -> list[str]:
    """The texts of the figure's single legend, after checking that no axes has a legend of its own."""
    assert [ax for ax in fig.axes if ax.get_legend() is not None] == [] and len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _worded(label: str) -> bool:
    """A y-label in words: at least one word of four letters or more, not a bare symbol."""
    return any(len(word) >= 4 and word.isalpha() for word in label.replace("(", " ").replace(")", " ").split())


def test_multi_panel_figures_have_one_legend_outside_the_axes():
    frame = _nc_frame()
    figures = {
        "history": plots.plot_history({"A": HISTORY, "B": HISTORY}),
        "collapse": plots.plot_collapse(frame),
        "stages": plots.plot_stages(frame, "nc1"),
        "layerwise": plots.plot_layerwise(LAYERWISE),
    }
    assert _one_figure_legend(figures["history"]) == ["run", "A", "B", "split", "train", "test"]
    assert _one_figure_legend(figures["stages"])[:4] == ["epoch", "1", "2", "3"]
    assert _one_figure_legend(figures["layerwise"]) == ["baseline", "controlled"]
    for name, fig in figures.items():
        _one_figure_legend(fig)
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        for ax in fig.axes:  # the legend sits beside the panels or in the grid's empty cell, over none of them
            if ax.axison:
                assert not legend.overlaps(ax.get_tightbbox()), name
    history, collapse = figures["history"], figures["collapse"]
    for fig, cell in ((history, history.axes[3]), (collapse, collapse.axes[7])):  # the empty cell after the panels
        assert not cell.axison and cell.get_window_extent().contains(
            *fig.legends[0].get_window_extent().get_points().mean(0)
        )
    plt.close("all")


def test_y_labels_are_words_and_accuracy_is_never_logarithmic():
    frame = _nc_frame()
    for fig in (plots.plot_collapse(frame), plots.plot_history({"A": HISTORY}), plots.plot_stages(frame, "nc1")):
        for ax in fig.axes:
            if ax.axison:
                assert _worded(ax.get_ylabel()), ax.get_ylabel()
    accuracy = plots.plot_stages(frame, "ncc_accuracy")
    assert all(ax.get_yscale() == "linear" and ax.get_ylim() == (0, 1.02) for ax in accuracy.axes)
    assert accuracy.axes[0].get_ylabel() == "nearest-class-centre accuracy"
    assert plots.plot_stages(frame, "nc1").axes[0].get_yscale() == "log"
    history = plots.plot_history({"A": HISTORY})
    assert history.axes[1].get_yscale() == "linear" and history.axes[1].get_ylabel() == "accuracy"
    layerwise = plots.plot_layerwise(LAYERWISE, metrics=("ncc_accuracy",))
    assert layerwise.axes[0].get_yscale() == "linear"
    plt.close("all")


def test_metric_labels_name_the_metric_in_words():
    style = plots.style
    assert style.metric_label("nc1") == "NC1 (within-class variability)"
    assert style.metric_label("nc1", log=True, wrap=True) == "NC1, log scale\n(within-class variability)"
    assert style.metric_label("some_column") == "some column" and style.metric_label("accuracy") == "accuracy"
    assert style.is_accuracy("ncc_accuracy") and style.is_accuracy("test_acc") and not style.is_accuracy("nc1")


def test_symlog_bins_are_equal_on_the_symlog_axis_and_span_the_scores():
    scores = -np.array([50.0, 120.0, 900.0, 1500.0])  # Mahalanobis scores: minus squared distances
    edges = plots.style.symlog_bins(scores, bins=3)
    assert edges[0] == pytest.approx(-1500.0) and edges[-1] == pytest.approx(-50.0)
    t = np.sign(edges) * np.log10(1 + np.abs(edges))  # the symlog transform with linthresh 1
    assert np.allclose(np.diff(t), np.diff(t)[0])
    constant = plots.style.symlog_bins(np.array([2.0, 2.0]), 1)  # one bin around a single value
    assert len(constant) == 2 and constant[0] < 2 < constant[1]


def test_figure_legend_merges_every_panel_once_and_refuses_unknown_places():
    fig, axes = plt.subplots(1, 2, constrained_layout=True)
    axes[0].plot([0, 1], label="a")
    axes[0].legend()
    axes[1].plot([0, 1], label="a")
    axes[1].plot([1, 0], label="b")
    legend = plots.style.figure_legend(fig, axes, "below", title="runs")
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"] and legend.get_title().get_text() == "runs"
    assert axes[0].get_legend() is None
    with pytest.raises(ValueError, match="'right', 'below' or 'cell'"):
        plots.style.figure_legend(fig, axes, "inside")
    empty, ax = plt.subplots()
    assert plots.style.figure_legend(empty, [ax]) is None and not empty.legends
    plt.close("all")


# --- every figure fits the site's column, every text readable there (nclab.plots.style) ------------------

SETS = {"cifar10": "CIFAR-10 (stand-in: MNIST digits 8–9)", "svhn": "SVHN (stand-in: photo crops)",
        "gaussian": "Gaussian noise", "uniform": "uniform noise"}  # fmt: skip
DETECTORS = ("msp", "energy", "maxlogit", "mahalanobis", "vim", "neco")  # the six of notebook 03
NOT_FIGURES = {"history_frame", "SYMLOG_DETECTORS"}  # what plots.__all__ holds besides figure functions


def _scores() -> dict[str, dict[str, torch.Tensor]]:
    """Scores of the six detectors on ID and the four sets, Mahalanobis's spanning decades below 0."""
    generator = torch.Generator().manual_seed(0)
    scores = {d: {name: torch.randn(40, generator=generator) * 100 for name in ["ID", *SETS]} for d in DETECTORS}
    scores["mahalanobis"] = {name: -(10 ** (1 + 2 * torch.rand(40, generator=generator))) for name in ["ID", *SETS]}
    return scores


def _course_figures() -> dict[str, plt.Figure]:
    """Every figure function of nclab.plots on small hand data, with labels as long as the notebooks' (the
    four OOD sets and six detectors of notebook 03, CIFAR-100 class names, the runs of notebook 08)."""
    from nclab import ufm

    frame, scores = _nc_frame(), _scores()
    runs = {"A: lr 0.1 multi-step": HISTORY, "B: lr 0.01 cosine": HISTORY}
    classes = ["aquarium_fish", "sweet_pepper", "pickup_truck", "willow_tree"] * 4
    features = etf.simplex_etf(4, 6).float()[torch.arange(4).repeat(5)]
    model = ufm.UFM(3, 2, per_class=4)
    trajectory = model.fit(30, records=5, snapshots=True)
    steps = sorted(model.snapshots)
    space = ufm.UFM(4, 3, per_class=3)
    space.fit(20, records=3, snapshots=True)
    epochs = pd.DataFrame([{"epoch": e, "OOD set": s, "nc5": 0.1 * e, "neco_auroc": 0.5 + 0.1 * e}
                           for e in (1, 2, 3) for s in SETS])  # fmt: skip
    sweep = pd.DataFrame([{"d": d, "auroc": 0.6, "OOD set": s} for d in (1, 10, 100) for s in SETS])
    values = np.random.default_rng(0).uniform(0.06, 0.7, size=(6, 3, 5))  # ticks written 6×10⁻², as in notebook 08
    trace = pd.DataFrame([{"run": run, "step": step, **dict(zip(design_metrics(), values[r, k]))}
                          for r, run in enumerate(("CE", "NormFace", "NTCE", "NONL", "ETF-DR", "SupCon"))
                          for k, step in enumerate((1, 10, 100))])  # fmt: skip
    methods = ["ERM", "IRM", "V-REx", "NCFAL", "NCFAL + mask", "ERM (oracle)"]
    generalization = pd.DataFrame([{"method": m, "environment": e, "accuracy": 0.6, "etf_distance": 1.0}
                                   for m in methods for e in ("train 1", "train 2", "test")])  # fmt: skip
    per_class = pd.DataFrame({"train_images": [500, 100, 5], "group": ["many", "medium", "few"],
                              "test_accuracy": [0.9, 0.5, 0.1], "weight_norm": [2.0, 1.0, 0.5],
                              "alignment": [0.9, 0.5, 0.1]})  # fmt: skip
    lt_methods = ["CE", "CE + SpA-Proj", "LA", "LA + SpA-Proj"]
    groups = pd.DataFrame({"group": ["many", "medium", "few", "all"], "test_accuracy": 0.5, "alignment": 0.5})
    return {
        "plot_history": plots.plot_history(runs, title="baseline vs controlled"),
        "show_images": plots.show_images(
            torch.zeros(16, 3, 32, 32, dtype=torch.uint8),
            torch.arange(16) % 4,
            classes,
            title="one image: crops at 8 offsets, the last 4 also flipped",
        ),
        "plot_collapse": plots.plot_collapse(frame, title="NC1–NC4 over training: regimes A and B"),
        "plot_geometry": plots.plot_geometry(features, torch.arange(4).repeat(5), classes, title="regime A"),
        "plot_stages": plots.plot_stages(frame, "nc1"),
        "plot_class_variability": plots.plot_class_variability(
            torch.rand(20), [f"{name}_{k}" for k, name in enumerate(classes * 2)]
        ),
        "plot_score_histograms": plots.plot_score_histograms(scores, names=SETS),
        "plot_roc_curves": plots.plot_roc_curves(scores, names=SETS),
        "plot_threshold": plots.plot_threshold(
            scores["energy"]["ID"], scores["energy"]["cifar10"], 0.0, "mahalanobis", SETS["cifar10"]
        ),  # fmt: skip
        "plot_principal_plane": plots.plot_principal_plane(
            {s: torch.randn(20, 2) for s in ["ID", *SETS]},
            names=SETS,
            title="standardised features, first two principal axes (epoch 12)",
        ),  # fmt: skip
        "plot_dim_sweep": plots.plot_dim_sweep(sweep, mark=9, names=SETS),
        "plot_nc5_over_training": plots.plot_nc5_over_training(epochs, names=SETS),
        "plot_layerwise": plots.plot_layerwise(LAYERWISE),
        "plot_tradeoff": plots.plot_tradeoff(
            pd.DataFrame(
                {
                    "model": ["baseline", "controlled"],
                    "stage": ["layer4"] * 2,
                    "nc1": [20.0, 0.2],
                    "auroc": [0.7, 0.8],
                    "transfer_accuracy": [0.8, 0.5],
                }
            )
        ),  # fmt: skip
        "plot_ood_generalization": plots.plot_ood_generalization(generalization),
        "plot_etf_vs_accuracy": plots.plot_etf_vs_accuracy(generalization),
        "plot_partition": plots.plot_partition(
            pd.DataFrame(
                {
                    "round": [0, 0, 1, 1],
                    "environment": [0, 1, 0, 1],
                    "samples": [5, 5, 2, 8],
                    "colour_agrees": [0.8, 0.9, 0.0, 1.0],
                }
            )
        ),  # fmt: skip
        "plot_mask": plots.plot_mask(torch.rand(3, 8, 8), ["luminance", "red − green", "blue − yellow"]),
        "plot_masked_sample": plots.plot_masked_sample(
            torch.rand(3, 8, 8),
            torch.rand(3, 8, 8),
            "label 1, digit 7, colour red, environment train 2: predicted 1 (right)",
        ),  # fmt: skip
        "plot_class_histogram": plots.plot_class_histogram(
            [500, 100, 5], ["many", "medium", "few"], title="CIFAR-100-LT: training images per class"
        ),
        "plot_class_alignment": plots.plot_class_alignment({m: per_class for m in lt_methods}),
        "plot_group_accuracy": plots.plot_group_accuracy({m: groups for m in lt_methods}),
        "plot_accuracy_vs_alignment": plots.plot_accuracy_vs_alignment(
            pd.DataFrame({"method": lt_methods, "alignment": [0.5, 0.8, 0.6, 0.9], "test_accuracy": 0.4})
        ),
        "plot_nc_trace": plots.plot_nc_trace(trace, design_metrics()),
        "plot_first_match": plots.plot_first_match(
            pd.DataFrame(
                [
                    {"run": run, "metric": f"sphere:{m}", "fraction": 0.5}
                    for run in trace["run"].unique()
                    for m in design_metrics()
                ]
            )
        ),  # fmt: skip
        "plot_accuracies": plots.plot_accuracies(
            pd.DataFrame(
                [
                    {"run": run, "classifier": c, "test_accuracy": 0.8}
                    for run in trace["run"].unique()
                    for c in ("head", "nearest class mean", "linear probe")
                ]
            ),
            x="run",
            hue="classifier",
            title="three classifiers on each encoder (test set)",
        ),  # fmt: skip
        "plot_ufm_trajectory": plots.plot_ufm_trajectory(trajectory, optimum=0.0, title="the UFM, C = 4, p = 8"),
        "plot_simplex": plots.plot_simplex(model.snapshots, [steps[0], steps[1], steps[-1]], title="C = 3"),
        "plot_simplex in 3-D": plots.plot_simplex(space.snapshots, sorted(space.snapshots)[-2:], title="C = 4"),
        "plot_cosine_search": plots.plot_cosine_search(
            pd.DataFrame(
                {
                    "C": [3, 3, 3, 3],
                    "dimension": ["p = C − 1", "p = C − 1", "p = 2", "p = 2"],
                    "target": ["mean", "largest"] * 2,
                    "mean": -0.5,
                    "largest": -0.5,
                    "bound": -0.5,
                }
            )
        ),  # fmt: skip
        "plot_lambda_sweep": plots.plot_lambda_sweep(
            pd.DataFrame({"lambda": [1e-3, 1e-1], "C": 4, "n": 10, "w_norm": [3.0, 0.0], "h_norm": [1.0, 0.0]})
        ),  # fmt: skip
        "plot_imbalance_sweep": plots.plot_imbalance_sweep(
            pd.DataFrame(
                {
                    "ratio": [1, 40],
                    "cos_minority_weights": [-0.33, 1.0],
                    "cos_minority_means": [-0.33, 1.0],
                    "cos_etf": -1 / 3,
                    "minority_accuracy": [1.0, 0.0],
                }
            )
        ),  # fmt: skip
    }


def design_metrics() -> dict[str, str]:
    """The five NC metrics notebook 08 traces, with their titles."""
    from nclab.methods import design

    return design.TRACED_METRICS


@pytest.fixture(scope="module")
def course_figures():
    with plt.rc_context({"figure.max_open_warning": 0}):  # the course's 32 figures, open together
        figures = _course_figures()
    yield figures
    plt.close("all")


def _png_width(fig: plt.Figure) -> int:
    """The width in pixels of the PNG the notebooks' inline backend saves: at the figure's dpi, cropped to
    what it draws (``bbox_inches="tight"``, 0.1 in of padding each side)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return Image.open(buffer).size[0]


def test_every_figure_function_is_checked_for_width_and_text_size(course_figures):
    assert {name.split(" ")[0] for name in course_figures} == set(plots.__all__) - NOT_FIGURES


def test_every_figure_fits_the_column_of_the_site(course_figures):
    assert plots.style.DPI == plt.rcParams["figure.dpi"] == 100  # what nclab.plots sets, the PNGs' dpi
    widest = (plots.style.MAX_WIDTH_IN + 0.2) * plots.style.DPI  # the figure and the backend's padding
    widths = {name: _png_width(fig) for name, fig in course_figures.items()}
    assert {name: width for name, width in widths.items() if width > widest} == {}
    assert min(widths.values()) > 300  # real figures, not empty ones


def test_no_text_of_any_figure_is_smaller_than_the_minimum(course_figures):
    smallest = {}
    for name, fig in course_figures.items():
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
        assert len(texts) >= 3, name  # titles, labels and ticks were found
        smallest[name] = min(t.get_fontsize() for t in texts)
    assert {name: size for name, size in smallest.items() if size < plots.style.MIN_FONT_PT} == {}
    assert min(smallest.values()) == plots.style.MIN_FONT_PT  # the constant is the size the figures use


def test_the_theme_draws_no_default_text_under_the_minimum():  # the notebooks' own figures use these sizes
    keys = ["font.size", "axes.labelsize", "axes.titlesize", "xtick.labelsize", "ytick.labelsize",
            "legend.fontsize", "legend.title_fontsize", "figure.titlesize"]  # fmt: skip
    sizes = {key: matplotlib.font_manager.FontProperties(size=plt.rcParams[key]).get_size_in_points() for key in keys}
    assert {key: size for key, size in sizes.items() if size < plots.style.MIN_FONT_PT} == {}


def test_panel_grid_wraps_panels_to_rows_within_the_width():
    fig, axes = plots.style.panel_grid(5, per_row=2, row_height=3.0)
    assert len(axes) == 5 and len(fig.axes) == 6 and not fig.axes[5].axison  # 3 rows of 2, the last cell empty
    assert tuple(fig.get_size_inches()) == (plots.style.MAX_WIDTH_IN, 9.0)
    assert [ax.get_subplotspec().colspan.start for ax in axes] == [0, 1, 0, 1, 0]
    one, axes = plots.style.panel_grid(1, per_row=3, row_height=2.0, width=4.0)
    assert len(axes) == 1 and tuple(one.get_size_inches()) == (4.0, 2.0)
    with pytest.raises(ValueError, match="wrap to more rows"):
        plots.style.panel_grid(2, per_row=2, row_height=3.0, width=plots.style.MAX_WIDTH_IN + 1)
    with pytest.raises(ValueError, match="at least one panel"):
        plots.style.panel_grid(0, per_row=2, row_height=3.0)
    plt.close("all")


def test_a_legend_below_takes_as_few_even_rows_as_fit_and_one_in_a_cell_sits_in_the_empty_cell():
    fig, axes = plots.style.panel_grid(3, per_row=2, row_height=3.0)
    for k in range(6):
        axes[0].plot([0, 1], label=f"a label, number {k}")  # about 1.5 in with its line: 6 would need 9
    below = plots.style.figure_legend(fig, axes, "below")
    fig.canvas.draw()
    rows = sorted({round(text.get_window_extent().y0) for text in below.get_texts()})
    assert len(rows) == 2 and below.get_window_extent().width <= fig.bbox.width  # 3 + 3: one row would not fit
    below.remove()
    short = plots.style.figure_legend(fig, axes, "below", ncol=4)  # as given, when it fits
    fig.canvas.draw()
    assert len({round(text.get_window_extent().y0) for text in short.get_texts()}) == 2
    short.remove()
    cell = plots.style.figure_legend(fig, axes, "cell")
    fig.canvas.draw()
    centre = cell.get_window_extent().get_points().mean(0)
    assert np.allclose(centre, fig.axes[3].get_window_extent().get_points().mean(0), atol=1)  # the empty cell
    plt.close("all")


def test_wrap_breaks_at_spaces_into_even_lines_that_fit():
    renderer, font = RendererAgg(1, 1, plots.style.DPI), matplotlib.font_manager.FontProperties(size=12)
    inches = renderer.get_text_width_height_descent("word word word word", font, ismath=False)[0] / plots.style.DPI
    wrap = plots.style.wrap
    assert wrap("word word word word", 1.01 * inches, 12) == "word word word word"  # it fits: unchanged
    assert wrap("word word word word", 0.99 * inches, 12) == "word word\nword word"  # not 3 + 1
    assert wrap("word word word word word", 1.01 * inches, 12) == "word word word\nword word"  # not 4 + 1
    assert wrap("NC1, log scale\n(within-class variability)", 2.6, 12) == "NC1, log scale\n(within-class variability)"
    assert wrap("aquarium_fish sweet_pepper", 0.1, 12) == "aquarium_fish\nsweet_pepper"  # words stay whole
