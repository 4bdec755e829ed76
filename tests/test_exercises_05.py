"""The checks of notebook 05's exercises: right answers pass, typical mistakes get a specific message."""

import math

import pytest
import torch
import torch.nn.functional as F

from nclab.exercises import run_check


def _nn(z):
    u = F.normalize(z, dim=1)
    return (u @ u.T - 3 * torch.eye(len(z), dtype=z.dtype)).argmax(1)


def entropy_right(z):
    u = F.normalize(z, dim=1)
    cosine = u @ u.T - 3 * torch.eye(len(z), dtype=z.dtype)  # no row is its own neighbour
    return -torch.log((u - u[cosine.argmax(1)]).norm(dim=1) + 1e-8).mean()


def entropy_loop(z):
    total = 0
    for i in range(len(z)):
        u = z / z.norm(dim=1, keepdim=True)
        others = [j for j in range(len(z)) if j != i]
        j = max(others, key=lambda j: float((u[i] @ u[j]).detach()))
        total = total - torch.log((u[i] - u[j]).norm() + 1e-8)
    return total / len(z)


def entropy_last_tie(z):
    """Right, breaking a tie between two equally near rows toward the later one (the reference takes the
    earlier one where its rounding makes them equal): at such a point either choice is a subgradient."""
    u = F.normalize(z, dim=1)
    cosine = (u @ u.T - 3 * torch.eye(len(z), dtype=z.dtype)).flip(1)
    return -torch.log((u - u[len(z) - 1 - cosine.argmax(1)]).norm(dim=1) + 1e-8).mean()


def etf_right(U):
    C = U.shape[1]
    return math.sqrt(C / (C - 1)) * U @ (torch.eye(C, dtype=U.dtype) - 1 / C)


def detached_neighbour(z):
    u = F.normalize(z, dim=1)
    cosine = u @ u.T - 3 * torch.eye(len(z), dtype=z.dtype)
    return -torch.log((u - u[cosine.argmax(1)].detach()).norm(dim=1) + 1e-8).mean()


def farthest(z):
    u = F.normalize(z, dim=1)
    cosine = u @ u.T + 3 * torch.eye(len(z), dtype=z.dtype)
    return -torch.log((u - u[cosine.argmin(1)]).norm(dim=1) + 1e-8).mean()


def own_neighbour(z):
    u = F.normalize(z, dim=1)
    return -torch.log((u - u[(u @ u.T).argmax(1)]).norm(dim=1) + 1e-8).mean()


def not_yet(*args):
    raise NotImplementedError()


RIGHT = [  # (exercise, a right answer): also checked under secret seeds (test_secret_seeds.py)
    ("05_entropy", entropy_right),
    ("05_entropy", entropy_loop),  # a loop is slow but right
    ("05_entropy", lambda z: entropy_right(z.float())),  # float32 is precise enough
    ("05_entropy", entropy_last_tie),  # ties between the equal rows broken the other way
    ("05_etf", etf_right),
    ("05_etf", lambda U: math.sqrt(U.shape[1] / (U.shape[1] - 1)) * U @ (torch.eye(U.shape[1]) - 1 / U.shape[1])),
    ("05_etf", lambda U: etf_right(U.double())),  # float64 is fine too
    ("05_etf", lambda U: math.sqrt(U.shape[1] / (U.shape[1] - 1)) * (U - U.mean(dim=1, keepdim=True))),
]


@pytest.mark.parametrize("name, answer", RIGHT)
def test_right_answers_pass(name, answer):
    result = run_check(name, answer)
    assert result.passed, result.message


MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    ("05_entropy", own_neighbour, "its own nearest neighbour"),
    ("05_entropy", lambda z: -entropy_right(z), "mind the sign"),
    ("05_entropy", lambda z: entropy_right(z) * len(z), "not the sum"),
    ("05_entropy", lambda z: entropy_right(z).item(), "carries no gradient"),
    (
        "05_entropy",
        lambda z: (
            -torch.log(
                (
                    z - z[(torch.cdist(z, z) + torch.diag(torch.full((len(z),), math.inf, dtype=z.dtype))).argmin(1)]
                ).norm(dim=1)
                + 1e-8
            ).mean()
        ),
        "normalise the rows first",
    ),
    ("05_entropy", not_yet, "not answered yet"),
    ("05_entropy", detached_neighbour, "its gradient is not"),
    ("05_entropy", farthest, "the *farthest* row"),
    ("05_entropy", lambda z: entropy_right(z) * 2, "not its square"),  # log d² = 2 log d
    (
        "05_entropy",
        lambda z: -torch.log((F.normalize(z, dim=1) - F.normalize(z, dim=1)).norm(dim=1)).mean(),
        "+ 1e-8 is missing",
    ),
    ("05_etf", lambda U: -etf_right(U), "not the one this U gives"),
    ("05_etf", lambda U: etf_right(U).flip(1), "not the one this U gives"),
    (
        "05_entropy",
        lambda z: -torch.log(1 - (F.normalize(z, dim=1) * F.normalize(z, dim=1)[_nn(z)]).sum(1) + 1e-8).mean(),
        "not 1 − cos",
    ),
    ("05_entropy", lambda z: entropy_right(z) / math.log(10), "not log10"),
    (
        "05_entropy",
        lambda z: (
            -torch.log((z - z[(z @ z.T - 1e9 * torch.eye(len(z), dtype=z.dtype)).argmax(1)]).norm(dim=1) + 1e-8).mean()
        ),
        "for the search and for the distance",
    ),
    (
        "05_entropy",
        lambda z: (
            -torch.log(((F.normalize(z, dim=1) - F.normalize(z, dim=1)[_nn(z)]) ** 2).sum(1).sqrt() + 1e-8).mean()
        ),
        "gradient is NaN or inf",
    ),
    (
        "05_etf",
        lambda U: (
            math.sqrt((U.shape[1] - 1) / U.shape[1]) * U @ (torch.eye(U.shape[1], dtype=U.dtype) - 1 / U.shape[1])
        ),
        "the scale is inverted",
    ),
    ("05_etf", lambda U: U @ (torch.eye(U.shape[1], dtype=U.dtype) - 1 / U.shape[1]), "not unit vectors"),
    ("05_etf", lambda U: math.sqrt(U.shape[1] / (U.shape[1] - 1)) * U, "centre with"),
    ("05_etf", lambda U: etf_right(U).T, "return M as (p, K)"),
    ("05_etf", lambda U: U[:, 0], "expected (3, 3)"),
]


@pytest.mark.parametrize("name, answer, message", MISTAKES)
def test_typical_mistakes_are_named(name, answer, message):
    result = run_check(name, answer)
    assert not result.passed and message in result.message, result.message
