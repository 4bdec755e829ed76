"""Notebook 09: the wrong-on-purpose computations of ``nclab.pitfalls`` are wrong in the way they claim, the
NCC accuracy bounds are exact, and the two checks name the mistakes they promise (and no more)."""

import itertools
import math

import pytest
import torch

from nclab import collapse, exercises, ood, pitfalls
from nclab.data import ImageSet
from nclab.exercises import notebook09


def _clusters(C=6, p=16, n=40, spread=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(C, p, generator=generator)
    labels = torch.arange(C).repeat_interleave(n)
    return (means[labels] + spread * torch.randn(C * n, p, generator=generator)).relu(), labels


def test_nc1_without_the_one_over_c_is_c_times_ours_and_the_full_pinv_blows_up():
    H, y = _clusters()
    right = collapse.nc_metrics(H, y)["nc1"]
    assert pitfalls.nc1_without_one_over_c(H, y) == pytest.approx(6 * right, rel=1e-7)
    assert abs(pitfalls.nc1_full_pinv(H, y, rtol=1e-18)) > 1e6 * right  # rounding noise inverted
    assert pitfalls.nc1_full_pinv(H, y, rtol=1e-6) == pytest.approx(right, rel=1e-6)  # a sane cut-off agrees


def test_the_mahalanobis_variants_change_the_covariance_and_the_scores():
    H, y = _clusters(spread=0.5)
    test, _ = _clusters(seed=1)
    right = ood.Mahalanobis().fit(H, y)
    diagonal = pitfalls.MahalanobisDiagonal().fit(H, y)
    total = pitfalls.MahalanobisTotal().fit(H, y)
    assert torch.equal(diagonal.precision_, torch.diag(torch.diagonal(right.precision_)))
    centred = H.double() - H.double().mean(0)
    torch.testing.assert_close(total.covariance_, centred.T @ centred / len(H))
    assert torch.trace(total.covariance_) > torch.trace(right.covariance_)  # the between-class spread added
    for variant in (diagonal, total):
        assert not torch.allclose(variant.score(test), right.score(test))


def test_a_softmax_before_cross_entropy_cannot_fall_below_its_floor():
    C = 10
    logits = torch.full((4, C), -1e4)
    logits[torch.arange(4), torch.tensor([0, 3, 5, 9])] = 1e4  # as confident as floats allow
    labels = torch.tensor([0, 3, 5, 9])
    floor = math.log(1 + (C - 1) / math.e)
    assert pitfalls.softmax_then_cross_entropy(logits, labels).item() == pytest.approx(floor, rel=1e-6)
    assert torch.nn.functional.cross_entropy(logits, labels).item() == pytest.approx(0, abs=1e-6)


def test_the_bias_norm_and_the_augmented_copy():
    assert pitfalls.nc4_as_bias_norm(torch.tensor([3.0, 4.0])) == pytest.approx(5.0)
    images = ImageSet(
        images=torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8),
        labels=torch.arange(16) % 4,
        classes=list("abcd"),
        name="toy",
    )
    once, again = pitfalls.augmented(images, seed=3), pitfalls.augmented(images, seed=3)
    assert torch.equal(once.images, again.images) and not torch.equal(once.images, images.images)
    assert torch.equal(once.labels, images.labels) and once.name == "toy (augmented)"
    assert not torch.equal(pitfalls.augmented(images, seed=4).images, once.images)


@pytest.mark.parametrize("r, a", [(0.9, 0.95), (0.95, 0.9), (0.3, 0.2), (1.0, 1.0), (0.2, 0.9), (0.5, 0.0)])
def test_ncc_accuracy_bounds_are_attained_by_some_joint_outcome(r, a):
    """Brute force over the four outcomes (agree or not) × (network right or not), in steps of 0.01,
    with the NCC right on a disagreement only where the network is wrong."""
    low, high = pitfalls.ncc_accuracy_bounds(r, a)
    reachable = []
    grid = [k / 100 for k in range(101)]
    for x, z in itertools.product(grid, grid):  # x: agree and right; z: disagree, network wrong, NCC right
        agree_wrong, disagree_right, disagree_wrong = a - x, r - x, 1 - a - r + x
        if min(x, agree_wrong, disagree_right, disagree_wrong) < -1e-9 or z > disagree_wrong + 1e-9:
            continue
        reachable.append(x + z)
    assert min(reachable) == pytest.approx(low, abs=1e-9) and max(reachable) == pytest.approx(high, abs=1e-9)
    with pytest.raises(ValueError, match="fractions in"):
        pitfalls.ncc_accuracy_bounds(1.2, 0.5)


AUDIT = {key: kind for key, (kind, _) in pitfalls.REPORT_DIAGNOSES.items()}  # notebook 09's answer key

RIGHT = [  # (exercise, a right answer): also checked under secret seeds (test_secret_seeds.py)
    ("09_bounds", pitfalls.ncc_accuracy_bounds),
    ("09_bounds", lambda r, a: [max(0, a + r - 1), 1 - abs(a - r)]),  # a list is a pair too
    ("09_audit", lambda: AUDIT),
    ("09_audit", lambda: {k.lower(): v.upper() for k, v in AUDIT.items()}),
]
MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    ("09_bounds", lambda r, a: (r - (1 - a), r + (1 - a)), "at most one of them is right"),
    ("09_bounds", lambda r, a: pitfalls.ncc_accuracy_bounds(r, a)[::-1], "(high, low)"),
    ("09_bounds", lambda r, a: (a + r - 1, 1 - abs(a - r)), "at least 0"),
    ("09_bounds", lambda r, a: "0.5, 0.9", "return two"),
    ("09_bounds", lambda r, a: (0.1,), "return two"),
    ("09_bounds", lambda r, a: (float("nan"), 1.0), "return two"),
    ("09_bounds", lambda r, a: {0: 1}, "return two"),
    ("09_audit", lambda: {**AUDIT, "E6": "sign flipped"}, "6 of 7 excerpts right"),
]


@pytest.mark.parametrize("name, answer", RIGHT)
def test_right_answers_pass(name, answer):
    result = exercises.run_check(name, answer)
    assert result.passed, result.message


@pytest.mark.parametrize("name, answer, message", MISTAKES)
def test_typical_mistakes_are_named(name, answer, message):
    result = exercises.run_check(name, answer)
    assert not result.passed and message in result.message, result.message


def test_the_audit_check_counts_without_telling_which():
    one_wrong = exercises.run_check("09_audit", lambda: {**AUDIT, "E6": "sign flipped"})
    assert (
        not one_wrong.passed and one_wrong.message.startswith("6 of 7 excerpts right") and "E6" not in one_wrong.message
    )
    assert (
        "E3 missing" in exercises.run_check("09_audit", lambda: {k: v for k, v in AUDIT.items() if k != "E3"}).message
    )
    assert "is not one of the kinds" in exercises.run_check("09_audit", lambda: {**AUDIT, "E1": "typo"}).message
    assert "unknown excerpts E9" in exercises.run_check("09_audit", lambda: {**AUDIT, "E9": "correct"}).message
    assert "must return a dict" in exercises.run_check("09_audit", lambda: list(AUDIT.items())).message
    assert set(AUDIT.values()) <= set(notebook09.KINDS)
