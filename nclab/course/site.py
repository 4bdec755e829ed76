"""The two sites built from one source: the student site (``make book``) and the instructor site
(``make book-instructor``).

The instructor site is the repository as it is: the notebooks with their solutions, executed by the book
build. The student site is staged: :func:`stage_student_site` executes the instructor notebooks (solutions
and all, so that every figure and table is real), then writes their student versions *with those outputs*
(each solution block shown as ``# YOUR CODE HERE`` and without the check's output, which would describe
the hidden answer; the ``solution-only`` cells gone) under ``student/`` of
a staging folder, beside a copy of the chapters and a table of contents pointing at them. The book build
then renders that folder without executing anything. Where ``_config.yml`` names the students'
repository (``nclab: student_repository``, what ``nclab release`` writes), the staging folder is
``notebooks/``, as in the release, and every badge, install cell, launch and repository button opens that
repository, so that the site can be published without a link into the private course; otherwise its
Colab badges and launch buttons open the course's ``student/`` notebooks. :func:`solution_leaks` reads
every built page and names any solution block, and any sentence of a model answer (a ``solution-only``
cell), found there.

Instructor-only chapters (the instructor guide) are listed in ``_toc.yml`` under a part whose caption is
:data:`INSTRUCTOR_PART`; the student site's table of contents leaves that part out.
"""

from __future__ import annotations

import html
import re
import shutil
import time
from pathlib import Path

import nbformat
import yaml

from .prepare import execute_notebook
from .repository import Repository, run_pack, student_repository, sync_notebooks
from .student import strip_solutions, student_notebook

EXECUTED = "executed"  # the folder of the staged site that holds each notebook as executed, solutions and all

__all__ = ["stage_student_site", "solution_blocks", "model_answer_fragments", "solution_leaks", "INSTRUCTOR_PART"]

