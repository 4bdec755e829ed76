"""The unconstrained-features model: exact collapse with balanced classes, the closed-form optimum, the
trivial optimum under strong decay, and minority collapse under imbalance — each an assertion that can fail."""

import math

import pytest
import torch
import torch.nn.functional as F

from nclab import ufm
from nclab.etf import simplex_etf


@pytest.fixture(scope="module")
def balanced():
    """4 classes of 10 free features in R^8, 4,000 steps of gradient descent (about 2 s on the CPU)."""
    model = ufm.UFM(4, 8, per_class=10)
    return model, model.fit(4000, records=12)


def test_balanced_classes_collapse_exactly(balanced):
    model, trajectory = balanced
    final = trajectory.iloc[-1]
    assert trajectory["step"].iloc[0] == 0 and final["step"] == 4000 == model.step
    assert trajectory["nc1"].iloc[0] > 1  # a random start is far from collapse
    assert final["nc1"] < 1e-4 and final["nc2_etf_distance"] < 1e-3
    assert final["nc3"] < 1e-3 and final["nc4_ncc_mismatch"] == 0
    assert final["nc2_equinorm_weights"] < 1e-3 and abs(final["nc2_maxangle_means"]) < 1e-3
    assert trajectory["objective"].is_monotonic_decreasing  # gradient descent on a smooth problem, small steps


def test_the_norms_reach_the_closed_form_optimum(balanced):
    model, trajectory = balanced
    best = ufm.optimum(4, 10, model.lambda_H, model.lambda_W)
    final = trajectory.iloc[-1]
    assert final["w_norm"] == pytest.approx(best["w_norm"], rel=1e-4)
    assert final["h_norm"] == pytest.approx(best["h_norm"], rel=1e-4)
    assert final["objective"] == pytest.approx(best["objective"], rel=1e-5)
    # the optimum's logits: t on the true class, −t/(C−1) elsewhere
    logits = (model.H @ model.W.T + model.b).detach()
    assert logits[0, 0].item() == pytest.approx(best["margin"], rel=1e-3)
    assert logits[0, 1].item() == pytest.approx(-best["margin"] / 3, rel=1e-3)


def test_optimum_by_hand_and_the_trivial_solution_under_strong_decay():
    # κ = √(n λ_H λ_W) = 0.01 < 1/C: e^{−tC/(C−1)} = κ/(1 − (C−1)κ)
    best = ufm.optimum(2, 4, 0.005, 0.005)
    assert best["margin"] == pytest.approx(-0.5 * math.log(0.01 / 0.99))
    # α = √(n λ_H / λ_W) = 2: ‖w‖² = α t and ‖h‖² = t / α
    assert best["w_norm"] ** 2 == pytest.approx(2 * best["margin"]) and best["h_norm"] ** 2 == pytest.approx(
        best["margin"] / 2
    )
    # with κ ≥ 1/C the regularisation wins: W = 0, H = 0
    assert ufm.optimum(4, 10, 0.1, 0.1) == {"margin": 0.0, "w_norm": 0.0, "h_norm": 0.0, "objective": math.log(4)}
    strong = ufm.UFM(4, 8, per_class=10, lambda_H=0.1, lambda_W=0.1, lambda_b=0.1, lr=0.5)
    final = strong.fit(2000, records=2).iloc[-1]
    assert final["w_norm"] < 1e-3 and final["h_norm"] < 1e-3


def test_minority_classes_merge_under_strong_imbalance():
    """Two majority classes of 40 features and two minority classes: as the minority shrinks, the cosine
    between the two minority class means rises from the ETF's −1/3 toward 1 (minority collapse)."""
    cosines = []
    for minority in (40, 4, 1):
        model = ufm.UFM(4, 8, per_class=[40, 40, minority, minority])
        model.fit(2000, records=2)
        means = F.normalize(model.class_means(), dim=1)
        cosines.append((means[2] @ means[3]).item())
    assert cosines[0] == pytest.approx(-1 / 3, abs=1e-2)
    assert cosines[0] < cosines[1] < cosines[2] and cosines[2] > 0.1, cosines


def test_mse_loss_collapses_too_and_few_dimensions_give_nc1_only():
    mse = ufm.UFM(3, 4, per_class=5, loss="mse", lr=0.5).fit(3000, records=2).iloc[-1]
    assert mse["nc1"] < 1e-4 and mse["nc2_etf_distance"] < 1e-2
    narrow = ufm.UFM(5, 2, per_class=5).fit(10, records=2)  # p = 2 < C − 1 = 4: no ETF fits
    assert "nc1" in narrow and "nc2_etf_distance" not in narrow


