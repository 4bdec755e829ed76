"""The repository the students get: ``nclab release`` (``make release``) writes it into ``_build/release``.

The course repository holds every solution and model answer (``notebooks/``), the instructor guide and the
grader's test submissions (``tests/``), so it stays private. The release holds what students may read:

* ``nclab/``, the package their notebooks import and Colab installs (without ``__pycache__``);
* ``notebooks/``: the student versions of ``student/``, their Colab badges and install cells pointing at the
  students' repository (``nclab: student_repository`` in ``_config.yml``) and the install cells carrying the
  run pack's address (``nclab: runs``) when one is named;
* the chapters of ``book/`` but the instructor-only ones, with a ``_config.yml`` and ``_toc.yml`` for them;
* ``requirements.txt``, ``pyproject.toml``, the licences, ``CITATION.cff``, a README for students and a
  ``.gitignore``.

It is built in a temporary folder beside ``out`` and checked before it replaces ``out``: every text file is
searched for the instructor notebooks' solution blocks and model answers (the student site's check,
:mod:`nclab.course.site`), for a copy of an instructor-only file and for the course repository's name. Any
hit fails the release, naming the file, and leaves ``out`` as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import yaml

from .repository import Repository, repository, run_pack, student_repository, sync_notebooks
from .site import INSTRUCTOR_PART, _plain, model_answer_fragments, solution_blocks
from .student import SolutionLeak, stale_student_versions

__all__ = ["LIBRARY_ANSWERS", "release_leaks", "write_release"]

# The library computes some exercises' answers on purpose: `exercises.stand_in` lends them to the cells of an
# unanswered exercise and the checks compare against them. Colab installs the package, so students can read
# it anyway: these files may hold these notebooks' solution blocks (never a model answer). A solution block
# anywhere else fails the release; tests/test_release.py keeps this list exactly the overlaps there are.
LIBRARY_ANSWERS = {
    "nclab/ufm.py": {"00_why_collapse_ufm.ipynb"},  # 00_ufm_step's gradient step
    "nclab/data/loader.py": {"01_train_resnet18_cifar100.ipynb"},  # the batched flip
    "nclab/etf.py": {"02_neural_collapse_metrics.ipynb"},  # the simplex ETF
    "nclab/exercises/notebook04.py": {"04_neco_nc5.ipynb"},  # the NECO ratio the check compares with
    "nclab/course/student.py": {"01_train_resnet18_cifar100.ipynb"},  # docstring example: the stem models.py builds
}
COPIED = ("requirements.txt", "pyproject.toml", "LICENSE", "LICENSE-CONTENT", "CITATION.cff")
_MARKER = ".nclab-release"  # marks a folder nclab release wrote: the only kind it replaces
_SOURCES = ("nclab", "notebooks", "student", "book", "tests", "benchmarks", ".git")  # never written into
_SPACE = re.compile(r"\s+")
_GITIGNORE = ".venv/\n_build/\nbuild/\n__pycache__/\n*.egg-info/\n.ipynb_checkpoints/\n/data/\n"


def _instructor_chapters(toc: dict) -> set[str]:
    """The files (without suffix) of the table of contents' instructor part, sections included."""
    files, entries = set(), [part for part in toc.get("parts", []) if part.get("caption") == INSTRUCTOR_PART]
    while entries:
        entry = entries.pop()
        files |= {entry["file"]} if "file" in entry else set()
        entries += entry.get("chapters", []) + entry.get("sections", [])
    return files


def _checked_out(root: Path, out: Path) -> Path:
    """``out``, resolved, once it is known to be a place the release may replace."""
    root, out = root.resolve(), out.resolve()
    if root.is_relative_to(out) or any(out.is_relative_to(root / name) for name in _SOURCES):
        raise ValueError(f"--out {out} would replace the course's own files: choose a folder such as _build/release.")
    if (out / ".git").exists():
        raise ValueError(
            f"{out} is a git clone: release into _build/release, then copy it over the clone "
            "(rsync -a --delete --exclude .git _build/release/ CLONE/) and commit there."
        )
    if out.exists() and not (out / _MARKER).exists():
        raise ValueError(f"{out} exists and is not a release written by nclab release: choose a new folder.")
    return out