INSTRUCTOR_PART = "For instructors"  # the _toc.yml part left out of the student site
_FRAGMENT = 40  # characters: a model answer's plain-text stretch at least this long is looked for on the pages
_MARKUP = re.compile(r"[*_`$\\\[\](){}#|>]+")  # what markdown/MathJax rewrites: text between them survives as is
_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-"})
_MARKER = ".nclab-student-site"  # marks a staging folder, the only kind stage_student_site deletes
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def stage_student_site(
    root: str | Path = ".", out: str | Path = "_build/student-src", execute=execute_notebook
) -> Path:
    """Write the student site's source into ``out``: the chapters, ``_config.yml`` (execution off) and a
    ``_toc.yml`` whose notebooks are ``student/NN_….ipynb``, each the student version of the executed
    instructor notebook with its outputs; ``executed/`` keeps each instructor notebook as executed (not a page
    of the site: what ``tests/test_prose.py`` checks). ``execute``: path → executed notebook (tests pass a stub)."""
    root, out = Path(root), Path(out)
    missing = [name for name in ("book", "notebooks", "_config.yml", "_toc.yml") if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(f"{root.resolve()} lacks {', '.join(missing)}: run nclab site from the course's root.")
    if out.exists():
        if not (out / _MARKER).exists():  # never delete what staging did not write (the repository, say)
            raise ValueError(f"{out} exists and is not a staged student site: choose an empty or new folder.")
        shutil.rmtree(out)
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    students = _students_repository(root, config)
    folder = "notebooks" if students else "student"  # where the pages' notebooks are in the repository linked
    (out / folder).mkdir(parents=True)
    (out / _MARKER).write_text("written by nclab site student; deleted and rewritten by the next run\n")
    shutil.copytree(root / "book", out / "book")
    for chapter in (out / "book").glob("*.md"):
        chapter.write_text(
            chapter.read_text(encoding="utf-8").replace("../notebooks/", f"../{folder}/"), encoding="utf-8"
        )
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # executed above, with the solutions
    config["exclude_patterns"] = [p for p in config.get("exclude_patterns", []) if p != "student"]  # the pages now
    if students:  # the launch and repository buttons open the students' repository, never this private one
        url = f"https://github.com/{students.slug}"
        config["repository"] = {**config.get("repository", {}), "url": url, "branch": students.branch}
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    toc["parts"] = [part for part in toc.get("parts", []) if part.get("caption") != INSTRUCTOR_PART]
    toc = yaml.safe_dump(toc, sort_keys=False, allow_unicode=True)
    (out / "_toc.yml").write_text(re.sub(r"\bnotebooks/", f"{folder}/", toc), encoding="utf-8")
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        start = time.perf_counter()
        executed = execute(path)
        version = student_notebook(executed, path.name, keep_outputs=True)
        instructor = {cell.get("id"): cell.source for cell in executed.cells}
        for cell in version.cells:  # an exercise's ✅ and its message describe the answer the page hides
            if cell.cell_type == "code" and (cell.source != instructor.get(cell.get("id")) or "check(" in cell.source):
                cell.outputs, cell.execution_count = [], None
        nbformat.write(version, out / folder / path.name)
        (out / EXECUTED).mkdir(exist_ok=True)  # the instructor version as executed: tests/test_prose.py reads it
        nbformat.write(executed, out / EXECUTED / path.name)
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s", flush=True)
    if students:  # badges and install cells as in the release (nclab release): the students' repository
        sync_notebooks(out / folder, students, run_pack(root / "_config.yml"))
    return out


def _students_repository(root: Path, config: dict) -> Repository | None:
    """The students' repository that ``nclab: student_repository`` of the config names, or None."""
    if not isinstance(config.get("nclab"), dict) or "student_repository" not in config["nclab"]:
        return None
    return student_repository(root / "_config.yml")


def solution_blocks(notebooks: str | Path = "notebooks") -> dict[str, list[str]]:
    """{notebook: its solution blocks}, each block's code as one whitespace-normalised line."""
    blocks = {}
    for path in sorted(Path(notebooks).glob("*.ipynb")):
        found = []
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found += [_SPACE.sub(" ", block).strip() for block in strip_solutions(cell.source, path.name)[1]]
        blocks[path.name] = [block for block in found if block]
    return blocks


def _plain(text: str) -> str:
    """``text`` with quotes and dashes made plain and whitespace normalised (Sphinx typesets both)."""
    return _SPACE.sub(" ", text.translate(_QUOTES))


def model_answer_fragments(notebooks: str | Path = "notebooks") -> dict[str, list[str]]:
    """{notebook: the plain-text stretches of its ``solution-only`` cells}: each stretch between two pieces
    of markup (emphasis, code, math), at least ``_FRAGMENT`` characters long, whitespace normalised — text
    that a page showing the cell would contain verbatim."""
    fragments = {}
    for path in sorted(Path(notebooks).glob("*.ipynb")):
        found = []
        for cell in nbformat.read(path, as_version=4).cells:
            if "solution-only" in cell.metadata.get("tags", []):
                found += [
                    piece.strip() for piece in _MARKUP.split(_plain(cell.source)) if len(piece.strip()) >= _FRAGMENT
                ]
        fragments[path.name] = found
    return fragments


def solution_leaks(html_dir: str | Path, notebooks: str | Path = "notebooks") -> list[str]:
    """ "page: solution of notebook …" for every solution block whose code appears in a built page's text
    (tags stripped, entities decoded, whitespace normalised, so highlighted code is found too), and "page:
    model answer of notebook …" for every stretch of a model answer's text found there."""
    blocks = [(name, block) for name, found in solution_blocks(notebooks).items() for block in found]
    answers = [(name, piece) for name, found in model_answer_fragments(notebooks).items() for piece in found]
    pages = sorted(Path(html_dir).rglob("*.html")) + sorted(Path(html_dir).rglob("*.ipynb"))  # the downloads too
    if not blocks or not pages:  # a check that looked at nothing must not pass
        raise FileNotFoundError(f"nothing to check: {len(pages)} pages in {html_dir}, {len(blocks)} solution blocks")
    leaks = []
    for page in pages:
        raw = page.read_text(encoding="utf-8", errors="replace")
        if page.suffix == ".ipynb":  # code as it is: no tags to strip, no entities to decode
            text = _SPACE.sub(" ", "\n".join(cell.source for cell in nbformat.reads(raw, as_version=4).cells))
        else:
            text = _SPACE.sub(" ", html.unescape(_TAG.sub("", raw)))
        leaks += [f"{page.relative_to(html_dir)}: solution of {name}: {block[:60]!r}…" for name, block in blocks
                  if block in text]  # fmt: skip
        text = _plain(text)
        leaks += [f"{page.relative_to(html_dir)}: model answer of {name}: {piece[:60]!r}…" for name, piece in answers
                  if piece in text]  # fmt: skip
    return leaks
