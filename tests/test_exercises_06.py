"""The checks of notebook 06's exercises: right answers pass, typical mistakes get a specific message."""

import pytest
import torch
import torch.nn.functional as F

from conftest import CheatingTensor
from nclab.exercises import run_check


def own_logits(local_logits, labels):
    return local_logits.gather(2, labels[None, :, None].expand(len(local_logits), -1, 1))[..., 0]


def assign_right(local_logits, labels):
    return own_logits(local_logits, labels).argmax(0)


def assign_loop(local_logits, labels):
    E, N, _ = local_logits.shape
    out = []
    for i in range(N):
        values = [float(local_logits[e, i, labels[i]]) for e in range(E)]
        out.append(values.index(max(values)))  # the first maximum: ties to the lower e
    return torch.tensor(out)


def irm_right(logits, y):
    scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits * scale, y), scale, create_graph=True)
    return grad**2


def irm_closed_form(logits, y):
    """∂R/∂s at s = 1 = mean_i Σ_c (p_ic − [c = y_i]) l_ic, written out."""
    p = F.softmax(logits, dim=1)
    return ((p - F.one_hot(y, logits.shape[1]).to(logits.dtype)) * logits).sum(1).mean() ** 2


def irm_no_graph(logits, y):
    scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits * scale, y), scale)
    return grad**2


def not_yet(*args):
    raise NotImplementedError()


def irm_float32(logits, y):
    p = F.softmax(logits.float(), dim=1)
    return ((p - F.one_hot(y, logits.shape[1])) * logits.float()).sum(1).mean() ** 2


def irm_summed(logits, y):
    scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits * scale, y, reduction="sum"), scale, create_graph=True)
    return grad**2


def irm_split(logits, y):
    grads = []
    for part in (slice(0, None, 2), slice(1, None, 2)):
        scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
        loss = F.cross_entropy(logits[part] * scale, y[part])
        grads.append(torch.autograd.grad(loss, scale, create_graph=True)[0])
    return grads[0] * grads[1]


def irm_softmax_first(logits, y):
    scale = torch.tensor(1.0, dtype=logits.dtype, requires_grad=True)
    loss = F.cross_entropy(F.softmax(logits * scale, dim=1), y)
    return torch.autograd.grad(loss, scale, create_graph=True)[0] ** 2


RIGHT = [  # (exercise, a right answer): also checked under secret seeds (test_secret_seeds.py)
    ("06_assign", assign_right),
    ("06_assign", assign_loop),  # a loop is slow but right
    ("06_assign", lambda logits, labels: assign_right(logits, labels).int()),  # any integer dtype
    (
        "06_assign",
        lambda logits, labels: torch.stack(
            [logits[e, torch.arange(len(labels)), labels] for e in range(len(logits))]
        ).argmax(0),
    ),
    ("06_irm", irm_right),
    ("06_irm", irm_closed_form),  # the derivative by hand is the same function
    ("06_irm", lambda logits, y: irm_right(logits.float(), y)),  # float32 is precise enough
    ("06_irm", irm_float32),  # a float32 closed form passes the gradient check too
]


@pytest.mark.parametrize("name, answer", RIGHT)
def test_right_answers_pass(name, answer):
    result = run_check(name, answer)
    assert result.passed, result.message


MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    ("06_assign", lambda logits, labels: logits.amax(2).argmax(0), "of *any* class"),
    ("06_assign", lambda logits, labels: own_logits(logits, labels).argmin(0), "*smallest* logit"),
    ("06_assign", lambda logits, labels: own_logits(F.softmax(logits, 2), labels).argmax(0), "*probability*"),
    (
        "06_assign",
        lambda logits, labels: own_logits(logits - logits.mean(2, keepdim=True), labels).argmax(0),
        "*minus the mean logit*",
    ),
    (
        "06_assign",
        lambda logits, labels: len(logits) - 1 - own_logits(logits, labels).flip(0).argmax(0),
        "*lower* environment",
    ),  # ties sent to the higher environment
    ("06_assign", lambda logits, labels: logits.argmax(2), "argmax over the models"),
    ("06_assign", lambda logits, labels: own_logits(logits, labels).argmax(0).float(), "int64"),
    ("06_assign", lambda logits, labels: assign_right(logits, labels).to(torch.complex64), "int64"),
    ("06_assign", lambda logits, labels: own_logits(logits, labels).argmax(1), "has shape"),
    (
        "06_assign",
        lambda logits, labels: torch.zeros(len(labels), dtype=torch.long).as_subclass(CheatingTensor),
        "plain torch.Tensor",
    ),  # a tensor subclass that fakes the comparison
    ("06_assign", not_yet, "not answered yet"),
    ("06_irm", lambda logits, y: irm_right(logits, y).sqrt(), "square the derivative"),
    ("06_irm", lambda logits, y: F.cross_entropy(logits, y) ** 2, "squared risk"),
    (
        "06_irm",
        lambda logits, y: torch.autograd.grad(F.cross_entropy(logits, y), logits, create_graph=True)[0].pow(2).sum(),
        "not with respect to the logits",
    ),
    ("06_irm", irm_summed, "not the sum"),
    ("06_irm", irm_split, "split-batch"),
    ("06_irm", irm_softmax_first, "do not apply softmax first"),
    ("06_irm", irm_no_graph, "carries no gradient"),
    ("06_irm", lambda logits, y: irm_right(logits, y).item(), "carries no gradient"),
    ("06_irm", lambda logits, y: irm_right(logits.detach(), y), "carries no gradient"),
    ("06_irm", lambda logits, y: (0 * logits.sum()).as_subclass(CheatingTensor), "plain torch.Tensor"),
    ("06_irm", not_yet, "not answered yet"),
]


@pytest.mark.parametrize("name, answer, message", MISTAKES)
def test_mistakes_get_a_specific_message(name, answer, message):
    result = run_check(name, answer)
    assert not result.passed
    assert message in result.message, result.message
