"""The conventions every figure of the course follows: one legend per figure, outside the axes; axes named
in words (the symbol after the words); accuracy on a linear axis; scores that span decades on a symlog
axis with bins of equal width there; a figure no wider than the site's column, its panels wrapped to more
rows, and no text smaller than :data:`MIN_FONT_PT`, so that every word stays readable on the page."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.font_manager import FontProperties

__all__ = [
    "DPI",
    "MIN_FONT_PT",
    "MAX_WIDTH_IN",
    "HALF_AXES_IN",
    "METRIC_LABELS",
    "metric_label",
    "is_accuracy",
    "panel_grid",
    "wrap",
    "figure_legend",
    "symlog_bins",
]

# The size of a figure on the student site. The notebooks' inline backend saves every figure as a PNG at
# DPI dots per inch (``rcParams["figure.dpi"]``, which ``nclab.plots`` sets), so a text of s points is
# s × DPI / 72 pixels tall in the PNG, and the page shrinks any PNG wider than its output column (688 px
# at the 1280 px desktop viewport) to fit it. A figure at most MAX_WIDTH_IN wide (plus the 0.1 in the
# backend pads each side with) is shown at 97 % or more, so its smallest text, MIN_FONT_PT, is about 11 px
# on a page whose body text is 16 px; tests/test_browser.py measures it on every page.
DPI = 100  # dots per inch of every saved figure
MIN_FONT_PT = 8  # the smallest text any course figure draws (tick labels, legends, annotations), in points
MAX_WIDTH_IN = 7.0  # the widest figure, in inches (700 px at DPI)
HALF_AXES_IN = MAX_WIDTH_IN / 2 - 1.2  # what the title of a panel two to a row may span: its axes, in inches

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


def panel_grid(
    panels: int, per_row: int, row_height: float, width: float = MAX_WIDTH_IN, **subplots
) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``panels`` axes, at most ``per_row`` side by side, wrapping to more rows: ``width`` inches
    wide (at most :data:`MAX_WIDTH_IN`, so that it keeps its size on the page) and ``row_height`` inches per
    row, with constrained layout. The grid's cells past the last panel are switched off (an empty cell,
    where :func:`figure_legend` can put the legend). ``subplots``: more options of ``plt.subplots``
    (``sharey``, ``subplot_kw``). Returns the figure and its ``panels`` axes, row by row."""
    if panels < 1 or per_row < 1:
        raise ValueError(f"a grid needs at least one panel and one per row, got {panels} panels, {per_row} per row")
    if width > MAX_WIDTH_IN:
        raise ValueError(f"a figure is at most MAX_WIDTH_IN = {MAX_WIDTH_IN} in wide, got {width}: wrap to more rows")
    columns = min(panels, per_row)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(width, row_height * rows), squeeze=False, constrained_layout=True, **subplots
    )
    for ax in axes.flat[panels:]:
        ax.axis("off")
    return fig, list(axes.flat[:panels])


def _fill(words: list[str], width, limit: float) -> list[str]:
    """Words into lines, each at most ``limit`` as ``width(line)`` measures it (a word too long alone gets a
    line of its own)."""
    lines = [words[0]]
    for word in words[1:]:
        longer = f"{lines[-1]} {word}"
        lines[-1:] = [longer] if width(longer) <= limit else [lines[-1], word]
    return lines


def wrap(text: str, inches: float, fontsize: float) -> str:
    """``text`` broken at spaces into as few lines as fit in ``inches`` at ``fontsize`` points, as the
    figures' font measures them, the lines about equally long (no word left alone on the last): a title
    that fits over its panel instead of running into its neighbour's or off the figure. Line breaks already
    in ``text`` are kept."""
    renderer, font = RendererAgg(1, 1, DPI), FontProperties(size=fontsize)

    def width(line: str) -> float:  # inches
        return renderer.get_text_width_height_descent(line, font, ismath=False)[0] / DPI

    lines = []
    for paragraph in text.split("\n"):
        words = paragraph.split(" ")
        filled, limit = _fill(words, width, inches), inches
        while len(words) > len(filled) > 1 and len(_fill(words, width, 0.95 * limit)) == len(filled):
            limit *= 0.95  # the same number of lines in less width: more even lines
        lines += _fill(words, width, limit)
    return "\n".join(lines)


def figure_legend(
    fig: plt.Figure, axes, where: str = "right", title: str | None = None, ncol: int | None = None, **kwargs
) -> plt.Legend | None:
    """One legend for the whole figure, outside the axes: every label of every axes' legend or labelled
    artist once, in the order first seen; the axes' own legends removed; ``title`` by default the first of
    their titles. ``where``: "right" (one column), "below" (in as few rows as the figure's width allows,
    at most ``ncol`` to a row) or "cell" (one column, in the middle of the first switched-off axes: the
    empty cell of a :func:`panel_grid`; below when there is none).
    The figure must use constrained layout (``constrained_layout=True``), which makes room for it."""
    if where not in ("right", "below", "cell"):
        raise ValueError(f"where is 'right', 'below' or 'cell', got {where!r}")
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
    options = {"fontsize": 9, "frameon": False, "title": title, **kwargs}
    handles, labels = list(entries.values()), list(entries)
    spare = [ax for ax in fig.axes if not ax.axison and ax.name == "rectilinear" and not ax.has_data()]
    if where == "cell" and spare:
        return fig.legend(handles, labels, loc="center", bbox_to_anchor=(0.5, 0.5),
                          bbox_transform=spare[0].transAxes, ncol=ncol or 1, **options)  # fmt: skip
    if where == "right":
        return fig.legend(handles, labels, loc="outside right upper", ncol=ncol or 1, **options)
    renderer, most = fig.canvas.get_renderer(), min(ncol or len(labels), len(labels))
    for rows in range(-(-len(labels) // most), len(labels) + 1):  # the fewest rows, of equal length, that fit
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=-(-len(labels) // rows), **options)
        if rows == len(labels) or legend.get_window_extent(renderer).width <= fig.bbox.width:
            return legend
        legend.remove()


def symlog_bins(values: np.ndarray, bins: int = 40, linthresh: float = 1.0) -> np.ndarray:
    """``bins`` + 1 edges spanning ``values``, of equal width on a symlog axis (linear within ±linthresh,
    logarithmic beyond): equal steps of t = sign(x) log10(1 + |x| / linthresh), mapped back to x."""
    t = np.sign(values) * np.log10(1 + np.abs(values) / linthresh)
    edges = np.linspace(t.min(), t.max(), bins + 1) if t.max() > t.min() else t.min() + np.array([-0.5, 0.5])
    return np.sign(edges) * linthresh * (10 ** np.abs(edges) - 1)