def test_snapshots_are_feature_sets_at_the_recorded_steps():
    model = ufm.UFM(3, 4, per_class=5)
    trajectory = model.fit(50, records=5, snapshots=True)
    assert sorted(model.snapshots) == trajectory["step"].tolist() and trajectory["step"].iloc[0] == 0
    last = model.snapshots[50]
    assert torch.equal(last.features, model.H.detach()) and last.accuracy == trajectory["accuracy"].iloc[-1]
    assert torch.allclose(last.logits, (model.H @ model.W.T + model.b).detach())
    more = model.fit(10, records=2)  # training goes on from step 50: no second step-0 row
    assert more["step"].tolist() == [51, 60] and model.step == 60


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="per_class"):
        ufm.UFM(3, 4, per_class=[5, 5])
    with pytest.raises(ValueError, match="loss"):
        ufm.UFM(3, 4, loss="hinge")
    with pytest.raises(ValueError, match="λ_H"):
        ufm.optimum(3, 5, 0, 1e-3)
    with pytest.raises(ValueError, match="steps"):
        ufm.UFM(3, 4).fit(0)
    assert torch.equal(ufm.UFM(3, 4, seed=1).H, ufm.UFM(3, 4, seed=1).H)


def test_the_mean_pairwise_cosine_is_never_below_the_bound_and_only_the_etf_puts_every_pair_there():
    for C in (2, 3, 5, 10):
        etf = simplex_etf(C, C + 2)  # (C, p) rows of a simplex ETF
        assert ufm.mean_pairwise_cosine(etf).item() == pytest.approx(-1 / (C - 1), abs=1e-6)
        assert ufm.mean_pairwise_cosine(torch.ones(C, 3)).item() == pytest.approx(1.0)
        draws = torch.randn(2000, C, 3, generator=torch.Generator().manual_seed(C), dtype=torch.float64)
        assert min(ufm.mean_pairwise_cosine(v).item() for v in draws) >= -1 / (C - 1) - 1e-12
    with pytest.raises(ValueError, match="C ≥ 2"):
        ufm.mean_pairwise_cosine(torch.ones(1, 3))
    # five directions in the plane: the mean reaches the bound, the largest cosine only cos 72° (a pentagon)
    plane = ufm.cosine_search(5, 2, "largest", starts=2, steps=300)
    assert plane["mean"] == pytest.approx(-0.25, abs=1e-3)
    assert plane["largest"] == pytest.approx(math.cos(math.radians(72)), abs=1e-2)
    room = ufm.cosine_search(5, 4, "largest", starts=2, steps=300)  # p = C − 1: a simplex ETF
    assert room["largest"] == pytest.approx(-0.25, abs=1e-2)
    some_zero_sum = ufm.cosine_search(5, 4, "mean", starts=1, steps=300)
    assert some_zero_sum["mean"] == pytest.approx(-0.25, abs=1e-6) and some_zero_sum["largest"] > -0.2


def test_the_lambda_sweep_follows_the_closed_form_and_ends_at_the_trivial_optimum():
    sweep = ufm.lambda_sweep([3e-3, 3e-2, 0.3], steps=1500)
    converged = sweep.iloc[:2]
    assert (converged["w_norm"] / converged["w_norm_closed_form"]).sub(1).abs().max() < 1e-3
    assert (converged["h_norm"] / converged["h_norm_closed_form"]).sub(1).abs().max() < 1e-3
    assert converged["w_norm"].is_monotonic_decreasing and (converged["nc1"] < 1e-6).all()
    trivial = sweep.iloc[-1]  # κ = √10 · 0.3 ≥ 1/4: W = 0, H = 0, no class means to measure
    assert trivial["kappa"] >= 0.25 and trivial["w_norm"] < 1e-12 and math.isnan(trivial["nc1"])
    assert (sweep["C"] == 4).all() and (sweep["n"] == 10).all()


def test_the_imbalance_sweep_shows_the_minority_rows_merging():
    sweep = ufm.imbalance_sweep([1, 5, 40], steps=1500)
    assert sweep["ratio"].tolist() == [1, 5, 40]
    assert sweep["cos_minority_weights"].iloc[0] == pytest.approx(-1 / 3, abs=1e-2)
    assert sweep["cos_minority_weights"].is_monotonic_increasing
    assert sweep["cos_minority_weights"].iloc[-1] > 0.99 and sweep["minority_accuracy"].iloc[-1] < 0.5
    assert sweep["minority_accuracy"].iloc[0] == 1
