"""nclab.tables.verdicts: the paired bootstrap of a difference, and the three-outcome verdict calibrated to noise."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nclab.tables import verdicts
from nclab.tables.verdicts import Difference, accuracy_difference, auroc_difference, judge


def _d(lo, hi):
    return Difference((lo + hi) / 2, lo, hi, seeds=1, images=100)


def test_the_rule_of_each_kind_of_claim_on_hand_made_intervals():
    assert judge(_d(0.1, 3)) == "reproduced"
    assert judge(_d(-0.1, 3)) == "inconclusive"
    assert judge(_d(-3, -0.1)) == "contradicted"
    assert judge(_d(0.5, 4), "size", 3) == "reproduced"  # a gain, and 3 within reach
    assert judge(_d(0.5, 2.9), "size", 3) == "contradicted"  # a real gain, but 3 is ruled out
    assert judge(_d(-1, 4), "size", 3) == "inconclusive"
    assert judge(_d(0.5, 1), "best case", 8.7) == "reproduced"  # "up to 8.7": the direction only
    assert judge(_d(-1.5, 1.5), "match", 2) == "reproduced"
    assert judge(_d(-2.5, 1.5), "match", 2) == "inconclusive"
    assert judge(_d(-6, -2.5), "match", 2) == "contradicted"
    for kind, size in [("size", None), ("match", 0), ("typical", 1)]:
        with pytest.raises(ValueError):
            judge(_d(0, 1), kind, size)


def test_identical_networks_differ_by_exactly_zero():
    correct = np.r_[np.ones(70), np.zeros(30)]
    d = accuracy_difference(correct, correct)
    assert (d.estimate, d.lo, d.hi) == (0.0, 0.0, 0.0) and judge(d) == "inconclusive"
    scores = np.random.default_rng(0).normal(size=50)
    d = auroc_difference((scores, scores[:20]), (scores, scores[:20]))
    assert (d.estimate, d.lo, d.hi) == (0.0, 0.0, 0.0)


def test_the_estimates_are_the_hand_computed_and_scikit_learn_differences():
    baseline, method = np.r_[np.ones(60), np.zeros(40)], np.r_[np.ones(66), np.zeros(34)]
    assert accuracy_difference(baseline, method).estimate == pytest.approx(6.0)
    assert accuracy_difference(baseline, method, relative=True).estimate == pytest.approx(10.0)  # 66 / 60 − 1
    rng = np.random.default_rng(1)
    ind, near, far = rng.normal(1, 1, 80), rng.normal(0, 1, 40), rng.normal(-1, 1, 30)
    noisy = [x + rng.normal(0, 1, len(x)) for x in (ind, near, far)]
    d = auroc_difference((noisy[0], {"near": noisy[1], "far": noisy[2]}), (ind, {"near": near, "far": far}))
    expected = np.mean(
        [
            roc_auc_score(np.r_[np.ones(80), np.zeros(len(o))], np.r_[ind, o])
            - roc_auc_score(np.r_[np.ones(80), np.zeros(len(o))], np.r_[noisy[0], n])
            for o, n in [(near, noisy[1]), (far, noisy[2])]
        ]
    )
    assert d.estimate == pytest.approx(100 * expected) and d.lo < d.estimate < d.hi and d.images == 150


def test_pairing_removes_what_two_networks_share():
    """Two networks that fail on the same hard images and differ on 10 of 1,000: the paired interval is a
    few tenths of a point wide, where the two accuracies' own noise is ±3 points."""
    rng = np.random.default_rng(2)
    baseline = (rng.random(1000) < 0.6).astype(float)
    method = baseline.copy()
    method[np.flatnonzero(baseline == 0)[:10]] = 1
    d = accuracy_difference(baseline, method)
    assert d.estimate == pytest.approx(1.0) and d.hi - d.lo < 1.5 and judge(d) == "reproduced"


def test_the_spread_between_seeds_widens_the_interval():
    rng = np.random.default_rng(3)
    base = [(rng.random(500) < 0.7).astype(float) for _ in range(3)]
    steady = [b.copy() for b in base]
    for s in steady:
        s[np.flatnonzero(s == 0)[:10]] = 1  # +2 points in every seed
    scattered = [b.copy() for b in base]
    scattered[0][np.flatnonzero(scattered[0] == 0)[:40]] = 1  # +8, 0, −2: the same mean, spread out
    scattered[2][np.flatnonzero(scattered[2] == 1)[:10]] = 0
    d_steady, d_scattered = accuracy_difference(base, steady), accuracy_difference(base, scattered)
    assert d_steady.seeds == 3 and d_steady.estimate == pytest.approx(2.0)
    assert d_scattered.estimate == pytest.approx(2.0)
    assert d_scattered.hi - d_scattered.lo > 2 * (d_steady.hi - d_steady.lo)


def test_bad_input_says_what_to_give():
    with pytest.raises(ValueError, match="same images"):
        accuracy_difference(np.ones(5), np.ones(6))
    with pytest.raises(ValueError, match="one run per seed"):
        accuracy_difference([np.ones(5)], [np.ones(5), np.ones(5)])
    with pytest.raises(ValueError, match="finite"):
        accuracy_difference(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="OOD sets"):
        auroc_difference((np.ones(3), {"a": np.ones(2)}), (np.ones(3), {"b": np.ones(2)}))


def _simulate(effect_in_noise: float, runs: int, kind="direction", size=None) -> dict[str, float]:
    """Verdicts on `runs` simulated pairs of networks on 800 test images, each right with probability 0.7
    independently, the method given a true gain of `effect_in_noise` × the noise of the difference."""
    n, p = 800, 0.7
    noise = 100 * np.sqrt(2 * p * (1 - p) / n)  # standard error of the difference, in points
    gain = effect_in_noise * noise / 100
    counts = dict.fromkeys(verdicts.VERDICTS, 0)
    rng = np.random.default_rng(0)
    for k in range(runs):
        baseline = (rng.random(n) < p).astype(float)
        method = (rng.random(n) < p + gain).astype(float)
        d = accuracy_difference(baseline, method, n_bootstrap=500, seed=k)
        counts[judge(d, kind, size)] += 1
    return {verdict: count / runs for verdict, count in counts.items()}


@pytest.mark.slow
def test_calibration_no_effect_is_rarely_reproduced_and_twice_the_noise_mostly_is():
    """The verdict's error rates by simulation (400 runs; the allowance is two standard errors of the
    simulation's own estimate of a 5 % rate)."""
    allowance = 0.05 + 2 * np.sqrt(0.05 * 0.95 / 400)
    null = _simulate(0.0, 400)
    assert null["reproduced"] <= allowance and null["contradicted"] <= allowance
    assert _simulate(2.0, 200)["reproduced"] > 0.5  # expected ≈ 64 %: one-sided 5 % test at 2σ
    assert _simulate(-2.0, 200)["contradicted"] > 0.5
    # a size claim: a true gain equal to the claim is rarely contradicted; one 2σ below it mostly is
    noise = 100 * np.sqrt(2 * 0.7 * 0.3 / 800)
    assert _simulate(3.0, 200, "size", 3 * noise)["contradicted"] <= allowance
    assert _simulate(1.0, 200, "size", 3 * noise)["contradicted"] > 0.5
