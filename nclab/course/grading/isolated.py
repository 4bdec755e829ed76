"""Each submission graded in a process of its own, inside its own control group (:mod:`.cgroup`), under a
deadline: whatever the submission makes the grader hold (kernel messages of any size on any channel, comm
messages, a notebook of 100,000 cells to parse) or start (processes holding memory, a fork bomb), it is
that process that grows, is bounded, and is killed, and the grading run goes on with the next student.

The grading process is a fork of the grader: it inherits the grader's code and state as they are, joins its
group before doing anything else, and sends back one row (pickled) through a pipe. Where the machine has no
control group, the fallback is an address-space limit on the grading process, which its kernel inherits (the
kernel's own per-process limits, ``sandbox.Limits``, are capped at it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import resource
import secrets
import select
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import cgroup, sandbox
from .submissions import first_line

__all__ = ["run_bounded", "alone_without_groups"]

MAX_REPLY_BYTES = 64 * 2**20  # one row, pickled, is a few kilobytes


def _bound_self(bound: cgroup.Bound) -> None:
    """The fallback without a group: this process may grow its address space by ``bound.memory_bytes``."""
    status = open("/proc/self/status").read()
    size = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    limit = size + bound.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _child(function: Callable, args: tuple, kwargs: dict, group: cgroup.Group | None, bound, reply: int, grader: int):
    """The grading process: join the group, run, send the pickled outcome, exit without cleanup handlers.
    It dies with the grader (PID ``grader``: a grader killed mid-run leaves no grading behind)."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sandbox._prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != grader:  # the grader died before the line above
            os._exit(70)
        if group is not None:
            group.add(os.getpid())
        else:
            _bound_self(bound)
        outcome = ("ok", function(*args, **kwargs))
    except MemoryError:
        outcome = ("memory", "the grading process ran out of its memory bound")
    except BaseException as error:  # noqa: BLE001 - anything at all: it is reported, never raised here
        outcome = ("error", f"{type(error).__name__}: {first_line(error)}")
    try:
        data = pickle.dumps(outcome)
    except Exception as error:  # noqa: BLE001 - an outcome that cannot be sent
        data = pickle.dumps(("error", f"the grader's reply could not be pickled: {first_line(error)}"))
    with contextlib.suppress(OSError):
        view = memoryview(data)
        while view:
            view = view[os.write(reply, view) :]
    os._exit(0)


def _read_reply(reply: int, pid: int, deadline: float) -> tuple[bytes, bool, int | None]:
    """What the child writes (at most MAX_REPLY_BYTES) until it exits, whether it was still running at
    ``deadline``, and its wait status once it exited. The child's end of the pipe may live on in processes
    it forked, so its exit, not the pipe's end, says it is done."""
    chunks, size, status = [], 0, None
    while True:
        done, waited = os.waitpid(pid, os.WNOHANG)
        if done:
            status = waited
        ready = select.select([reply], [], [], 0 if done else min(max(deadline - time.monotonic(), 0), 0.2))[0]
        data = os.read(reply, 1 << 20) if ready else b""
        if data:
            size += len(data)
            if size <= MAX_REPLY_BYTES:
                chunks.append(data)
            continue
        if done or ready:  # exited and drained, or the pipe's end (EOF) and then its exit
            if not done:
                status = os.waitpid(pid, 0)[1]
            return b"".join(chunks), False, status
        if time.monotonic() >= deadline:
            return b"".join(chunks), True, None


def run_bounded(
    function: Callable, *args, bound: cgroup.Bound | None = None, seconds: float, **kwargs
) -> tuple[str, object, int | None]:
    """``function(*args, **kwargs)`` in a forked process bounded by ``bound`` and killed after ``seconds``.

    Returns ("ok", its value, peak), or (status, reason, peak) when it did not return one (peak: the most
    memory its group held at once, in bytes; None without a group): "memory" (its group passed
    the memory bound), "timeout" (still running after ``seconds``), "killed" (it died, e.g. by a signal) or
    "error" (it raised; the reason names the exception). Every process left in the group is killed before
    this returns, and a Ctrl-C here kills them too before it is raised."""
    group, bound, grader = None, bound or cgroup.Bound(), os.getpid()
    if cgroup.unavailable_reason() is None:
        try:
            group = cgroup.create(f"{cgroup.GROUP_PREFIX}{grader}-{secrets.token_hex(4)}", bound)
        except RuntimeError:  # this submission falls back on the address-space limit; the next one tries again
            group = None
    token = secrets.token_hex(8)  # an unsafe kernel's processes carry it: killed below when there is no group
    reply, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            os.close(reply)
            os.environ[sandbox.RUN_TOKEN] = token
            _child(function, args, kwargs, group, bound, write_end, grader)
        os.close(write_end)
        try:
            data, late, status = _read_reply(reply, pid, time.monotonic() + seconds)
        finally:
            memory = group is not None and group.oom_killed()  # read before the group is gone
            peak = group.peak() if group is not None else None
            survivors = None
            if group is not None:
                try:
                    group.close()
                except RuntimeError as error:  # processes in uninterruptible sleep: reported, not raised
                    survivors = str(error)
            if status is None:  # still running (or interrupted here): killed with its group, or alone without one
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                status = os.waitpid(pid, 0)[1]
            if group is None:  # an unsafe kernel outlives its grading process: found by the token and killed
                with contextlib.suppress(RuntimeError):
                    sandbox.kill_all(run=token)
    finally:
        os.close(reply)
    if survivors:
        return "error", survivors, peak
    if late:
        return "timeout", f"the grading did not end within {seconds:g} s: stopped", peak
    try:
        outcome = pickle.loads(data) if data else None
    except Exception:  # noqa: BLE001 - a reply cut short when the process was killed
        outcome = None
    if isinstance(outcome, tuple) and len(outcome) == 2 and outcome[0] in ("ok", "memory", "error"):
        return (*outcome, peak)
    if memory:
        return "memory", f"the submission passed its memory bound of {bound.memory_bytes / 2**30:g} GiB", peak
    return (
        "killed",
        f"the grading process died (exit status {os.waitstatus_to_exitcode(status)}) without a result",
        peak,
    )


LOCK = Path(tempfile.gettempdir()) / "nclab-grade.lock"


def alone_without_groups(unsafe: bool = False):
    """Where the machine has no control groups, every sandbox shares one user's process limit, so one
    grader's submission could starve another's: return the grader's lock (an open file, held until it is
    closed or dropped), and refuse (RuntimeError, saying what to do) while another grader holds it. With
    groups, or ``unsafe`` (no sandbox user), any number of graders run side by side: None."""
    if unsafe or cgroup.unavailable_reason() is None:
        return None
    lock = open(os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.read().strip() or "?"
        lock.close()
        raise RuntimeError(
            f"another `nclab grade` is running (process {holder}) and this machine has no control groups "
            f"({cgroup.unavailable_reason()}) to keep two graders' submissions apart: wait for it to finish, "
            "or grade both folders in one run"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
