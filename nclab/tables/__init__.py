"""Tables that notebooks need, each one tested function returning a pandas DataFrame; one module per chapter
of figures, as ``nclab.plots``:

- ``training``: :func:`model_nc`, one model's NC metrics; :func:`nc_over_training`, every NC metric of
  every saved epoch of every run (notebooks 02, 05, 08); :func:`collapse_references`, the practical-work
  report's NC table beside the same quantities measured here (notebooks 00 and 02);
- ``detection``: :func:`fit_detectors`, :func:`score_sets`, :func:`detection_table` (every OOD detector
  fitted on the training features, every set scored, every pair evaluated with bootstrap intervals), all
  three at once in :func:`detection_results`; :func:`detection_report`, :func:`styled_report` (the
  practical-work report's layout); :func:`set_names` (notebooks 03, 04, 05, 09);
- ``layers``: :func:`etf_rows`, :func:`layer_features`, :func:`layerwise_nc`, :func:`probe_items` (every
  layer's probes image by image), :func:`layerwise_probes` and :func:`probe_summary` (their table),
  :func:`tradeoff`, :func:`control_differences` (what judges seed 000's claims) (notebook 05);
- ``generalization``: :func:`colour_statistics`, :func:`ood_generalization`, :func:`environment_metrics`,
  :func:`partition_rounds` (notebook 06);
- ``longtail``: :func:`per_class_alignment`, :func:`long_tail_groups`, both of a run at once
  (:func:`long_tail_tables`), :func:`group_summary` (notebooks 07, 08);
- ``design``: :func:`first_match`, :func:`race_table` (both spaces of a trace), :func:`race`,
  :func:`final_table`, :func:`prototype_vs_probe`, :func:`transfer_probes`, :func:`by_loss`,
  :func:`head_correct`, :func:`design_differences` (what judges seed 004's claims) (notebook 08);
- ``verdicts``: :func:`accuracy_difference`, :func:`auroc_difference` (a paired bootstrap interval of a
  difference, over images and seeds) and :func:`judge` (reproduced / inconclusive / contradicted);
- ``claims``: :data:`CLAIMS`, every claim a notebook judges with its quoted source; :func:`claims_table`,
  :func:`verdict_table` (notebooks 05–08).

Every function is also available here, as ``nclab.tables.detection_table`` etc.
"""

from .claims import CLAIMS, Claim, claims_table, verdict_table
from .design import (
    SPACES,
    by_loss,
    design_differences,
    final_table,
    first_match,
    head_correct,
    prototype_vs_probe,
    race,
    race_table,
    transfer_probes,
)
from .detection import (
    LOWER_IS_BETTER,
    REPORT_METRICS,
    OnEmbedding,
    detection_report,
    detection_results,
    detection_table,
    fit_detectors,
    score_sets,
    set_names,
    styled_report,
)
from .generalization import (
    ENVIRONMENT_NAMES,
    colour_statistics,
    environment_metrics,
    etf_distance,
    ood_generalization,
    partition_rounds,
)
from .layers import (
    control_differences,
    etf_rows,
    layer_features,
    layerwise_nc,
    layerwise_probes,
    probe_items,
    probe_summary,
    tradeoff,
)
from .longtail import group_summary, long_tail_groups, long_tail_tables, per_class_alignment
from .training import collapse_references, model_nc, nc_over_training
from .verdicts import Difference, accuracy_difference, auroc_difference, judge

__all__ = [
    "model_nc",
    "nc_over_training",
    "fit_detectors",
    "score_sets",
    "detection_table",
    "detection_results",
    "OnEmbedding",
    "detection_report",
    "styled_report",
    "set_names",
    "etf_rows",
    "layer_features",
    "layerwise_nc",
    "probe_items",
    "layerwise_probes",
    "probe_summary",
    "tradeoff",
    "control_differences",
    "colour_statistics",
    "ood_generalization",
    "environment_metrics",
    "etf_distance",
    "partition_rounds",
    "per_class_alignment",
    "long_tail_groups",
    "long_tail_tables",
    "group_summary",
    "first_match",
    "SPACES",
    "race_table",
    "race",
    "head_correct",
    "design_differences",
    "final_table",
    "by_loss",
    "prototype_vs_probe",
    "transfer_probes",
    "Difference",
    "accuracy_difference",
    "auroc_difference",
    "judge",
    "Claim",
    "CLAIMS",
    "claims_table",
    "verdict_table",
    "collapse_references",
    "REPORT_METRICS",
    "LOWER_IS_BETTER",
    "ENVIRONMENT_NAMES",
]
