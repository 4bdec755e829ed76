"""A method's measured gain next to the gain a paper claims, with a verdict (notebooks 05–08)."""

from __future__ import annotations

import pandas as pd

__all__ = ["versus_claim"]


def versus_claim(baseline: dict[str, float], method: dict[str, float], claimed: dict[str, float]) -> pd.DataFrame:
    """One row per task: ``baseline``, ``method``, their ``difference`` (method − baseline), the ``claimed``
    difference, and a ``verdict``:

    - "reproduced": same sign as the claim and at least half its size;
    - "same sign, under half the claim": too small to call a reproduction from one run;
    - "not reproduced": no gain, or a gain of the opposite sign.

    The three dicts are keyed by task, in the same units (e.g. AUROC in percentage points).
    """
    if not set(baseline) == set(method) == set(claimed):
        raise ValueError(
            f"baseline, method and claimed must name the same tasks, got {sorted(baseline)}, {sorted(method)} "
            f"and {sorted(claimed)}"
        )
    rows = []
    for task in claimed:
        difference, claim = method[task] - baseline[task], claimed[task]
        if difference * claim <= 0:
            verdict = "not reproduced"
        elif abs(difference) >= abs(claim) / 2:
            verdict = "reproduced"
        else:
            verdict = "same sign, under half the claim"
        rows.append(
            {
                "task": task,
                "baseline": baseline[task],
                "method": method[task],
                "difference": difference,
                "claimed": claim,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows).set_index("task")
