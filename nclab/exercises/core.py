"""The machinery of the exercises: results, the exercise record, running one check, comparing answers.

A check function takes the student's answer and returns ``(passed, message)``; it compares the answer with
nclab's own implementation on a tiny hand case and on random inputs, and names the typical mistakes it
recognises. The helpers below do the comparing and the naming; :func:`run_check` turns whatever the
student's code does (a wrong value, a crash, ``NotImplementedError``) into a :class:`Result`, never an
exception. The checks themselves live in ``notebookNN.py``, one module per notebook.
"""

from __future__ import annotations

import contextvars
import hashlib
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "Result",
    "Exercise",
    "Question",
    "Wrong",
    "NOT_ANSWERED",
    "STAND_IN",
    "run_check",
    "merge_tables",
    "show",
    "compare",
    "call",
    "call_each",
    "is_module",
    "Opaque",
    "generator",
    "draw_int",
    "secret_seed",
    "as_number",
    "random_images",
    "as_float_tensor",
    "compare_close",
]


@dataclass(frozen=True)
class Result:
    """The outcome of one check: ``passed`` and a message for the student; ``answered`` is False while the
    answer is not written yet (``None``, ``...``, NotImplementedError, or the library's stand-in)."""

    name: str
    passed: bool
    message: str
    answered: bool = True

    def __str__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"


@dataclass(frozen=True)
class Exercise:
    """An exercise: the global name its answer is defined under, the function that checks it, its points."""

    answer: str  # e.g. "cifar_stem_layer": what the grader looks up
    check: Callable[[Any], tuple[bool, str]]  # answer → (passed, message)
    points: int  # awarded when the check passes; a positive int
    # the library's own computation, with the answer's signature: what :func:`stand_in` lends to the cells
    # after an unanswered exercise, so that "Run all" goes on (None: the notebook never calls the answer)
    reference: Callable | None = None
    # the library objects its check compares with, by the dotted name a student could import ("nclab.ood.Energy"):
    # an answer whose code reaches one scores 0 in the grader (nclab.course.grading.reach)
    references: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 1:
            raise ValueError(f"the points of exercise `{self.answer}` must be a positive int, got {self.points!r}")


@dataclass(frozen=True)
class Question:
    """An interpretation question graded by hand: the id of its markdown cell in the notebook, its points.

    In the notebook the question cell is followed by the student's answer cell (markdown, metadata
    ``{"nclab": {"answer": name}}``) and by the model answer with its rubric, in a ``solution-only`` cell that
    only the instructor's version keeps. The grader copies the student's text into the CSV beside an empty
    points column for the instructor to fill in.
    """

    cell: str
    points: int

    def __post_init__(self):
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 1:
            raise ValueError(f"the points of question cell `{self.cell}` must be a positive int, got {self.points!r}")


class Wrong(Exception):
    """Raised inside a check function to fail with its message as is."""


NOT_ANSWERED = (
    "not answered yet (it raises NotImplementedError): replace `# YOUR CODE HERE` and "
    "`raise NotImplementedError()` with your code, then rerun the cell."
)


STAND_IN = (
    "not answered yet: this is nclab's stand-in (`stand_in`), which the notebook lends to the cells that "
    "follow an unanswered exercise, not your answer: write your own and rerun the cell."
)


