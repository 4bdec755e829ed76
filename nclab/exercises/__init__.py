"""Exercises with instant feedback: ``check(name, answer)`` says ✅ or ❌ and, when ❌, what is wrong.

Every exercise of a notebook asks for one global name (a function, usually): the notebook cell defines it
and calls ``check``; the grader (:mod:`nclab.course.grading`) finds the same name in a submission, runs the same
check and awards the exercise's points. ``EXERCISES`` maps each question to that name, its check function
and its points. ``QUESTIONS`` maps each interpretation question graded by hand to its cell in the notebook
and its points; the grader copies the student's answer into the CSV for the instructor to score.

``core`` holds the machinery and the comparison helpers; ``notebookNN`` the checks of notebook NN, ending
with its tables ``EXERCISES`` and ``QUESTIONS``, the only places its points are written. The tables are merged below; a
question defined in two of them is an error at import.
"""

from __future__ import annotations

from typing import Any

from . import (
    notebook00,
    notebook01,
    notebook02,
    notebook03,
    notebook04,
    notebook05,
    notebook06,
    notebook07,
    notebook08,
    notebook09,
)
from .core import NOT_ANSWERED, Exercise, Question, Result, Wrong, merge_tables
from .core import run_check as _run_check

__all__ = [
    "check",
    "stand_in",
    "run_check",
    "points",
    "Result",
    "Exercise",
    "Question",
    "Wrong",
    "EXERCISES",
    "QUESTIONS",
    "NOT_ANSWERED",
]

_NOTEBOOKS = (
    notebook00,
    notebook01,
    notebook02,
    notebook03,
    notebook04,
    notebook05,
    notebook06,
    notebook07,
    notebook08,
    notebook09,
)
EXERCISES: dict[str, Exercise] = merge_tables(*(module.EXERCISES for module in _NOTEBOOKS))
QUESTIONS: dict[str, Question] = merge_tables(*(module.QUESTIONS for module in _NOTEBOOKS))
merge_tables(EXERCISES, QUESTIONS)  # one namespace: a CSV column per name


def run_check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name`` without printing. Never raises because of the answer."""
    return _run_check(EXERCISES, name, answer)


def check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name``, print ✅/❌ with what is wrong, and return the Result."""
    result = run_check(name, answer)
    print(result)
    return result


def stand_in(name: str, answer: Any) -> Any:
    """What the cells after exercise ``name`` call: ``answer`` once it is answered (right or wrong: what a
    wrong answer does next is part of the feedback); until then (``None``, ``...``, NotImplementedError) the
    exercise's ``reference``, the library's own computation, with a notice, so that "Run all" goes on. The
    stand-in is marked: copied into the answer's name it scores nothing (``run_check``)."""
    exercise = EXERCISES[name]
    if exercise.reference is None:
        raise ValueError(f"exercise {name!r} has no reference to stand in: its notebook never calls the answer.")
    if run_check(name, answer).answered:
        return answer
    reference = exercise.reference

    def lent(*args, **kwargs):
        return reference(*args, **kwargs)

    lent.__nclab_stand_in__ = True
    lent.__name__ = lent.__qualname__ = f"{exercise.answer}_stand_in"
    print(
        f"⚠️ {name}: `{exercise.answer}` is not answered yet, so the cells below use nclab's own computation "
        f"instead. Answer the exercise and rerun them to use yours."
    )
    return lent


def points(name: str) -> int:
    """The points exercise or hand-graded question ``name`` is worth (from its notebook's tables)."""
    table = EXERCISES if name in EXERCISES else QUESTIONS
    if name not in table:
        raise KeyError(f"No exercise {name!r}; nclab knows {sorted(EXERCISES)} and the questions {sorted(QUESTIONS)}.")
    return table[name].points
