"""Exercises with instant feedback: ``check(name, answer)`` says ✅ or ❌ and, when ❌, what is wrong.

Every exercise of a notebook asks for one global name (a function, usually): the notebook cell defines it
and calls ``check``; the grader (:mod:`nclab.grade`) finds the same name in a submission and runs the same
check. ``EXERCISES`` maps each exercise to that name and to its check function. A check function takes the
student's answer and returns ``(passed, message)``; it compares the answer with nclab's own implementation
on a tiny hand case and on random inputs, and names the typical mistakes it recognises. Points are not
here: they live in one table, :data:`nclab.grade.POINTS`.

This module holds the machinery and the comparison helpers; the checks of notebook NN live in
``exercises_NN.py``, each ending with its dict (``NOTEBOOK_NN``) merged into ``EXERCISES`` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["check", "run_check", "Result", "Exercise", "Wrong", "EXERCISES"]


@dataclass(frozen=True)
class Result:
    """The outcome of one check: ``passed`` and a message for the student."""

    name: str
    passed: bool
    message: str

    def __str__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"


@dataclass(frozen=True)
class Exercise:
    """An exercise: the global name its answer is defined under, and the function that checks it."""

    answer: str                                        # e.g. "cifar_stem_layer": what the grader looks up
    check: Callable[[Any], tuple[bool, str]]           # answer → (passed, message)


class Wrong(Exception):
    """Raised inside a check function to fail with its message as is."""


NOT_ANSWERED = ("not answered yet (it raises NotImplementedError): replace `# YOUR CODE HERE` and "
                "`raise NotImplementedError()` with your code, then rerun the cell.")


def run_check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name`` without printing. Never raises because of the answer."""
    if name not in EXERCISES:
        raise KeyError(f"No exercise {name!r}; nclab knows {sorted(EXERCISES)}.")
    if answer is None or answer is Ellipsis:
        return Result(name, False, f"not answered yet: `{EXERCISES[name].answer}` is {answer!r}.")
    try:
        passed, message = EXERCISES[name].check(answer)
    except NotImplementedError:
        return Result(name, False, NOT_ANSWERED)
    except Wrong as wrong:
        return Result(name, False, str(wrong))
    except Exception as error:  # the student's code crashed: say how, never re-raise
        return Result(name, False, f"your code raised {type(error).__name__}: {error}")
    return Result(name, bool(passed), message)


def check(name: str, answer: Any) -> Result:
    """Check ``answer`` for exercise ``name``, print ✅/❌ with what is wrong, and return the Result."""
    result = run_check(name, answer)
    print(result)
    return result


# ----------------------------------------------------------------------------------------------------
# Comparing tensors, naming the mistake


def _show(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')} tensor"
    return f"a {type(x).__name__}"


def _compare(got: Any, expected: torch.Tensor, case: str, mistakes: dict[str, torch.Tensor]) -> str | None:
    """None when ``got`` equals ``expected``; else what differs: type, shape, dtype, a known mistake, or
    the first wrong value (the whole tensors when they are small enough to read)."""
    if not isinstance(got, torch.Tensor):
        return f"{case}: expected {_show(expected)}, got {_show(got)}."
    if got.shape != expected.shape:
        return f"{case}: your output has shape {tuple(got.shape)}, expected {tuple(expected.shape)}."
    if got.dtype != expected.dtype:
        return (f"{case}: your output is {got.dtype}, expected {expected.dtype} (the input's): "
                f"augmentation works on the uint8 images, before normalisation.")
    if torch.equal(got, expected):
        return None
    for mistake, wrong in mistakes.items():
        if torch.equal(got, wrong):
            return f"{case}: {mistake}"
    if expected.numel() <= 36:
        return f"{case}: expected {expected.tolist()}, got {got.tolist()}."
    index = tuple(int(i) for i in (got != expected).nonzero()[0])
    return f"{case}: first wrong value at index {list(index)}: got {got[index].item()}, expected {expected[index].item()}."


def _call(function: Callable, case: str, *args) -> Any:
    """``function(*args)`` on copies of the tensor arguments; fails with ``case`` named if it crashes or
    changes an argument in place."""
    copies = [arg.clone() if isinstance(arg, torch.Tensor) else arg for arg in args]
    try:
        output = function(*copies)
    except NotImplementedError:
        raise
    except Exception as error:
        raise Wrong(f"{case}: your code raised {type(error).__name__}: {error}") from None
    for arg, copy in zip(args, copies):
        if isinstance(arg, torch.Tensor) and not torch.equal(arg, copy):
            raise Wrong(f"{case}: your function changed one of its inputs in place; work on a copy.")
    return output


def _as_number(value: Any) -> float | None:
    """``float(value)`` for a number or a one-element tensor; None for anything else, text included."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several values
        return None


def _random_images(batch: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


# ----------------------------------------------------------------------------------------------------
# Comparing float results, naming the mistake (notebooks 03 and 04)


def _as_float_tensor(got: Any, case: str, expected: torch.Tensor) -> torch.Tensor:
    """``got`` as a float64 tensor of ``expected``'s shape (a number for a 0-d ``expected``); else Wrong."""
    if expected.dim() == 0 and not isinstance(got, torch.Tensor):
        try:
            return torch.tensor(float(got), dtype=torch.float64)
        except (TypeError, ValueError):
            raise Wrong(f"{case}: expected a number, got {_show(got)}.") from None
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"{case}: expected {_show(expected)}, got {_show(got)}: return a torch tensor.")
    if got.numel() == 1 and expected.dim() == 0:
        return got.detach().reshape(()).double()
    if got.shape != expected.shape:
        raise Wrong(f"{case}: your output has shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
    if not (got.is_floating_point() or got.is_complex()):
        raise Wrong(f"{case}: your output is {got.dtype}; these values are real numbers, return a float tensor.")
    return got.detach().double()


def _compare_close(got: Any, expected: torch.Tensor, case: str, mistakes: dict[str, torch.Tensor],
                   rtol: float = 1e-5, atol: float = 1e-7) -> str | None:
    """None when ``got`` ≈ ``expected`` (float64, tolerances rtol/atol); else what differs: shape, NaN/inf,
    a known mistake, or the values (the whole tensors when they are small enough to read)."""
    try:
        got = _as_float_tensor(got, case, expected)
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
        return (f"{case}: expected {[round(v, 6) for v in expected.flatten().tolist()]}, "
                f"got {[round(v, 6) for v in got.flatten().tolist()]}.")
    index = int((got - expected).abs().flatten().argmax())
    return (f"{case}: largest difference at flat index {index}: got {got.flatten()[index].item():.6g}, "
            f"expected {expected.flatten()[index].item():.6g} (tolerance {rtol:g} relative).")


# ----------------------------------------------------------------------------------------------------
# The registry: one module of checks per notebook (imported last, they use the helpers above)

from .exercises_01 import NOTEBOOK_01  # noqa: E402
from .exercises_02 import NOTEBOOK_02  # noqa: E402
from .exercises_03 import NOTEBOOK_03  # noqa: E402
from .exercises_04 import NOTEBOOK_04  # noqa: E402

EXERCISES: dict[str, Exercise] = {**NOTEBOOK_01, **NOTEBOOK_02, **NOTEBOOK_03, **NOTEBOOK_04}
