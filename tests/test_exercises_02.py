"""The checks of notebook 02's exercises: right answers pass, typical mistakes get a specific message."""

import pytest
import torch

from nclab.exercises import run_check


def nc1_right(Sigma_W, Sigma_B, C):
    eigenvalues, eigenvectors = torch.linalg.eigh(Sigma_B)
    lam, V = eigenvalues[-(C - 1) :], eigenvectors[:, -(C - 1) :]
    return torch.trace(Sigma_W @ V @ torch.diag(1 / lam) @ V.T) / C


def not_yet(*args):
    raise NotImplementedError()


RIGHT = [  # (exercise, a right answer): also checked under secret seeds (test_secret_seeds.py)
    ("02_nc1", nc1_right),
    ("02_nc1", lambda Sw, Sb, C: float(nc1_right(Sw, Sb, C))),  # a float is fine too
    ("02_ncc", lambda h, mu: torch.cdist(h, mu).argmin(1)),
    ("02_ncc", lambda h, mu: ((h[:, None] - mu[None]) ** 2).sum(-1).argmin(1)),
    ("02_etf_gram", lambda C: (torch.eye(C, dtype=torch.float64) - 1 / C) * C / (C - 1)),
]
MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    ("02_nc1", lambda Sw, Sb, C: nc1_right(Sw, Sb, C) * C, "forgot to divide by C"),
    ("02_nc1", lambda Sw, Sb, C: torch.trace(Sw) / torch.trace(Sb), "trace ratio"),
    (
        "02_nc1",
        lambda Sw, Sb, C: torch.trace(Sw @ torch.linalg.inv(Sb + 1e-30 * torch.eye(len(Sb)))) / C,
        "top C − 1 eigenpairs",
    ),
    ("02_ncc", lambda h, mu: (h @ mu.T).argmax(1), "‖μ_c‖²"),
    ("02_ncc", lambda h, mu: torch.cdist(h, mu).argmax(1), "farthest"),
    ("02_etf_gram", lambda C: torch.eye(C, dtype=torch.float64) - 1 / C, "centring matrix"),
    ("02_etf_gram", lambda C: torch.eye(C, dtype=torch.float64) * (1 + 1 / C) - 1 / C, "not −1/C"),
    ("02_etf_gram", not_yet, "not answered yet"),
    ("02_ncc", lambda h, mu: h[:, 0], "hand case"),
]


@pytest.mark.parametrize("name, answer", RIGHT)
def test_right_answers_pass(name, answer):
    result = run_check(name, answer)
    assert result.passed, result.message


@pytest.mark.parametrize("name, answer, message", MISTAKES)
def test_typical_mistakes_are_named(name, answer, message):
    result = run_check(name, answer)
    assert not result.passed and message in result.message, result.message
