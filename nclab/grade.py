"""Grading: run each submitted notebook in a fresh kernel, check its answers from the grader, one CSV row
per student.

``grade(submissions_dir, notebook, out)`` executes every ``*.ipynb`` of ``submissions_dir`` (the student
id is the file name) with nbclient: a per-cell time limit interrupts a hung cell, errors do not stop the
run, so every exercise still counts. Then it checks the answers **in its own process**
(:mod:`nclab.exercises.remote`): each exercise's check function, loaded when the grader started, runs here
on a stand-in for the student's function; each call of it runs the student's function in the kernel, in a
cell the grader appends, on the grader's inputs, and brings back plain data (:mod:`nclab.exercises.wire`:
JSON, tensors as raw bytes, never pickle). The expected values never enter the kernel, and the random cases
are drawn from a secret seed per submission. Whatever the student's code does to its kernel (patch nclab,
torch or json, replace ``sys.stdout``, rewrite the grader's cells with an input transformer) changes only
what its own functions return; a cell whose output carries two reply lines is ``tampered``. Points come
from the exercise tables (``nclab.exercises.EXERCISES``) on the grader's side.

Interpretation questions graded by hand (``nclab.exercises.QUESTIONS``) are not scored: for each, the
row carries the student's text (``<question>_answer``, from the markdown cell whose metadata names it) and
an empty ``<question>_points`` column for the instructor to fill in; ``hand_max`` is their total, and a
rubric file (the model answers of the instructor's notebook) is written beside the CSV when that notebook
is found.

Each kernel runs in :mod:`nclab.sandbox` (as root: an unprivileged user in its own PID, mount and network
namespaces, the package read-only, the submissions folder and the results hidden, rlimits, every process
killed when the submission ends; not root: refused unless ``unsafe``), and the grader keeps at most
``MAX_OUTPUT_BYTES`` of outputs per cell. Not defended: an answer that calls nclab's own reference
implementation (the package ships it) passes.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from . import config, exercises, sandbox
from .exercises import remote

__all__ = [
    "questions_for",
    "hand_questions_for",
    "written_answers",
    "rubric",
    "grade",
    "grade_submission",
    "read_scores",
    "summarize",
]

RESULT_TAG = "nclab-grade-result"
TIMEOUT_ENAME = "CellTimeout"  # the error the grader records for a cell it had to interrupt
_PACKAGE = Path(__file__).resolve().parent


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
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a cell a spreadsheet would run as a formula


def _spreadsheet_safe(text: str) -> str:
    """``text`` as a spreadsheet shows it, never run as a formula (a leading ``'`` where it would be)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


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
        answers[q] = _spreadsheet_safe(text)
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


# ----------------------------------------------------------------------------------------------------
# In the grader: one submission


def _first_line(text: str, length: int = 100) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= length else line[: length - 1] + "…"


MAX_SUBMISSION_BYTES = 20 * 2**20  # a notebook of exercises is well under this; outputs are not needed


def _read_submission(path: Path) -> tuple[bytes | None, str, str]:
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
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        raise ValueError("JSON, but not a notebook (no list of cells)")
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as error:
        raise ValueError(f"not a notebook nbformat can read ({type(error).__name__})") from None


def _load(path: Path, hand: list[str] = ()) -> tuple[nbformat.NotebookNode | None, str, str, dict[str, str]]:
    """(notebook rebuilt from the submission's cell sources, status, problem, written answers to the
    questions ``hand``); notebook None if not gradable."""
    answers = {q: "" for q in hand}
    raw, status, problem = _read_submission(path)
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
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # messages of ours: no file content
        problem = str(error) if isinstance(error, ValueError) else f"a cell lacks its fields ({type(error).__name__})"
        return None, "invalid-notebook", f"not a valid notebook: {problem}", answers
    if not any(cell.cell_type == "code" and cell.source.strip() for cell in cells):
        return None, "empty", "the notebook has no code", answers
    return new_notebook(cells=cells), "ok", "", answers


def _bound_names(source: str) -> set[str] | None:
    """Every name a cell binds (def, class, any assignment target — tuples, annotations, augmented,
    walrus —, import as, for/with/except targets), or None if it does not parse (IPython syntax)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
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


def _through_last_exercise(notebook: nbformat.NotebookNode, questions: list[str]) -> None:
    """Drop the cells after the last one that defines an answer (they cannot change the points). A cell that
    does not parse as Python (magics) counts as defining an answer if one of the names appears in it."""
    answers = {exercises.EXERCISES[q].answer for q in questions}

    def defines(source: str) -> bool:
        bound = _bound_names(source)
        return bool(answers & bound) if bound is not None else any(name in source for name in answers)

    last = max(
        (i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and defines(cell.source)),
        default=len(notebook.cells) - 1,
    )
    del notebook.cells[last + 1 :]


def _errors(cells: list, timed_out: set[int], timeout: float) -> list[str]:
    """What went wrong in the student's ``cells``: the interrupted ones, and each error's name and message."""
    errors = []
    for index, cell in enumerate(cells):
        where = f"cell {index + 1} `{_first_line(cell.source, 30)}`"
        if index in timed_out:
            errors.append(f"{where}: interrupted after {timeout:g} s")
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                errors.append(f"{where}: {output.ename}: {_first_line(output.evalue, 80)}")
    return errors


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
) -> dict:
    """One CSV row for the submission at ``path``: student, status, errors, points and feedback per
    question, total, max, then per hand-graded question of ``hand`` the written answer and an empty points
    column, hand_max, seconds. Never raises because of the submission.

    status: ok, errors (a cell raised), timeout (a cell was interrupted, or the run passed
    ``total_timeout``), kernel-died, invalid-file (a link, directory, FIFO: not read), too-large,
    invalid-notebook, empty, ungraded (no result from the grading step), tampered (a forged result line),
    grader-error; :func:`grade` adds grader-killed (the grader stopped while running this submission).
    """
    path, began = Path(path), time.perf_counter()
    nonce, report = secrets.token_hex(16), None
    notebook, status, problem, answers = _load(path, list(hand))
    if notebook is not None:
        if only_exercises:
            _through_last_exercise(notebook, questions)
        try:
            status, errors, report = _execute(
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
            status, errors = "grader-error", [f"{type(error).__name__}: {_first_line(error)}"]
        problem = "; ".join(errors[:5]) + (f"; … {len(errors) - 5} more" if len(errors) > 5 else "")
    return _row(path, status, problem, questions, hand, report, answers, round(time.perf_counter() - began, 1))


def _row(path: Path, status, problem, questions, hand, report=None, answers=None, seconds=0.0) -> dict:
    """The CSV row, in the one column order every row has: a graded submission's (``report``: {question:
    (passed, message)}) or, without a report, one whose every exercise scores 0 with the status as feedback."""
    row = {"student": path.stem, "status": status, "errors": problem}
    not_graded = f"not graded ({status}): see the errors column"
    for q in questions:
        passed, message = report[q] if report else (False, not_graded)
        row[f"{q}_points"] = exercises.points(q) if passed else 0
        row[f"{q}_feedback"] = message
    row["total"] = sum(row[f"{q}_points"] for q in questions)
    row["max"] = sum(exercises.points(q) for q in questions)
    for q in hand:
        row[f"{q}_answer"] = (answers or {}).get(q, "")
        row[f"{q}_points"] = ""  # the instructor's, by hand
    if hand:
        row["hand_max"] = sum(exercises.points(q) for q in hand)
    row["seconds"] = seconds
    return row


MAX_OUTPUT_BYTES = 2 * 2**20  # kept per cell; the rest of a flood is dropped (the result line never is)


MAX_MESSAGE_BYTES = 16 * 2**20  # one message from the kernel; a larger one is dropped by ZMQ before it is read


def _capped_kernel_client():
    """The kernel client class whose iopub socket refuses messages over ``MAX_MESSAGE_BYTES`` (ZMQ drops
    the connection, which reconnects, before a byte is stored): ipykernel sends a print loop's output as one
    message per flush, so a flood would otherwise arrive as messages of gigabytes."""
    import zmq
    from jupyter_client.asynchronous import AsyncKernelClient

    class CappedKernelClient(AsyncKernelClient):
        def _create_connected_socket(self, channel, identity=None):
            if channel != "iopub":
                return super()._create_connected_socket(channel, identity)
            context_socket = self.context.socket

            def socket(kind):
                made = context_socket(kind)
                made.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # per frame of a message
                made.setsockopt(zmq.RCVHWM, 64)  # messages queued unread
                return made

            self.context.socket = socket  # the one socket made below gets the limit before it connects
            try:
                return super()._create_connected_socket(channel, identity)
            finally:
                del self.context.socket

    return CappedKernelClient


MAX_NOTEBOOK_OUTPUT_BYTES = 20 * 2**20  # kept for a whole submission, over all the student's cells
MAX_LATE_REPLY_BYTES = 64 * 2**20  # of reply lines kept past the caps, for a whole submission


class _CappedClient(NotebookClient):
    """A NotebookClient that keeps at most ``MAX_OUTPUT_BYTES`` of outputs per cell and, over the student's
    cells, ``MAX_NOTEBOOK_OUTPUT_BYTES`` per submission, every kind of message counted whole (an endless
    ``print``, traceback or display would otherwise grow the grader without bound). Past either cap it keeps
    only an error's name and the start of its message (so that the errors column still sees it) and the
    stream lines that carry this run's tagged reply line (``marker``): at most three per cell (two already
    mean tampering) and ``MAX_LATE_REPLY_BYTES`` in all. The grader's cells (from ``graded_from`` on) count
    only against their own cap, so a student's flood never costs the replies of the checks."""

    marker = ""
    graded_from = 10**9  # the index of the grader's first cell

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(json.dumps(content, default=str))
        kept = self.__dict__.setdefault("_kept_bytes", {})
        kept[cell_index] = kept.get(cell_index, 0) + size
        kept["all"] = kept.get("all", 0) + size * (cell_index < self.graded_from)
        flooded = cell_index < self.graded_from and kept["all"] > MAX_NOTEBOOK_OUTPUT_BYTES
        if kept[cell_index] > MAX_OUTPUT_BYTES or flooded:
            late = self.__dict__.setdefault("_late", {"results": {}, "bytes": 0, "errors": set()})
            if msg.get("msg_type") == "error":
                if cell_index in late["errors"]:
                    return None
                late["errors"].add(cell_index)
                msg = _clean_output(msg)  # its name and the start of its message, no traceback
            else:
                text = content.get("text", "") if msg.get("msg_type") == "stream" else ""
                if not (self.marker and self.marker in text and late["results"].get(cell_index, 0) < 3):
                    return None
                lines = "".join(line + "\n" for line in text.splitlines() if line.startswith(self.marker))
                if late["bytes"] + len(lines) > MAX_LATE_REPLY_BYTES:
                    return None
                late["results"][cell_index] = late["results"].get(cell_index, 0) + 1
                late["bytes"] += len(lines)
                msg = {**msg, "content": {**content, "text": lines}}
        try:
            return super().output(outs, msg, display_id, cell_index)
        except Exception:  # a malformed message (the kernel's json patched): keep a stream's text or an error
            clean = _clean_output(msg)
            return super().output(outs, clean, None, cell_index) if clean else None


