"""One submission's kernel: the student's cells run in the sandbox with capped outputs, then the answers
checked from the grader (``remote``): each call of a check runs the student's function in a cell of its own,
and only the tagged reply lines come back."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import tempfile
import threading

from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat.v4 import new_code_cell

from ... import config, exercises
from . import remote, sandbox
from .submissions import first_line

__all__ = [
    "RESULT_TAG",
    "TIMEOUT_ENAME",
    "MAX_OUTPUT_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_NOTEBOOK_OUTPUT_BYTES",
    "MAX_LATE_REPLY_BYTES",
    "execute",
    "kernel_environment",
]

RESULT_TAG = "nclab-grade-result"
TIMEOUT_ENAME = "CellTimeout"  # the error the grader records for a cell it had to interrupt


def _errors(cells: list, timed_out: set[int], timeout: float) -> list[str]:
    """What went wrong in the student's ``cells``: the interrupted ones, and each error's name and message."""
    errors = []
    for index, cell in enumerate(cells):
        where = f"cell {index + 1} `{first_line(cell.source, 30)}`"
        if index in timed_out:
            errors.append(f"{where}: interrupted after {timeout:g} s")
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                errors.append(f"{where}: {output.ename}: {first_line(output.evalue, 80)}")
    return errors


MAX_OUTPUT_BYTES = 2 * 2**20  # kept per cell; the rest of a flood is dropped (the result line never is)


MAX_MESSAGE_BYTES = 16 * 2**20  # one message from the kernel; a larger one is dropped by ZMQ before it is read


def _capped_kernel_client():
    """The kernel client class whose sockets refuse a frame over ``MAX_MESSAGE_BYTES`` (ZMQ drops the
    connection, which reconnects, before a byte is stored), on every channel: ipykernel sends a print loop's
    output as one message per flush, so a flood would otherwise arrive as messages of gigabytes. ZMQ has no
    bound on the frames of one message: a message of many frames is bounded by the submission's control
    group (``isolated``), whose grading process is the one that grows and is killed."""
    import zmq
    from jupyter_client.asynchronous import AsyncKernelClient

    class CappedKernelClient(AsyncKernelClient):
        def _create_connected_socket(self, channel, identity=None):
            context_socket = self.context.socket  # every channel: the shell's replies too

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

    def _over_cap(self, msg: dict, cell_index: int) -> bool:
        """Count ``msg`` against its cell's cap and the student cells' cap; whether it passes either."""
        size = len(json.dumps(msg.get("content", {}), default=str))
        kept = self.__dict__.setdefault("_kept_bytes", {})
        kept[cell_index] = kept.get(cell_index, 0) + size
        kept["all"] = kept.get("all", 0) + size * (cell_index < self.graded_from)
        flooded = cell_index < self.graded_from and kept["all"] > MAX_NOTEBOOK_OUTPUT_BYTES
        return kept[cell_index] > MAX_OUTPUT_BYTES or flooded

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        if self._over_cap(msg, cell_index):
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

    def _update_display_id(self, display_id, msg):
        """An ``update_display_data`` would replace an output already kept with one of any size, past every
        cap: grading needs no display updated in place, so none is."""

    def handle_comm_msg(self, outs, msg, cell_index):
        """Comm messages (widgets, or a student's own ``Comm``) are counted against the caps like output and
        never kept: grading needs no widget, and nbclient would keep each comm's state and data."""
        self._over_cap(msg, cell_index)


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


def execute(notebook, questions, nonce, timeout, total_timeout, seconds_per_check, env, hide=(), unsafe=False):
    """Run the student's ``notebook``, then check the answers from the grader (:mod:`nclab.course.grading.remote`):
    each call of a check runs the student's function in the kernel, in a cell of its own appended to
    ``notebook``. Return (status, errors, report or None)."""
    student_cells, timed_out, cell_timeouts = len(notebook.cells), set(), {}
    tag = f"{RESULT_TAG} {nonce}"

    def on_executed(cell, cell_index, execute_reply):
        if (execute_reply or {}).get("content", {}).get("ename") == TIMEOUT_ENAME:
            timed_out.add(cell_index)

    cache = config.cache_dir()
    # the data sets, read-only, where NCLAB_DATA puts them outside the cache (a run's data is part of its key)
    data = config.data_dir()
    data = [data] if data.is_dir() and not data.resolve().is_relative_to(cache.resolve()) else []
    with (
        tempfile.TemporaryFile() as kernel_log,
        tempfile.TemporaryDirectory(prefix="nclab-grade-") as workdir,
        sandbox.kernel_manager(
            workdir, hide=hide, expose=data, cache=cache if cache.is_dir() else None, unsafe=unsafe
        ) as km,
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
            # the kernel's raw stdout/stderr (escape sequences, fake score lines) never reach the instructor's
            # terminal: the grader shows its own progress lines only, and reads the kernel over its channels
            quiet = dict(stdout=subprocess.DEVNULL, stderr=kernel_log)  # stderr kept to say why a start failed
            async with client.async_setup_kernel(env=env or kernel_environment(), **quiet):
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
        except Exception as error:  # the run failed outside the student's cells (most often, a kernel that did
            # not start): the last line the kernel wrote to stderr says why
            kernel_log.seek(max(0, kernel_log.seek(0, os.SEEK_END) - 4096))
            said = [line for line in kernel_log.read().decode("utf-8", "replace").splitlines() if line.strip()]
            raise RuntimeError(
                f"{first_line(error)} (the kernel's last words: {said[-1] if said else 'none'})"
            ) from error
    if report == "tampered":
        return "tampered", ["more than one reply line in a grading cell: forged output"], None
    if report is None:
        problem = f"the notebook did not finish within {total_timeout:g} s (a cell ignored the interrupt?)"
        return "timeout", [problem], None
    errors = _errors(notebook.cells[:student_cells], timed_out, timeout)
    report = {q: (passed, first_line(message, 400)) for q, (passed, message) in report.items()}
    died = any(message.startswith("the kernel died") for _, message in report.values())
    hung = timed_out & set(range(student_cells))
    status = "kernel-died" if died else "timeout" if hung else "errors" if errors else "ok"
    return status, errors, report


def kernel_environment() -> dict[str, str]:
    """The kernels' environment: the caller's variables that :data:`sandbox.KERNEL_ENVIRONMENT` allows (no
    token or key of the grader's reaches a student's code), with ``NCLAB_PROFILE=smoke`` unless it is set,
    and no run pack (``NCLAB_RUNS_URL=''``)."""
    env = sandbox.allowed_environment(os.environ)
    # A sandboxed kernel has no network: a pack (the grader's NCLAB_RUNS_URL, or _config.yml's) would make a run
    # missing from the cache fail with "is this machine online?" in every student's cell. Set and empty: no
    # pack, not even _config.yml's, so a missing run trains, as before packs existed.
    return {**env, "NCLAB_PROFILE": env.get("NCLAB_PROFILE") or "smoke", "NCLAB_RUNS_URL": ""}
