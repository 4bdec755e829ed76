"""Checks of notebook 08's exercises (neural collapse by design): answer → (passed, message).

Its table ``EXERCISES`` (question → answer name, check, points) is merged into
:data:`nclab.exercises.EXERCISES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import heads, losses
from .core import Exercise, Question, Wrong, call, compare, compare_close, compare_gradient, generator, show


def _contrast(s: torch.Tensor, keep: torch.Tensor, *, total: bool = False) -> torch.Tensor:
    """mean_i [−s_ii + log Σ_{j: keep_ij} exp(s_ij)] (the sum over i with ``total``), for NONL's mistakes."""
    per_sample = torch.logsumexp(s.masked_fill(~keep, -math.inf), dim=1) - s.diagonal()
    return per_sample.sum() if total else per_sample.mean()


def check_nonl(nonl_loss: Callable) -> tuple[bool, str]:
    """08_nonl: ``nonl_loss(u, w, y, tau)`` = mean_i [−s_ii + log Σ_{j: y_j ≠ y_i} exp(s_ij)],
    s_ij = ŵ_{y_i}·û_j/τ, u (B, p) and w (C, p) raw (normalised by the answer), y (B,) int64, as a scalar
    tensor that back-propagates into u (NONL, SPEC §7; every sample of the cases has a negative).

    Compared with ``nclab.losses.nonl`` on a float32 hand case in 2-D (w = 2e₁, 3e₂, −½e₁; u = 3e₁, ½e₂,
    2e₂, −4e₁; y = 0, 0, 1, 2; τ = ½: L = ¼[−6 + 2 log(1 + e⁻²) + log(2 + e²) + log(2 + e⁻²)] ≈ −0.687) and
    on a random float64 case (B = 12, one class seen once, rows of norms 0.1 … 10, τ = 0.2), whose
    gradients in u and in w are compared too; recognises the NTCE denominator (all j), a denominator over j ≠ i,
    NormFace, u or w not normalised (or u divided by the norm of the whole matrix), τ missing or
    multiplied, a sum over the batch, the anchor transposed (s_ji), the sign, per-sample losses (B,),
    and a missing or detached gradient.
    """
    hand_w = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-0.5, 0.0]])
    hand_u = torch.tensor([[3.0, 0.0], [0.0, 0.5], [0.0, 2.0], [-4.0, 0.0]])
    rng = generator(17)
    scales = torch.logspace(-1, 1, 12, dtype=torch.float64)[torch.randperm(12, generator=rng), None]
    random_u = torch.randn(12, 6, generator=rng, dtype=torch.float64) * scales
    random_w = torch.randn(4, 6, generator=rng, dtype=torch.float64) * torch.tensor([[0.5], [1], [2], [4]])
    random_y = torch.tensor([0, 1, 2, 0, 1, 1, 2, 3, 0, 2, 1, 0])  # class 3 once: every sample has a negative
    cases = [
        ("hand case: w = (2e₁, 3e₂, −½e₁), u = (3e₁, ½e₂, 2e₂, −4e₁), y = (0, 0, 1, 2), τ = 0.5", hand_u, hand_w,
         torch.tensor([0, 0, 1, 2]), 0.5, False),
        ("random case: B = 12 samples (class 3 once), p = 6, C = 4, τ = 0.2", random_u, random_w, random_y, 0.2, True),
    ]  # fmt: skip
    for case, u, w, y, tau, gradient_too in cases:
        reference = u.clone().requires_grad_(True)
        expected = losses.nonl(reference, w, y, tau)
        (gradient,) = torch.autograd.grad(expected, reference)
        u64, w64 = u.double(), w.double()
        u_hat, w_hat = F.normalize(u64, dim=1), F.normalize(w64, dim=1)
        s = w_hat[y] @ u_hat.T / tau
        negative = y[None, :] != y[:, None]
        others = ~torch.eye(len(y), dtype=torch.bool)
        mistakes = {
            "that is NTCE: its denominator sums over every j, the positive i included; NONL keeps only the "
            "negatives, the j with y_j ≠ y_i.": losses.ntce(u64, w64, y, tau),
            "the denominator sums over the negatives only, the j with y_j ≠ y_i: leaving out j = i is not "
            "enough, the other samples of class y_i are not negatives either.": _contrast(s, others),
            "that is NormFace (a softmax over the C class vectors for each sample); NONL contrasts the class "
            "vector ŵ_{y_i} against the batch's *samples* û_j.": losses.normface(u64, w64, y, tau),
            "normalise the features: û_j = u_j/‖u_j‖ (F.normalize(u, dim=1)); the loss takes raw features.": (
                _contrast(w_hat[y] @ u64.T / tau, negative)
            ),
            "normalise each feature by its own norm, u_j/‖u_j‖ (F.normalize(u, dim=1)), not by the norm of the "
            "whole matrix.": _contrast(w_hat[y] @ (u64 / u64.norm()).T / tau, negative),
            "normalise the class vectors too: ŵ_c = w_c/‖w_c‖ (F.normalize(w, dim=1)).": _contrast(
                w64[y] @ u_hat.T / tau, negative
            ),
            "divide the cosines by the temperature τ: s_ij = ŵ_{y_i}·û_j/τ.": _contrast(s * tau, negative),
            "divide the cosines by τ, do not multiply: s_ij = ŵ_{y_i}·û_j/τ.": _contrast(s * tau * tau, negative),
            "average over the batch, (1/B) Σ_i, not the sum.": _contrast(s, negative, total=True),
            "the anchor is the class vector of sample i: s_ij = ŵ_{y_i}·û_j (row i: ŵ_{y_i} against every û_j), "
            "not û_i against the class vectors ŵ_{y_j} of the others (that is s_ji).": _contrast(s.T, negative),
            "mind the sign: L = −s_ii + log Σ exp(s_ij), which is low when û_i is close to ŵ_{y_i}.": -_contrast(
                s, negative
            ),
        }
        u_in = u.clone().requires_grad_(gradient_too)
        try:
            got = call(nonl_loss, case, u_in, w, y, tau)
        except Wrong as wrong:
            return False, str(wrong)
        if isinstance(got, torch.Tensor) and got.numel() > 1:
            per_sample = ", one loss per sample" if got.shape == (len(y),) else ""
            return False, (
                f"{case}: your output has shape {tuple(got.shape)}{per_sample}: return the loss as one number, "
                f"the mean over the batch (.mean()), a scalar tensor."
            )
        wrong = compare_close(got, expected.detach(), case, mistakes, rtol=1e-5, atol=1e-6)
        if wrong:
            return False, wrong
        if gradient_too:
            wrong = compare_gradient(
                got,
                u_in,
                gradient,
                case,
                no_gradient=": return a torch tensor computed from u and w (no .item(), no float(), no "
                "torch.no_grad()), so that the loss can train the network.",
                detached="carries no gradient into u: compute it from the u you were given (no .detach()).",
                wrong_gradient="its gradient in u is not: build every term from u and w themselves (no "
                ".detach() on a part of them).",
            )
            if wrong:
                return False, wrong
            wrong = _class_vector_gradient(nonl_loss, case, u, w, y, tau)
            if wrong:
                return False, wrong
    return True, "−s_ii + log Σ_{y_j ≠ y_i} exp(s_ij): pull û_i to its class vector, push the others' samples away."


