"""Checks of notebook 00's exercises (why collapse: the unconstrained-features model): answer → (passed,
message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`. The proof that NC1 and NC3 imply NC4 is graded by hand (its model
answer is in the instructor's notebook).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import ufm
from .core import Exercise, Question, Wrong, call, compare_close, generator, show


def _cosines(vectors: torch.Tensor) -> torch.Tensor:
    """The cosine matrix of the rows: (C, C)."""
    unit = F.normalize(vectors, dim=1)
    return unit @ unit.T


def check_mean_cosine(mean_pairwise_cosine: Callable) -> tuple[bool, str]:
    """00_cosine: ``mean_pairwise_cosine(vectors)`` = the mean of cos(v_i, v_j) over the C(C−1) ordered
    pairs i ≠ j of the rows of ``vectors`` (C, p), as a number or a 0-d tensor (SPEC §10).

    Compared with ``nclab.ufm.mean_pairwise_cosine`` on a hand case (2e₁, 3e₂, −e₁: cosines 0, −1, 0, so
    −1/3), three unit vectors at 120° (the bound −1/2) and a random float64 case (C = 6, p = 4, norms 0.1
    to 10); recognises the diagonal counted in, a division by C², the unordered pairs divided by C(C−1),
    dot products instead of cosines, the columns normalised instead of the rows (or the whole matrix), and
    the cosine matrix (C, C) returned instead of its mean.
    """
    angles = torch.tensor([90.0, 210.0, 330.0]).deg2rad()
    rng = generator(23)
    norms = torch.logspace(-1, 1, 6, dtype=torch.float64)[torch.randperm(6, generator=rng), None]
    cases = [
        ("hand case: v = (2e₁, 3e₂, −e₁)", torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])),
        ("three unit vectors at 120° in the plane", torch.stack([angles.cos(), angles.sin()], dim=1)),
        ("random case: C = 6 vectors in R^4 of norms 0.1 to 10",
         torch.randn(6, 4, generator=rng, dtype=torch.float64) * norms),
    ]  # fmt: skip
    for case, vectors in cases:
        expected = ufm.mean_pairwise_cosine(vectors.double())
        v = vectors.double()
        C = len(v)
        G = _cosines(v)
        off = (G.sum() - C) / (C * (C - 1))  # the right formula, applied to the matrix of each mistake below
        columns, whole = F.normalize(v, dim=0), v / v.norm()
        mistakes = {
            "leave the diagonal out: cos(v_i, v_i) = 1 is not a pair; average over the C(C−1) pairs i ≠ j.": (G.mean()),
            "divide by the number of ordered pairs i ≠ j, C(C−1), not by C².": (G.sum() - C) / C**2,
            "the C(C−1) ordered pairs i ≠ j: with only the pairs i < j, divide by C(C−1)/2.": off / 2,
            "use cosines, not dot products: normalise each row first, v_i/‖v_i‖ (F.normalize(v, dim=1)).": (
                (v @ v.T).sum() - (v * v).sum()
            )
            / (C * (C - 1)),
            "normalise each row by its own norm (F.normalize(v, dim=1)), not the columns.": (
                (columns @ columns.T).sum() - C
            )
            / (C * (C - 1)),
            "normalise each row by its own norm, v_i/‖v_i‖, not by the norm of the whole matrix.": (
                (whole @ whole.T).sum() - C
            )
            / (C * (C - 1)),
        }
        try:
            got = call(mean_pairwise_cosine, case, vectors)
        except Wrong as wrong:
            return False, str(wrong)
        if isinstance(got, torch.Tensor) and got.shape == (C, C):
            return False, (
                f"{case}: your output is the ({C}, {C}) matrix of cosines: return one number, the mean of its "
                f"off-diagonal entries."
            )
        wrong = compare_close(got, expected, case, mistakes, rtol=1e-6, atol=1e-9)
        if wrong:
            return False, wrong
    return True, "(‖Σ v̂_c‖² − C) / (C(C−1)): never below −1/(C−1), since ‖Σ v̂_c‖² ≥ 0."


def _ufm_objective(H, W, b, labels, lambda_H, lambda_W, lambda_b):
    """SPEC §10's objective: the mean cross-entropy plus the three decays."""
    fit = F.cross_entropy(H @ W.T + b, labels)
    return fit + 0.5 * (lambda_H * H.pow(2).sum() + lambda_W * W.pow(2).sum() + lambda_b * b.pow(2).sum())


