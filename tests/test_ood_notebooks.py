"""Notebooks 03 (OOD detection) and 04 (NECO + NC5): their exercise checks, figures, widget and structure.

The checks must pass the reference answers and name the typical mistakes; the figures must show the
numbers the notebooks claim (AUROC in the titles, TPR/FPR at the threshold, d = C − 1 marked); the
threshold widget must start at the FPR@95 threshold; every exercise is followed by a question.
"""

import math
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from nclab import collapse, ood, plots
from nclab.exercises import run_check

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"03": ROOT / "notebooks" / "03_ood_detection.ipynb", "04": ROOT / "notebooks" / "04_neco_nc5.ipynb"}


# --- reference answers and typical mistakes ------------------------------------------------------------


def energy(logits, T=1.0):
    return T * torch.logsumexp(logits / T, dim=1)


def class_means(h, y):
    return torch.stack([h[y == c].mean(0) for c in range(int(y.max()) + 1)])


def centred(means):
    return means - means.mean(0)


def covariance(h, y):
    r = h.double() - class_means(h.double(), y)[y]
    return r.T @ r / len(h)


def fpr95(ind, out):
    tau = ind.sort(descending=True).values[math.ceil(95 * len(ind) / 100) - 1]
    return (out >= tau).double().mean().item()


def nc5(h, y, o):
    return F.cosine_similarity(class_means(h, y), o.mean(0)[None], dim=1).abs().mean().item()


def axes(S, d):
    return torch.linalg.eigh(torch.cov(S.T, correction=0))[1][:, -d:].flip(1).T


def ratio(S, P):
    return (S @ P.T).norm(dim=1) / S.norm(dim=1)


