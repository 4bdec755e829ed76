"""Exercises with instant feedback: ``check(name, answer)`` says ✅ or ❌ and, when ❌, what is wrong.

Every exercise of a notebook asks for one global name (a function, usually): the notebook cell defines it
and calls ``check``; the grader (:mod:`nclab.grade`) finds the same name in a submission, runs the same
check and awards the exercise's points. ``EXERCISES`` maps each question to that name, its check function
and its points.

``core`` holds the machinery and the comparison helpers; ``notebookNN`` the checks of notebook NN, ending
with its table ``EXERCISES``, the only place its points are written. The tables are merged below; a
question defined in two of them is an error at import.
"""

from __future__ import annotations

from typing import Any

from . import notebook00, notebook01, notebook02, notebook03, notebook04, notebook05, notebook06, notebook07, notebook08
from .core import NOT_ANSWERED, Exercise, Result, Wrong, merge_tables
from .core import run_check as _run_check

__all__ = ["check", "run_check", "points", "Result", "Exercise", "Wrong", "EXERCISES", "NOT_ANSWERED"]

EXERCISES: dict[str, Exercise] = merge_tables(
    notebook00.EXERCISES,
    notebook01.EXERCISES,
    notebook02.EXERCISES,
    notebook03.EXERCISES,
    notebook04.EXERCISES,
    notebook05.EXERCISES,
    notebook06.EXERCISES,
    notebook07.EXERCISES,
    notebook08.EXERCISES,
)


def run_check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name`` without printing. Never raises because of the answer."""
    return _run_check(EXERCISES, name, answer)


def check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name``, print ✅/❌ with what is wrong, and return the Result."""
    result = run_check(name, answer)
    print(result)
    return result


def points(name: str) -> int:
    """The points exercise ``name`` is worth (from its notebook's table)."""
    if name not in EXERCISES:
        raise KeyError(f"No exercise {name!r}; nclab knows {sorted(EXERCISES)}.")
    return EXERCISES[name].points