def _readme(title: str, repo: Repository, notebooks: list[Path]) -> str:
    """The students' README: where the notebooks open on Colab, and how to run and build the course at home."""
    colab = f"https://colab.research.google.com/github/{repo.slug}/blob/{repo.branch}/notebooks"
    rows = "\n".join(
        f"- [{nbformat.read(path, 4).cells[0].source.splitlines()[0].lstrip('# ')}]({colab}/{path.name})"
        for path in notebooks
    )
    return f"""# {title}

The course's chapters (`book/`), its notebooks (`notebooks/`) and the Python package `nclab` they import.
Each exercise says `# YOUR CODE HERE`: replace it with your answer and run the cell, whose `check(...)`
tells you whether it is right. "Run all" reaches the end of a notebook even before you answer: where a
later cell needs an unanswered exercise, nclab's own computation stands in, and says so.

## On Colab

Open a notebook (or its *Open in Colab* badge), then *File → Save a copy in Drive*, so your answers stay
in your copy. Its first cell installs `nclab` from this repository and keeps checkpoints on your Google
Drive (`MyDrive/nclab`), so a disconnect costs at most one epoch and each notebook reuses the runs of the
others; run `import os; os.environ["NCLAB_NO_DRIVE"] = "1"` before it to keep them in the runtime only.

{rows}

## On your own machine

Python 3.11 on Linux or macOS:

```bash
python3 -m venv .venv
.venv/bin/pip install -r requirements.txt
.venv/bin/pip install --no-deps -e .
.venv/bin/jupyter lab notebooks/
```

`NCLAB_PROFILE` sets the scale: `smoke` (the default on a CPU: a narrow network, at most 2,000 images,
offline stand-in data, minutes per notebook), `quick` (the default on a GPU, full CIFAR-100) or `full`
(the papers' scale, hours on a GPU).

## Build the course site

The chapters and notebooks, with your answers, as a website in `_build/html` (every notebook is executed:
about ten minutes on a laptop's CPU in the smoke profile):

```bash
.venv/bin/python -m nclab.course.site_assets install   # the site's JavaScript, once (needs npm)
NCLAB_PROFILE=smoke .venv/bin/jupyter-book build .
```

Then open `_build/html/index.html`.

## Licence

Code: MIT (`LICENSE`). Text and figures: CC BY 4.0 (`LICENSE-CONTENT`). To cite the course, see
`CITATION.cff`.
"""


