"""Grading a class: every submission run and checked (:func:`grade_submission`), one CSV row per student,
resumable after a stop (:func:`grade`)."""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

import pandas as pd

from ... import exercises
from ...config import get_profile
from . import cgroup, reach, sandbox
from .answers import PACKAGE, hand_questions_for, instructor_notebook, questions_for, rubric
from .cgroup import Bound
from .isolated import alone_without_groups, run_bounded
from .kernel import execute, kernel_environment
from .scores import (
    add_error,
    append,
    duplicate_students,
    hand_grades,
    identity,
    keep_hand_grades,
    killed_row,
    read_journal,
    row,
    summarize,
    write_csv,
)
from .submissions import first_line, load, through_last_exercise
from .warm import warm_cache

__all__ = ["grade_submission", "grade"]


def grade_submission(
    path: str | Path,
    questions: list[str],
    *,
    timeout: float = 120,
    total_timeout: float = 600,
    seconds_per_check: float = 20,
    only_exercises: bool = False,
    env: dict | None = None,
    hand: list[str] = (),
    hide: list[str | Path] = (),
    unsafe: bool = False,
    template: tuple[str, ...] | None = None,
    allow_reference: bool = False,
) -> dict:
    """One CSV row for the submission at ``path``: student, status, errors, reaches_key, points and feedback
    per question, total, max, then per hand-graded question of ``hand`` the written answer and an empty
    points column, hand_max, seconds. Never raises because of the submission.

    ``template``: the code cells of the student version of the assignment (:func:`.reach.template`; None:
    the course's notebook numbered as ``questions``). An exercise whose key the submission's own code
    reaches (:func:`.reach.find`) scores 0 unless ``allow_reference``; the reaches_key column says where.

    status: ok, errors (a cell raised), timeout (a cell was interrupted, or the run passed
    ``total_timeout``), kernel-died, invalid-file (a link, directory, FIFO: not read), too-large,
    invalid-notebook, empty, ungraded (no result from the grading step), tampered (a forged result line),
    grader-error; :func:`grade` adds grader-killed (the grader stopped while running this submission).
    """
    path, began = Path(path), time.perf_counter()
    nonce, report = secrets.token_hex(16), None
    notebook, status, problem, answers = load(path, list(hand))
    reached, unchecked = None, ""
    if notebook is not None:
        try:  # before the cells are cut: the whole submission is read
            template = template if template is not None else reach.template(questions)
            reached = reach.find(notebook, questions, template) if template is not None else reach.NOT_CHECKED
        except Exception as error:  # a failure of the check itself: this submission's row says so
            unchecked = f"the check for nclab's own implementation failed: {type(error).__name__}: {first_line(error)}"
        if only_exercises:
            through_last_exercise(notebook, questions)
        try:
            status, errors, report = execute(
                notebook,
                questions,
                nonce,
                timeout,
                total_timeout,
                seconds_per_check,
                env,
                [path.resolve().parent, *hide],
                unsafe,
            )
        except Exception as error:  # a failure of the grader itself: keep grading the others
            status, errors = "grader-error", [f"{type(error).__name__}: {first_line(error)}"]
        problem = "; ".join(errors[:5]) + (f"; … {len(errors) - 5} more" if len(errors) > 5 else "")
        problem = "; ".join(filter(None, [problem, unchecked]))
    seconds = round(time.perf_counter() - began, 1)
    return row(path, status, problem, questions, hand, report, answers, seconds, reached, allow_reference)


