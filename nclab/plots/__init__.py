"""Figures of the course, drawn with seaborn/matplotlib. Each function returns its Figure.

``training``: histories, images, NC over training and by stage, the geometry of the class means
(notebooks 01–02); ``detection``: score histograms, ROC curves, thresholds, NECO's plane and dimension,
NC5 (notebooks 03–04); ``layers``: NC at every layer and the detection/transfer trade-off (notebook 05).
Every function is also available here, as ``nclab.plots.plot_history`` etc.
"""

from __future__ import annotations

import seaborn as sns

from .detection import (
    plot_dim_sweep,
    plot_nc5_over_training,
    plot_principal_plane,
    plot_roc_curves,
    plot_score_histograms,
    plot_threshold,
)
from .layers import plot_layerwise, plot_tradeoff
from .training import (
    history_frame,
    plot_class_variability,
    plot_collapse,
    plot_geometry,
    plot_history,
    plot_stages,
    show_images,
)

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
