"""The course's repository, named in one place: ``repository`` in ``_config.yml`` (url and branch).

Every notebook's Colab badge and its Colab install cell are made from it, so a lecturer who forks the
course edits ``_config.yml`` and runs ``make student`` (``nclab student``), which rewrites them in
``notebooks/`` before writing ``student/``; ``make test`` fails when a notebook disagrees with the config.
The public repository the students get (``nclab release``, :mod:`nclab.course.release`) is named beside it,
``nclab: student_repository``: the release's badges and install cells point there instead.

The install cell runs on Colab only. It installs nclab from the repository, keeps the data sets in the
runtime (``NCLAB_DATA=/content/data``) and, unless ``NCLAB_NO_DRIVE`` is set, mounts Google Drive and points
``NCLAB_CACHE`` at ``MyDrive/nclab`` (unless it is set already; a refused mount only prints why): checkpoints
are written after every epoch, so a disconnect costs at most the epoch in progress, and every notebook
(each in its own runtime) reuses the runs of the others.

Colab installs nclab as a package, without ``_config.yml``, so ``config.runs_url`` finds no run pack there.
When ``_config.yml`` names one (``nclab: runs: url, profile``, :func:`run_pack`), the install cell carries its
address: at the pack's profile it sets ``NCLAB_RUNS_URL`` (unless it is set already), so that a missing run
is downloaded instead of trained. With no pack named the cell has no such line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "Repository",
    "repository",
    "student_repository",
    "RunPack",
    "run_pack",
    "install_cell",
    "badge",
    "sync_notebooks",
    "stale_notebooks",
]

DRIVE_CACHE = "/content/drive/MyDrive/nclab"
_BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/[^)\s]+\)"
)


@dataclass(frozen=True)
class Repository:
    """A GitHub repository: ``slug`` "owner/name" and the ``branch`` the course is published from."""

    slug: str
    branch: str = "main"

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", self.slug):
            raise ValueError(f"repository must be owner/name on GitHub, got {self.slug!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.branch):  # no "/": the badges' links could not be told apart
            raise ValueError(
                f"branch {self.branch!r}: use letters, digits, '.', '_' and '-' only "
                "(the badge links cannot carry others)"
            )


def _config(path: Path) -> dict:
    import yaml  # installed with jupyter-book, on the machines that build the course (not needed on Colab)

    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run nclab student from the course's root folder.")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _entry(path: Path, entry, key: str) -> Repository:
    """The repository of ``entry`` (``url``, ``branch``), read from ``key`` of the config at ``path``."""
    entry = entry if isinstance(entry, dict) else {}
    url = str(entry.get("url", ""))
    if not url.startswith("https://github.com/"):
        raise ValueError(f"{path}: {key}.url must be https://github.com/OWNER/NAME, got {url!r}")
    branch = entry.get("branch", "main")
    if not isinstance(branch, str):  # YAML reads `branch: 2027` as a number (and 0123 as octal 83)
        raise ValueError(f'{path}: {key}.branch must be text: quote it, branch: "{branch}"')
    return Repository(url.removeprefix("https://github.com/").removesuffix(".git").strip("/"), branch)


def repository(config: str | Path = "_config.yml") -> Repository:
    """The repository named by ``repository: url, branch`` in the book's ``config``."""
    path = Path(config)
    return _entry(path, _config(path).get("repository"), "repository")


def student_repository(config: str | Path = "_config.yml") -> Repository:
    """The public repository the students get (``nclab release`` writes it), named by
    ``nclab: student_repository: url, branch`` in the book's ``config``; the course repository stays private."""
    path = Path(config)
    nclab = _config(path).get("nclab")
    if not isinstance(nclab, dict) or "student_repository" not in nclab:
        raise ValueError(
            f"{path}: name the students' repository under nclab: student_repository: url (https://github.com/"
            "OWNER/NAME, public, not the course repository) and branch, then run nclab release again"
        )
    return _entry(path, nclab["student_repository"], "nclab.student_repository")


@dataclass(frozen=True)
class RunPack:
    """The instructor's run pack (``nclab runs pack``): the ``url`` its files are published at ('' for none)
    and the ``profile`` whose runs it holds."""

    url: str = ""
    profile: str = "full"

    def __post_init__(self):
        if not self.url:
            return
        if not re.fullmatch(r"https?://[^\s\"'\\]+", self.url):  # it goes into the install cell as a string
            raise ValueError(
                "nclab.runs.url must be the http(s) address of the pack's files, e.g. "
                f"https://github.com/OWNER/NAME/releases/download/runs-full, or '' for none; got {self.url!r}"
            )
        from ..config import PROFILES  # torch comes with it: only when a pack is named

        if self.profile not in PROFILES:
            raise ValueError(f"nclab.runs.profile must be one of {sorted(PROFILES)}, got {self.profile!r}")


