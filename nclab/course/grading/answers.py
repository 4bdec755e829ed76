"""What a notebook asks and what a student wrote: the graded questions of a notebook, the written answers
to the questions graded by hand, and the rubric of their model answers for the person grading."""

from __future__ import annotations

from pathlib import Path

import nbformat

from ... import exercises

__all__ = [
    "questions_for",
    "hand_questions_for",
    "ANSWER_PLACEHOLDER",
    "ANSWER_CELL_MISSING",
    "written_answers",
    "rubric",
    "instructor_notebook",
    "spreadsheet_safe",
]

PACKAGE = Path(__file__).resolve().parents[2]  # nclab/: the course's notebooks/ and book/ sit beside it


def questions_for(notebook: str | Path) -> list[str]:
    """The graded questions of ``notebook`` (a file name or path, e.g. ``01_train_resnet18_cifar100.ipynb``)."""
    number = Path(notebook).name.split("_")[0]
    questions = [name for name in exercises.EXERCISES if name.split("_")[0] == number]
    if not questions:
        raise ValueError(
            f"No graded exercises for {Path(notebook).name!r}: nclab.exercises has {sorted(exercises.EXERCISES)}."
        )
    return questions


def hand_questions_for(notebook: str | Path) -> list[str]:
    """The interpretation questions of ``notebook`` graded by hand (none for a notebook without any)."""
    number = Path(notebook).name.split("_")[0]
    return [name for name in exercises.QUESTIONS if name.split("_")[0] == number]


ANSWER_PLACEHOLDER = "YOUR ANSWER HERE"
MAX_ANSWER_CHARS = 4000  # of a written answer copied into the CSV
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a cell a spreadsheet would run as a formula


def spreadsheet_safe(text: str) -> str:
    """``text`` as a spreadsheet shows it, never run as a formula (a leading ``'`` where it would be)."""
    return "'" + text if text.startswith(FORMULA_START) else text


ANSWER_CELL_MISSING = "(no answer cell found: its metadata may have been lost; read the notebook)"


def written_answers(notebook: nbformat.NotebookNode, hand: list[str]) -> dict[str, str]:
    """{question: the student's text} for the hand-graded questions ``hand``, read from the markdown cells
    whose metadata says ``{"nclab": {"answer": question}}``: "" when left at the placeholder,
    ``ANSWER_CELL_MISSING`` when no such cell is left (a student who answered in a new cell, an editor that
    dropped the metadata). Several cells for one question are joined; the text is cut at
    ``MAX_ANSWER_CHARS`` characters."""
    found: dict[str, list[str]] = {q: [] for q in hand}
    cells: set[str] = set()
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nclab")
        name = meta.get("answer") if isinstance(meta, dict) else None
        if cell.get("cell_type") == "markdown" and isinstance(name, str) and name in found:
            cells.add(name)
            source = cell.get("source", "")
            text = ("".join(source) if isinstance(source, list) else str(source)).strip()
            if text and text != ANSWER_PLACEHOLDER:
                found[name].append(text)
    answers = {}
    for q, texts in found.items():
        text = "\n\n".join(texts) if q in cells else ANSWER_CELL_MISSING
        text = text if len(text) <= MAX_ANSWER_CHARS else text[: MAX_ANSWER_CHARS - 1] + "…"
        answers[q] = spreadsheet_safe(text)
    return answers


def rubric(notebook: str | Path) -> str:
    """The model answers of the instructor's ``notebook`` (its ``solution-only`` cells that name a question),
    with each question's text and points, as one markdown document for the person grading by hand."""
    instructor = nbformat.read(Path(notebook), as_version=4)
    by_cell = {cell.get("id"): cell for cell in instructor.cells}
    lines = [f"# Rubric: {Path(notebook).name}", ""]
    for name in hand_questions_for(notebook):
        question = exercises.QUESTIONS[name]
        model = next(
            (
                cell.source
                for cell in instructor.cells
                if (cell.metadata.get("nclab") or {}).get("model_answer") == name
            ),
            "(no model answer in this notebook)",
        )
        asked = by_cell[question.cell].source if question.cell in by_cell else "(question cell not found)"
        lines += [f"## {name} ({question.points} points)", "", asked.strip(), "", model.strip(), ""]
    return "\n".join(lines)


def instructor_notebook(notebook: str | Path) -> Path | None:
    """The instructor's version of ``notebook``: the path given, or the course's ``notebooks/`` copy."""
    path = Path(notebook)
    for candidate in (path, Path("notebooks") / path.name, PACKAGE.parent / "notebooks" / path.name):
        if candidate.is_file() and '"model_answer"' in candidate.read_text(encoding="utf-8", errors="replace"):
            return candidate  # a student version (no model answers) is not the instructor's
    return None