PASS = None
CASES = {  # case: (exercise, answer, PASS or what the failure message must say)
    **{
        f"reference {name}": (name, answer, PASS)
        for name, answer in {
            "03_energy": energy,
            "03_covariance": covariance,
            "03_fpr95": fpr95,
            "04_nc5": nc5,
            "04_pca": axes,
            "04_neco": ratio,
        }.items()
    },
    "float32 covariance": ("03_covariance", lambda h, y: covariance(h, y).float(), PASS),
    "fpr95 as a 0-d tensor": ("03_fpr95", lambda i, o: torch.tensor(fpr95(i, o)), PASS),
    "nc5 from the library": ("04_nc5", collapse.nc5, PASS),
    "axes from an SVD": ("04_pca", lambda S, d: torch.linalg.svd(S - S.mean(0), full_matrices=False)[2][:d], PASS),
    "axes with flipped signs": ("04_pca", lambda S, d: -axes(S, d), PASS),
    "free energy E": ("03_energy", lambda l, T=1.0: -energy(l, T), "flip its sign"),
    "naive exp": ("03_energy", lambda l, T=1.0: T * torch.log(torch.exp(l / T).sum(1)), "exp(1000) overflows"),
    "max logit": ("03_energy", lambda l, T=1.0: l.amax(1), "that is the max logit"),
    "T only inside": ("03_energy", lambda l, T=1.0: torch.logsumexp(l / T, 1), "temperature is missing outside"),
    "sum over samples": ("03_energy", lambda l, T=1.0: energy(l.T, T), "sum over the classes (dim=1)"),
    "energy as a list": ("03_energy", lambda l, T=1.0: energy(l, T).tolist(), "return a torch tensor"),
    "total covariance": ("03_covariance", lambda h, y: torch.cov(h.T, correction=0), "on the global mean"),
    "torch.cov": ("03_covariance", lambda h, y: torch.cov(h.T), "torch.cov of all features"),
    "N - 1": ("03_covariance", lambda h, y: covariance(h, y) * len(h) / (len(h) - 1), "divided by N − 1"),
    "unweighted classes": (
        "03_covariance",
        lambda h, y: torch.stack([torch.cov(h[y == c].T, correction=0) for c in range(int(y.max()) + 1)]).mean(0),
        "equal weights",
    ),
    "diagonal": ("03_covariance", lambda h, y: torch.diag(torch.diagonal(covariance(h, y))), "only the diagonal"),
    "OOD-positive convention": ("03_fpr95", lambda i, o: ood.detection_metrics(i, o)["fpr95_oodpos"], "`fpr95_oodpos`"),
    "strict threshold": (
        "03_fpr95",
        lambda i, o: (o > i.sort(descending=True).values[math.ceil(0.95 * len(i)) - 1]).double().mean(),
        "not > τ",
    ),
    "interpolated quantile": ("03_fpr95", lambda i, o: (o >= torch.quantile(i, 0.05)).double().mean(), "interpolated"),
    "floor": (
        "03_fpr95",
        lambda i, o: (o >= i.sort(descending=True).values[int(0.95 * len(i)) - 1]).double().mean(),
        "⌊0.95 n⌋",
    ),
    "1 - FPR": ("03_fpr95", lambda i, o: 1 - fpr95(i, o), "that is 1 − FPR"),
    "centred means": (
        "04_nc5",
        lambda h, y, o: F.cosine_similarity(centred(class_means(h, y)), o.mean(0)[None], dim=1).abs().mean(),
        "centred",
    ),
    "no absolute value": (
        "04_nc5",
        lambda h, y, o: F.cosine_similarity(class_means(h, y), o.mean(0)[None], dim=1).mean(),
        "absolute value",
    ),
    "per-sample cosines": (
        "04_nc5",
        lambda h, y, o: F.cosine_similarity(class_means(h, y)[:, None], o[None], dim=2).abs().mean(),
        "*mean* OOD feature",
    ),
    "smallest eigenvalues": (
        "04_pca",
        lambda S, d: torch.linalg.eigh(torch.cov(S.T, correction=0))[1][:, :d].T,
        "ascending",
    ),
    "axes as columns": ("04_pca", lambda S, d: axes(S, d).T, "as rows, (d, p)"),
    "not centred": ("04_pca", lambda S, d: torch.linalg.eigh(S.T @ S / len(S))[1][:, -d:].T, "centre the data first"),
    "scaled axes": ("04_pca", lambda S, d: 2 * axes(S, d), "not orthonormal"),
    "no division": ("04_neco", lambda S, P: (S @ P.T).norm(dim=1), "divide by ‖s‖"),
    "squared ratio": ("04_neco", lambda S, P: ratio(S, P) ** 2, "squared ratio"),
    "outside share": ("04_neco", lambda S, P: (S - S @ P.T @ P).norm(dim=1) / S.norm(dim=1), "*outside*"),
    "norms of the columns": ("04_neco", lambda S, P: (S @ P.T).norm(dim=0), "dim=1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_passes_right_answers_and_names_typical_mistakes(case):
    name, answer, expected = CASES[case]
    result = run_check(name, answer)
    if expected is PASS:
        assert result.passed, result.message
    else:
        assert not result.passed and expected in result.message, result.message


def test_hand_cases_are_what_the_messages_say():
    assert energy(torch.tensor([[1000.0, 1000.0]])).item() == pytest.approx(1000 + math.log(2))
    assert fpr95(torch.arange(1.0, 21.0), torch.tensor([0, 1, 2, 2, 3, 10, 25, -5, 1.5, 2.5, 1.97])) == 6 / 11
    h = torch.tensor([[2.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 3.0, 0]])
    ood_features = torch.tensor([[2.0, -2, 0], [0, 0, 2]])
    assert nc5(h, torch.tensor([0, 0, 1, 1]), ood_features) == pytest.approx(1 / math.sqrt(3))
    assert ratio(torch.tensor([[3.0, 4, 0], [0, 0, 2], [1, 1, 1]]), torch.eye(3)[:2]).tolist() == pytest.approx(
        [1, 0, math.sqrt(2 / 3)]
    )


# --- figures and the widget ------------------------------------------------------------------------------


def test_histogram_grid_has_one_panel_per_detector_and_set_with_its_auroc(toy_scores):
    scores = toy_scores
    fig = plots.plot_score_histograms(scores)
    assert len(fig.axes) == 2 * 2
    titles = [ax.get_title() for ax in fig.axes]
    auroc = ood.detection_metrics(scores["flipped"]["ID"], scores["flipped"]["far"])["auroc"]
    assert titles[3] == f"flipped · AUROC {auroc:.3f}" and titles[0].startswith("near\ngood · AUROC")
    assert titles[1].startswith("far\n")  # each set named once, atop its column
    assert [ax.get_legend() for ax in fig.axes] == [None] * 4 and len(fig.legends) == 1  # one legend, below
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ID", "the OOD set named atop the column"]
    assert all(ax.get_xscale() == "linear" for ax in fig.axes) and fig.axes[0].get_ylabel() == "fraction per bin"
    named = plots.plot_score_histograms(scores, names={"near": "CIFAR-10 (stand-in: digits)"})
    assert named.axes[0].get_title().startswith("CIFAR-10 (stand-in: digits)\n")
    plt.close("all")


def test_mahalanobis_histograms_are_on_a_symlog_axis_with_equal_bins_there():
    generator = torch.Generator().manual_seed(0)
    distances = {
        "ID": 50 * torch.rand(300, generator=generator) + 20,
        "far": 1500 * torch.rand(200, generator=generator) + 100,
    }
    scores = {
        "mahalanobis": {k: -v for k, v in distances.items()},
        "energy": {k: v / 100 for k, v in distances.items()},
    }
    fig = plots.plot_score_histograms(scores)
    maha, energy = fig.axes
    assert maha.get_xscale() == "symlog" and energy.get_xscale() == "linear"
    assert "symlog" in maha.get_xlabel()
    left, right = maha.get_xlim()
    assert left == pytest.approx(-float(distances["far"].max()), rel=1e-6)
    assert right == pytest.approx(-float(distances["ID"].min()), rel=1e-6)
    assert plots.plot_score_histograms(scores, symlog=()).axes[0].get_xscale() == "linear"
    threshold = plots.plot_threshold(scores["mahalanobis"]["ID"], scores["mahalanobis"]["far"], -60.0, "mahalanobis")
    assert threshold.axes[0].get_xscale() == "symlog"
    assert (
        plots.plot_threshold(torch.tensor([1.0, 2]), torch.tensor([0.0]), 1.0, "energy").axes[0].get_xscale()
        == "linear"
    )
    plt.close("all")


def test_roc_panels_draw_one_curve_per_detector_and_the_95_percent_line(toy_scores):
    scores = toy_scores
    fig = plots.plot_roc_curves(scores)
    near = fig.axes[0]
    fpr, tpr, _ = ood.roc_curve(scores["good"]["ID"], scores["good"]["near"])
    curve = near.get_lines()[0]
    assert (curve.get_xdata() == fpr).all() and (curve.get_ydata() == tpr).all()
    assert any(list(line.get_ydata()) == [0.95, 0.95] for line in near.get_lines())
    assert near.get_legend().get_texts()[0].get_text().startswith("good (")
    fig.canvas.draw()
    for ax in fig.axes:  # each legend under its panel, off the curves
        assert ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0
    named = plots.plot_roc_curves(scores, names={"near": "CIFAR-10 (stand-in: digits)"})
    assert named.axes[0].get_title() == "ID against CIFAR-10 (stand-in: digits)"
    assert named.axes[1].get_title() == "ID against far"
    plt.close("all")


def test_threshold_figure_reports_tpr_and_fpr_of_a_hand_case():
    fig = plots.plot_threshold(torch.tensor([1.0, 2, 3, 4]), torch.tensor([0.0, 2, 5]), 2.0, "s", "ood")
    assert "TPR 75.0% of ID kept, FPR 66.7% of ood accepted" in fig.axes[0].get_title()
    assert any(list(line.get_xdata()) == [2.0, 2.0] for line in fig.axes[0].get_lines())
    plt.close(fig)


def test_principal_plane_draws_at_most_max_points_per_set():
    points = {"ID": torch.randn(50, 2), "OOD": torch.randn(30, 2)}
    fig = plots.plot_principal_plane(points, max_points=20, names={"OOD": "SVHN (stand-in: photo crops)"})
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 40
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["ID", "SVHN (stand-in: photo crops)"]
    fig.canvas.draw()
    assert fig.axes[0].get_legend().get_window_extent().x0 >= fig.axes[0].get_window_extent().x1
    plt.close(fig)


def test_dim_sweep_marks_c_minus_one_and_nc5_plot_has_two_panels():
    frame = pd.DataFrame({"d": [1, 2, 3, 1, 2, 3], "OOD set": ["a"] * 3 + ["b"] * 3, "auroc": [0.6, 0.7, 0.5] * 2})
    fig = plots.plot_dim_sweep(frame, mark=2, names={"a": "CIFAR-10 (stand-in: digits)"})
    ax = fig.axes[0]
    assert any(list(line.get_xdata()) == [2, 2] for line in ax.get_lines())
    assert ax.get_xscale() == "log" and not ax.texts  # no label drawn over the curves
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["CIFAR-10 (stand-in: digits)", "b", "chance (0.5)", "d = C − 1 = 2"]
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # right of the axes
    top = next(child for child in ax.child_axes)  # the mark's name in the top margin, above the curves
    assert [t.get_text() for t in top.get_xticklabels()] == ["d = C − 1"]
    plt.close(fig)
    frame = pd.DataFrame(
        {
            "epoch": [1, 2, 1, 2],
            "OOD set": ["a", "a", "b", "b"],
            "nc5": [0.9, 0.8, 0.7, 0.6],
            "neco_auroc": [0.6, 0.7, 0.8, 0.9],
        }
    )
    fig = plots.plot_nc5_over_training(frame, names={"a": "SVHN (stand-in: photo crops)"})
    assert [ax.get_title() for ax in fig.axes][1] == "NECO AUROC" and list(fig.axes[0].get_xticks()) == [1, 2]
    assert fig.axes[0].get_ylabel() == "NC5 (ID–OOD mean alignment)" and "AUROC" in fig.axes[1].get_ylabel()
    assert [ax.get_legend() for ax in fig.axes] == [None, None] and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["SVHN (stand-in: photo crops)", "b"]
    plt.close(fig)


# --- the notebooks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("number, least", [("03", 3), ("04", 2)])
def test_each_exercise_is_followed_by_a_question(number, least):
    cells = nbformat.read(NOTEBOOKS[number], 4).cells
    exercise_cells = [
        i for i, cell in enumerate(cells) if cell.cell_type == "code" and f'check("{number}_' in cell.source
    ]
    assert len(exercise_cells) >= least
    for i in exercise_cells:
        assert "### BEGIN SOLUTION" in cells[i].source
        question = cells[i + 1]
        assert question.cell_type == "markdown" and question.source.startswith("**Question"), question.source


def test_the_widget_cell_is_ignored_by_nbval_and_the_table_names_its_fpr95_convention():
    cells = nbformat.read(NOTEBOOKS["03"], 4).cells
    sources = [cell.source for cell in cells]
    widget = next(cell for cell in cells if "widgets.threshold_explorer(" in cell.source)
    assert "nbval-ignore-output" in widget.metadata.get("tags", [])
    assert any("FPR@95 here is the\nID-positive convention" in s for s in sources)
    assert any("run.snapshots" in s for s in sources) and any("run.load_snapshot(early)" in s for s in sources)
