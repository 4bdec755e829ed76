"""Student versions of the instructor notebooks: solutions out, everything else as it is.

In an instructor notebook, solution code sits between two marker lines (at any indentation)::

    def cifar_stem_layer(width):
        ### BEGIN SOLUTION
        return nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        ### END SOLUTION

The student version replaces each block, markers included, with ``# YOUR CODE HERE`` and
``raise NotImplementedError()`` at the marker's indentation, drops the cells tagged ``solution-only``,
clears outputs and execution counts, and points the Colab badge at ``student/``. Anything that could leak
a solution fails loudly, naming the notebook and the cell: unbalanced or nested markers, a marker in a
markdown cell or inside a string, a solution block repeated elsewhere.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

__all__ = [
    "BEGIN",
    "END",
    "SOLUTION_ONLY",
    "SolutionLeak",
    "strip_solutions",
    "student_notebook",
    "write_student_versions",
    "stale_student_versions",
]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SOLUTION_ONLY = "solution-only"  # tag of instructor-only cells
_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (BEGIN|END) SOLUTION)[ \t]*$")
_LEFTOVER = re.compile(r"(BEGIN|END) SOLUTION", re.IGNORECASE)
_NOTEBOOK_LINK = re.compile(r"(/blob/[A-Za-z0-9_.-]+/)notebooks/")  # GitHub links into notebooks/, any branch


class SolutionLeak(ValueError):
    """The student version would contain (part of) a solution."""


def strip_solutions(source: str, where: str = "cell") -> tuple[str, list[str]]:
    """(student source, [solution blocks]): every marked block replaced by the placeholder.

    Raises SolutionLeak, naming ``where`` and the line, on an END without BEGIN, a BEGIN inside a block,
    or a BEGIN never closed.
    """
    lines, blocks, block, indent = [], [], None, ""
    for number, line in enumerate(source.split("\n"), 1):
        match = _MARKER.match(line)
        marker = match["marker"] if match else None
        if marker == BEGIN:
            if block is not None:
                raise SolutionLeak(f"{where}, line {number}: {BEGIN} inside another solution block (nested).")
            block, indent = [], match["indent"]
        elif marker == END:
            if block is None:
                raise SolutionLeak(f"{where}, line {number}: {END} without a {BEGIN} before it.")
            blocks.append("\n".join(block))
            lines += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
            block = None
        elif block is not None:
            block.append(line)
        else:
            lines.append(line)
    if block is not None:
        raise SolutionLeak(f"{where}: {BEGIN} is never closed by {END}.")
    return "\n".join(lines), blocks


def student_notebook(
    notebook: nbformat.NotebookNode, name: str = "notebook", keep_outputs: bool = False
) -> nbformat.NotebookNode:
    """The student version of ``notebook`` (left unchanged); ``name`` is used in error messages.
    ``keep_outputs``: keep the outputs of the (executed) instructor notebook, for the student site."""
    student = copy.deepcopy(notebook)
    student.cells, solutions = [], []
    for index, cell in enumerate(notebook.cells):
        if SOLUTION_ONLY in cell.metadata.get("tags", []):
            continue
        cell = copy.deepcopy(cell)
        where = f"{name}, cell {index} (id {cell.get('id', '?')}, {cell.cell_type})"
        if cell.cell_type == "code":
            cell.source, blocks = strip_solutions(cell.source, where)
            solutions += [block.strip() for block in blocks if block.strip()]
            if not keep_outputs:
                cell.outputs, cell.execution_count = [], None
        cell.source = _NOTEBOOK_LINK.sub(r"\1student/", cell.source)  # badges open the student version
        student.cells.append(cell)
    for index, cell in enumerate(student.cells):
        where = f"{name}, student cell {index} (id {cell.get('id', '?')}, {cell.cell_type})"
        leftover = _LEFTOVER.search(cell.source)
        if leftover:
            raise SolutionLeak(
                f"{where}: '{leftover[0]}' survives (a marker in a markdown cell, in a string, or "
                f"not alone on its line): the solution around it would leak."
            )
        for solution in solutions:
            if solution in cell.source:
                raise SolutionLeak(f"{where}: contains the solution block {solution[:60]!r}…")
    return student


def _instructor_notebooks(source_dir: str | Path) -> list[Path]:
    notebooks = sorted(Path(source_dir).glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"No instructor notebooks (*.ipynb) in {source_dir}.")
    return notebooks


def _student_text(path: Path) -> str:
    return nbformat.writes(student_notebook(nbformat.read(path, as_version=4), str(path))) + "\n"


def write_student_versions(source_dir: str | Path = "notebooks", out_dir: str | Path = "student") -> list[Path]:
    """Write the student version of every notebook in ``source_dir`` to ``out_dir`` (same file names).

    All versions are made before any is written, so a leak leaves ``out_dir`` as it was; student
    notebooks whose instructor notebook is gone are deleted.
    """
    out_dir = Path(out_dir)
    texts = {path.name: _student_text(path) for path in _instructor_notebooks(source_dir)}
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.ipynb"):
        if stale.name not in texts:
            stale.unlink()
    for name, text in texts.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return [out_dir / name for name in texts]


def stale_student_versions(source_dir: str | Path = "notebooks", out_dir: str | Path = "student") -> list[str]:
    """Names of the student notebooks in ``out_dir`` that differ from what the generator makes now
    (missing, changed, or without an instructor notebook). Empty when ``out_dir`` is up to date."""
    out_dir = Path(out_dir)
    texts = {path.name: _student_text(path) for path in _instructor_notebooks(source_dir)}
    stale = [
        name
        for name, text in texts.items()
        if not (out_dir / name).exists() or (out_dir / name).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + [path.name for path in out_dir.glob("*.ipynb") if path.name not in texts])
