"""The conventions every figure of the course follows: one legend per figure, outside the axes; axes named
in words (the symbol after the words); accuracy on a linear axis; scores that span decades on a symlog
axis with bins of equal width there."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["METRIC_LABELS", "metric_label", "is_accuracy", "figure_legend", "symlog_bins"]

METRIC_LABELS = {  # nc_metrics / variability_metrics key → axis label: words first, then the symbol
    "nc1": "NC1 (within-class variability)",
    "nc1_trace_ratio": "NC1 as Tr(Σ_W)/Tr(Σ_B) (within-class variability)",
    "nc2_equinorm_means": "NC2 (unequal norms: CoV)",
    "nc2_equinorm_weights": "NC2 (unequal norms: CoV)",
    "nc2_equiangular_means": "NC2 (unequal angles: std of cosines)",
    "nc2_equiangular_weights": "NC2 (unequal angles: std of cosines)",
    "nc2_maxangle_means": "NC2 (distance from the ETF angle)",
    "nc2_maxangle_weights": "NC2 (distance from the ETF angle)",
    "nc2_etf_distance": "NC2 (distance of WWᵀ from the ETF)",
    "nc3": "NC3 (classifier–mean misalignment)",
    "nc4_ncc_mismatch": "NC4 (disagreement with nearest class mean)",
    "ncc_accuracy": "nearest-class-centre accuracy",
    "accuracy": "accuracy",
    "nc5": "NC5 (ID–OOD mean alignment)",
}


def metric_label(metric: str, log: bool = False, wrap: bool = False) -> str:
    """The axis label of a metric key, "NC1 (within-class variability)" (:data:`METRIC_LABELS`, else the key
    with spaces); ", log scale" after the name when ``log``; the words on a second line when ``wrap``."""
    name, _, words = METRIC_LABELS.get(metric, metric.replace("_", " ")).partition(" (")
    name += ", log scale" if log else ""
    return f"{name}{chr(10) if wrap else ' '}({words}" if words else name


def is_accuracy(metric: str) -> bool:
    """Whether a column is an accuracy (a fraction in [0, 1], never drawn on a log axis)."""
    return "accuracy" in metric or metric.endswith("_acc")


def figure_legend(
    fig: plt.Figure, axes, where: str = "right", title: str | None = None, ncol: int | None = None, **kwargs
) -> plt.Legend | None:
    """One legend for the whole figure, outside the axes (``where``: "right" or "below"): every label of
    every axes' legend or labelled artist once, in the order first seen; the axes' own legends removed;
    ``title`` by default the first of their titles.
    The figure must use constrained layout (``constrained_layout=True``), which makes room for it."""
    entries: dict[str, object] = {}
    for ax in np.ravel(axes):
        legend = ax.get_legend()  # seaborn's (its histograms' entries are in no other place)
        if legend is not None:
            title = title or legend.get_title().get_text() or None
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                entries.setdefault(text.get_text(), handle)
            legend.remove()
        for handle, label in zip(*ax.get_legend_handles_labels()):  # artists labelled after the legend was made
            entries.setdefault(label, handle)
    if not entries:
        return None
    if where == "right":
        loc, ncol = "outside right upper", ncol or 1
    elif where == "below":
        loc, ncol = "outside lower center", ncol or min(len(entries), 6)
    else:
        raise ValueError(f"where is 'right' or 'below', got {where!r}")
    options = {"fontsize": 9, "frameon": False, **kwargs}
    return fig.legend(list(entries.values()), list(entries), loc=loc, ncol=ncol, title=title, **options)


def symlog_bins(values: np.ndarray, bins: int = 40, linthresh: float = 1.0) -> np.ndarray:
    """``bins`` + 1 edges spanning ``values``, of equal width on a symlog axis (linear within ±linthresh,
    logarithmic beyond): equal steps of t = sign(x) log10(1 + |x| / linthresh), mapped back to x."""
    t = np.sign(values) * np.log10(1 + np.abs(values) / linthresh)
    edges = np.linspace(t.min(), t.max(), bins + 1) if t.max() > t.min() else t.min() + np.array([-0.5, 0.5])
    return np.sign(edges) * linthresh * (10 ** np.abs(edges) - 1)
