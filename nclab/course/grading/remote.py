"""Checking in the grader a student's answer that lives in the student's kernel.

The grader runs each exercise's check function in its own process, from the code it loaded when it
started, on a :class:`Remote`: a stand-in for the student's function that, when the check calls it, sends
the inputs to the kernel, runs the function there (:func:`nclab.course.grading.wire.serve`) and returns the
output rebuilt from plain data. Every expected value and every comparison stays in the grader; the
kernel sees only the inputs, which the random cases draw from a secret seed per submission
(:func:`nclab.exercises.core.secret_seed`), so an answer hard-coded for the notebook's inputs fails.

:func:`check_answers` is the grading step; it talks to the kernel through ``run``, a function of the
grader that executes one cell and returns the tagged lines of its output (see :mod:`nclab.course.grading`).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ...exercises import core
from . import wire

__all__ = [
    "Remote",
    "Channel",
    "CheckTimeout",
    "KernelDied",
    "Tampered",
    "check_answers",
    "setup_cell",
]

WIRE_SOURCE = Path(wire.__file__).read_text(encoding="utf-8")  # read once, when the grader starts


class CheckTimeout(BaseException):
    """A check ran past its time limit (BaseException: no ``except Exception`` of a check swallows it)."""


class KernelDied(BaseException):
    """The kernel died while running the student's function."""


class Tampered(BaseException):
    """A cell printed more than one reply line: forged output."""


class NoReply(Exception):
    """The kernel sent no reply that can be read (its output replaced or cut, an unreadable value)."""


def setup_cell(tag: str, names: list[str]) -> str:
    """The grader's first cell in the kernel: the wire's code (in a namespace of its own) and the line saying
    what each answer's global name holds."""
    wire_name = _wire_name(tag)
    return (
        "# Added by the nclab grader: its wire to this kernel. The comparisons happen in the grader.\n"
        f"{wire_name} = {{'__name__': '_nclab_wire'}}\n"
        f"exec(compile({WIRE_SOURCE!r}, '<nclab-wire>', 'exec'), {wire_name})\n"
        f"{wire_name}['announce'](globals(), {tag!r}, {names!r})\n"
    )


def call_cell(tag: str, name: str, calls: list[tuple]) -> str:
    """The cell that runs the kernel's ``name`` on each argument tuple of ``calls``."""
    request = base64.b64encode(json.dumps(wire.encode({"calls": [list(args) for args in calls]})).encode()).decode()
    return f"{_wire_name(tag)}['serve'](globals(), {tag!r}, {name!r}, {request!r})\n"


def _wire_name(tag: str) -> str:
    return "_nclab_wire_" + tag.split()[-1]


