"""Checks of notebook 06's exercises (NCFAL, out-of-distribution generalisation): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import methods
from .core import Exercise, Question, Wrong, call, compare, compare_close, compare_gradient, generator, show


def own_centred(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each model's logit of the label minus its mean logit, (E, N) (a mistake in 06_assign)."""
    centred = logits - logits.mean(2, keepdim=True)
    return centred.gather(2, labels[None, :, None].expand(len(logits), -1, 1))[..., 0]


def check_assign(assign_environments: Callable) -> tuple[bool, str]:
    """06_assign: ``assign_environments(local_logits, labels)`` → (N,) int64, the environment e whose local
    model gives sample i the largest logit **for its own label**: argmax_e local_logits[e, i, labels[i]],
    ties to the lower e. local_logits (E, N, C), labels (N,) int64.

    Compared exactly with ``nclab.methods.ncfal.reassign_environments`` on a hand case (2 models, 4
    samples, 3 classes, where the largest logit overall, the label's probability and the label's logit
    disagree, and one tie) and on a random (3, 50, 4) case of whole-number logits (many ties); recognises
    the largest logit of any class, the smallest logit, the label's softmax probability instead of its
    logit, ties sent to the higher environment, the argmax over the classes or over the samples, and a
    float, complex or wrong-shaped output.
    """
    hand = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0], [0.5, 0.0, 0.0], [2.0, 0.0, 0.0]],
            [[1.5, -5.0, -5.0], [3.0, 0.5, 0.0], [0.0, 0.0, 2.0], [0.0, 2.0, 1.0], [0.5, 1.0, 0.0], [1.5, 1.4, -3.0]],
        ]
    )  # (E = 2 models, N = 6 samples, C = 3)
    hand_labels = torch.tensor([0, 1, 2, 1, 0, 0])  # sample 4: a tie, which goes to model 0
    rng = generator(13)
    random = torch.randint(-2, 3, (3, 50, 4), generator=rng).float()  # whole numbers: many ties
    random_labels = torch.randint(0, 4, (50,), generator=rng)
    cases = [
        ("hand case: 2 local models, 6 samples, 3 classes (sample 4 is a tie)", hand, hand_labels),
        ("random case: 3 local models, 50 samples, 4 classes, whole-number logits", random, random_labels),
    ]
    for case, logits, labels in cases:
        own = logits.gather(2, labels[None, :, None].expand(len(logits), -1, 1))[..., 0]  # (E, N)
        expected = methods.ncfal.reassign_environments(own)
        probability = F.softmax(logits, dim=2).gather(2, labels[None, :, None].expand(len(logits), -1, 1))[..., 0]
        mistakes = {
            "that is the model with the largest logit of *any* class: take the logit of the sample's own label, "
            "local_logits[e, i, labels[i]] (torch.gather along the class dimension).": logits.amax(2).argmax(0),
            "that is the *smallest* logit: a sample goes to the model that scores its label highest (argmax).": (
                own.argmin(0)
            ),
            "that compares the label's softmax *probability*; the assignment (SPEC §5) compares the label's "
            "logit, which does not depend on how the model spreads the rest of its scores.": probability.argmax(0),
            "that compares the label's logit *minus the mean logit*; the assignment compares the label's logit "
            "itself.": own_centred(logits, labels).argmax(0),
            "a tie goes to the *lower* environment (as torch.argmax does): your answer sends it to the higher one.": (
                len(logits) - 1 - own.flip(0).argmax(0)
            ),
        }
        try:
            got = call(assign_environments, case, logits, labels)
        except Wrong as wrong:
            return False, str(wrong)
        if isinstance(got, torch.Tensor) and got.ndim == 2:
            return False, (
                f"{case}: your output has shape {tuple(got.shape)}: one environment per sample, (N,): take the "
                f"label's logit of every model, (E, N), then the argmax over the models (dim 0)."
            )
        if isinstance(got, torch.Tensor) and got.dtype != torch.int64:
            if got.is_floating_point() or got.is_complex():
                return False, f"{case}: return environment ids as an int64 tensor (an argmax), not {show(got)}."
            got = got.long()
        wrong = compare(got, expected, case, mistakes)
        if wrong:
            return False, wrong
    return True, "argmax_e l_e(x_i)[y_i]: each sample joins the local model that believes its label most."


