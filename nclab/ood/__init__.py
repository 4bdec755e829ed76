"""Out-of-distribution detection (SPEC §2): post-hoc detectors on penultimate features (``detectors``:
:class:`MSP`, :class:`MaxLogit`, :class:`Energy`, :class:`Mahalanobis`, :class:`ViM`, :class:`NECO`, all of
scikit-learn's shape, higher = in-distribution) and the metrics that compare them (``metrics``:
:func:`detection_metrics`, :func:`bootstrap_intervals`, :func:`roc_curve`, :func:`threshold_at_tpr`).
"""

from .detectors import DETECTORS, MSP, NECO, Detector, Energy, Mahalanobis, MaxLogit, ViM
from .metrics import bootstrap_intervals, detection_metrics, roc_curve, threshold_at_tpr

__all__ = [
    "Detector",
    "MSP",
    "MaxLogit",
    "Energy",
    "Mahalanobis",
    "ViM",
    "NECO",
    "DETECTORS",
    "detection_metrics",
    "bootstrap_intervals",
    "threshold_at_tpr",
    "roc_curve",
]