def _text(path: Path) -> str | None:
    """What a reader of ``path`` sees as text (a notebook's cells and outputs), or None for a binary file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    if path.suffix != ".ipynb":
        return raw
    try:
        cells = nbformat.reads(raw, as_version=4).cells
    except Exception:  # not a notebook after all: its text is what there is to read
        return raw
    outputs = [
        str(value)
        for cell in cells
        for output in cell.get("outputs", [])
        for value in [output.get("text", ""), *output.get("data", {}).values()]
    ]
    return "\n".join([cell.source for cell in cells] + outputs)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release_leaks(release: str | Path, root: str | Path = ".", course: Repository | None = None) -> list[str]:
    """ "file: why" for every file of ``release`` that holds a solution block or a model answer of the
    instructor notebooks in ``root/notebooks`` (except :data:`LIBRARY_ANSWERS`), is an instructor-only chapter
    or a copy of an instructor-only file (a notebook with its solutions, the instructor part of ``_toc.yml``,
    ``tests/``, ``benchmarks/results/``), or names ``course``, the course repository (default: the one in
    ``root/_config.yml``), which is private: students cannot open it."""
    release, root = Path(release), Path(root)
    course = course or repository(root / "_config.yml")
    blocks = [(name, block) for name, found in solution_blocks(root / "notebooks").items() for block in found]
    answers = [(name, piece) for name, found in model_answer_fragments(root / "notebooks").items() for piece in found]
    if not blocks:  # a check that looked for nothing must not pass
        raise FileNotFoundError(f"no solution block in {root / 'notebooks'}: nothing to check the release against")
    chapters = _instructor_chapters(yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")))
    instructor_only = [*(root / "notebooks").rglob("*"), *(root / "tests").rglob("*")]
    instructor_only += [*(root / "benchmarks" / "results").rglob("*")]
    instructor_only += [path for chapter in chapters for path in root.glob(f"{chapter}.*")]
    copies = {
        _digest(path): path.relative_to(root) for path in instructor_only if path.is_file() and path.stat().st_size
    }
    # the slug alone, or followed by .git or a full stop; not a longer name (o/course-student, o/course.io)
    named = re.compile(rf"(?<![\w.-]){re.escape(course.slug)}(?![\w-]|\.(?!git\b)\w)", re.IGNORECASE)
    leaks = []
    for path in sorted(path for path in release.rglob("*") if path.is_file()):
        name = path.relative_to(release).as_posix()
        if path.with_suffix("").relative_to(release).as_posix() in chapters:
            leaks.append(f"{name}: an instructor-only chapter (the {INSTRUCTOR_PART!r} part of _toc.yml)")
        digest = _digest(path)
        if digest in copies:
            leaks.append(f"{name}: a copy of the instructor-only {copies[digest]}")
        text = _text(path)
        if text is None:
            continue
        if named.search(text):
            leaks.append(f"{name}: names the course repository {course.slug}, which students cannot open")
        text = _SPACE.sub(" ", text)
        allowed = LIBRARY_ANSWERS.get(name, set())
        leaks += [f"{name}: solution of {notebook}: {block[:60]!r}…" for notebook, block in blocks
                  if notebook not in allowed and block in text]  # fmt: skip
        text = _plain(text)
        leaks += [f"{name}: model answer of {notebook}: {piece[:60]!r}…" for notebook, piece in answers
                  if piece in text]  # fmt: skip
    return leaks


def _write(root: Path, folder: Path, config_path: Path, repo: Repository) -> None:
    """Write the release's files into the empty ``folder``."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    chapters = _instructor_chapters(toc)

    def leave_out(directory: str, names: list[str]) -> set[str]:
        here = Path(directory).relative_to(root)
        return {
            name
            for name in names
            if name in ("__pycache__", ".ipynb_checkpoints") or name.endswith((".pyc", ".egg-info"))
            or (here / name).with_suffix("").as_posix() in chapters
        }  # fmt: skip

    shutil.copytree(root / "nclab", folder / "nclab", ignore=leave_out)
    shutil.copytree(root / "book", folder / "book", ignore=leave_out)
    (folder / "notebooks").mkdir()
    for path in sorted((root / "student").glob("*.ipynb")):
        shutil.copyfile(path, folder / "notebooks" / path.name)
    sync_notebooks(folder / "notebooks", repo, run_pack(config_path))  # the students' repository, the run pack
    for name in COPIED:
        shutil.copyfile(root / name, folder / name)
    config["repository"] = {**config.get("repository", {}), "url": f"https://github.com/{repo.slug}"}
    config["repository"]["branch"] = repo.branch
    settings = {key: value for key, value in (config.pop("nclab", None) or {}).items() if key != "student_repository"}
    config |= {"nclab": settings} if settings else {}  # the rest (the run pack) serves the students too
    (folder / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), "utf-8")
    toc["parts"] = [part for part in toc.get("parts", []) if part.get("caption") != INSTRUCTOR_PART]
    (folder / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True), "utf-8")
    notebooks = sorted((folder / "notebooks").glob("*.ipynb"))
    (folder / "README.md").write_text(_readme(config.get("title", "nclab"), repo, notebooks), "utf-8")
    (folder / ".gitignore").write_text(_GITIGNORE, "utf-8")
    (folder / _MARKER).write_text("written by nclab release; replaced by the next release\n", "utf-8")


def write_release(root: str | Path = ".", out: str | Path = "_build/release", config: str | Path | None = None) -> Path:
    """Write the students' repository (see the module's docstring) of the course at ``root`` into ``out``,
    replacing the release there; ``config`` (default ``root/_config.yml``) names the students' repository.

    Refuses a stale ``student/``, an ``out`` inside the course's sources, and any leak (:func:`release_leaks`,
    raised as :class:`SolutionLeak` naming each file), leaving ``out`` as it was."""
    root = Path(root)
    config = Path(config) if config else root / "_config.yml"
    missing = [n for n in ("nclab", "notebooks", "student", "book", "_toc.yml", *COPIED) if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{root.resolve()} lacks {', '.join(missing)}: run nclab release from the course's root."
        )
    repo, course = student_repository(config), repository(config)
    if repo.slug.lower() == course.slug.lower():
        raise ValueError(
            f"{config}: nclab.student_repository is the course repository {course.slug}, which holds every "
            "solution: name a separate, public repository for the students"
        )
    stale = stale_student_versions(root / "notebooks", root / "student")
    if stale:
        raise ValueError(f"student/ is out of date ({', '.join(stale)}): run `make student`, then release again.")
    out = _checked_out(root, Path(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        folder.chmod(0o755)
        _write(root, folder, config, repo)
        leaks = release_leaks(folder, root, course)
        if leaks:
            raise SolutionLeak(
                f"the release would give students answers; {out} is left as it was:\n  " + "\n  ".join(leaks)
            )
        if out.exists():  # two renames: the old release goes aside, the new one takes its place
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(folder, out)
            except OSError:
                os.replace(old / out.name, out)
                raise
            shutil.rmtree(old)
        else:
            os.replace(folder, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # gone already when the release took its place
    return out