def reference_ufm_step(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b):
    """One step of gradient descent on the UFM objective, by autograd, in the inputs' dtype: what
    ``stand_in`` lends in place of an unanswered ``ufm_step``."""
    params = [t.detach().clone().requires_grad_() for t in (H, W, b)]
    grads = torch.autograd.grad(_ufm_objective(*params, labels, lambda_H, lambda_W, lambda_b), params)
    return tuple((p - lr * g).detach() for p, g in zip(params, grads))


def _step_and_mistakes(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b) -> tuple[torch.Tensor, dict]:
    """The right step (H, W, b flattened into one vector) and the steps of each typical mistake."""
    H, W, b = (t.double().clone().requires_grad_() for t in (H, W, b))
    gH, gW, gb = torch.autograd.grad(_ufm_objective(H, W, b, labels, lambda_H, lambda_W, lambda_b), (H, W, b))
    H, W, b = H.detach(), W.detach(), b.detach()
    N, C = H.shape[0], W.shape[0]
    Y = F.one_hot(labels, C).double()
    P = torch.softmax(H @ W.T + b, dim=1)
    data_H, data_W, data_b = (P - Y) @ W / N, (P - Y).T @ H / N, (P - Y).mean(0)

    def flat(dH, dW, db, sign=-1.0):
        return torch.cat([(H + sign * lr * dH).flatten(), (W + sign * lr * dW).flatten(), (b + sign * lr * db)])

    W_first = W - lr * gW  # W updated first, then H's gradient taken at the new W
    P_after = torch.softmax(H @ W_first.T + b, dim=1)
    return flat(gH, gW, gb), {
        "step against the gradient: θ − lr·∇F, not θ + lr·∇F.": flat(gH, gW, gb, sign=1.0),
        "the loss is the mean over the N samples: the gradient of its data term in h_i is (p_i − y_i)ᵀW / N, "
        "with the 1/N.": flat((P - Y) @ W + lambda_H * H, gW, gb),
        "the loss is the mean over the N samples: divide every data term of the gradients by N.": flat(
            (P - Y) @ W + lambda_H * H, (P - Y).T @ H + lambda_W * W, (P - Y).sum(0) + lambda_b * b
        ),
        "the gradient of the cross-entropy in the logits is p − y, the softmax probabilities minus the one-hot "
        "labels (not the logits minus the labels).": flat(
            (H @ W.T + b - Y) @ W / N + lambda_H * H, (H @ W.T + b - Y).T @ H / N + lambda_W * W,
            (H @ W.T + b - Y).mean(0) + lambda_b * b,
        ),
        "the data term's sign: the gradient of the cross-entropy in the logits is p − y (not y − p).": flat(
            -data_H + lambda_H * H, -data_W + lambda_W * W, -data_b + lambda_b * b
        ),
        "add the weight decays' gradients: λ_H·H, λ_W·W and λ_b·b.": flat(data_H, data_W, data_b),
        "the gradient of (λ/2)‖X‖² is λ·X, not 2λ·X.": flat(
            data_H + 2 * lambda_H * H, data_W + 2 * lambda_W * W, data_b + 2 * lambda_b * b
        ),
        "the gradient of (λ/2)‖X‖² is λ·X, not λ/2·X.": flat(
            data_H + lambda_H * H / 2, data_W + lambda_W * W / 2, data_b + lambda_b * b / 2
        ),
        "update the bias too: b ← b − lr·(mean of (p_i − y_i) + λ_b·b).": flat(gH, gW, torch.zeros_like(b)),
        "take every gradient at the current (H, W, b), before changing any of them (you used the new W for H's "
        "gradient).": flat((P_after - Y) @ W_first / N + lambda_H * H, gW, gb),
    }  # fmt: skip