def _clean_output(msg: dict) -> dict | None:
    """A stream or error message of the kernel reduced to its text fields, or None for any other kind."""
    content, kind = msg.get("content") or {}, msg.get("msg_type")
    if kind == "stream":
        name = content.get("name") if content.get("name") in ("stdout", "stderr") else "stdout"
        return {**msg, "content": {"name": name, "text": str(content.get("text", ""))}}
    if kind == "error":
        fields = {"ename": str(content.get("ename", ""))[:100], "evalue": str(content.get("evalue", ""))[:200]}
        return {**msg, "content": {**fields, "traceback": []}}
    return None


def _execute(notebook, questions, nonce, timeout, total_timeout, seconds_per_check, env, hide=(), unsafe=False):
    """Run the student's ``notebook``, then check the answers from the grader (:mod:`nclab.exercises.remote`):
    each call of a check runs the student's function in the kernel, in a cell of its own appended to
    ``notebook``. Return (status, errors, report or None)."""
    student_cells, timed_out, cell_timeouts = len(notebook.cells), set(), {}
    tag = f"{RESULT_TAG} {nonce}"

    def on_executed(cell, cell_index, execute_reply):
        if (execute_reply or {}).get("content", {}).get("ename") == TIMEOUT_ENAME:
            timed_out.add(cell_index)

    cache = config.cache_dir()
    with (
        tempfile.TemporaryDirectory(prefix="nclab-grade-") as workdir,
        sandbox.kernel_manager(workdir, hide=hide, cache=cache if cache.is_dir() else None, unsafe=unsafe) as km,
    ):
        client = _CappedClient(
            notebook,
            km=km,
            allow_errors=True,
            record_timing=False,
            store_widget_state=False,  # widget messages never reach output(): keep none
            shutdown_kernel="immediate",
            timeout=timeout,
            timeout_func=lambda cell: cell_timeouts.get(cell.get("id"), timeout),
            interrupt_on_timeout=True,
            on_cell_executed=on_executed,
            resources={"metadata": {"path": workdir}},
            error_on_timeout={"ename": TIMEOUT_ENAME, "evalue": f"interrupted after {timeout:g} s", "traceback": []},
        )
        client.marker = tag + " "  # the reply lines are kept past the output cap
        client.graded_from = student_cells
        km.client_factory = _capped_kernel_client()
        stopped = threading.Event()  # set when the grader gives up on this submission
        running: set[asyncio.Task] = set()  # the grader's cells in flight, cancelled when it gives up

        async def run_cell(source: str, seconds: float) -> tuple[list[str], bool]:
            running.add(asyncio.current_task())
            try:
                cell = new_code_cell(source)
                notebook.cells.append(cell)
                cell_timeouts[cell.id] = seconds
                index = len(notebook.cells) - 1
                await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            finally:
                running.discard(asyncio.current_task())
            lines = [
                line
                for output in cell.outputs
                if output.output_type == "stream"
                for line in output.text.splitlines()
                if line.startswith(tag + " ")
            ]
            return lines, index in timed_out

        def checking(loop: asyncio.AbstractEventLoop) -> dict | str:
            """The checks, in a thread of their own: each call of a student's function waits for its cell."""

            def run(source: str, seconds: float) -> tuple[list[str], bool]:
                if stopped.is_set():
                    raise remote.KernelDied()
                future = asyncio.run_coroutine_threadsafe(run_cell(source, seconds), loop)
                try:
                    return future.result(timeout=seconds + 60)
                except (DeadKernelError, concurrent.futures.CancelledError, concurrent.futures.TimeoutError):
                    stopped.set()
                    future.cancel()
                    raise remote.KernelDied() from None

            try:
                return remote.check_answers(run, tag, exercises.EXERCISES, questions, seconds_per_check)
            except remote.Tampered:
                return "tampered"

        async def run_all() -> dict | str:
            client.reset_execution_trackers()
            async with client.async_setup_kernel(env=env or kernel_environment()):
                for index, cell in enumerate(list(notebook.cells)):
                    await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                done: concurrent.futures.Future = concurrent.futures.Future()
                loop = asyncio.get_running_loop()

                def work():
                    try:
                        outcome = checking(loop)
                    except BaseException as error:  # a failure of the grader's own code
                        outcome = error
                    if not done.cancelled():  # else the grader gave up on this submission: nobody waits
                        (done.set_exception if isinstance(outcome, BaseException) else done.set_result)(outcome)

                worker = threading.Thread(target=work, name="nclab-checks", daemon=True)
                worker.start()
                try:
                    return await asyncio.wrap_future(done)
                finally:
                    stopped.set()
                    for task in list(running):
                        task.cancel()
                    await asyncio.gather(*running, return_exceptions=True)
                    await asyncio.to_thread(worker.join, 10)  # it sees `stopped` at its next call

        async def execute() -> dict | str | None:
            """Run and check; None if it passed ``total_timeout`` (the kernel is then killed)."""
            task = asyncio.ensure_future(run_all())
            try:
                finished, _ = await asyncio.wait({task}, timeout=total_timeout)
                if finished:
                    return task.result()  # raises DeadKernelError if the kernel died in the student's cells
                task.cancel()  # nbclient reports the cancel as a dead kernel
                await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # retrieved: no "never retrieved" warning
                return None
            finally:
                stopped.set()
                if client.km is not None and await client.km.is_alive():
                    await client.km.shutdown_kernel(now=True)
                if client.kc is not None:  # nbclient leaves the channels of a kernel manager it was given open
                    client.kc.stop_channels()

        try:
            report = run_sync(execute)()
        except DeadKernelError:
            return "kernel-died", ["the kernel died (os._exit, a crash, or out of memory)"], None
    if report == "tampered":
        return "tampered", ["more than one reply line in a grading cell: forged output"], None
    if report is None:
        problem = f"the notebook did not finish within {total_timeout:g} s (a cell ignored the interrupt?)"
        return "timeout", [problem], None
    errors = _errors(notebook.cells[:student_cells], timed_out, timeout)
    report = {q: (passed, _first_line(message, 400)) for q, (passed, message) in report.items()}
    died = any(message.startswith("the kernel died") for _, message in report.values())
    hung = timed_out & set(range(student_cells))
    status = "kernel-died" if died else "timeout" if hung else "errors" if errors else "ok"
    return status, errors, report


