"""What in a submission reaches the key: a static look at every code cell for the library's own computation
of an exercise, so that an answer that calls it is not scored as the student's own work.

Nothing is run. Each code cell, IPython syntax transformed first, is parsed and walked in notebook order with
a table of what each name stands for (``import nclab.ood as o``, ``from nclab import ood``, ``x = nclab.ood``,
``step = stand_in(...)``, ``neco = ood.NECO()``), so ``o.Energy`` is read as ``nclab.ood.Energy`` wherever it
is written. Found for an exercise:

- a name, attribute chain, import or ``getattr(x, "constant")`` that is one of its ``references`` (the same
  object under any path: ``nclab.ood.detectors.Energy`` is ``nclab.ood.Energy``), a container holding one
  or a subclass of one; a name bound to an object built from one of its classes or to ``stand_in``'s
  result; its own ``reference``; ``nclab.exercises``'s ``EXERCISES`` and ``notebookNN`` modules;
- for every exercise: access to nclab that a static look cannot follow (:mod:`.dynamic`): ``getattr``
  (``builtins.getattr``, ``__builtins__.getattr``, ``object.__getattribute__``)/``vars``/
  ``operator.attrgetter`` with a computed name, or passed as a value (``functools.reduce(getattr, …)``);
  any dunder of a value from nclab (``__dict__``, ``__getattribute__``, ``__class__``, ``__base__``,
  ``__code__``, ``__module__``…) and ``__subclasses__``/``__globals__``/frames of anything; ``inspect`` on
  nclab; ``importlib.import_module`` or ``__import__``; ``sys.modules`` but a constant key, ``gc``'s object
  lists, ``importlib.util``, ``runpy``, ``pkgutil``; ``exec``/``eval``/``compile`` of computed code; a
  process (``subprocess``, ``os.system``, ``!``, ``%%bash``) running Python or a command it cannot read;
  ``%run``/``%load`` of nclab's files; a string naming nclab's code (``"nclab.ood"``, ``"nclab/…"``,
  ``"from nclab import"``, ``"import nclab"``; not a docstring, a message to ``print``, ``"my nclab answer"``).

Only the student's own code is reported: a hit in a cell that is one of the template's (the student version
of the notebook, which the student received) is not, nor one on a line that is, character for character,
a line of the template: the notebook's demo cells call the library on purpose. A cell that does not parse is
noted, never raised. Not seen: what the check cannot follow (a module passed through a function of the
student's, then read by a computed name) and the library's source copied by hand.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

from ..student import student_notebook
from .answers import PACKAGE, instructor_notebook
from .keys import keys
from .walker import PARSE_ERRORS, Walker

__all__ = ["Reach", "NOT_CHECKED", "find", "template", "keys", "verdict"]

SHOWN = 3  # findings written per exercise; the rest counted


@dataclass(frozen=True)
class Reach:
    """``found``: {exercise: ("nclab.ood.Energy (cell 7, line 2)", …)} for the exercises whose key the
    submission reaches; ``notes``: what the check could not read (a cell that does not parse)."""

    found: dict[str, tuple[str, ...]]
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        """The CSV's ``reaches_key`` cell: one "exercise: what, where" per exercise, then the notes."""
        parts = [
            f"{q}: " + "; ".join(items[:SHOWN]) + (f"; … {len(items) - SHOWN} more" if len(items) > SHOWN else "")
            for q, items in self.found.items()
        ]
        return " | ".join(parts + list(self.notes))


NOT_CHECKED = Reach({}, ("not checked: no template (the student version of the notebook) was found",))


def verdict(passed: bool, message: str, found: tuple[str, ...], allow: bool) -> tuple[bool, str]:
    """(whether the exercise keeps its points, its feedback) once the check said ``passed`` and ``message``
    and the submission reaches the exercise's key at ``found`` (nothing: the check's own word stands)."""
    if not found:
        return passed, message
    where = "; ".join(found[:SHOWN]) + (f"; … {len(found) - SHOWN} more" if len(found) > SHOWN else "")
    if not passed:
        return False, f"{message} (the submission also reaches nclab's own implementation: {where})"
    if allow:
        return True, f"{message} (reaches nclab's own implementation, allowed by --allow-reference: {where})"
    return False, (
        f"0 points: the submission reaches nclab's own implementation of this exercise ({where}); an answer "
        f"must compute it itself (the instructor can allow it with `nclab grade --allow-reference`). The check "
        f"said: {message}"
    )


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def find(notebook: nbformat.NotebookNode, questions: list[str], template: list[str] | tuple[str, ...]) -> Reach:
    """What in ``notebook``'s code reaches the keys of ``questions``, outside the ``template``'s code cells
    (the student version's sources). Never raises because of a cell: a cell that does not parse is a note;
    code the walk cannot follow (nested past its stack) reaches every key (the kernel may still run it)."""
    given = {_normal(source) for source in template}
    walker = Walker(list(questions), {line.rstrip() for source in template for line in source.splitlines()})
    walker.template_lines.discard("")
    notes, transformer = [], TransformerManager()
    for number, cell in enumerate(notebook.cells, 1):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        try:
            code = transformer.transform_cell(cell.source)
        except Exception:  # IPython's own limits: the cell as written
            code = cell.source
        try:
            tree = ast.parse(code)
        except PARSE_ERRORS as error:
            notes.append(f"cell {number} not read ({type(error).__name__})")
            continue
        walker.cell, walker.given = number, _normal(cell.source) in given
        walker.lines = [line.rstrip() for line in cell.source.splitlines()]
        for statement in tree.body:
            walker.walk(statement)
    walker.finish()
    found = {q: tuple(hits) for q, hits in walker.hits.items() if hits}
    return Reach(found, tuple(notes))


@functools.lru_cache(maxsize=16)
def _template_of(path: str, modified: int) -> tuple[str, ...]:
    student = student_notebook(nbformat.read(path, as_version=4), path)
    return tuple(cell.source for cell in student.cells if cell.cell_type == "code")


def template(questions: list[str], notebook: str | Path | None = None) -> tuple[str, ...] | None:
    """The code cells of the student version of the assignment (what every student received): from the
    instructor's ``notebook``, the file ``notebook`` itself, or the course's notebook numbered as
    ``questions``; None when none can be read."""
    candidates = []
    if notebook is not None:
        candidates += [instructor_notebook(notebook), Path(notebook)]
    number = questions[0].split("_")[0] if questions else "none"
    candidates += sorted((PACKAGE.parent / "notebooks").glob(f"{number}_*.ipynb"))
    for path in candidates:
        try:
            if path is not None and path.is_file():
                return _template_of(str(path.resolve()), path.stat().st_mtime_ns)
        except Exception:  # not a notebook nbformat reads, a solution leak: the next candidate
            continue
    return None
