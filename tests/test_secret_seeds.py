"""The checks as the grader runs them, under a secret seed (``core.secret_seed``): the right answers still
pass and the typical mistakes still fail with their message, whatever the seed; every check (but 09_audit,
whose answer is a fixed diagnosis) draws some input from the seed, so an answer that only knows the
notebook's inputs, a lookup of the right outputs, passes in the notebook and fails when graded.

The answers and mistakes are the tables of the tests of each notebook's checks (test_exercises*.py and, for
notebooks 03 and 04, test_ood_notebooks.py).
"""

import math

import pytest
import test_exercises
import test_exercises_00
import test_exercises_02
import test_exercises_05
import test_exercises_06
import test_exercises_07
import test_exercises_08
import test_exercises_09
import test_ood_notebooks
import torch

from nclab.exercises import EXERCISES, core, notebook03, notebook08

TABLES = [test_exercises_00, test_exercises_02, test_exercises_05, test_exercises_06]
TABLES += [test_exercises_07, test_exercises_08, test_exercises_09]
RIGHT = [  # (exercise, a right answer)
    *test_exercises.RIGHT.items(),
    *((name, answer) for name, answer, expected in test_ood_notebooks.CASES.values() if expected is None),
    *(right for table in TABLES for right in table.RIGHT),
]
MISTAKES = [  # (exercise, typical wrong answer, what the message must say)
    *test_exercises.MISTAKES.values(),
    *((name, answer, expected) for name, answer, expected in test_ood_notebooks.CASES.values() if expected),
    *(mistake for table in TABLES for mistake in table.MISTAKES),
]
FIRST_RIGHT = {name: answer for name, answer in reversed(RIGHT)}  # the first right answer of each exercise

SEEDS = [*range(20), 2**31 - 1, 987_654_321_987, 2**63 - 1, -5]  # what the grader may draw: any int
FEW_SEEDS = [20, 31_337, 2**40 + 1]
NOT_RANDOM = {"09_audit"}  # its answer is a fixed classification of the report's excerpts


def _check(name, answer, seed=None):
    if seed is None:
        return core.run_check(EXERCISES, name, answer)
    with core.secret_seed(seed):
        return core.run_check(EXERCISES, name, answer)


def test_every_exercise_has_a_right_answer_and_typical_mistakes_here():
    assert set(FIRST_RIGHT) == set(EXERCISES)
    assert {name for name, _, _ in MISTAKES} == set(EXERCISES)


@pytest.mark.parametrize("name", sorted(FIRST_RIGHT))
def test_a_right_answer_passes_under_every_secret_seed(name):
    for seed in SEEDS:
        result = _check(name, FIRST_RIGHT[name], seed)
        assert result.passed, f"secret seed {seed}: {result.message}"


@pytest.mark.parametrize("name, answer", RIGHT, ids=[f"{name}-{i}" for i, (name, _) in enumerate(RIGHT)])
def test_every_right_answer_passes_under_secret_seeds(name, answer):
    for seed in FEW_SEEDS:
        result = _check(name, answer, seed)
        assert result.passed, f"secret seed {seed}: {result.message}"


@pytest.mark.parametrize(
    "name, answer, message", MISTAKES, ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(MISTAKES)]
)
def test_every_typical_mistake_is_named_under_secret_seeds(name, answer, message):
    """The message names the mistake, not only "wrong": a random case never makes a mistake agree with the
    right answer (where the hand cases cannot tell them apart, the random case is drawn again until it can)."""
    for seed in [*FEW_SEEDS, 3, 2**62]:
        result = _check(name, answer, seed)
        assert not result.passed and message in result.message, f"secret seed {seed}: {result.message}"


# --- an answer that only knows the notebook's inputs -------------------------------------------------------


def _key(args: tuple) -> tuple:
    """The inputs of one call, as something a dict can hold: every tensor by its dtype, shape and bytes."""
    return tuple(
        (str(a.dtype), tuple(a.shape), a.detach().numpy().tobytes()) if isinstance(a, torch.Tensor) else repr(a)
        for a in args
    )


def _recorded(name, right, fallback=None):
    """(the keys of the inputs ``right`` was called with in the notebook, an answer returning the right
    output on exactly those inputs and ``fallback(*args)`` on any other)."""
    outputs = {}

    def record(*args):
        output = right(*args)
        outputs[_key(args)] = output.detach().clone() if isinstance(output, torch.Tensor) else output
        return output

    assert _check(name, record).passed

    def lookup(*args):
        key = _key(args)
        return outputs[key] if key in outputs else fallback(*args)

    return set(outputs), lookup


LOOKUPS = {  # exercise: what the lookup returns for an input it has not seen (zeros)
    "01_flip": lambda images, flips: torch.zeros_like(images),
    "01_schedule": lambda step, total_steps, gamma: 0.0,
    "02_etf_gram": lambda C: torch.zeros(C, C, dtype=torch.float64),
    "03_energy": lambda logits, T=1.0: torch.zeros(len(logits)),
    "03_fpr95": lambda id_scores, ood_scores: 0.0,
    "07_counts": lambda n_max, C, IF: [0] * C,
    "09_bounds": lambda r, a: (0.0, 0.0),
}


