"""The gradebook: a grader's CSV with the instructor's hand points merged into one total per student, in the
form a learning-management system imports (Canvas, Moodle) or as a plain table.

``nclab gradebook scores.csv --lms canvas --out canvas.csv`` reads what ``nclab grade`` wrote and the
``*_points`` columns the instructor filled in by hand, checks every hand grade (a number between 0 and the
question's points), and writes one row per student: the automatic points, the hand points, the total and
the maximum. Nothing is guessed: an empty hand grade stops the export and names the students and questions
(``partial``: count it as 0 and say so), and so does a student id that appears twice.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ... import exercises
from .scores import read_scores, student_read_back, write_csv

__all__ = ["LMS", "gradebook", "write_gradebook"]

# Canvas imports a gradebook CSV whose students are matched by one of these id columns (the others may stay
# empty) and whose other columns are assignments; the row after the header may give each one's points.
CANVAS_IDS = ("ID", "SIS User ID", "SIS Login ID")
# Moodle's "Import grades: CSV file" maps a column to the user by one of these, and any column to a grade item.
MOODLE_IDS = ("ID number", "Username", "Email address")
LMS = {"plain": ("student",), "canvas": CANVAS_IDS, "moodle": MOODLE_IDS}
DEFAULT_ID = {"plain": "student", "canvas": "SIS User ID", "moodle": "ID number"}


def _hand_questions(frame: pd.DataFrame) -> list[str]:
    return [column.removesuffix("_answer") for column in frame.columns if column.endswith("_answer")]


def _hand_points(frame: pd.DataFrame, hand: list[str], partial: bool) -> tuple[pd.Series, list[str]]:
    """Each student's hand points in all, and what was missing (counted as 0 only when ``partial``)."""
    total, missing, wrong = pd.Series(0.0, index=frame.index), [], []
    for q in hand:
        most = exercises.points(q)
        for index, typed in frame[f"{q}_points"].items():
            text = str(typed).strip()
            student = frame.at[index, "student"]
            if not text:
                missing.append(f"{student}: {q}")
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not 0 <= value <= most:  # NaN included
                wrong.append(f"{student}: {q}_points = {text!r} (a number from 0 to {most})")
            else:
                total[index] += value
    if wrong:
        raise ValueError("hand points that are not a grade: " + "; ".join(wrong[:10]) + " (correct them in the CSV)")
    if missing and not partial:
        shown = "; ".join(missing[:10]) + (f"; … {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} hand grades are still empty ({shown}): fill in the *_points columns, or export with "
            "--partial to count them as 0"
        )
    return total, missing


def gradebook(
    scores: str | Path, lms: str = "plain", assignment: str | None = None, id_column: str | None = None, partial=False
) -> tuple[pd.DataFrame, list[str]]:
    """(the gradebook of the grader's CSV ``scores`` for ``lms``, the hand grades missing and counted as 0).

    plain: student, automatic, hand, total, max. canvas: Canvas's id columns (the student id in
    ``id_column``, default "SIS User ID"), Section, then the assignment's total, its points on the first row.
    moodle: the id column (default "ID number") and the assignment's total. ``assignment`` names the grade
    column (default: "nclab"). ValueError, saying what to correct, for hand points that are not a grade, an
    empty one (unless ``partial``), a student twice, or an unknown ``lms`` or ``id_column``."""
    if lms not in LMS:
        raise ValueError(f"unknown LMS {lms!r}: choose one of {', '.join(LMS)}")
    id_column = id_column or DEFAULT_ID[lms]
    if id_column not in LMS[lms]:
        raise ValueError(f"{lms} matches students by {', '.join(LMS[lms])}, not {id_column!r}")
    frame = read_scores(scores)
    if "student" in frame:  # as the grader wrote them, before a formula was neutralised
        frame["student"] = frame["student"].map(student_read_back)
    needed = {"student", "total", "max"}
    if not needed <= set(frame.columns):
        raise ValueError(f"{scores} is not a CSV written by `nclab grade` (it lacks {', '.join(needed)})")
    twice = frame["student"][frame["student"].duplicated()].tolist()
    if twice:
        raise ValueError(f"students graded twice in {scores}: {', '.join(twice)}; keep one row each")
    hand = _hand_questions(frame)
    hand_points, missing = _hand_points(frame, hand, partial)
    hand_max = sum(exercises.points(q) for q in hand)
    automatic = pd.to_numeric(frame["total"])
    total = automatic + hand_points
    most = int(pd.to_numeric(frame["max"]).max()) + hand_max if len(frame) else hand_max
    name = assignment or "nclab"
    if lms == "plain":
        table = pd.DataFrame(
            {"student": frame["student"], "automatic": automatic, "hand": hand_points, "total": total, "max": most}
        )
    elif lms == "canvas":
        ids = {column: frame["student"] if column == id_column else "" for column in CANVAS_IDS}
        table = pd.DataFrame({"Student": frame["student"], **ids, "Section": "", name: total})
        points = {column: "" for column in table.columns} | {"Student": "    Points Possible", name: most}
        table = pd.concat([pd.DataFrame([points]), table], ignore_index=True)
    else:
        table = pd.DataFrame({id_column: frame["student"], name: total})
    return table, missing


def write_gradebook(scores: str | Path, out: str | Path, **options) -> list[str]:
    """:func:`gradebook` written to ``out`` (readable by its owner only, formulas neutralised, atomically);
    returns the hand grades counted as 0."""
    out = Path(out)
    if out.resolve() == Path(scores).resolve():
        raise ValueError(f"--out {out} is the grader's CSV itself: name another file")
    if out.is_dir() or not out.parent.is_dir():
        raise ValueError(f"--out {out}: name a CSV file in an existing folder (e.g. gradebook.csv)")
    table, missing = gradebook(scores, **options)
    write_csv(table, out)
    return missing