def run_pack(config: str | Path = "_config.yml") -> RunPack:
    """The run pack named by ``nclab: runs: url, profile`` in the book's ``config`` (profile ``full`` unless
    named); ``RunPack()``, no pack, when the config names none or an empty url."""
    path = Path(config)
    nclab = _config(path).get("nclab")
    entry = nclab.get("runs") if isinstance(nclab, dict) else None
    if entry is None:
        return RunPack()
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: nclab.runs must hold url and profile, e.g. {{url: https://…, profile: full}}")
    return RunPack(str(entry.get("url") or "").strip(), str(entry.get("profile", "full")))


def _pack_lines(pack: RunPack) -> tuple[str, str]:
    """(the install cell's comment line, its Colab lines) that set ``NCLAB_RUNS_URL``; empty without a pack."""
    if not pack.url:
        return "", ""
    comment = (
        f"\n# At the {pack.profile} profile (NCLAB_PROFILE={pack.profile}, set before this cell), a missing run is"
        "\n# downloaded from the instructor's run pack instead of trained."
    )
    lines = f'''
    import importlib

    importlib.invalidate_caches()  # nclab was installed just now, in this process
    from nclab.config import get_profile

    if get_profile().name == "{pack.profile}":  # the instructor's runs: downloaded instead of trained
        os.environ.setdefault("NCLAB_RUNS_URL", "{pack.url}")'''
    return comment, lines


def install_cell(repo: Repository, pack: RunPack | None = None) -> str:
    """The source of every notebook's first code cell (tagged ``remove-cell``: not shown on the site); with
    ``pack`` (a url), at the pack's profile it sets ``NCLAB_RUNS_URL`` to the pack's address."""
    comment, lines = _pack_lines(pack or RunPack())
    return f'''# Colab only: install nclab from the course repository (elsewhere `make` has installed it
# already), and keep checkpoints on Google Drive so that a disconnect, or another notebook, reuses them.
# To keep them in this runtime only (lost when it ends), first run
# `import os; os.environ["NCLAB_NO_DRIVE"] = "1"`.{comment}
import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    package = "nclab @ git+https://github.com/{repo.slug}@{repo.branch}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)
    os.environ.setdefault("NCLAB_DATA", "/content/data")  # data sets in the runtime: fast, off your quota
    if not os.environ.get("NCLAB_NO_DRIVE"):
        from google.colab import drive

        try:
            drive.mount("/content/drive")
            os.environ.setdefault("NCLAB_CACHE", "{DRIVE_CACHE}")
        except Exception as error:  # refused or failed: go on, checkpoints in the runtime only
            print(f"Google Drive not mounted ({{error}}): checkpoints stay in this runtime and end with it."){lines}'''


def badge(repo: Repository, folder: str, filename: str) -> str:
    """The "Open in Colab" badge of ``folder/filename`` (folder "notebooks" or "student")."""
    return (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{repo.slug}/blob/{repo.branch}/{folder}/{filename})"
    )


def _synced(path: Path, repo: Repository, pack: RunPack) -> nbformat.NotebookNode:
    """The notebook at ``path`` with its badge and install cell made from ``repo`` and ``pack``."""
    notebook = nbformat.read(path, as_version=4)
    if len(notebook.cells) < 2 or notebook.cells[0].cell_type != "markdown" or notebook.cells[1].cell_type != "code":
        raise ValueError(
            f"{path.name}: a course notebook opens with a markdown cell (title, badge), then the install cell"
        )
    title = notebook.cells[0]
    if not _BADGE.search(title.source):
        raise ValueError(f"{path.name}: its first cell has no Colab badge to update")
    title.source = _BADGE.sub(lambda _: badge(repo, "notebooks", path.name), title.source)
    notebook.cells[1].source = install_cell(repo, pack)
    return notebook


def sync_notebooks(
    source_dir: str | Path = "notebooks", repo: Repository | None = None, pack: RunPack | None = None
) -> list[str]:
    """Rewrite the badge and install cell of every notebook in ``source_dir`` from ``repo`` and ``pack``
    (default: those in ``_config.yml``); returns the names of the notebooks that changed."""
    repo, pack = repo or repository(), pack or run_pack()
    changed = []
    for path in sorted(Path(source_dir).glob("*.ipynb")):
        text = nbformat.writes(_synced(path, repo, pack)) + "\n"
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path.name)
    return changed


def stale_notebooks(
    source_dir: str | Path = "notebooks", repo: Repository | None = None, pack: RunPack | None = None
) -> list[str]:
    """Names of the notebooks whose badge or install cell differ from those of ``repo`` and ``pack``
    (default: those in ``_config.yml``)."""
    repo, pack = repo or repository(), pack or run_pack()
    stale = []
    for path in sorted(Path(source_dir).glob("*.ipynb")):
        synced = _synced(path, repo, pack)
        current = nbformat.read(path, as_version=4)
        if [c.source for c in synced.cells[:2]] != [c.source for c in current.cells[:2]]:
            stale.append(path.name)
    return stale