@pytest.mark.parametrize("name", sorted(LOOKUPS))
def test_a_lookup_of_the_notebooks_inputs_passes_in_the_notebook_and_fails_when_graded(name):
    _, lookup = _recorded(name, FIRST_RIGHT[name], LOOKUPS[name])
    assert _check(name, lookup).passed  # in the notebook: the same inputs at every run
    for seed in FEW_SEEDS:
        assert not _check(name, lookup, seed).passed, f"secret seed {seed}"


@pytest.mark.parametrize("name", sorted(set(FIRST_RIGHT) - NOT_RANDOM))
def test_every_check_draws_some_input_from_the_secret_seed(name):
    """Without a secret seed a check gives the same inputs at every run; with one, some other input (so that
    no table of the notebook's inputs can pass while grading), and the same again for the same seed."""
    notebook, _ = _recorded(name, FIRST_RIGHT[name])
    assert _recorded(name, FIRST_RIGHT[name])[0] == notebook
    with core.secret_seed(12345):
        graded, _ = _recorded(name, FIRST_RIGHT[name])
        assert _recorded(name, FIRST_RIGHT[name])[0] == graded
    assert graded - notebook


def test_the_drawn_schedule_counts_and_bounds_are_in_their_ranges():
    """The one random case of 01_schedule, 07_counts and 09_bounds: the inputs that are not the notebook's."""
    notebook = {name: _recorded(name, FIRST_RIGHT[name])[0] for name in ("01_schedule", "07_counts", "09_bounds")}
    for seed in SEEDS:
        with core.secret_seed(seed):
            drawn = {name: _recorded(name, FIRST_RIGHT[name])[0] - keys for name, keys in notebook.items()}
        ((T, gamma),) = {(int(T), float(gamma)) for _, T, gamma in drawn["01_schedule"]}
        assert 12 <= T <= 400 and 0.05 < gamma < 0.9 and round(gamma, 3) == gamma
        ((n_max, C, IF),) = {tuple(int(x) for x in key) for key in drawn["07_counts"]}
        assert 200 <= n_max <= 2000 and 3 <= C <= 30 and 2 <= IF <= 100
        assert all(0.005 < n_max * IF ** (-c / (C - 1)) % 1 < 0.995 for c in range(1, C))  # no float floors it wrong
        ((r, a),) = {tuple(float(x) for x in key) for key in drawn["09_bounds"]}
        assert 0 <= r <= 1 and 0 <= a <= 1 and round(r, 4) == r and round(a, 4) == a


def test_the_random_prototype_case_wins_by_a_margin_and_tells_every_mistake_apart():
    for seed in SEEDS:
        with core.secret_seed(seed):
            train, labels, query = notebook08._drawn_prototype_case(16)
        scores, mistakes = notebook08._prototype_mistakes(train.double(), labels, query.double())
        top = scores.topk(2, dim=1).values
        assert (top[:, 0] - top[:, 1]).min() >= 1e-3 and torch.bincount(labels).min() == 12
        assert not any(torch.equal(wrong, scores.argmax(1)) for wrong in mistakes.values())


def test_the_random_fpr95_case_tells_the_threshold_mistakes_apart():
    """τ itself, a score between τ and the interpolated quantile and one between that and the ⌊0.95 n⌋-th
    score are among the OOD scores: ≥ τ, > τ, ≥ the quantile and ≥ the ⌊0.95 n⌋-th score count differently."""
    for seed in SEEDS:
        with core.secret_seed(seed):
            ind, out = notebook03._drawn_scores(75)
        descending = ind.sort(descending=True).values
        tau, floor_tau = descending[math.ceil(0.95 * len(ind)) - 1], descending[int(0.95 * len(ind)) - 1]
        thresholds = [tau, torch.quantile(ind, 0.05), floor_tau]
        fractions = [float((out >= thresholds[0]).double().mean()), float((out > thresholds[0]).double().mean())]
        fractions += [float((out >= threshold).double().mean()) for threshold in thresholds[1:]]
        assert len(set(fractions)) == 4 and 0 < fractions[0] < 1 and len(ind.unique()) == len(ind) == 50


# The checks that compare a gradient or an exact answer (an argmax): where rounding could decide, they must
# not, so every right answer passes whatever the seed and however many threads sum the products.
FRAGILE = {"02_ncc", "05_entropy", "06_assign", "06_irm", "08_nonl", "08_prototypes"}


@pytest.mark.parametrize("threads", [1, 2])
def test_gradient_and_exact_checks_pass_every_right_answer_over_many_seeds_and_thread_counts(threads):
    assert FRAGILE <= set(EXERCISES)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, answer in RIGHT:
            if name in FRAGILE:
                for seed in range(100):
                    result = _check(name, answer, seed * 7919 + threads)
                    assert result.passed, f"{threads} threads, secret seed {seed * 7919 + threads}: {result.message}"
    finally:
        torch.set_num_threads(before)