def _irm_mistakes(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The value of each typical mistake of 06_irm on ``logits`` (n, C) float64 and ``y`` (n,): message → value."""
    s = torch.ones((), dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(F.cross_entropy(logits * s, y), s)
    risk = F.cross_entropy(logits, y)
    with_logits = logits.clone().requires_grad_(True)
    (by_logits,) = torch.autograd.grad(F.cross_entropy(with_logits, y), with_logits)
    s_sum = torch.ones((), dtype=torch.float64, requires_grad=True)
    (slope_sum,) = torch.autograd.grad(F.cross_entropy(logits * s_sum, y, reduction="sum"), s_sum)
    halves = []
    for part in (slice(0, None, 2), slice(1, None, 2)):
        s_half = torch.ones((), dtype=torch.float64, requires_grad=True)
        halves.append(torch.autograd.grad(F.cross_entropy(logits[part] * s_half, y[part]), s_half)[0])
    s_soft = torch.ones((), dtype=torch.float64, requires_grad=True)
    (slope_soft,) = torch.autograd.grad(F.cross_entropy(F.softmax(logits * s_soft, dim=1), y), s_soft)
    return {
        "that is the IRM paper's split-batch estimate (the product of the two halves' derivatives); here "
        "the penalty is the square of the derivative on all the samples.": halves[0] * halves[1],
        "F.cross_entropy takes the logits and applies the softmax itself: do not apply softmax first "
        "(SPEC §9).": slope_soft**2,
        "square the derivative: the penalty is (∂R/∂s)², which is ≥ 0 and vanishes where s = 1 is optimal.": slope,
        "square the derivative rather than take its absolute value: (∂R/∂s)² is smooth where it vanishes, "
        "|∂R/∂s| is not.": slope.abs(),
        "differentiate with respect to the scale s (a dummy multiplier of the logits, at s = 1), not with "
        "respect to the logits themselves.": by_logits.pow(2).sum(),
        "use the *mean* cross-entropy over the samples (F.cross_entropy's default), not the sum.": slope_sum**2,
        "that is the squared risk; the penalty is the squared *derivative* of the risk with respect to s.": risk**2,
    }


def _drawn_irm_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits (16, 3), 2·N(0, 1) in float64, and labels in 0 … 2, drawn again while a typical mistake
    gives a value within 1 % of the penalty (the split-batch estimate does when the two halves' derivatives
    are nearly equal), so that every mistake is named whatever the draw."""
    rng = generator(seed)
    while True:
        logits = 2 * torch.randn(16, 3, generator=rng, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=rng)
        penalty = methods.invariance.irmv1_penalty(logits, y).detach()
        if all(abs(float(wrong - penalty)) > 0.01 * float(penalty) for wrong in _irm_mistakes(logits, y).values()):
            return logits, y


def check_irm_penalty(irm_penalty: Callable) -> tuple[bool, str]:
    """06_irm: ``irm_penalty(logits, y)`` = (∂/∂s CE(s·logits, y) at s = 1)², CE the mean cross-entropy,
    as a scalar tensor that back-propagates into the logits (IRMv1's penalty for one environment).

    Compared with ``nclab.methods.invariance.irmv1_penalty``, value and gradient, on a hand case whose
    penalty is 0 (four samples with logits (log 3, 0) and labels 0, 0, 0, 1: the predictor is calibrated,
    so rescaling its logits cannot help) and on a random (16, 3) case; recognises the gradient not
    squared, the squared norm of the gradient with respect to the logits, a sum of cross-entropies
    instead of the mean, the squared risk, and a missing gradient (no ``create_graph``).
    """
    hand = torch.tensor([[math.log(3), 0.0]] * 4, dtype=torch.float64)
    hand_y = torch.tensor([0, 0, 0, 1])
    random, random_y = _drawn_irm_case(14)
    cases = [  # the random case first: at the hand case's penalty 0, some wrong answers have a right value
        ("random case: 16 samples, 3 classes", random, random_y),
        ("hand case: 4 samples with logits (log 3, 0), labels 0, 0, 0, 1 (calibrated: penalty 0)", hand, hand_y),
    ]
    for case, logits, y in cases:
        reference = logits.clone().requires_grad_(True)
        expected = methods.invariance.irmv1_penalty(reference, y)
        (gradient,) = torch.autograd.grad(expected, reference)
        mistakes = _irm_mistakes(logits, y)
        z = logits.clone().requires_grad_(True)
        try:
            got = call(irm_penalty, case, z, y)
        except Wrong as wrong:
            return False, str(wrong)
        wrong = compare_close(got, expected.detach(), case, mistakes, rtol=1e-5, atol=1e-9)
        if wrong:
            return False, wrong
        wrong = compare_gradient(
            got,
            z,
            gradient,
            case,
            no_gradient=" into the logits: compute ∂R/∂s with torch.autograd.grad(..., create_graph=True) so "
            "that the penalty itself can be trained.",
            detached="carries no gradient into the logits: compute it from the logits you were given (no "
            ".detach()), so that the penalty can train the network that made them.",
            wrong_gradient="its gradient is not: the derivative with respect to s must stay in the graph "
            "(create_graph=True), and s must multiply the logits you were given.",
            atol=1e-6,
        )
        if wrong:
            return False, wrong
    return True, "(∂R/∂s at s = 1)²: zero when no rescaling of the classifier lowers the risk of this environment."


EXERCISES = {
    "06_assign": Exercise(
        "assign_environments", check_assign, points=2, references=("nclab.methods.ncfal.reassign_environments",)
    ),
    "06_irm": Exercise(
        "irm_penalty", check_irm_penalty, points=2, references=("nclab.methods.invariance.irmv1_penalty",)
    ),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "06_q_colour_shape": Question("nb06-06", points=2),
    "06_q_irm_hand_case": Question("nb06-10", points=2),
    "06_q_env_inference": Question("nb06-19", points=3),
    "06_q_method_ranking": Question("nb06-26", points=3),
    "06_q_etf_vs_accuracy": Question("nb06-28", points=3),
    "06_q_mask_learnt": Question("nb06-32", points=3),
}