def _class_vector_gradient(nonl_loss: Callable, case: str, u, w, y, tau) -> str | None:
    """None when the answer back-propagates into the class vectors w as ``losses.nonl`` does (in training,
    w are the rows of the cosine head); else the message."""
    reference = w.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(losses.nonl(u, reference, y, tau), reference)
    w_in = w.clone().requires_grad_(True)
    try:
        got = call(nonl_loss, case, u, w_in, y, tau)
    except Wrong as wrong:
        return str(wrong)
    return compare_gradient(
        got,
        w_in,
        gradient,
        case,
        no_gradient=": return a torch tensor computed from u and w, so that the loss can train the class vectors.",
        detached="carries no gradient into the class vectors w: compute it from the w you were given.",
        wrong_gradient="its gradient in the class vectors w is not right: normalise w with F.normalize (or divide "
        "by its norm without .detach()), so that the loss trains the head too.",
    )


def _prototype_mistakes(
    train: torch.Tensor, labels: torch.Tensor, query: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The right scores p_c·ĥ (N, C), and the predictions of each mistake of 08_prototypes (message → classes)."""
    classes = range(int(labels.max()) + 1)
    normalised = F.normalize(train, dim=1)
    means = torch.stack([normalised[labels == c].mean(0) for c in classes])  # mean of ĥ_i, not normalised
    raw = torch.stack([train[labels == c].mean(0) for c in classes])  # mean of h_i
    q_hat = F.normalize(query, dim=1)
    scores = q_hat @ F.normalize(means, dim=1).T
    return scores, {
        "normalise each training feature before averaging: p_c = normalise(mean of h_i/‖h_i‖ over class c); "
        "the mean of the raw h_i lets the features of large norm dominate the direction.": (
            q_hat @ F.normalize(raw, dim=1).T
        ).argmax(1),
        "normalise the prototypes too: p_c = mean/‖mean‖; without it a class whose normalised features "
        "agree (a long mean) wins over one whose features spread (a short mean).": (q_hat @ means.T).argmax(1),
        "normalise the prototypes: p_c = mean/‖mean‖ (then the nearest p_c by distance is the one of largest "
        "cosine); the distance to the un-normalised mean favours some classes.": torch.cdist(q_hat, means).argmin(1),
        "that is the nearest class mean of the raw features by Euclidean distance (NC4's classifier); the "
        "prototype classifier compares directions: the cosine between ĥ and p_c = normalise(mean of ĥ_i).": (
            torch.cdist(query, raw).argmin(1)
        ),
        "predict the prototype of *largest* cosine p_c·ĥ (argmax), not the smallest.": scores.argmin(1),
    }


def _drawn_prototype_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random float32 case of 08_prototypes: 60 training rows of 8 features around 5 random centres (12 per
    class, norms 0.1 to 10) and 40 queries; drawn again until every query's class wins by a cosine margin of
    0.001 at least (float32 arithmetic then gives the same classes) and each typical mistake predicts
    another class than the right one for some query (the 4 hand-case queries cannot tell them all apart)."""
    rng = generator(seed)
    while True:
        centres = torch.randn(5, 8, generator=rng, dtype=torch.float64)
        labels = (torch.arange(60) % 5)[torch.randperm(60, generator=rng)]
        norms = torch.logspace(-1, 1, 60, dtype=torch.float64)[torch.randperm(60, generator=rng), None]
        train = ((centres[labels] + torch.randn(60, 8, generator=rng, dtype=torch.float64)) * norms).float()
        query_labels = torch.randint(0, 5, (40,), generator=rng)
        noise = 1.2 * torch.randn(40, 8, generator=rng, dtype=torch.float64)
        norms = torch.logspace(-1, 1, 40, dtype=torch.float64)[torch.randperm(40, generator=rng), None]
        query = ((centres[query_labels] + noise) * norms).float()
        scores, mistakes = _prototype_mistakes(train.double(), labels, query.double())
        top = scores.topk(2, dim=1).values
        right = scores.argmax(1)
        if bool((top[:, 0] - top[:, 1] >= 1e-3).all()) and not any(torch.equal(m, right) for m in mistakes.values()):
            return train, labels, query


def check_prototypes(prototype_predict: Callable) -> tuple[bool, str]:
    """08_prototypes: ``prototype_predict(train_features, train_labels, features)`` → (N,) the class
    argmax_c p_c·ĥ of each row of features (N, p), p_c = normalise((1/N_c) Σ_{y_i = c} h_i/‖h_i‖) from
    train_features (M, p), train_labels (M,) int64, C = max label + 1 (SPEC §7's prototype classifier).

    Any integer dtype is accepted (converted to int64: class indices are whole numbers whatever their
    width); a float output is not. Compared exactly with the argmax of
    ``nclab.heads.Prototype.from_features(...)`` on the inputs in float64 (every argmax wins by a cosine
    margin of 0.001 at least, so float32 arithmetic gives the same classes), on a 2-D hand case (class 0 = (1, 0),
    (0, 10); class 1 = unit vectors at 150°, 170°; four queries of norms 0.3 to 5) and on a random float32
    case (60 training rows of 8 features, 5 classes, norms 0.1 to 10; 40 queries); recognises the mean of
    the raw features, prototypes not normalised (by dot product or by distance), the nearest class mean
    by Euclidean distance (NC4's NCC), argmin, the scores (N, C) instead of the classes, and a float output;
    a mistake is named only when the answer makes it on both cases (else the first wrong class is shown).
    """

    def polar(degrees: float, norm: float) -> list[float]:
        return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]

    hand_train = torch.tensor([polar(0, 1), polar(90, 10), polar(150, 1), polar(170, 1)])
    hand_query = torch.tensor([polar(110, 1), polar(100, 2), polar(60, 0.3), polar(170, 5)])
    train, labels, query = _drawn_prototype_case(16)
    cases = [
        ("hand case: class 0 = (1, 0), (0, 10); class 1 = unit vectors at 150°, 170°; queries at 110°, 100°, 60°, "
         "170° of norms 1, 2, 0.3, 5", hand_train, torch.tensor([0, 0, 1, 1]), hand_query),
        ("random case: 60 training rows of 8 features in 5 classes, norms 0.1 to 10; 40 queries", train, labels, query),
    ]  # fmt: skip
    answers = []
    for case, train_features, train_labels, features in cases:
        scores, mistakes = _prototype_mistakes(train_features.double(), train_labels, features.double())
        expected = heads.Prototype.from_features(train_features.double(), train_labels)(features.double()).argmax(1)
        try:
            got = call(prototype_predict, case, train_features, train_labels, features)
        except Wrong as wrong:
            return False, str(wrong)
        if isinstance(got, torch.Tensor) and got.shape == scores.shape:
            return False, (
                f"{case}: your output has shape {tuple(got.shape)}, the scores of every class: return the "
                f"predicted class of each row, (N,): the argmax over the classes (dim 1)."
            )
        if isinstance(got, torch.Tensor) and got.dtype != torch.int64:
            if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
                return False, f"{case}: return the classes as an int64 tensor (an argmax), not {show(got)}."
            got = got.long()
        answers.append((case, got, expected, mistakes))
    # a mistake is named only when the answer makes it in every case: 4 queries can agree with it by chance
    made = {m for m in mistakes if all(compare(got, wrong[m], case, {}) is None for case, got, _, wrong in answers)}
    for case, got, expected, mistakes in answers:
        wrong = compare(got, expected, case, {m: classes for m, classes in mistakes.items() if m in made})
        if wrong:
            return False, wrong
    return True, "argmax_c p_c·ĥ: each sample goes to the class whose mean direction is closest in angle."


EXERCISES = {
    "08_nonl": Exercise("nonl_loss", check_nonl, points=2, references=("nclab.losses.nonl", "nclab.losses.NONLLoss")),
    "08_prototypes": Exercise("prototype_predict", check_prototypes, points=2, references=("nclab.heads.Prototype",)),
}

# Interpretation questions, graded by hand: the question cell's id and the points (the model answer and
# its rubric follow the question in the notebook, in a solution-only cell).
QUESTIONS = {
    "08_q_nonl_gradient": Question("nb08-05", points=2),
    "08_q_final_nc": Question("nb08-11", points=3),
    "08_q_trace_resolution": Question("nb08-13", points=2),
    "08_q_prototypes_probe": Question("nb08-18", points=3),
    "08_q_transfer_vs_nc1": Question("nb08-20", points=2),
    "08_q_long_tail_nonl": Question("nb08-24", points=3),
    "08_q_claims_gap": Question("nb08-26", points=3),
}