def grade(
    submissions: str | Path,
    notebook: str | Path,
    out: str | Path = "scores.csv",
    *,
    timeout: float = 120,
    total_timeout: float = 600,
    only_exercises: bool = False,
    retry_killed: bool = False,
    unsafe: bool = False,
    bound: Bound | None = None,
    allow_reference: bool = False,
    warm: bool = True,
    progress=print,
) -> pd.DataFrame:
    """Grade every ``*.ipynb`` in ``submissions`` for ``notebook``; write ``out`` (CSV) and, beside it, a
    histogram of the totals (``out`` with suffix .png); return the table.

    No row is ever lost: each is appended to a journal (``out`` + ``.partial``, flushed to disk) as soon as
    it is graded, and the CSV is written to a temporary file renamed into place at the end. A grader that
    was stopped (killed by a submission, or with the machine) is rerun with the same arguments: it resumes,
    keeping the rows of unchanged submissions, and gives the submission it was running when it stopped the
    status grader-killed (``retry_killed``: run it again instead). Every text cell that a spreadsheet would
    run as a formula is neutralised. Kernels get :func:`kernel_environment`: the smoke profile unless the
    caller's environment says otherwise. An exercise whose key a submission reaches (:mod:`.reach`) scores
    0 unless ``allow_reference``. Each submission is graded in its own process and control group, holding
    at most ``bound`` (:mod:`.isolated`). ``warm``: first run the instructor's notebook once, so that the runs
    it trains are in the cache that every sandbox reads (:mod:`.warm`).
    """
    _check_inputs(submissions, notebook, Path(out))
    questions, hand = questions_for(notebook), hand_questions_for(notebook)
    template = reach.template(questions, notebook)
    if template is None:
        progress(f"WARNING: no student version of {Path(notebook).name} to compare with: nclab's own "
                 "implementation is not looked for (give the notebook's path)")  # fmt: skip
    if reason := sandbox.check(unsafe):  # raises SandboxUnavailable, saying why, unless unsafe
        progress(f"WARNING: grading without a sandbox ({reason}): the students' code runs as you")
    lock = alone_without_groups(unsafe)  # held until this run ends (refused while another grader holds it)
    if cgroup.unavailable_reason() is None:
        cgroup.remove_stale()  # the last group of a grader killed with its machine
    paths = sorted(entry for entry in Path(submissions).iterdir() if entry.name.endswith(".ipynb"))
    if not paths:
        raise FileNotFoundError(f"No submissions (*.ipynb) in {submissions}.")
    out = Path(out)
    hand_grades(out, hand)  # an --out that is not the grader's CSV is refused before anyone is graded
    env = kernel_environment()
    if warm:  # once per notebook and profile: the runs every submission loads are in the cache
        warm_cache(notebook, env["NCLAB_PROFILE"], progress)
    journal = out.with_name(out.name + ".partial")
    graded, started = read_journal(journal)
    if graded or started:
        progress(f"resuming from {journal}: {len(graded)} submissions already graded")
    rows = []
    if journal.exists() and not journal.read_bytes().endswith(b"\n") and journal.stat().st_size:
        with journal.open("a", encoding="utf-8") as log:  # a line cut short by the stop: end it
            log.write("\n")
    journal.touch(mode=0o600)  # the students' rows: readable by the instructor only
    with journal.open("a", encoding="utf-8") as log:
        for path in paths:
            now = identity(path)
            done = graded.get(path.name)
            if done and done["identity"] == now and not (retry_killed and done["row"]["status"] == "grader-killed"):
                rows.append(done["row"])
                continue
            if path.name in started and not retry_killed:
                row = killed_row(path, questions, hand)
            else:
                append(log, {"started": path.name})
                try:
                    row = _bounded_row(
                        path,
                        questions,
                        hand,
                        bound or Bound(),
                        timeout=timeout,
                        total_timeout=total_timeout,
                        only_exercises=only_exercises,
                        env=env,
                        hide=_hidden(journal, out, notebook),
                        unsafe=unsafe,
                        template=template,
                        allow_reference=allow_reference,
                    )
                except BaseException:  # Ctrl-C or a failure of the grader: this student did not stop it
                    append(log, {"aborted": path.name})
                    raise
            append(log, {"graded": path.name, "identity": now, "row": row})
            rows.append(row)
            progress(f"{row['student']}: {row['status']}, {row['total']}/{row['max']} points ({row['seconds']:.0f} s)")
    for student, names in duplicate_students(paths).items():  # "é" written as one character or as two
        shared = f"{len(names)} files are one student (names that differ only in Unicode spelling): {', '.join(names)}"
        progress(f"WARNING: {student}: {shared}; each is graded, keep one row")
        for graded_row in rows:
            if graded_row["student"] == student:
                add_error(graded_row, shared)
    typed = hand_grades(out, hand)  # read now: points typed while this run graded are kept too
    if typed:  # the file as the instructor left it, whatever happens next
        shutil.copy2(out, out.with_name(out.name + ".bak"))
    kept, unmatched = keep_hand_grades(rows, typed)
    if kept:
        progress(f"kept {kept} hand-graded points typed into {out} before this run")
    if unmatched:
        progress(f"WARNING: hand points for no submission of this run ({'; '.join(unmatched)}): see {out}.bak")
    frame = pd.DataFrame(rows)
    write_csv(frame, out)
    killed = [row["student"] for row in rows if row["status"] == "grader-killed"]
    if killed:  # kept, so that --retry-killed can grade them again
        progress(
            f"{len(killed)} submissions stopped the grader ({', '.join(killed)}): --retry-killed grades them again"
        )
    else:
        journal.unlink()
    progress(summarize(frame, questions, out.with_suffix(".png")))
    flagged = [row for row in rows if any(f"{q}: " in row.get("reaches_key", "") for q in questions)]
    if flagged:
        kept = (
            "their points kept (--allow-reference)"
            if allow_reference
            else "0 points for those, unless --allow-reference"
        )
        progress(f"{len(flagged)} submissions reach nclab's own implementation of an exercise: {kept}; see reaches_key")
    written = [out, out.with_suffix(".png")]
    if hand:
        progress(
            f"{len(hand)} questions graded by hand ({sum(exercises.points(q) for q in hand)} points): read the "
            "*_answer columns and fill in the *_points columns"
        )
        instructor = instructor_notebook(notebook)
        if instructor is not None:
            written.append(out.with_name(out.stem + "-rubric.md"))
            written[-1].write_text(rubric(instructor), encoding="utf-8")
        else:
            progress(f"no instructor notebook found for {Path(notebook).name}: pass its path to get the rubric file")
    progress("wrote " + ", ".join(str(path) for path in written))
    if lock is not None:
        lock.close()
    return frame