def check_ufm_step(ufm_step: Callable) -> tuple[bool, str]:
    """00_ufm_step: ``ufm_step(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b)`` → (H, W, b) after one
    step of gradient descent on (1/N) Σ_i CE(W h_i + b, y_i) + (λ_W/2)‖W‖² + (λ_H/2)‖H‖² + (λ_b/2)‖b‖²,
    every gradient taken at the given point (SPEC §10); H (N, p), W (C, p), b (C,), labels (N,) int64.

    Compared (rtol 1e-6) with autograd's step on a small hand case (N = 3, p = 2, C = 2, lr = 1) and a random
    float64 case (N = 12 in 4 unbalanced classes, p = 5, distinct λ's); recognises the step taken up the
    gradient, the 1/N missing on H's gradient or on every data term, logits minus labels instead of p − y,
    y − p, the decays missing, doubled or halved, the bias left as it is, and W updated before H's gradient.
    """
    rng = generator(31)
    cases = [
        ("hand case: H = (1, 0; 0, 1; −1, 1), W = (1, 0; 0, 1), b = 0, labels (0, 1, 1), lr = 1, λ's = 0.1",
         torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]]), torch.eye(2), torch.zeros(2), torch.tensor([0, 1, 1]),
         1.0, 0.1, 0.1, 0.1),
        ("random case: N = 12 in 4 classes (5, 4, 2, 1), p = 5, lr = 0.5, λ_H = 0.01, λ_W = 0.02, λ_b = 0.03",
         torch.randn(12, 5, generator=rng, dtype=torch.float64),
         torch.randn(4, 5, generator=rng, dtype=torch.float64),
         torch.randn(4, generator=rng, dtype=torch.float64),
         torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3]), 0.5, 0.01, 0.02, 0.03),
    ]  # fmt: skip
    for case, H, W, b, labels, lr, lambda_H, lambda_W, lambda_b in cases:
        expected, mistakes = _step_and_mistakes(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b)
        try:
            got = call(ufm_step, case, H, W, b, labels, lr, lambda_H, lambda_W, lambda_b)
        except Wrong as wrong:
            return False, str(wrong)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            return False, f"{case}: return the three updated tensors (H, W, b) as a tuple, not {show(got)}."
        for name, value, reference in zip("HWb", got, (H, W, b)):
            if not isinstance(value, torch.Tensor) or value.shape != reference.shape:
                return False, (
                    f"{case}: the new {name} should be a tensor of shape {tuple(reference.shape)}, got {show(value)}."
                )
            if not value.is_floating_point():
                return False, f"{case}: the new {name} is {value.dtype}: return float tensors."
        wrong = compare_close(torch.cat([t.detach().double().flatten() for t in got]), expected, case, mistakes,
                              rtol=1e-6, atol=1e-9)  # fmt: skip
        if wrong:
            return False, wrong.replace("flat index", "position (H, then W, then b, flattened)")
    return True, "θ ← θ − lr·∇F with ∇_H = (P − Y)W/N + λ_H H, ∇_W = (P − Y)ᵀH/N + λ_W W, ∇_b = mean(P − Y) + λ_b b."


EXERCISES = {
    "00_cosine": Exercise(
        "mean_pairwise_cosine", check_mean_cosine, points=1, references=("nclab.ufm.mean_pairwise_cosine",)
    ),
    "00_ufm_step": Exercise(
        "ufm_step", check_ufm_step, points=2, reference=reference_ufm_step, references=("nclab.ufm.UFM",)
    ),  # UFM.fit takes the step
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "00_q_proof": Question("nb00-33", points=3),
}
