"""The grader's records: one CSV row per submission (the same columns for every row), the journal that
keeps each row as soon as it is graded, the CSV written atomically, and the instructor's summary."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from ... import exercises
from .answers import FORMULA_START, spreadsheet_safe
from .reach import Reach, verdict

__all__ = [
    "printable",
    "student_id",
    "add_error",
    "duplicate_students",
    "row",
    "killed_row",
    "identity",
    "append",
    "read_journal",
    "write_csv",
    "hand_grades",
    "keep_hand_grades",
    "read_scores",
    "summarize",
]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text, newlines: bool = True) -> str:
    """``text`` as the CSV, the journal and the terminal can take it: every character encodable in UTF-8
    (a lone surrogate, from a message or a file name that is not UTF-8, written as its escape), control
    characters (escape sequences, carriage returns, bidirectional overrides) as "�", and newlines too unless
    ``newlines``."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub("\ufffd", text)
    return text if newlines else text.replace("\n", " ").replace("\t", " ")


def student_id(path: Path) -> str:
    """The student a submission is from: its file name without ``.ipynb``, in Unicode's NFC form (two
    spellings of one name are one student), printable on one line."""
    return printable(unicodedata.normalize("NFC", path.name.removesuffix(".ipynb")), newlines=False)


def row(
    path: Path,
    status,
    problem,
    questions,
    hand,
    report=None,
    answers=None,
    seconds=0.0,
    reached: Reach | None = None,
    allow_reference: bool = False,
) -> dict:
    """The CSV row, in the one column order every row has: a graded submission's (``report``: {question:
    (passed, message)}) or, without a report, one whose every exercise scores 0 with the status as feedback.
    ``reached`` (:func:`.reach.find`): what of each exercise's key the submission reaches, in the
    ``reaches_key`` column; such an exercise scores 0 unless ``allow_reference``, its feedback says why.
    Every text is :func:`printable`, whatever the submission put in its messages, answers or file name."""
    row = {"student": student_id(path), "status": status, "errors": printable(problem)}
    row["reaches_key"] = printable(reached.text() if reached else "", newlines=False)
    not_graded = f"not graded ({status}): see the errors column"
    for q in questions:
        passed, message = report[q] if report else (False, not_graded)
        found = reached.found.get(q, ()) if reached else ()
        passed, message = verdict(passed, message, found, allow_reference)
        row[f"{q}_points"] = exercises.points(q) if passed else 0
        row[f"{q}_feedback"] = printable(message)
    row["total"] = sum(row[f"{q}_points"] for q in questions)
    row["max"] = sum(exercises.points(q) for q in questions)
    for q in hand:
        row[f"{q}_answer"] = printable((answers or {}).get(q, ""))
        row[f"{q}_points"] = ""  # the instructor's, by hand
    if hand:
        row["hand_max"] = sum(exercises.points(q) for q in hand)
    row["seconds"] = seconds
    return row


def add_error(row: dict, note: str) -> None:
    """Append ``note`` to ``row``'s errors column (after what is there, "; " between)."""
    row["errors"] = "; ".join(filter(None, [row["errors"], note]))


def duplicate_students(paths: list[Path]) -> dict[str, list[str]]:
    """{student: its files} for every student id (:func:`student_id`) that two or more files share."""
    files: dict[str, list[str]] = {}
    for path in paths:
        files.setdefault(student_id(path), []).append(printable(path.name, newlines=False))
    return {student: names for student, names in files.items() if len(names) > 1}


def identity(path: Path) -> list:
    """What a submission was when graded (kind, size, modification time), without reading or following it."""
    info = path.lstat()
    return [stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns]


def append(log, record: dict) -> None:
    """One journal line, on disk before the grader goes on."""
    log.write(json.dumps(record, ensure_ascii=True) + "\n")
    log.flush()
    os.fsync(log.fileno())


def read_journal(journal: Path) -> tuple[dict[str, dict], set[str]]:
    """({file: {"identity", "row"}} graded, {file} started but not graded) from an interrupted run's journal;
    a last line cut short by the interruption is ignored."""
    graded, started = {}, set()
    if not journal.exists():
        return graded, started
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "graded" in record:
            graded[record["graded"]] = record
            started.discard(record["graded"])
        elif "started" in record:
            started.add(record["started"])
        elif "aborted" in record:  # stopped by the instructor (Ctrl-C) or by a grader error, not by the student
            started.discard(record["aborted"])
    return graded, started


