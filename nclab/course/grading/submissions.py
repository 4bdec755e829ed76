"""A submission read and rebuilt without trusting it: a regular file of bounded size, parsed as a notebook
whose cells are rebuilt from their sources alone (no outputs, no metadata), and cut after the last cell that
defines an answer when only the exercises are graded."""

from __future__ import annotations

import ast
import json
import os
import stat
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ... import exercises
from .answers import written_answers

__all__ = ["MAX_SUBMISSION_BYTES", "first_line", "read_submission", "load", "bound_names", "through_last_exercise"]


def first_line(text: str, length: int = 100) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= length else line[: length - 1] + "…"


MAX_SUBMISSION_BYTES = 20 * 2**20  # a notebook of exercises is well under this; outputs are not needed


def read_submission(path: Path) -> tuple[bytes | None, str, str]:
    """(content, "", "") of ``path`` if it is a regular file (not a link, directory, FIFO or device) of at
    most ``MAX_SUBMISSION_BYTES``; else (None, status, problem). Opened without following links and without
    blocking, then checked on the open file, so nothing can be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        kind = "a symbolic link" if path.is_symlink() else "unreadable"
        return None, "invalid-file", f"not read: {kind} (submit a regular .ipynb file)"
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SUBMISSION_BYTES:
        os.close(fd)
        if info.st_size > MAX_SUBMISSION_BYTES and stat.S_ISREG(info.st_mode):
            return None, "too-large", f"not read: {info.st_size:,} bytes, over the limit of {MAX_SUBMISSION_BYTES:,}"
        mode = info.st_mode
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        return None, "invalid-file", f"not read: {kind} (submit a regular .ipynb file)"
    with os.fdopen(fd, "rb") as file:
        raw = file.read(MAX_SUBMISSION_BYTES + 1)
    if len(raw) > MAX_SUBMISSION_BYTES:  # grew while being read
        return None, "too-large", f"not read: over the limit of {MAX_SUBMISSION_BYTES:,} bytes"
    return raw, "", ""


def _parse(raw: bytes) -> nbformat.NotebookNode:
    """The notebook in ``raw``; ValueError with a message that never quotes the file's content."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start})") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON (line {error.lineno}, column {error.colno})") from None
    except (RecursionError, MemoryError):  # JSON nested thousands deep: no notebook is
        raise ValueError("JSON nested too deeply to be a notebook") from None
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        raise ValueError("JSON, but not a notebook (no list of cells)")
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as error:
        raise ValueError(f"not a notebook nbformat can read ({type(error).__name__})") from None


def load(path: Path, hand: list[str] = ()) -> tuple[nbformat.NotebookNode | None, str, str, dict[str, str]]:
    """(notebook rebuilt from the submission's cell sources, status, problem, written answers to the
    questions ``hand``); notebook None if not gradable."""
    answers = {q: "" for q in hand}
    raw, status, problem = read_submission(path)
    if raw is None:
        return None, status, problem, answers
    if not raw.strip():
        return None, "empty", "the file is empty", answers
    try:
        submitted = _parse(raw)
        answers = written_answers(submitted, list(hand))
        cells = []
        for cell in submitted.cells:
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if not isinstance(source, str):
                raise ValueError(f"a cell's source is {type(source).__name__}, not text")
            cells.append(new_code_cell(source) if cell["cell_type"] == "code" else new_markdown_cell(source))
    except (KeyError, TypeError, AttributeError) as error:
        problem = f"not a valid notebook: a cell lacks its fields ({type(error).__name__})"
        return None, "invalid-notebook", problem, answers
    except ValueError as error:  # messages of ours: no file content
        return None, "invalid-notebook", f"not a valid notebook: {error}", answers
    except Exception as error:  # whatever else the file does to a parser, it is this submission's row
        return None, "invalid-notebook", f"not a valid notebook: {type(error).__name__} while reading it", answers
    if not any(cell.cell_type == "code" and cell.source.strip() for cell in cells):
        return None, "empty", "the notebook has no code", answers
    return new_notebook(cells=cells), "ok", "", answers


def bound_names(source: str) -> set[str] | None:
    """Every name a cell binds (def, class, any assignment target — tuples, annotations, augmented,
    walrus —, import as, for/with/except targets), or None if it does not parse (IPython syntax)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # IPython syntax, or nested past the parser
        return None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def through_last_exercise(notebook: nbformat.NotebookNode, questions: list[str]) -> None:
    """Drop the cells after the last one that defines an answer (they cannot change the points). A cell that
    does not parse as Python (magics) counts as defining an answer if one of the names appears in it."""
    answers = {exercises.EXERCISES[q].answer for q in questions}

    def defines(source: str) -> bool:
        bound = bound_names(source)
        return bool(answers & bound) if bound is not None else any(name in source for name in answers)

    last = max(
        (i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and defines(cell.source)),
        default=len(notebook.cells) - 1,
    )
    del notebook.cells[last + 1 :]
