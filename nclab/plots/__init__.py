"""Figures of the course, drawn with seaborn/matplotlib. Each function returns its Figure.

``training``: histories, images, NC over training and by stage, the geometry of the class means
(notebooks 01–02); ``detection``: score histograms, ROC curves, thresholds, NECO's plane and dimension,
NC5 (notebooks 03–04); ``layers``: NC at every layer and the detection/transfer trade-off (notebook 05);
``generalization``: Colored-MNIST's environments, the inferred partition and the learnt mask (notebook 06);
``longtail``: class sizes, per-class alignment and norms, accuracy per group and against alignment
(notebook 07); ``design``: NC along training per loss, how early each reaches cross-entropy's collapse,
classifier and transfer accuracies (notebook 08); ``theory``: the unconstrained-features model's
collapse, simplex, cosine bound and sweeps (notebook 00). ``style`` holds the conventions all of them
follow: one legend per figure, outside the axes; y-axes named in words; accuracy never on a log axis;
scores spanning decades on a symlog axis; at most ``style.MAX_WIDTH_IN`` wide, panels wrapped to more rows,
no text under ``style.MIN_FONT_PT``, saved at ``style.DPI`` (set here, with seaborn's theme).
Every function is also available here, as ``nclab.plots.plot_history`` etc.
"""

from __future__ import annotations

import seaborn as sns

from . import design, detection, generalization, layers, longtail, style, theory, training  # noqa: F401
from .design import *  # noqa: F403
from .detection import *  # noqa: F403
from .generalization import *  # noqa: F403
from .layers import *  # noqa: F403
from .longtail import *  # noqa: F403
from .theory import *  # noqa: F403
from .training import *  # noqa: F403

__all__ = [
    *training.__all__,
    *detection.__all__,
    *layers.__all__,
    *generalization.__all__,
    *longtail.__all__,
    *design.__all__,
    *theory.__all__,
]

sns.set_theme(context="notebook", style="whitegrid", rc={"figure.dpi": style.DPI, "savefig.dpi": "figure"})