class Channel:
    """The grader's side of the wire: runs cells through ``run(source, timeout) → (tagged lines, timed
    out)`` (raising KernelDied) and reads the one reply line of each, within a time limit per check."""

    def __init__(self, run: Callable[[str, float], tuple[list[str], bool]], tag: str):
        self.run, self.tag, self.deadline = run, tag, float("inf")

    def begin_check(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def reply(self, source: str) -> dict:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise CheckTimeout()
        lines, timed_out = self.run(source, max(remaining, 1.0))
        if timed_out:
            raise CheckTimeout()
        if len(lines) > 1:
            raise Tampered()
        if not lines:
            raise NoReply(
                "no reply line came back (sys.stdout replaced, or the output channel cut by one burst of over 16 MB?)"
            )
        try:
            reply = json.loads(lines[0][len(self.tag) + 1 :])
        except (ValueError, RecursionError):
            raise NoReply("its reply line is not JSON") from None
        if type(reply) is not dict:
            raise NoReply("its reply is not a JSON object")
        return reply

    def describe(self, names: list[str]) -> dict[str, dict]:
        described = self.reply(setup_cell(self.tag, names))
        return {name: described.get(name) if isinstance(described.get(name), dict) else {} for name in names}

    def call(self, name: str, calls: list[tuple]) -> list[dict]:
        reply = self.reply(call_cell(self.tag, name, calls))
        replies = reply.get("replies")
        if type(replies) is not list or not replies or len(replies) > len(calls):
            raise NoReply("its reply could not be read" + (f" ({reply['failed']})" if "failed" in reply else ""))
        if not all(type(item) is dict for item in replies):
            raise NoReply("its reply could not be read")
        return replies


_EXCEPTIONS: dict[str, type] = {}


def _exception(name, message) -> Exception:
    """An exception named as the one raised in the kernel (its class name), for the feedback."""
    name = name if isinstance(name, str) and name.isidentifier() and len(name) <= 60 else "Exception"
    if name not in _EXCEPTIONS:
        _EXCEPTIONS[name] = type(name, (Exception,), {"__module__": "kernel"})
    return _EXCEPTIONS[name](str(message)[:500])


class Remote:
    """The grader's stand-in for the student's global ``name`` in the kernel; calling it runs it there."""

    def __init__(self, channel: Channel, name: str, kind: str, type_name: str):
        self.channel, self.name, self.is_module, self.type_name = channel, name, kind == "module", type_name

    def __repr__(self) -> str:
        return f"<the kernel's {self.name}: a {self.type_name}>"

    def __call__(self, *args):
        (reply,) = self.channel.call(self.name, [args])
        return self._apply(reply, args)

    def call_each(self, case: str, calls: list[tuple]) -> list:
        """As :func:`nclab.exercises.core.call_each`, in one round trip (the kernel stops at a crash)."""
        replies = self.channel.call(self.name, calls) if calls else []
        outputs = []
        for args, reply in zip(calls, replies):

            def replay(*copies, reply=reply):
                return self._apply(reply, copies)

            outputs.append(core.call(replay, f"{case}, arguments {args}", *args))
        if len(outputs) < len(calls):
            raise NoReply("the kernel stopped before the last call without saying why")
        return outputs

    def _apply(self, reply: dict, copies: tuple):
        """The output of one call from its ``reply``, after copying the tensor arguments as the kernel left
        them back into ``copies`` (so that call() sees an in-place change); its gradients attached."""
        if "raised" in reply:
            if reply.get("not_implemented") is True:
                raise NotImplementedError(str(reply.get("message", ""))[:500])
            raise _exception(reply.get("raised"), reply.get("message", ""))
        try:
            output = wire.decode(reply.get("output"), opaque=core.Opaque)
            after = reply.get("arguments")
            if type(after) is not list or len(after) != len(copies):
                raise ValueError("the arguments did not come back")
            for copy, data in zip(copies, after):
                if isinstance(copy, torch.Tensor):
                    _reflect(copy, wire.decode(data, opaque=core.Opaque))
            gradients = reply.get("gradients") or {}
            if isinstance(output, torch.Tensor) and output.requires_grad and type(gradients) is dict:
                setattr(output, core.REMOTE_GRADIENTS, _gradients(gradients, len(copies)))
        except (ValueError, TypeError, KeyError, RecursionError) as error:
            raise NoReply(f"its reply could not be read ({type(error).__name__})") from None
        return output


def _reflect(copy: torch.Tensor, after) -> None:
    """Make ``copy`` what the kernel's argument became (only when it changed)."""
    if not isinstance(after, torch.Tensor):
        raise ValueError("an argument came back as something else")
    same_kind = after.shape == copy.shape and after.dtype == copy.dtype
    if same_kind and torch.equal(after, copy.detach()):
        return
    with torch.no_grad():
        if same_kind:
            copy.copy_(after)
        else:
            copy.data = after  # a different shape or dtype: call() sees the change


def _gradients(data: dict, count: int) -> dict:
    """{argument position: gradient tensor, None (no path) or RuntimeError (not computable)}."""
    gradients = {}
    for key, value in data.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < count):
            raise ValueError("a gradient for no argument")
        if isinstance(value, dict) and "error" in value:
            gradients[int(key)] = RuntimeError(str(value["error"])[:300])
        else:
            gradient = wire.decode(value, opaque=core.Opaque)
            gradients[int(key)] = gradient if gradient is None or isinstance(gradient, torch.Tensor) else None
    return gradients


def check_answers(
    run: Callable[[str, float], tuple[list[str], bool]],
    tag: str,
    exercises: dict[str, core.Exercise],
    questions: list[str],
    seconds_per_check: float = 20.0,
    seed: int | None = None,
) -> dict[str, tuple[bool, str]]:
    """{question: (passed, message)}: each question's check, run here on the kernel's answer with the secret
    ``seed`` (drawn when None). A missing answer, a crash, an endless loop or a dead kernel fails the
    question (and, for a dead kernel, those after it); Tampered (a forged reply line) propagates."""
    seed = secrets.randbits(62) if seed is None else seed
    channel = Channel(run, tag)
    names = [exercises[q].answer for q in questions]
    channel.begin_check(seconds_per_check)
    try:
        described = channel.describe(names)
    except KernelDied:
        return {q: (False, "the kernel died before the grading step could start") for q in questions}
    except (Exception, CheckTimeout) as error:  # NoReply, or anything the kernel's line makes our code raise
        message = f"the grading step could not start ({type(error).__name__}: {error})"
        return {q: (False, message[:300]) for q in questions}
    report, died = {}, None
    for q, name in zip(questions, names):
        if died:
            report[q] = (False, f"not checked: the kernel died while checking `{died}`")
            continue
        kind = (described.get(name) or {}).get("kind")
        if kind == "stand_in":
            report[q] = (False, core.STAND_IN)
            continue
        if kind not in ("none", "ellipsis", "module", "object"):
            report[q] = (False, f"answer `{name}` not defined (cell deleted?)")
            continue
        answer = (
            None
            if kind == "none"
            else Ellipsis
            if kind == "ellipsis"
            else Remote(channel, name, kind, str(described[name].get("type", "object"))[:60])
        )
        channel.begin_check(seconds_per_check)
        try:
            with core.secret_seed(seed):
                result = core.run_check(exercises, q, answer)
            report[q] = (result.passed, result.message)
        except CheckTimeout:
            report[q] = (False, f"`{name}` did not return within {seconds_per_check:g} s (an endless loop?)")
        except KernelDied:
            died = name
            report[q] = (False, f"the kernel died while running `{name}` (os._exit, a crash, out of memory)")
    return report