# ----------------------------------------------------------------------------------------------------
# All submissions: the CSV and the instructor's summary


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
    caller's environment says otherwise.
    """
    questions, hand = questions_for(notebook), hand_questions_for(notebook)
    if reason := sandbox.check(unsafe):  # raises SandboxUnavailable, saying why, unless unsafe
        progress(f"WARNING: grading without a sandbox ({reason}): the students' code runs as you")
    paths = sorted(entry for entry in Path(submissions).iterdir() if entry.name.endswith(".ipynb"))
    if not paths:
        raise FileNotFoundError(f"No submissions (*.ipynb) in {submissions}.")
    out = Path(out)
    journal = out.with_name(out.name + ".partial")
    graded, started = _read_journal(journal)
    if graded or started:
        progress(f"resuming from {journal}: {len(graded)} submissions already graded")
    env, rows = kernel_environment(), []
    if journal.exists() and not journal.read_bytes().endswith(b"\n") and journal.stat().st_size:
        with journal.open("a", encoding="utf-8") as log:  # a line cut short by the stop: end it
            log.write("\n")
    with journal.open("a", encoding="utf-8") as log:
        for path in paths:
            identity = _identity(path)
            done = graded.get(path.name)
            if (
                done
                and done["identity"] == identity
                and not (retry_killed and done["row"]["status"] == "grader-killed")
            ):
                rows.append(done["row"])
                continue
            if path.name in started and not retry_killed:
                row = _killed_row(path, questions, hand)
            else:
                _append(log, {"started": path.name})
                try:
                    row = grade_submission(
                        path,
                        questions,
                        timeout=timeout,
                        total_timeout=total_timeout,
                        only_exercises=only_exercises,
                        env=env,
                        hand=hand,
                        hide=_hidden(journal, out, notebook),
                        unsafe=unsafe,
                    )
                except BaseException:  # Ctrl-C or a failure of the grader: this student did not stop it
                    _append(log, {"aborted": path.name})
                    raise
            _append(log, {"graded": path.name, "identity": identity, "row": row})
            rows.append(row)
            progress(f"{row['student']}: {row['status']}, {row['total']}/{row['max']} points ({row['seconds']:.0f} s)")
    frame = pd.DataFrame(rows)
    safe = frame.map(lambda value: _spreadsheet_safe(value) if isinstance(value, str) else value)
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    safe.to_csv(temporary, index=False)
    os.replace(temporary, out)
    killed = [row["student"] for row in rows if row["status"] == "grader-killed"]
    if killed:  # kept, so that --retry-killed can grade them again
        progress(
            f"{len(killed)} submissions stopped the grader ({', '.join(killed)}): --retry-killed grades them again"
        )
    else:
        journal.unlink()
    progress(summarize(frame, questions, out.with_suffix(".png")))
    written = [out, out.with_suffix(".png")]
    if hand:
        progress(
            f"{len(hand)} questions graded by hand ({sum(exercises.points(q) for q in hand)} points): read the "
            "*_answer columns and fill in the *_points columns"
        )
        instructor = _instructor_notebook(notebook)
        if instructor is not None:
            written.append(out.with_name(out.stem + "-rubric.md"))
            written[-1].write_text(rubric(instructor), encoding="utf-8")
        else:
            progress(f"no instructor notebook found for {Path(notebook).name}: pass its path to get the rubric file")
    progress("wrote " + ", ".join(str(path) for path in written))
    return frame


def _hidden(journal: Path, out: Path, notebook) -> list[Path]:
    """What a submission's kernel must not see besides the submissions folder: the results (journal, CSV,
    histogram, rubric) and the course's instructor material (the notebooks with their solutions and model
    answers, the chapters with the instructor guide)."""
    candidates = [journal, out, out.with_suffix(".png"), out.with_name(out.stem + "-rubric.md")]
    candidates += [_PACKAGE.parent / "notebooks", _PACKAGE.parent / "book"]
    instructor = _instructor_notebook(notebook)
    if instructor is not None:
        candidates.append(instructor.resolve().parent)
    return sorted({path.resolve() for path in candidates if path.exists()})


def _identity(path: Path) -> list:
    """What a submission was when graded (kind, size, modification time), without reading or following it."""
    info = path.lstat()
    return [stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns]


def _append(log, record: dict) -> None:
    """One journal line, on disk before the grader goes on."""
    log.write(json.dumps(record, ensure_ascii=True) + "\n")
    log.flush()
    os.fsync(log.fileno())


def _read_journal(journal: Path) -> tuple[dict[str, dict], set[str]]:
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


def _killed_row(path: Path, questions: list[str], hand: list[str]) -> dict:
    problem = (
        "the grader stopped while running this submission (killed by it?): rerun with --retry-killed to grade it again"
    )
    return _row(path, "grader-killed", problem, questions, hand)


def _instructor_notebook(notebook: str | Path) -> Path | None:
    """The instructor's version of ``notebook``: the path given, or the course's ``notebooks/`` copy."""
    path = Path(notebook)
    for candidate in (path, Path("notebooks") / path.name, _PACKAGE.parent / "notebooks" / path.name):
        if candidate.is_file() and '"model_answer"' in candidate.read_text(encoding="utf-8", errors="replace"):
            return candidate  # a student version (no model answers) is not the instructor's
    return None


def kernel_environment() -> dict[str, str]:
    """The kernels' environment: the caller's, with ``NCLAB_PROFILE=smoke`` unless it is set."""
    return {**os.environ, "NCLAB_PROFILE": os.environ.get("NCLAB_PROFILE") or "smoke"}


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
