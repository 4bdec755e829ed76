"""The checkpoint cache warmed once before a class is graded.

Each kernel sees the grader's cache copy-on-write (``sandbox``): it loads the runs already there, and what
it trains itself is thrown away with the sandbox. With a cold cache every submission of notebooks 01-08
would train the notebook's runs again, and a fully solved submission could come back ``timeout``. So, once
per notebook, profile and nclab version, the grader executes the instructor's own notebook (trusted code,
outside the sandbox) before the first submission: every run it trains or loads is then in the cache, and a
mark in the cache says so, so that the next grading run starts at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

from ... import __version__
from ...config import cache_dir
from ..prepare import execute_notebook
from .answers import instructor_notebook

__all__ = ["warm_cache", "warm_mark"]


def warm_mark(notebook: str | Path, profile: str) -> Path:
    """The file whose presence says that the cache holds the runs of ``notebook`` in ``profile``."""
    return cache_dir() / "warm" / f"{Path(notebook).stem}-{profile}-nclab{__version__}.done"


def warm_cache(notebook: str | Path, profile: str, progress: Callable[[str], object] = print) -> bool:
    """Execute the instructor version of ``notebook`` once under ``NCLAB_PROFILE=profile`` (no time limit
    per cell), so that the runs every submission loads are in the cache; True if it ran, False when the
    cache was already warm. Without the instructor's notebook, it says the command to run instead.
    RuntimeError (naming the cell) when the instructor's notebook itself fails: grading would be in vain."""
    mark = warm_mark(notebook, profile)
    mark.parent.mkdir(parents=True, exist_ok=True)
    with open(mark.with_suffix(".lock"), "w") as lock:  # a second grader waits, then finds the cache warm
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _warm(notebook, profile, progress, mark)


def _warm(notebook, profile: str, progress, mark: Path) -> bool:
    if mark.exists():
        return False
    instructor = instructor_notebook(notebook)
    if instructor is None:
        number = Path(notebook).name.split("_")[0]
        progress(
            f"WARNING: no instructor notebook for {Path(notebook).name}: the cache may be cold, and every "
            f"submission would train its runs again; run `NCLAB_PROFILE={profile} nclab train --notebook {number}` "
            "first, or pass the notebook's path"
        )
        return False
    progress(f"warming the cache: running {instructor.name} once ({profile} profile) before the first submission")
    began = time.perf_counter()
    with mock.patch.dict(os.environ, NCLAB_PROFILE=profile):  # inherited by the kernel below, then restored
        execute_notebook(instructor, timeout=None)
    mark.write_text(f"{instructor}\n")
    progress(f"cache warm ({time.perf_counter() - began:.0f} s): its runs load in every submission's sandbox")
    return True
