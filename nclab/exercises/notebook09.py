"""Checks of notebook 09's exercises (conventions and pitfalls; auditing a report): answer → (passed, message).

Its tables ``EXERCISES`` and ``QUESTIONS`` are merged into :mod:`nclab.exercises`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from .. import pitfalls
from .core import Exercise, Question, Wrong, as_number, call, generator

# ----------------------------------------------------------------------------------------------------
# 09_bounds: the range of the NCC's accuracy given the network's accuracy and their agreement


def _pair(output, case: str) -> tuple[float, float]:
    if isinstance(output, (str, bytes, Mapping)) or not hasattr(output, "__len__") or len(output) != 2:
        raise Wrong(f"{case}: return two numbers (low, high), got {type(output).__name__}")
    low, high = (as_number(value) for value in output)
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        raise Wrong(f"{case}: return two finite numbers (low, high), got {output!r}")
    return low, high


def check_bounds(ncc_accuracy_bounds_student: Callable) -> tuple[bool, str]:
    """09_bounds: ``ncc_accuracy_bounds_student(r, a)`` → (low, high), the range of the NCC accuracy when
    the network's accuracy is r and the two classifiers agree on a fraction a of the samples:
    [max(0, a + r − 1), 1 − |a − r|] (``nclab.pitfalls.ncc_accuracy_bounds``), on eight hand cases and a
    random one (r and a uniform in [0, 1], 4 decimals; while grading, ones the student cannot know in
    advance). Recognises r ± (1 − a) (the upper bound forgets that on a disagreement the NCC is right only
    where the network is wrong), a missing clip at 0, and the two bounds swapped."""
    cases = [(0.9, 0.95), (0.95, 0.9), (0.3, 0.2), (0.5, 0.5), (1.0, 1.0), (0.99968, 0.9998), (0.2, 0.9), (0.7, 0.0)]
    rng = generator(74)
    drawn = cases[0]
    while drawn in cases:  # never one of the notebook's cases: an answer that only knows those must fail
        drawn = tuple(round(float(x), 4) for x in torch.rand(2, generator=rng, dtype=torch.float64))
    for r, a in [*cases, drawn]:
        case = ("random case: " if (r, a) == drawn else "") + f"network accuracy r = {r}, agreement a = {a}"
        low, high = _pair(call(ncc_accuracy_bounds_student, case, r, a), case)
        want_low, want_high = pitfalls.ncc_accuracy_bounds(r, a)
        if math.isclose(low, want_low, abs_tol=1e-9) and math.isclose(high, want_high, abs_tol=1e-9):
            continue
        if math.isclose(low, want_high, abs_tol=1e-9) and math.isclose(high, want_low, abs_tol=1e-9):
            return False, f"{case}: you return (high, low); return (low, high)."
        if math.isclose(high, r + 1 - a, abs_tol=1e-9) and not math.isclose(want_high, r + 1 - a, abs_tol=1e-9):
            return False, (
                f"{case}: your upper bound is r + (1 − a) = {r + 1 - a:.5g}, expected {want_high:.5g}. Where the "
                "two classifiers disagree, at most one of them is right: the NCC can gain only on the "
                "disagreements where the network is wrong, a fraction of at most 1 − r."
            )
        if math.isclose(low, a + r - 1, abs_tol=1e-9) and a + r - 1 < 0:
            return False, f"{case}: your lower bound is a + r − 1 = {a + r - 1:.5g} < 0; an accuracy is at least 0."
        return False, f"{case}: got ({low:.6g}, {high:.6g}), expected ({want_low:.6g}, {want_high:.6g})."
    low, high = pitfalls.ncc_accuracy_bounds(0.99968, 0.9998)
    return True, (
        f"the NCC's accuracy must lie in [{low:.5f}, {high:.5f}] for the report's numbers: its 0.099972 is "
        "impossible (a slipped decimal point: 0.99972 is inside)."
    )


# ----------------------------------------------------------------------------------------------------
# 09_audit: what went wrong in each excerpt of the report

KINDS = (
    "correct",
    "sign flipped",
    "labels swapped",
    "two values for one quantity",
    "impossible given the other numbers",
    "definition mislabelled",
)  # in the order notebook 09 lists them
_AUDIT = {key: kind for key, (kind, _) in pitfalls.REPORT_DIAGNOSES.items()}  # notebook 09's excerpts


def check_audit(audit_report: Callable) -> tuple[bool, str]:
    """09_audit: ``audit_report()`` returns a dict mapping each excerpt "E1" … "E7" of the report to one of
    ``KINDS``. Says how many are right, not which (one excerpt changed at a time, some thirty tries would
    still find the key: the written question that follows is what carries the understanding)."""
    audit = call(audit_report, "audit_report()")
    if not isinstance(audit, Mapping):
        return False, f"`audit_report()` must return a dict {{excerpt: kind}}, got {type(audit).__name__}."
    keys = {str(key).strip().upper(): value for key, value in audit.items()}
    missing = sorted(set(_AUDIT) - set(keys))
    if missing:
        return False, f"give a kind for every excerpt: {', '.join(missing)} missing."
    extra = sorted(set(keys) - set(_AUDIT))
    if extra:
        return False, f"unknown excerpts {', '.join(extra)}: the excerpts are {', '.join(_AUDIT)}."
    for key, value in keys.items():
        if not isinstance(value, str) or value.strip().lower() not in KINDS:
            return False, f"{key}: {value!r} is not one of the kinds {list(KINDS)}."
    right = sum(keys[key].strip().lower() == kind for key, kind in _AUDIT.items())
    if right < len(_AUDIT):
        return False, f"{right} of {len(_AUDIT)} excerpts right: reread the others against the course's definitions."
    return True, "every excerpt diagnosed: write what each should have said in the next question."


EXERCISES = {
    "09_bounds": Exercise(
        "ncc_accuracy_bounds_student",
        check_bounds,
        points=2,
        reference=pitfalls.ncc_accuracy_bounds,
        references=("nclab.pitfalls.ncc_accuracy_bounds",),
    ),
    "09_audit": Exercise(
        "audit_report",
        check_audit,
        points=2,
        references=("nclab.pitfalls.REPORT_DIAGNOSES", "nclab.pitfalls.report_errata"),
    ),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "09_q_report": Question("nb09-29", points=3),
}