START_SECONDS = 120  # past --total-timeout: to start the kernel, parse the notebook, shut the kernel down
STATUS_OF = {"memory": "out-of-memory", "timeout": "timeout", "killed": "grader-error", "error": "grader-error"}


def _bounded_row(path: Path, questions: list[str], hand: list[str], bound: Bound, **options) -> dict:
    """:func:`grade_submission` in a process of its own, in its own control group bounded by ``bound``
    (:mod:`.isolated`): a submission that makes the grader hold too much memory, or runs past
    ``total_timeout`` plus START_SECONDS (a huge notebook to parse included), becomes its own row."""
    began, seconds = time.perf_counter(), options["total_timeout"] + START_SECONDS
    status, value, peak = run_bounded(
        grade_submission, path, questions, hand=hand, bound=bound, seconds=seconds, **options
    )
    if status != "ok":
        value = row(path, STATUS_OF[status], value, questions, hand, seconds=round(time.perf_counter() - began, 1))
    return {**value, "memory_peak_gib": round(peak / 2**30, 2) if peak else ""}  # "": no group to measure it


def _check_inputs(submissions, notebook, out: Path) -> None:
    """ValueError or FileNotFoundError, saying what to do, for inputs that would grade a class in vain."""
    get_profile()  # NCLAB_PROFILE=bogus would mark every student "errors": refused before the first
    if not Path(submissions).is_dir():
        raise FileNotFoundError(f"no submissions folder {submissions}: give the folder of STUDENT_ID.ipynb files")
    named = Path(notebook)
    if not named.is_file() and (named.parent != Path(".") or not re.fullmatch(r"\d\d_\w+\.ipynb", named.name)):
        raise FileNotFoundError(
            f"no notebook {notebook}: give the assignment's file name (e.g. 01_train_resnet18_cifar100.ipynb) "
            "or its path"
        )
    if out.is_dir() or not out.parent.is_dir():
        raise ValueError(f"--out {out}: name a CSV file in an existing folder (e.g. scores.csv)")


def _hidden(journal: Path, out: Path, notebook) -> list[Path]:
    """What a submission's kernel must not see besides the submissions folder: the results (journal, CSV,
    histogram, rubric) and the course's instructor material (the notebooks with their solutions and model
    answers, the chapters with the instructor guide)."""
    candidates = [journal, out, out.with_suffix(".png"), out.with_name(out.stem + "-rubric.md")]
    candidates += [PACKAGE.parent / "notebooks", PACKAGE.parent / "book"]
    instructor = instructor_notebook(notebook)
    if instructor is not None:
        candidates.append(instructor.resolve().parent)
    return sorted({path.resolve() for path in candidates if path.exists()})
