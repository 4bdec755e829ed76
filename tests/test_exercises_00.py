"""The checks of notebook 00's exercises: right answers pass, typical mistakes get a specific message."""

import pytest
import torch
import torch.nn.functional as F

from nclab import ufm
from nclab.exercises import run_check


def cosine_right(v):
    u = F.normalize(v, dim=1)
    return ((u @ u.T).sum() - len(u)) / (len(u) * (len(u) - 1))


def cosine_loop(v):
    C = len(v)
    total = sum(float(v[i] @ v[j] / (v[i].norm() * v[j].norm())) for i in range(C) for j in range(C) if i != j)
    return total / (C * (C - 1))


def cosine_from_the_sum(v):  # the identity of the bound: (‖Σ v̂‖² − C) / (C(C − 1))
    C = len(v)
    return (F.normalize(v, dim=1).sum(0).pow(2).sum() - C) / (C * (C - 1))


def _cosines(v):
    u = F.normalize(v, dim=1)
    return u @ u.T


COSINE_MISTAKES = [  # (typical wrong answer, what the message must say)
    (lambda v: _cosines(v).mean(), "leave the diagonal out"),
    (lambda v: (_cosines(v).sum() - len(v)) / len(v) ** 2, "not by C²"),
    (lambda v: _cosines(v).triu(1).sum() / (len(v) * (len(v) - 1)), "divide by C(C−1)/2"),
    (lambda v: ((v @ v.T).sum() - (v * v).sum()) / (len(v) * (len(v) - 1)), "not dot products"),
    (lambda v: (v / v.norm() @ (v / v.norm()).T).sum().sub(len(v)) / (len(v) * (len(v) - 1)), "whole matrix"),
    (_cosines, "the (3, 3) matrix of cosines"),
    (lambda v: "-1/3", "not text"),
]


def step_right(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b):
    N, C = H.shape[0], W.shape[0]
    R = (torch.softmax(H @ W.T + b, dim=1) - F.one_hot(labels, C).to(H)) / N
    return H - lr * (R @ W + lambda_H * H), W - lr * (R.T @ H + lambda_W * W), b - lr * (R.sum(0) + lambda_b * b)


def step_autograd(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b):
    params = [t.clone().requires_grad_() for t in (H, W, b)]
    H_, W_, b_ = params
    loss = F.cross_entropy(H_ @ W_.T + b_, labels) + 0.5 * (
        lambda_H * H_.pow(2).sum() + lambda_W * W_.pow(2).sum() + lambda_b * b_.pow(2).sum()
    )
    grads = torch.autograd.grad(loss, params)
    return tuple((p - lr * g).detach() for p, g in zip(params, grads))


def step_with(*, sign=-1, per_N=True, residual="softmax", decay=1.0, bias=True, W_first=False):
    """A UFM step with one thing changed: the typical mistakes."""

    def step(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b):
        N, C = H.shape[0], W.shape[0]
        Y = F.one_hot(labels, C).to(H)
        logits = H @ W.T + b
        R = (torch.softmax(logits, 1) - Y) if residual == "softmax" else (logits - Y)
        R = R / N if per_N else R
        W_new = W + sign * lr * (R.T @ H + decay * lambda_W * W)
        R_H = (torch.softmax(H @ W_new.T + b, 1) - Y) / N if W_first else R  # H's gradient at the new W
        H_new = H + sign * lr * (R_H @ (W_new if W_first else W) + decay * lambda_H * H)
        b_new = b + sign * lr * (R.sum(0) + decay * lambda_b * b) if bias else b.clone()
        return H_new, W_new, b_new

    return step


def step_in_place(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b):
    new = step_right(H, W, b, labels, lr, lambda_H, lambda_W, lambda_b)
    H.copy_(new[0])
    return new


STEP_MISTAKES = [
    (step_with(sign=1), "step against the gradient"),
    (step_with(per_N=False), "divide every data term of the gradients by N"),
    (step_with(residual="logits"), "softmax probabilities minus the one-hot"),
    (step_with(decay=0.0), "add the weight decays"),
    (step_with(decay=2.0), "not 2λ·X"),
    (step_with(decay=0.5), "not λ/2·X"),
    (step_with(bias=False), "update the bias too"),
    (step_with(W_first=True), "before changing any of them"),
    (lambda H, W, b, *rest: (H, W), "as a tuple"),
    (lambda H, W, b, *rest: (H, W, b.long()), "return float tensors"),
    (lambda H, W, b, *rest: (H.T, W, b), "the new H should be a tensor of shape (3, 2)"),
    (step_in_place, "in place"),
]

RIGHT = [  # (exercise, a right answer): also checked under secret seeds (test_secret_seeds.py)
    *(("00_cosine", answer) for answer in (cosine_right, cosine_loop, cosine_from_the_sum, ufm.mean_pairwise_cosine)),
    *(("00_ufm_step", answer) for answer in (step_right, step_autograd)),
]
MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    *(("00_cosine", *mistake) for mistake in COSINE_MISTAKES),
    *(("00_ufm_step", *mistake) for mistake in STEP_MISTAKES),
]


@pytest.mark.parametrize("name, answer", RIGHT)
def test_right_answers_pass(name, answer):
    result = run_check(name, answer)
    assert result.passed, result.message


@pytest.mark.parametrize("name, answer, message", MISTAKES)
def test_typical_mistakes_are_named(name, answer, message):
    result = run_check(name, answer)
    assert not result.passed and message in result.message, result.message


def test_the_right_step_iterated_is_the_package_gradient_descent():
    model = ufm.UFM(3, 4, per_class=5, seed=4)
    H, W, b = (t.detach().clone() for t in (model.H, model.W, model.b))
    for _ in range(50):
        H, W, b = step_right(H, W, b, model.labels, model.lr, model.lambda_H, model.lambda_W, model.lambda_b)
    model.fit(50, records=2)
    torch.testing.assert_close(H, model.H.detach())
    torch.testing.assert_close(W, model.W.detach())
    torch.testing.assert_close(b, model.b.detach())