def run_check(exercises: Mapping[str, Exercise], name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name`` of ``exercises``, without printing; never raises because of it."""
    if name not in exercises:
        raise KeyError(f"No exercise {name!r}; nclab knows {sorted(exercises)}.")
    if answer is None or answer is Ellipsis:
        return Result(name, False, f"not answered yet: `{exercises[name].answer}` is {answer!r}.", answered=False)
    if getattr(answer, "__nclab_stand_in__", False):
        return Result(name, False, STAND_IN, answered=False)
    try:
        passed, message = exercises[name].check(answer)
    except NotImplementedError:
        return Result(name, False, NOT_ANSWERED, answered=False)
    except Wrong as wrong:
        return Result(name, False, str(wrong))
    except Exception as error:  # the student's code crashed: say how, never re-raise
        return Result(name, False, f"your code raised {type(error).__name__}: {error}")
    return Result(name, bool(passed), message)


def merge_tables(*tables: Mapping[str, Any]) -> dict[str, Any]:
    """The notebooks' tables (of exercises or of questions) as one; ValueError when a name is defined twice."""
    merged: dict[str, Any] = {}
    for table in tables:
        for name, entry in table.items():
            if name in merged:
                raise ValueError(f"{name!r} is defined in two notebooks' EXERCISES/QUESTIONS tables: rename one.")
            merged[name] = entry
    return merged


# ----------------------------------------------------------------------------------------------------
# Comparing tensors, naming the mistake


PLAIN_TENSOR = (
    "{case}: your output is a {kind}, a subclass of torch.Tensor: return a plain torch.Tensor (a subclass can "
    "change how tensors compare)."
)
DENSE_TENSOR = "{case}: your output is a {layout} tensor on the {device} device: return an ordinary dense tensor."


def _not_dense(got: torch.Tensor, case: str) -> str | None:
    """A message when ``got`` is sparse, quantised or on the meta device (its values cannot be compared)."""
    if got.layout != torch.strided or got.is_quantized or got.device.type == "meta":
        return DENSE_TENSOR.format(case=case, layout=str(got.layout).removeprefix("torch."), device=got.device.type)
    return None


def show(x: Any) -> str:
    """What ``x`` is, in words for a message: "a (2, 3) uint8 tensor", "a list"."""
    if isinstance(x, torch.Tensor):
        return f"a {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')} tensor"
    if isinstance(x, Opaque):
        return x.description
    return f"a {type(x).__name__}"


def compare(got: Any, expected: torch.Tensor, case: str, mistakes: dict[str, torch.Tensor]) -> str | None:
    """None when ``got`` equals ``expected`` exactly; else a message saying what differs.

    In this order: type, shape, dtype, one of the known ``mistakes`` (message → the wrong tensor it
    produces), or the first wrong value (the whole tensors when they are small enough to read).
    """
    if not isinstance(got, torch.Tensor):
        return f"{case}: expected {show(expected)}, got {show(got)}."
    if type(got) is not torch.Tensor:
        return PLAIN_TENSOR.format(case=case, kind=type(got).__name__)
    if _not_dense(got, case):
        return _not_dense(got, case)
    if got.shape != expected.shape:
        return f"{case}: your output has shape {tuple(got.shape)}, expected {tuple(expected.shape)}."
    if got.dtype != expected.dtype:
        return (
            f"{case}: your output is {got.dtype}, expected {expected.dtype} (the input's): "
            f"augmentation works on the uint8 images, before normalisation."
        )
    if torch.equal(got, expected):
        return None
    for mistake, wrong in mistakes.items():
        if torch.equal(got, wrong):
            return f"{case}: {mistake}"
    if expected.numel() <= 36:
        return f"{case}: expected {expected.tolist()}, got {got.tolist()}."
    index = tuple(int(i) for i in (got != expected).nonzero()[0])
    return (
        f"{case}: first wrong value at index {list(index)}: got {got[index].item()}, expected {expected[index].item()}."
    )


def call(function: Callable, case: str, *args) -> Any:
    """``function(*args)`` on copies of the tensor arguments; Wrong, naming ``case``, if it crashes or
    changes an argument in place (NotImplementedError passes through: "not answered yet").

    ``function`` may be the grader's stand-in for a function in the student's kernel
    (:class:`nclab.course.grading.remote.Remote`): it runs there on the same inputs, copies an in-place change
    back into the copies and brings the gradients of its output, which :func:`compare_gradient` reads."""
    copies = [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args]
    try:
        output = function(*copies)
    except NotImplementedError:
        raise
    except Exception as error:
        raise Wrong(f"{case}: your code raised {type(error).__name__}: {error}") from None
    for arg, copy in zip(args, copies):
        if isinstance(arg, torch.Tensor) and not (arg.shape == copy.shape and torch.equal(arg, copy)):
            raise Wrong(f"{case}: your function changed one of its inputs in place; work on a copy.")
    remote = getattr(output, REMOTE_GRADIENTS, None) if isinstance(output, torch.Tensor) else None
    if remote is not None:  # {argument position: gradient} → {id of the caller's tensor: gradient}
        setattr(output, REMOTE_GRADIENTS, {id(args[p]): g for p, g in remote.items() if p < len(args)})
        output._nclab_arguments = args  # keeps those ids alive and unique while the output lives
    return output


def call_each(function: Callable, case: str, calls: Iterable[tuple]) -> list:
    """``[function(*args) for args in calls]`` as :func:`call` makes each (Wrong naming ``case`` and the
    arguments at the first crash); a remote function (the grader's) runs them all in one round trip."""
    calls = list(calls)
    if hasattr(function, "call_each"):
        return function.call_each(case, calls)
    return [call(function, f"{case}, arguments {args}", *args) for args in calls]


def is_module(answer: Any) -> bool:
    """Whether ``answer`` is a layer (an ``nn.Module``), here or, for the grader's stand-in, in the kernel."""
    return isinstance(answer, nn.Module) or getattr(answer, "is_module", False) is True


@dataclass(frozen=True)
class Opaque:
    """An answer's output that cannot come back from the student's kernel as plain data (an object of its
    own class, a tensor subclass, a sparse tensor): only its ``description``, for the message; it never
    equals anything."""

    description: str

    def __eq__(self, other):
        return other is self

    __hash__ = object.__hash__


# The secret per-run seed: None in the notebook, an integer while the grader checks (:func:`secret_seed`).
_SECRET: contextvars.ContextVar[int | None] = contextvars.ContextVar("nclab_secret_seed", default=None)


@contextmanager
def secret_seed(seed: int) -> Iterator[None]:
    """Within: every :func:`generator` mixes ``seed`` into its own seed, so that the random cases of the
    checks are inputs the student cannot know in advance (the grader draws a new ``seed`` per submission)."""
    token = _SECRET.set(int(seed))
    try:
        yield
    finally:
        _SECRET.reset(token)


def generator(seed: int) -> torch.Generator:
    """A generator for a check's random case number ``seed``: seeded with ``seed`` itself in the notebook
    (the same inputs at every run, so the feedback is reproducible), with a hash of it and the grader's
    secret seed while grading (so an answer hard-coded for the notebook's inputs fails)."""
    secret = _SECRET.get()
    if secret is not None:
        digest = hashlib.blake2b(f"{secret}:{seed}".encode(), digest_size=8).digest()
        seed = int.from_bytes(digest, "little") >> 1
    return torch.Generator().manual_seed(seed)


def on_grid(x: torch.Tensor, bits: int = 20) -> torch.Tensor:
    """``x`` rounded to a multiple of 2^−bits: a check's input made by arithmetic whose last bits depend on
    the machine (a matrix product, a QR) becomes the same tensor, bit for bit, on every machine."""
    return torch.round(x * 2.0**bits) / 2.0**bits


def draw_int(seed: int, low: int, high: int, avoid: Iterable[int] = ()) -> int:
    """An integer in [low, high) drawn from :func:`generator` ``(seed)``, never one of ``avoid`` (the check's
    fixed cases) and, while grading, never the notebook's own draw: a lookup of the notebook's cases fails."""
    avoid = set(avoid)
    if _SECRET.get() is not None:
        token = _SECRET.set(None)
        try:
            avoid.add(draw_int(seed, low, high, avoid))
        finally:
            _SECRET.reset(token)
    if not set(range(low, high)) - avoid:
        raise ValueError(f"nothing to draw in [{low}, {high}) outside {sorted(avoid)}")
    rng = generator(seed)
    while (value := int(torch.randint(low, high, (), generator=rng))) in avoid:
        pass
    return value


def as_number(value: Any) -> float | None:
    """``float(value)`` for a number or a one-element tensor; None for anything else, text included."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several values
        return None


def random_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """A seeded random batch of uint8 images: (batch, 3, size, size), values 0 … 255."""
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator(seed))


# ----------------------------------------------------------------------------------------------------
# Comparing float results, naming the mistake (notebooks 03 and 04)


def as_float_tensor(got: Any, case: str, expected: torch.Tensor) -> torch.Tensor:
    """``got`` as a float64 tensor of ``expected``'s shape (a number for a 0-d ``expected``); else Wrong."""
    if isinstance(got, (str, bytes)):
        raise Wrong(f"{case}: expected {show(expected)}, got {show(got)}: return a number or a tensor, not text.")
    if isinstance(got, numbers.Complex) and not isinstance(got, numbers.Real):
        raise Wrong(f"{case}: your output is a complex number; this value is real, return a float.")
    if expected.dim() == 0 and not isinstance(got, torch.Tensor):
        try:
            return torch.tensor(float(got), dtype=torch.float64)
        except (TypeError, ValueError):
            raise Wrong(f"{case}: expected a number, got {show(got)}.") from None
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"{case}: expected {show(expected)}, got {show(got)}: return a torch tensor.")
    if type(got) is not torch.Tensor:
        raise Wrong(PLAIN_TENSOR.format(case=case, kind=type(got).__name__))
    if _not_dense(got, case):
        raise Wrong(_not_dense(got, case))
    if got.is_complex():
        raise Wrong(f"{case}: your output is {got.dtype}; these values are real numbers, return a float tensor.")
    if got.numel() == 1 and expected.dim() == 0:
        return got.detach().reshape(()).double()
    if got.shape != expected.shape:
        raise Wrong(f"{case}: your output has shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
    if not got.is_floating_point():
        raise Wrong(f"{case}: your output is {got.dtype}; these values are real numbers, return a float tensor.")
    return got.detach().double()


def compare_close(
    got: Any,
    expected: torch.Tensor,
    case: str,
    mistakes: dict[str, torch.Tensor],
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> str | None:
    """None when ``got`` ≈ ``expected`` (in float64, within rtol/atol); else a message saying what differs.

    In this order: type or shape, NaN/inf, one of the known ``mistakes`` (message → the wrong tensor it
    produces), or the values (the whole tensors when they are small enough to read).
    """
    try:
        got = as_float_tensor(got, case, expected)
    except Wrong as wrong:
        return str(wrong)
    expected = expected.double()
    if not torch.isfinite(got).all():
        return f"{case}: your output contains NaN or inf ({got.flatten()[:6].tolist()} …)."
    if torch.allclose(got, expected, rtol=rtol, atol=atol):
        return None
    for mistake, wrong in mistakes.items():
        if wrong.shape == got.shape and torch.allclose(got, wrong.double(), rtol=rtol, atol=atol):
            return f"{case}: {mistake}"
    if expected.numel() <= 12:
        return (
            f"{case}: expected {[round(v, 6) for v in expected.flatten().tolist()]}, "
            f"got {[round(v, 6) for v in got.flatten().tolist()]}."
        )
    index = int((got - expected).abs().flatten().argmax())
    return (
        f"{case}: largest difference at flat index {index}: got {got.flatten()[index].item():.6g}, "
        f"expected {expected.flatten()[index].item():.6g} (tolerance {rtol:g} relative)."
    )


def compare_gradient(
    got: Any,
    inputs: torch.Tensor,
    expected: torch.Tensor,
    case: str,
    *,
    no_gradient: str,
    wrong_gradient: str,
    detached: str | None = None,
    not_finite: str | None = None,
    defined: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> str | None:
    """None when ``got`` (a value already found right) back-propagates into ``inputs`` with the gradient
    ``expected`` (of ``got.sum()``); else the case and the matching explanation: ``no_gradient`` (not a
    tensor in a graph), ``detached`` (no path to ``inputs``; default ``wrong_gradient``), ``not_finite``
    (NaN or inf; default ``wrong_gradient``) or ``wrong_gradient``.

    ``defined(gradient)``: the part of the gradient that is well defined at ``inputs``, the only part
    compared, where the case sits on a point at which the function is not differentiable (there autograd
    returns one subgradient among many, and which one depends on the implementation and the machine: a
    tie broken by rounding, the gradient of a norm at 0). The whole gradient must still be finite."""
    if not (isinstance(got, torch.Tensor) and got.requires_grad):
        return f"{case}: your value is right but carries no gradient{no_gradient}"
    if type(got) is not torch.Tensor:
        return PLAIN_TENSOR.format(case=case, kind=type(got).__name__)
    try:
        yours = _gradient(got, inputs)
    except RuntimeError:  # the graph was freed by a .backward() in the answer, or is not differentiable
        return (
            f"{case}: your value is right but its gradient cannot be computed: return the value itself, "
            f"without calling .backward() on it (or on a part of it) inside your function."
        )
    if yours is None:
        return f"{case}: your value is right but {detached or wrong_gradient}"
    if not isinstance(yours, torch.Tensor) or yours.shape != inputs.shape:
        return f"{case}: your value is right but {wrong_gradient}"
    if not torch.isfinite(yours).all():
        return f"{case}: your value is right but {not_finite or wrong_gradient}"
    if defined is not None:
        yours, expected = defined(yours), defined(expected)
    if not torch.allclose(yours.double(), expected.double(), rtol=rtol, atol=atol):
        return f"{case}: your value is right but {wrong_gradient}"
    return None


REMOTE_GRADIENTS = "_nclab_gradients"  # the attribute of a remote output: {id of an input: its gradient}


def _gradient(got: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor | None:
    """∂(Σ got)/∂inputs: by autograd here, or as computed in the student's kernel for a remote output (None:
    no path to ``inputs``; RuntimeError: it could not be computed)."""
    remote = getattr(got, REMOTE_GRADIENTS, None)
    if remote is None:
        (yours,) = torch.autograd.grad(got.sum(), inputs, allow_unused=True)
        return yours
    yours = remote.get(id(inputs))
    if isinstance(yours, Exception):
        raise RuntimeError(str(yours))
    return yours