def killed_row(path: Path, questions: list[str], hand: list[str]) -> dict:
    problem = (
        "the grader stopped while running this submission (killed by it?): rerun with --retry-killed to grade it again"
    )
    return row(path, "grader-killed", problem, questions, hand)


def write_csv(frame: pd.DataFrame, out: Path) -> None:
    """``frame`` as the CSV ``out``, readable by its owner only (students' grades), written to a temporary
    file renamed into place, every text cell that a spreadsheet would run as a formula neutralised."""
    safe = frame.map(lambda value: spreadsheet_safe(value) if isinstance(value, str) else value)
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as file:
            safe.to_csv(file, index=False)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def unescaped(text: str) -> str:
    """A CSV cell as :func:`write_csv` had it before ``spreadsheet_safe`` prefixed a formula with "'"."""
    return text[1:] if text.startswith("'") and text[1:2] and text[1] in FORMULA_START else text


def student_read_back(text) -> str:
    """A student id read back from the CSV as :func:`student_id` wrote it: unescaped, NFC."""
    return unicodedata.normalize("NFC", unescaped(str(text)))


def hand_grades(out: Path, hand: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    """{(student, question): (points, the answer they grade)} that the instructor typed into an earlier
    ``out`` (the hand-graded ``*_points`` columns), so that rerunning the grader (a late submission) never
    erases them. Ids are read back as :func:`student_id` writes them (unescaped, NFC)."""
    if not hand or not out.is_file():
        return {}
    earlier = read_scores(out)
    if "student" not in earlier:
        raise ValueError(f"{out} has no student column: not a CSV of the grader's; choose another --out")
    typed = {}
    for _, line in earlier.iterrows():
        student = student_read_back(line["student"])
        for q in hand:
            points = str(line.get(f"{q}_points", "")).strip()
            if points:
                typed[(student, q)] = (points, unescaped(str(line.get(f"{q}_answer", ""))))
    return typed


def keep_hand_grades(rows: list[dict], typed: dict[tuple[str, str], tuple[str, str]]) -> tuple[int, list[str]]:
    """Put the instructor's ``typed`` points back into ``rows`` where the student's answer is the one they
    graded (a changed answer is said in the errors column instead); returns (how many were kept, the
    "student: question" of typed points that no row takes)."""
    by_student = {line["student"]: line for line in rows}
    kept, unmatched = 0, []
    for (student, q), (points, answer) in typed.items():
        line = by_student.get(student)
        if line is None or f"{q}_points" not in line:
            unmatched.append(f"{student}: {q}")
        elif line.get(f"{q}_answer", "") != answer:
            add_error(line, f"{q}: your {points} hand points were not kept, the answer changed since")
        else:
            line[f"{q}_points"], kept = points, kept + 1
    return kept, unmatched


def read_scores(path: str | Path) -> pd.DataFrame:
    """The table written by :func:`grade`, read back as written (student ids and empty texts kept as text)."""
    return pd.read_csv(path, dtype={"student": str}, keep_default_na=False)


def summarize(frame: pd.DataFrame, questions: list[str], figure_path: str | Path) -> str:
    """The instructor's summary: statuses, mean points per question; saves a histogram of the totals."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    maximum = sum(exercises.points(q) for q in questions)
    lines = [
        f"{len(frame)} submissions, {frame['seconds'].mean():.1f} s each on average: "
        + ", ".join(f"{status} {count}" for status, count in frame["status"].value_counts().items())
    ]
    for q in questions + ["total"]:
        most = maximum if q == "total" else exercises.points(q)
        points = frame[q if q == "total" else f"{q}_points"]
        lines.append(f"  {q:<14} mean {points.mean():5.2f} / {most}   full marks {(points == most).mean():4.0%}")
    figure = Figure(figsize=(6, 3.5), layout="constrained")
    ax = figure.subplots()
    ax.hist(frame["total"], bins=np.arange(maximum + 2) - 0.5, rwidth=0.9)
    ax.set(
        xlabel=f"total points (of {maximum})",
        ylabel="students",
        xticks=range(maximum + 1),
        title=f"{len(frame)} submissions: mean {frame['total'].mean():.2f}",
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.savefig(figure_path, dpi=120)
    return "\n".join(lines)
