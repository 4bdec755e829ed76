"""The checks of notebook 08's exercises: right answers pass, typical mistakes get a specific message."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import CheatingTensor
from nclab import heads, losses
from nclab.exercises import run_check


def scores(u, w, y, tau):
    return F.normalize(w, dim=1)[y] @ F.normalize(u, dim=1).T / tau


def nonl_right(u, w, y, tau):
    s = scores(u, w, y, tau)
    negatives = s.masked_fill(y[None, :] == y[:, None], -math.inf)
    return (torch.logsumexp(negatives, dim=1) - s.diagonal()).mean()


def nonl_masked_sum(u, w, y, tau):
    s = scores(u, w, y, tau)
    negative = (y[None, :] != y[:, None]).to(s.dtype)
    return -(s.diagonal().exp() / (s.exp() * negative).sum(1)).log().mean()


def nonl_loop(u, w, y, tau):
    total = 0
    for i in range(len(y)):
        w_hat = w[y[i]] / w[y[i]].norm()
        s = torch.stack([w_hat @ u[j] / u[j].norm() / tau for j in range(len(y))])
        negatives = torch.stack([s[j] for j in range(len(y)) if y[j] != y[i]])
        total = total - s[i] + torch.log(torch.exp(negatives).sum())
    return total / len(y)


def per_sample(u, w, y, tau):
    s = scores(u, w, y, tau)
    return torch.logsumexp(s.masked_fill(y[None, :] == y[:, None], -math.inf), dim=1) - s.diagonal()


def nonl_keep(keep, *, normalise_u=True, normalise_w=True, tau_power=-1, total=False, transpose=False):
    """A NONL-like loss: j in the denominator where keep(y, B) says so; the options are the mistakes."""

    def loss(u, w, y, tau):
        u_hat = F.normalize(u, dim=1) if normalise_u else u
        w_hat = F.normalize(w, dim=1) if normalise_w else w
        s = w_hat[y] @ u_hat.T * tau**tau_power
        s = s.T if transpose else s
        per = torch.logsumexp(s.masked_fill(~keep(y), -math.inf), dim=1) - s.diagonal()
        return per.sum() if total else per.mean()

    return loss


def negatives(y):
    return y[None, :] != y[:, None]


def prototype_right(train_features, train_labels, features):
    C = int(train_labels.max()) + 1
    sums = torch.zeros(C, train_features.shape[1], dtype=train_features.dtype)
    sums.index_add_(0, train_labels, F.normalize(train_features, dim=1))
    prototypes = F.normalize(sums / torch.bincount(train_labels, minlength=C)[:, None], dim=1)
    return (F.normalize(features, dim=1) @ prototypes.T).argmax(1)


def prototype_loop(train_features, train_labels, features):
    C = int(train_labels.max()) + 1
    prototypes = []
    for c in range(C):
        rows = [h / h.norm() for h, label in zip(train_features, train_labels) if label == c]
        mean = sum(rows) / len(rows)
        prototypes.append(mean / mean.norm())
    return torch.tensor([max(range(C), key=lambda c: float(prototypes[c] @ h)) for h in features])


def class_means(train_features, train_labels, *, normalise=True):
    h = F.normalize(train_features, dim=1) if normalise else train_features
    return torch.stack([h[train_labels == c].mean(0) for c in range(int(train_labels.max()) + 1)])


def not_yet(*args):
    raise NotImplementedError()


RIGHT = [  # (exercise, a right answer): also checked under secret seeds (test_secret_seeds.py)
    ("08_nonl", nonl_right),
    ("08_nonl", nonl_masked_sum),  # exp, mask and divide: fine at these temperatures
    ("08_nonl", nonl_loop),  # a loop is slow but right
    ("08_nonl", lambda u, w, y, tau: nonl_right(u.float(), w.float(), y, tau)),  # float32 is precise enough
    ("08_nonl", lambda u, w, y, tau: losses.nonl(u, w, y, tau)),
    ("08_nonl", lambda u, w, y, tau: per_sample(u, w, y, tau).sum() / len(y)),
    ("08_prototypes", prototype_right),
    ("08_prototypes", prototype_loop),
    ("08_prototypes", lambda h, y, q: (q @ F.normalize(class_means(h, y), dim=1).T).argmax(1)),  # q not normalised
    ("08_prototypes", lambda h, y, q: torch.cdist(F.normalize(q, dim=1), F.normalize(class_means(h, y))).argmin(1)),
    ("08_prototypes", lambda h, y, q: heads.Prototype.from_features(h, y)(q).argmax(1)),
    ("08_prototypes", lambda h, y, q: prototype_right(h.double(), y, q.double())),
    ("08_prototypes", lambda h, y, q: prototype_right(h, y, q).int()),  # any integer dtype
]


@pytest.mark.parametrize("name, answer", RIGHT)
def test_right_answers_pass(name, answer):
    result = run_check(name, answer)
    assert result.passed, result.message


def _raw_mean(h, y, q):
    return (F.normalize(q, dim=1) @ F.normalize(class_means(h, y, normalise=False), dim=1).T).argmax(1)


MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    ("08_nonl", lambda u, w, y, tau: losses.ntce(u, w, y, tau), "that is NTCE"),
    ("08_nonl", nonl_keep(lambda y: ~torch.eye(len(y), dtype=torch.bool)), "leaving out j = i is not enough"),
    ("08_nonl", lambda u, w, y, tau: losses.normface(u, w, y, tau), "that is NormFace"),
    ("08_nonl", nonl_keep(negatives, normalise_u=False), "normalise the features"),
    (
        "08_nonl",
        lambda u, w, y, tau: nonl_keep(negatives, normalise_u=False)(u / u.norm(), w, y, tau),
        "not by the norm of the whole matrix",
    ),
    ("08_nonl", nonl_keep(negatives, normalise_w=False), "normalise the class vectors too"),
    ("08_nonl", nonl_keep(negatives, tau_power=0), "divide the cosines by the temperature"),
    ("08_nonl", nonl_keep(negatives, tau_power=1), "do not multiply"),
    ("08_nonl", nonl_keep(negatives, total=True), "not the sum"),
    ("08_nonl", nonl_keep(negatives, transpose=True), "(that is s_ji)"),
    ("08_nonl", lambda u, w, y, tau: -nonl_right(u, w, y, tau), "mind the sign"),
    ("08_nonl", per_sample, "(4,), one loss per sample: return the loss as one number, the mean"),
    ("08_nonl", lambda u, w, y, tau: nonl_right(u, w, y, tau).item(), "carries no gradient"),
    ("08_nonl", lambda u, w, y, tau: nonl_right(u.detach(), w, y, tau), "carries no gradient"),
    ("08_nonl", lambda u, w, y, tau: nonl_right(u, w, y, tau) * torch.nan, "NaN or inf"),
    ("08_nonl", lambda u, w, y, tau: nonl_right(u.div_(u.norm(dim=1, keepdim=True)), w, y, tau), "in place"),
    ("08_nonl", not_yet, "not answered yet"),
    ("08_prototypes", _raw_mean, "normalise each training feature before averaging"),
    ("08_prototypes", lambda h, y, q: (F.normalize(q, dim=1) @ class_means(h, y).T).argmax(1), "a long mean"),
    (
        "08_prototypes",
        lambda h, y, q: torch.cdist(F.normalize(q, dim=1), class_means(h, y)).argmin(1),
        "by distance",
    ),
    ("08_prototypes", lambda h, y, q: torch.cdist(q, class_means(h, y, normalise=False)).argmin(1), "NC4"),
    ("08_prototypes", lambda h, y, q: (q @ F.normalize(class_means(h, y)).T).argmin(1), "*largest* cosine"),
    (
        "08_prototypes",
        lambda h, y, q: F.normalize(q, dim=1) @ F.normalize(class_means(h, y)).T,
        "(4, 2), the scores",
    ),
    (
        "08_prototypes",
        lambda h, y, q: prototype_right(h, y, q).float(),
        "int64 tensor (an argmax), not a (4,) float32",
    ),
    ("08_prototypes", lambda h, y, q: prototype_right(h, y, q) == 1, "not a (4,) bool"),
    ("08_prototypes", lambda h, y, q: prototype_right(h, y, q).tolist(), "got a list"),
    ("08_prototypes", lambda h, y, q: prototype_right(h.div_(h.norm(dim=1, keepdim=True)), y, q), "in place"),
    ("08_prototypes", not_yet, "not answered yet"),
    # a tensor subclass that fakes the comparison
    ("08_nonl", lambda u, w, y, tau: (0 * u.sum()).as_subclass(CheatingTensor), "plain torch.Tensor"),
    (
        "08_prototypes",
        lambda h, y, q: torch.zeros(len(q), dtype=torch.long).as_subclass(CheatingTensor),
        "plain torch.Tensor",
    ),
]


@pytest.mark.parametrize("name, answer, message", MISTAKES)
def test_mistakes_get_a_specific_message(name, answer, message):
    result = run_check(name, answer)
    assert not result.passed
    assert message in result.message, result.message


def test_the_hand_case_of_nonl_is_the_value_by_hand():
    """¼[(−2 + log(1 + e⁻²)) + (0 + log(1 + e⁻²)) + (−2 + log(2 + e²)) + (−2 + log(2 + e⁻²))], as the docstring says."""
    u = torch.tensor([[3.0, 0.0], [0.0, 0.5], [0.0, 2.0], [-4.0, 0.0]])
    w = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-0.5, 0.0]])
    by_hand = (-6 + 2 * math.log1p(math.exp(-2)) + math.log(2 + math.e**2) + math.log(2 + math.exp(-2))) / 4
    assert losses.nonl(u, w, torch.tensor([0, 0, 1, 2]), 0.5).item() == pytest.approx(by_hand, rel=1e-6)
    assert by_hand == pytest.approx(-0.687, abs=1e-3)


def test_every_prototype_mistake_is_named_by_the_hand_case_or_the_random_one():
    """The hand case names the raw means, the un-normalised prototypes, NC4's NCC and argmin itself; the
    distance to un-normalised means agrees with the right answer there and is named by the random case."""
    seen = []

    def record(h, y, q):
        seen.append((h.clone(), y.clone(), q.clone()))
        return prototype_right(h, y, q)

    assert run_check("08_prototypes", record).passed and len(seen) == 2
    (hand, hand_labels, hand_query), (train, labels, query) = seen
    assert train.dtype == query.dtype == torch.float32 and torch.bincount(labels).min() > 0
    for h, y, q in seen:  # every argmax wins by a margin that float32 arithmetic cannot flip
        top = (F.normalize(q.double(), dim=1) @ F.normalize(class_means(h.double(), y), dim=1).T).topk(2, dim=1)
        assert (top.values[:, 0] - top.values[:, 1]).min() > 0.02
    assert "hand case" in run_check("08_prototypes", _raw_mean).message
    wrong = lambda h, y, q: torch.cdist(F.normalize(q, dim=1), class_means(h, y)).argmin(1)  # noqa: E731
    assert torch.equal(wrong(hand, hand_labels, hand_query), prototype_right(hand, hand_labels, hand_query))
    assert "random case" in run_check("08_prototypes", wrong).message
