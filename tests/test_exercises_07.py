"""The checks of notebook 07's exercises: right answers pass, typical mistakes get a specific message."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nclab.exercises import run_check


def counts_right(n_max, C, IF):
    return [math.floor(n_max * IF ** (-c / (C - 1))) for c in range(C)]


def project_right(weight, grad, centres, keep):
    w_hat = F.normalize(weight, dim=1)
    g_t = grad - (grad * w_hat).sum(1, keepdim=True) * w_hat
    d = F.normalize(centres - (centres * w_hat).sum(1, keepdim=True) * w_hat, dim=1)
    along = (g_t * d).sum(1, keepdim=True)
    g_t = g_t - torch.where(along > 0, along, torch.zeros_like(along)) * d
    return keep * g_t + (1 - keep) * grad


def project_loop(weight, grad, centres, keep):
    rows = []
    for w, g, mu in zip(weight, grad, centres):
        w_hat = w / w.norm()
        g_t = g - (g @ w_hat) * w_hat
        toward = mu - (mu @ w_hat) * w_hat
        d = toward / toward.norm()
        if g_t @ d > 0:
            g_t = g_t - (g_t @ d) * d
        rows.append(keep * g_t + (1 - keep) * g)
    return torch.stack(rows)


def not_yet(*args):
    raise NotImplementedError()


RIGHT = [  # (exercise, a right answer): also checked under secret seeds (test_secret_seeds.py)
    ("07_counts", counts_right),
    ("07_counts", lambda n, C, IF: [int(n * (1 / IF) ** (c / (C - 1))) for c in range(C)]),  # the LDAM code
    ("07_counts", lambda n, C, IF: torch.tensor(counts_right(n, C, IF))),
    ("07_counts", lambda n, C, IF: tuple(counts_right(n, C, IF))),
    ("07_counts", lambda n, C, IF: np.floor(n * float(IF) ** (-np.arange(C) / (C - 1))).astype(int)),  # NumPy
    ("07_counts", lambda n, C, IF: list(np.floor(n * float(IF) ** (-np.arange(C) / (C - 1))).astype(np.int64))),
    ("07_counts", lambda n, C, IF: torch.floor(n * IF ** (-torch.arange(C) / (C - 1)))),  # floored floats
    ("07_project", project_right),
    ("07_project", project_loop),
    ("07_project", lambda w, g, mu, keep: project_right(w.float(), g.float(), mu.float(), keep)),
]


@pytest.mark.parametrize("name, answer", RIGHT)
def test_right_answers_pass(name, answer):
    result = run_check(name, answer)
    assert result.passed, result.message


def _mix(tangent, g, keep):
    return keep * tangent + (1 - keep) * g


def _parts(weight, grad, centres):
    w_hat = F.normalize(weight, dim=1)
    g_t = grad - (grad * w_hat).sum(1, keepdim=True) * w_hat
    toward = centres - (centres * w_hat).sum(1, keepdim=True) * w_hat
    return g_t, toward


MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    ("07_counts", lambda n, C, IF: [math.floor(n * IF ** (-c / C)) for c in range(C)], "−c/(C−1)"),
    ("07_counts", lambda n, C, IF: [round(n * IF ** (-c / (C - 1))) for c in range(C)], "not round()"),
    ("07_counts", lambda n, C, IF: counts_right(n, C, IF)[::-1], "class 0 is the head"),
    ("07_counts", lambda n, C, IF: [n * IF ** (-c / (C - 1)) for c in range(C)], "not floats"),
    ("07_counts", lambda n, C, IF: torch.tensor([n * IF ** (-c / (C - 1)) for c in range(C)]), "whole numbers"),
    ("07_counts", lambda n, C, IF: [math.floor(n * IF ** (c / (C - 1))) for c in range(C)], "negative"),
    ("07_counts", not_yet, "not answered yet"),
    ("07_counts", lambda n, C, IF: "10847", "list of C ints"),
    ("07_project", lambda w, g, mu, keep: _mix(_parts(w, g, mu)[0], g, keep), "remove the opposing"),
    (
        "07_project",
        lambda w, g, mu, keep: _mix(
            (lambda t, d: t - (t * d).sum(1, keepdim=True) * d)(
                _parts(w, g, mu)[0], F.normalize(_parts(w, g, mu)[1], dim=1)
            ),
            g,
            keep,
        ),
        "only where it opposes",
    ),
    ("07_project", lambda w, g, mu, keep: project_right(w, g, mu, 1 - keep), "keep · g_t + (1 − keep) · g"),
    ("07_project", not_yet, "not answered yet"),
]


@pytest.mark.parametrize("name, answer, message", MISTAKES)
def test_mistakes_get_a_specific_message(name, answer, message):
    result = run_check(name, answer)
    assert not result.passed
    assert message in result.message, result.message
