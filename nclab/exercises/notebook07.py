"""Checks of notebook 07's exercises (long-tailed learning, space alignment): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import data, methods
from .core import Exercise, Question, Wrong, call, compare, compare_close, generator


def _as_counts(got, case: str) -> torch.Tensor | str:
    """The answer as an int64 tensor (a list or tuple of integers, an integer or whole-valued tensor or
    NumPy array), or a message saying what to return."""
    if (
        isinstance(got, (list, tuple))
        and got
        and all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in got)
    ):
        return torch.tensor([int(n) for n in got], dtype=torch.long)
    if isinstance(got, np.ndarray) and got.dtype.kind in "iuf":
        got = torch.from_numpy(got.copy())
    if type(got) is torch.Tensor and not got.is_complex() and got.dtype != torch.bool:
        if got.is_floating_point():
            if not bool(torch.isfinite(got).all()) or not torch.equal(got, got.floor()):
                return (
                    f"{case}: return whole numbers of images (floor them), not {got.dtype} values like "
                    f"{got[:2].tolist()}."
                )
        return got.long()
    if isinstance(got, (list, tuple)) and got and all(isinstance(n, numbers.Real) for n in got):
        return f"{case}: return whole numbers of images (math.floor gives ints), not floats like {list(got[:2])}."
    return f"{case}: return a list of C ints (or an int tensor), got {type(got).__name__}."


def _drawn_counts(seed: int, avoid: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """A random (n_max, C, IF): n_max in 200 … 2000, C in 3 … 30, IF in 2 … 100 (so every n_c ≥ 2), none of
    ``avoid``, drawn again until every n_max · IF^(−c/(C−1)) with c ≥ 1 lies at least 0.005 from a whole
    number (so float32 or float64, pow or exp-log, all floor it alike)."""
    rng = generator(seed)
    while True:
        n_max, C, IF = (
            int(torch.randint(low, high + 1, (), generator=rng)) for low, high in ((200, 2000), (3, 30), (2, 100))
        )
        exact = [n_max * IF ** (-c / (C - 1)) for c in range(1, C)]
        if (n_max, C, IF) not in avoid and all(0.005 < x % 1 < 0.995 for x in exact):
            return n_max, C, IF


def check_counts(long_tailed_counts: Callable) -> tuple[bool, str]:
    """07_counts: ``long_tailed_counts(n_max, C, IF)`` → n_c = ⌊n_max · IF^(−c/(C−1))⌋ for c = 0 … C−1, as
    a list of ints or an int tensor.

    Compared with ``nclab.data.long_tailed_counts`` for CIFAR-100-LT at IF 100 (total 10,847), a small
    case (n_max 250, 8 classes, IF 100), IF 10 with 10 classes, and a random case (:func:`_drawn_counts`;
    while grading, one the student cannot know in advance); recognises the exponent c/C, rounding
    instead of the floor, the profile reversed (tail first), an exponent of the wrong sign, and floats.
    """
    cases = [
        ("CIFAR-100-LT, IF = 100 (n_max 500, 100 classes)", 500, 100, 100),
        ("n_max 250, 8 classes, IF = 100", 250, 8, 100),
        ("n_max 1000, 10 classes, IF = 10", 1000, 10, 10),
    ]
    n_max, C, IF = _drawn_counts(73, avoid=[case[1:] for case in cases])
    cases.append((f"random case: n_max {n_max}, {C} classes, IF = {IF}", n_max, C, IF))
    for case, n_max, C, IF in cases:
        expected = torch.tensor(data.long_tailed_counts(n_max, C, IF))
        try:
            got = call(long_tailed_counts, case, n_max, C, IF)
        except Wrong as wrong:
            return False, str(wrong)
        got = _as_counts(got, case)
        if isinstance(got, str):
            return False, got
        c = torch.arange(C, dtype=torch.float64)
        mistakes = {
            "the exponent is −c/(C−1), so that the last class (c = C−1) gets exactly n_max / IF; with −c/C "
            "it gets more.": torch.floor(n_max * IF ** (-c / C)).long(),
            "take the floor ⌊·⌋ (int() of a positive number), not round().": torch.round(
                n_max * IF ** (-c / (C - 1))
            ).long(),
            "class 0 is the head: n_0 = n_max, and the counts decrease with c.": expected.flip(0),
            "the exponent is negative: IF^(−c/(C−1)) shrinks from 1 to 1/IF.": torch.floor(
                n_max * IF ** (c / (C - 1))
            ).long(),
        }
        wrong = compare(got, expected, case, mistakes)
        if wrong:
            total = int(got.sum()) if got.ndim == 1 else None
            return False, f"{wrong} (your total: {total}; expected {int(expected.sum())})"
    return True, "n_c = ⌊n_max · IF^(−c/(C−1))⌋: CIFAR-100-LT at IF 100 keeps 10,847 of 50,000 images."


def check_project(project_gradient: Callable) -> tuple[bool, str]:
    """07_project: ``project_gradient(weight, grad, centres, keep)`` → SPEC §6's SpA-Proj gradient (C, p)
    for all classifier rows at once (``nclab.methods.spa.spa_project``).

    Compared on a hand case (w = e₁, centre e₂, one row whose descent turns away from the centre and one
    that turns toward it) and on a random (12, 6) case with keep 0.4 and 0.25; recognises: no removal,
    removal whatever the sign, removal of the wrong sign, d not normalised, the centre itself instead
    of its tangent part, keep and 1 − keep swapped, and the raw gradient in place of its tangent part.
    """
    hand_w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    hand_g = torch.tensor([[0.3, 1.0, 2.0], [0.3, -1.0, 2.0]], dtype=torch.float64)
    hand_mu = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    rng = generator(15)
    random = [torch.randn(12, 6, generator=rng, dtype=torch.float64) for _ in range(3)]
    random[2] = F.normalize(random[2], dim=1) * 2.5  # centres of norm 2.5: normalising d matters
    w_hat = F.normalize(random[0], dim=1)
    along = (random[1] * F.normalize(random[2] - (random[2] * w_hat).sum(1, keepdim=True) * w_hat, dim=1)).sum(1)
    if not (bool((along > 0).any()) and bool((along < 0).any())):  # rare (2⁻¹¹): all 12 descents turn one way
        random[1][0] = -random[1][0]  # then row 0 turns the other way, so that the sign of g_t·d matters
    cases = [
        ("hand case: w = e₁, centre e₂; row 0 turns away from it, row 1 toward it", hand_w, hand_g, hand_mu, 0.4),
        ("random (12, 6) rows, keep = 0.4", *random, 0.4),
        ("random (12, 6) rows, keep = 0.25", *random, 0.25),
    ]
    for case, w, g, mu, keep in cases:
        expected = methods.spa.spa_project(w, g, mu, keep)
        w_hat = F.normalize(w, dim=1)
        tangent = g - (g * w_hat).sum(1, keepdim=True) * w_hat
        toward = mu - (mu * w_hat).sum(1, keepdim=True) * w_hat
        d = F.normalize(toward, dim=1)
        along = (tangent * d).sum(1, keepdim=True)

        def mix(t, k=keep, g=g):
            return k * t + (1 - k) * g

        mistakes = {
            "remove the opposing component: where g_t·d > 0, subtract (g_t·d) d from g_t.": mix(tangent),
            "remove the component only where it opposes the centre (g_t·d > 0); where g_t·d < 0 the descent "
            "step already turns w_c toward its centre: keep it.": mix(tangent - along * d),
            "mind the sign: −g is the step, so g_t·d > 0 means the step turns w_c *away* from the centre, and "
            "that is the part to remove.": mix(tangent - along.clamp_max(0) * d),
            "normalise d = (μ̂ − (μ̂·ŵ)ŵ)/‖μ̂ − (μ̂·ŵ)ŵ‖ before projecting on it.": mix(
                tangent - (tangent * toward).sum(1, keepdim=True).clamp_min(0) * toward
            ),
            "d is the *tangent* part of the centre, μ̂ − (μ̂·ŵ)ŵ (normalised), not the centre itself.": mix(
                tangent - (tangent * F.normalize(mu, dim=1)).sum(1, keepdim=True).clamp_min(0) * F.normalize(mu, dim=1)
            ),
            "the mix is keep · g_t + (1 − keep) · g (keep = 0.4 weighs the projected tangent part).": mix(
                tangent - along.clamp_min(0) * d, 1 - keep
            ),
        }
        try:
            got = call(project_gradient, case, w, g, mu, keep)
        except Wrong as wrong:
            return False, str(wrong)
        wrong = compare_close(got, expected, case, mistakes, rtol=1e-5, atol=1e-7)
        if wrong:
            return False, wrong
    return True, "The step keeps turning each row toward its class centre, never away: SpA-Proj."


EXERCISES = {
    "07_counts": Exercise("long_tailed_counts", check_counts, points=1, references=("nclab.data.long_tailed_counts",)),
    "07_project": Exercise("project_gradient", check_project, points=2, references=("nclab.methods.spa.spa_project",)),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "07_q_minority_collapse": Question("nb07-10", points=3),
    "07_q_align_vs_accuracy": Question("nb07-14", points=2),
    "07_q_tangent_rule": Question("nb07-16", points=2),
    "07_q_plugins_and_la": Question("nb07-20", points=3),
    "07_q_seed_gap": Question("nb07-26", points=2),
}
