"""Tests of nclab.ood: every score formula against a direct computation, metrics against scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.preprocessing import StandardScaler

from nclab import ood, stats
from nclab.ood import (
    DETECTORS,
    MSP,
    NECO,
    Energy,
    Mahalanobis,
    MaxLogit,
    ViM,
    bootstrap_intervals,
    detection_metrics,
    roc_curve,
    threshold_at_tpr,
)


def gaussian_classes(n=600, p=8, C=5, seed=0, spread=3.0, noise=0.5, dtype=torch.float64):
    """Training features around C random class means, labels, a head (W, b) and test features."""
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(C, p, generator=g, dtype=dtype)
    y = torch.arange(n) % C
    h = means[y] + noise * torch.randn(n, p, generator=g, dtype=dtype)
    W, b = torch.randn(C, p, generator=g, dtype=dtype), torch.randn(C, generator=g, dtype=dtype)
    test = spread * torch.randn(50, p, generator=g, dtype=dtype)
    return h, y, W, b, test


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------


def test_identical_scores_give_auroc_one_half():
    scores = np.arange(20.0)
    m = detection_metrics(scores, scores)
    assert m["auroc"] == pytest.approx(0.5, abs=1e-12)
    assert detection_metrics(np.ones(7), np.ones(3))["auroc"] == pytest.approx(0.5, abs=1e-12)
    # 20 ID scores 0..19: keeping ⌈0.95·20⌉ = 19 needs τ = 1, which accepts OOD 1..19 = 19/20
    assert m["fpr95"] == pytest.approx(0.95)


def test_perfectly_separated_scores():
    m = detection_metrics(np.arange(10.0, 20.0), np.arange(10.0))
    expected = {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0, "fpr95_oodpos": 0.0}
    assert m == pytest.approx(expected, abs=1e-12)
    flipped = detection_metrics(np.arange(10.0), np.arange(10.0, 20.0))  # a flipped sign
    assert flipped["auroc"] == 0.0 and flipped["fpr95"] == 1.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tied", [True, False])
def test_auroc_and_aupr_match_scikit_learn(seed, tied):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 300, size=2)
    ind = rng.integers(0, 6, n) + (rng.random() < 0.5) if tied else rng.normal(1, 1, n)
    out = rng.integers(0, 6, m).astype(float) if tied else rng.normal(0, 1, m)
    y, s = np.r_[np.ones(n), np.zeros(m)], np.r_[ind, out]
    result = detection_metrics(torch.as_tensor(ind), out)
    assert abs(result["auroc"] - roc_auc_score(y, s)) <= 1e-9
    precision, recall, _ = precision_recall_curve(y, s)
    assert abs(result["aupr_in"] - auc(recall, precision)) <= 1e-9
    precision, recall, _ = precision_recall_curve(1 - y, -s)
    assert abs(result["aupr_out"] - auc(recall, precision)) <= 1e-9
    for ours, theirs in zip(roc_curve(ind, out), sk_roc_curve(y, s)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    # fpr95 is the OpenOOD/ViM reading of the full ROC curve: FPR at the first point with TPR ≥ 0.95
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    assert result["fpr95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-12)
    fpr, tpr, _ = sk_roc_curve(1 - y, -s, drop_intermediate=False)
    assert result["fpr95_oodpos"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-12)


def test_fpr95_by_hand():
    ind, out = np.arange(1.0, 21.0), np.array([0.0, 1.5, 2.0, 3.0])
    m = detection_metrics(ind, out)
    # keep 95 % of ID: ⌈0.95·20⌉ = 19 scores ≥ τ → τ = 2; OOD accepted (≥ 2): 2.0 and 3.0 → 2/4
    assert m["fpr95"] == 0.5
    # flag 95 % of OOD: ⌈0.95·4⌉ = 4 scores ≤ τ → τ = 3; ID rejected (≤ 3): 1, 2, 3 → 3/20
    assert m["fpr95_oodpos"] == pytest.approx(0.15)
    # ties: all 20 ID at 5 → τ = 5 keeps all of them and accepts the OOD 5 but not the 4 → 1/2;
    # the OOD [5, 4] are all flagged at τ = 5, which rejects all 20 ID → 1
    m = detection_metrics(np.full(20, 5.0), np.array([5.0, 4.0]))
    assert m["fpr95"] == 0.5 and m["fpr95_oodpos"] == 1.0
    # 10 ID 0..9: ⌈9.5⌉ = 10 must be kept → τ = 0; OOD [-1, 0, 0.5] accepted: 0 and 0.5 → 2/3
    assert detection_metrics(np.arange(10.0), np.array([-1.0, 0.0, 0.5]))["fpr95"] == pytest.approx(2 / 3)


def test_threshold_at_tpr_is_an_id_score_keeping_the_fraction():
    ind = torch.arange(1.0, 21.0)  # n = 20: ⌈0.95 · 20⌉ = 19 kept
    assert threshold_at_tpr(ind) == 2.0 and threshold_at_tpr(ind, 1.0) == 1.0 and threshold_at_tpr(ind, 0.5) == 11.0
    shuffled = torch.randperm(30, generator=torch.Generator().manual_seed(0)).double()  # ⌈28.5⌉ = 29 kept
    tau = threshold_at_tpr(shuffled)
    assert tau == 1.0 and (shuffled >= tau).sum() == 29
    assert tau != torch.quantile(shuffled, 0.05).item()  # not an interpolated quantile
    out = torch.tensor([0.0, 1, 2, 2, 3, 10, 25, -5, 1.5, 2.5, 1.97])
    assert detection_metrics(ind, out)["fpr95"] == pytest.approx((out >= threshold_at_tpr(ind)).double().mean().item())
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="tpr"):
            threshold_at_tpr(ind, bad)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="ood_scores"):
        detection_metrics([1.0, 2.0], [])
    with pytest.raises(ValueError, match="id_scores"):
        detection_metrics(np.array([]), [1.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        detection_metrics([1.0, float("nan")], [0.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        roc_curve([1.0], [float("inf")])
    with pytest.raises(ValueError, match="1-D"):
        detection_metrics(np.ones((2, 2)), [0.0])


# ---------------------------------------------------------------------------------------------------
# Bootstrap intervals
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_bootstrap_intervals_contain_the_point_estimates(seed):
    rng = np.random.default_rng(seed)
    ind, out = rng.normal(1, 1, 300), rng.normal(0, 1.5, 200)
    m = detection_metrics(ind, out, n_bootstrap=200, seed=seed)
    assert m["auroc_lo"] <= m["auroc"] <= m["auroc_hi"] and m["auroc_lo"] < m["auroc_hi"]
    assert m["fpr95_lo"] <= m["fpr95"] <= m["fpr95_hi"] and m["fpr95_lo"] < m["fpr95_hi"]
    without = detection_metrics(ind, out)  # the point estimates do not depend on the bootstrap
    assert {k: m[k] for k in without} == without
    assert set(m) - set(without) == {"auroc_lo", "auroc_hi", "fpr95_lo", "fpr95_hi"}
    y, s = np.r_[np.ones(len(ind)), np.zeros(len(out))], np.r_[ind, out]
    assert abs(m["auroc"] - roc_auc_score(y, s)) <= 1e-12


def test_bootstrap_of_identical_sets_contains_one_half():
    scores = np.random.default_rng(0).normal(size=400)
    m = detection_metrics(scores, scores.copy(), n_bootstrap=500, seed=0)
    assert m["auroc"] == pytest.approx(0.5) and m["auroc_lo"] < 0.5 < m["auroc_hi"]
    assert m["fpr95_lo"] <= 0.95 <= m["fpr95_hi"]  # the same scores: 95 % of the OOD kept too
    tied = bootstrap_intervals(np.ones(30), np.ones(20), 100)  # every score tied: every resample gives 0.5
    assert tied["auroc_lo"] == tied["auroc_hi"] == 0.5


def test_bootstrap_of_perfectly_separated_sets_is_a_point():
    m = detection_metrics(np.arange(10.0, 60.0), np.arange(40.0) - 50, n_bootstrap=300, seed=1)
    assert (m["auroc_lo"], m["auroc"], m["auroc_hi"]) == (1.0, 1.0, 1.0)
    assert (m["fpr95_lo"], m["fpr95"], m["fpr95_hi"]) == (0.0, 0.0, 0.0)


def test_bootstrap_intervals_shrink_with_more_samples():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 400, 1600):
        m = bootstrap_intervals(rng.normal(1, 1, n), rng.normal(0, 1, n), 400, seed=0)
        widths.append((m["auroc_hi"] - m["auroc_lo"], m["fpr95_hi"] - m["fpr95_lo"]))
    for (auroc_wide, fpr_wide), (auroc_narrow, fpr_narrow) in zip(widths, widths[1:]):  # 4× the samples:
        assert auroc_narrow < 0.7 * auroc_wide and fpr_narrow < 0.9 * fpr_wide  # about 1/√4 = 0.5 narrower
    assert widths[-1][0] < 0.4 * widths[0][0] and widths[-1][1] < 0.6 * widths[0][1]  # 16×: about 1/4


def test_bootstrap_width_matches_the_hanley_mcneil_standard_error():
    rng = np.random.default_rng(3)
    n = m = 500
    ind, out = rng.normal(1, 1, n), rng.normal(0, 1, m)
    result = bootstrap_intervals(ind, out, 2_000, seed=0)
    A = detection_metrics(ind, out)["auroc"]
    Q1, Q2 = A / (2 - A), 2 * A**2 / (1 + A)
    se = math.sqrt((A * (1 - A) + (n - 1) * (Q1 - A**2) + (m - 1) * (Q2 - A**2)) / (n * m))  # Hanley & McNeil 1982
    assert result["auroc_hi"] - result["auroc_lo"] == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(0)
    ind, out = rng.normal(1, 1, 200), rng.normal(0, 1, 150)
    assert bootstrap_intervals(ind, out, 100, seed=7) == bootstrap_intervals(torch.as_tensor(ind), out, 100, seed=7)
    assert bootstrap_intervals(ind, out, 100, seed=7) != bootstrap_intervals(ind, out, 100, seed=8)
    big = np.random.default_rng(1).normal(size=300_000)  # several blocks of resamples (bounded memory)
    assert bootstrap_intervals(big, out, 30, seed=2) == bootstrap_intervals(big, out, 30, seed=2)


@pytest.mark.parametrize("tied", [False, True])
def test_every_resample_metric_equals_the_metric_of_the_resample_itself(tied):
    """The vectorised AUROC and FPR@95 of count-weighted samples equal scikit-learn's weighted AUROC and
    detection_metrics on the resample written out (each score repeated by its count)."""
    rng = np.random.default_rng(5)
    n, m = 60, 45
    ind = rng.integers(0, 6, n).astype(float) if tied else rng.normal(1, 1, n)
    out = rng.integers(0, 6, m).astype(float) if tied else rng.normal(0, 1, m)
    x, y = np.sort(ind), np.sort(out)
    w, v = ood.metrics.resample_counts(n, 40, rng), ood.metrics.resample_counts(m, 40, rng)
    assert (w.sum(1) == n).all() and (v.sum(1) == m).all()
    auroc, fpr95 = ood.metrics._weighted_auroc(x, y, w, v), ood.metrics._weighted_fpr95(x, y, w, v)
    labels = np.r_[np.ones(n), np.zeros(m)]
    for b in range(len(w)):
        weighted = roc_auc_score(labels, np.r_[x, y], sample_weight=np.r_[w[b], v[b]])
        written_out = detection_metrics(np.repeat(x, w[b]), np.repeat(y, v[b]))
        assert auroc[b] == pytest.approx(weighted, abs=1e-12) and auroc[b] == pytest.approx(written_out["auroc"])
        assert fpr95[b] == pytest.approx(written_out["fpr95"], abs=1e-12)


def test_bootstrap_input_errors():
    with pytest.raises(ValueError, match="integer ≥ 1"):
        bootstrap_intervals([1.0, 2.0], [0.0], 0)
    with pytest.raises(ValueError, match="integer ≥ 1"):
        detection_metrics([1.0, 2.0], [0.0], n_bootstrap=-3)
    with pytest.raises(ValueError, match="coverage"):
        bootstrap_intervals([1.0, 2.0], [0.0], 10, level=95)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_intervals([1.0, float("nan")], [0.0], 10)


# ---------------------------------------------------------------------------------------------------
# Score formulas against direct computations
# ---------------------------------------------------------------------------------------------------


def test_logit_scores_match_their_formulas():
    h, y, W, b, test = gaussian_classes()
    logits = test @ W.T + b
    torch.testing.assert_close(MSP().fit(h, y, W, b).score(test), torch.softmax(logits, 1).max(1).values)
    torch.testing.assert_close(MaxLogit().fit(h, y, W, b).score(test), logits.max(1).values)
    torch.testing.assert_close(Energy().fit(h, y, W, b).score(test), torch.logsumexp(logits, 1))
    torch.testing.assert_close(
        Energy(temperature=2.5).fit(h, None, W, b).score(test), 2.5 * torch.logsumexp(logits / 2.5, 1)
    )
    torch.testing.assert_close(MaxLogit().fit(h, weight=W).score(test), (test @ W.T).max(1).values)


def test_mahalanobis_recovers_known_gaussians_and_matches_the_naive_distance():
    g = torch.Generator().manual_seed(1)
    p, C, n = 4, 3, 30_000
    mu = torch.tensor([[0.0, 0, 0, 0], [4, 0, 0, 0], [0, 4, 1, 0]], dtype=torch.float64)
    A = torch.randn(p, p, generator=g, dtype=torch.float64)
    Sigma = A @ A.T / p + 0.1 * torch.eye(p, dtype=torch.float64)  # true shared covariance
    y = torch.randint(C, (n,), generator=g)
    h = mu[y] + torch.randn(n, p, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(Sigma).T
    det = Mahalanobis().fit(h, y)
    torch.testing.assert_close(det.means_, mu, atol=0.05, rtol=0)
    torch.testing.assert_close(det.covariance_, Sigma, atol=0.05, rtol=0)  # within-class, not total
    test = 3 * torch.randn(40, p, generator=g, dtype=torch.float64)
    P = torch.linalg.pinv(det.covariance_)
    naive = torch.stack([((test - m) @ P * (test - m)).sum(1) for m in det.means_], 1)  # (M, C)
    torch.testing.assert_close(det.score(test), -naive.min(1).values)
    assert det.score(det.means_)[1] == pytest.approx(0.0, abs=1e-9)  # a class mean: distance 0


def test_mahalanobis_pools_within_class_scatter_over_N_and_uses_the_labels_given():
    h = torch.tensor([[0.0, 0], [2, 0], [10, 1], [10, 3]], dtype=torch.float64)
    y = np.array([7, 7, 3, 3])  # any integer labels
    det = Mahalanobis().fit(h, y)
    assert det.classes_.tolist() == [3, 7]
    torch.testing.assert_close(det.means_, torch.tensor([[10.0, 2], [1, 0]], dtype=torch.float64))
    # deviations (−1, 0), (1, 0), (0, −1), (0, 1): scatter diag(2, 2), divided by N = 4
    torch.testing.assert_close(det.covariance_, 0.5 * torch.eye(2, dtype=torch.float64))
    assert det.score(torch.tensor([[1.0, 1]]))[0].item() == pytest.approx(-2.0)  # (0,1)·2·(0,1)


def test_mahalanobis_pseudo_inverse_drops_the_null_space():
    g = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(6, 3, generator=g, dtype=torch.float64)).Q  # 3 of 6 dims
    y = torch.arange(200) % 4
    z = torch.randn(4, 3, generator=g, dtype=torch.float64)[y] + torch.randn(200, 3, generator=g, dtype=torch.float64)
    det = Mahalanobis().fit(z @ basis.T, y)
    # the 3 null directions carry float64 rounding noise only (≈ ε λ_max): inverting it would blow the score up
    assert torch.linalg.matrix_rank(det.precision_, rtol=1e-10).item() == 3
    torch.testing.assert_close(det.precision_, torch.linalg.pinv(det.covariance_, hermitian=True))


def test_mahalanobis_keeps_a_spectrum_of_seven_decades_as_the_reference_does():
    """Lee et al. and OpenOOD use scikit-learn's EmpiricalCovariance, whose pinvh drops |λ| ≤ p·ε₆₄·max|λ|.

    Within-class variances from 1 down to 1e-7, OOD shifted by 10 standard deviations along the 8 smallest
    directions: the reference keeps all 64 directions and separates perfectly; a float32 cut-off
    (p·ε₃₂ = 7.6e-6) keeps rank 46: it drops the 8 directions that matter, and detects nothing.
    """
    from sklearn.covariance import EmpiricalCovariance

    g = torch.Generator().manual_seed(7)
    p, C = 64, 4
    Q = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64)).Q  # a random rotation
    scales = torch.logspace(0, -3.5, p, dtype=torch.float64)  # variances 1 … 1e-7
    means = 3 * torch.randn(C, p, generator=g, dtype=torch.float64)

    def sample(n, shift=0.0):
        y = torch.arange(n) % C
        z = torch.randn(n, p, generator=g, dtype=torch.float64)
        z[:, -8:] += shift  # in standard deviations
        return (means[y] + (z * scales) @ Q.T).float(), y  # float32, as extracted

    (h, y), (ind, _), (ood, _) = sample(4_000), sample(1_000), sample(1_000, shift=10.0)
    det = Mahalanobis().fit(h, y)
    assert torch.linalg.matrix_rank(det.precision_, hermitian=True, rtol=1e-12).item() == p
    reference = EmpiricalCovariance().fit((h.double() - det.means_[y]).numpy()).precision_
    assert np.linalg.norm(det.precision_.numpy() - reference) / np.linalg.norm(reference) < 1e-6
    naive = np.stack(
        [
            -np.einsum("ij,jk,ik->i", x - mu, reference, x - mu)
            for mu in det.means_.numpy()
            for x in [ood.double().numpy()]
        ]
    ).max(0)
    torch.testing.assert_close(det.score(ood).double(), torch.as_tensor(naive), rtol=1e-5, atol=1e-3)
    assert detection_metrics(det.score(ind), det.score(ood))["auroc"] == 1.0
    coarse = stats.pinv_psd(det.covariance_, rtol=p * torch.finfo(torch.float32).eps)  # the old cut-off
    assert torch.linalg.matrix_rank(coarse, hermitian=True, rtol=1e-12).item() == 46
    det.precision_ = coarse
    assert detection_metrics(det.score(ind), det.score(ood))["auroc"] < 0.6


@pytest.mark.parametrize("C, p", [(4, 8), (6, 6)])
def test_vim_origin_zeroes_every_logit_when_W_has_full_row_rank(C, p):
    h, y, W, b, _ = gaussian_classes(p=p, C=C)
    det = ViM(dim=p // 2).fit(h, y, W, b)
    torch.testing.assert_close(W @ det.origin_ + b, torch.zeros(C, dtype=torch.float64))


def test_vim_origin_is_the_least_squares_solution_when_C_exceeds_p():
    h, y, W, b, _ = gaussian_classes(p=4, C=10)  # W o + b = 0 has no exact solution here
    det = ViM(dim=2).fit(h, y, W, b)
    torch.testing.assert_close(det.origin_, torch.linalg.lstsq(W, -b[:, None]).solution[:, 0])
    torch.testing.assert_close(W.T @ (W @ det.origin_ + b), torch.zeros(4, dtype=torch.float64))


def test_vim_residual_basis_and_score_match_their_definitions():
    h, y, W, b, test = gaussian_classes(p=8, C=5)
    det = ViM(dim=3).fit(h, y, W, b)
    x = h - det.origin_
    lam, V = torch.linalg.eigh(x.T @ x / len(h))  # uncentred about o, divided by N
    R, top = det.residual_basis_, V[:, -3:]
    assert R.shape == (8, 5)
    torch.testing.assert_close(R.T @ R, torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(R.T @ top, torch.zeros(5, 3, dtype=torch.float64))  # ⊥ top-dim subspace
    alpha = (h @ W.T + b).max(1).values.mean() / (x @ R).norm(dim=1).mean()
    assert det.alpha_ == pytest.approx(alpha.item())
    expected = torch.logsumexp(test @ W.T + b, 1) - alpha * ((test - det.origin_) @ R).norm(dim=1)
    torch.testing.assert_close(det.score(test), expected)
    assert ViM().fit(h, y, W, b).residual_basis_.shape == (8, 4)  # default dim p // 2


def test_neco_matches_the_authors_scaler_and_pca_pipeline():
    h, y, W, b, test = gaussian_classes(p=8, C=5)
    det = NECO().fit(h, y, W, b)
    assert det.dim_ == 4  # default C − 1
    scaler = StandardScaler().fit(h.numpy())
    pca = PCA(n_components=4).fit(scaler.transform(h.numpy()))
    s = scaler.transform(test.numpy())
    expected = np.linalg.norm(pca.transform(s), axis=1) / np.linalg.norm(s, axis=1)
    np.testing.assert_allclose(det.score(test).numpy(), expected, rtol=1e-7)
    np.testing.assert_allclose(det.std_.numpy(), h.numpy().std(0))  # population std
    maxlogit = (test @ W.T + b).max(1).values
    torch.testing.assert_close(NECO(times_maxlogit=True).fit(h, y, W, b).score(test), det.score(test) * maxlogit)


def test_neco_is_one_inside_the_principal_subspace_and_smaller_outside():
    h, y, W, b, test = gaussian_classes(p=8, C=5)
    det = NECO(dim=3).fit(h, y)  # dim given: no head needed
    scores = det.score(test)
    assert ((scores >= 0) & (scores <= 1)).all()
    inside = det.mean_ + det.std_ * (2 * det.components_[0] - det.components_[2])  # s in span P_d
    lam, V = torch.linalg.eigh(torch.cov(((h - det.mean_) / det.std_).T, correction=0))
    outside = det.mean_ + det.std_ * V[:, 0]  # s = the least principal axis ⊥ P_d
    assert det.score(inside[None])[0].item() == pytest.approx(1.0)
    assert det.score(outside[None])[0].item() == pytest.approx(0.0, abs=1e-6)
    raw = NECO(dim=3, standardize=False).fit(h, y)  # s = h, axes of the covariance of h
    _, V = torch.linalg.eigh(torch.cov(h.T, correction=0))
    torch.testing.assert_close(raw.score(test), (test @ V[:, -3:]).norm(dim=1) / test.norm(dim=1))
    assert NECO(dim=2).fit(h).dim_ == 2 and NECO().fit(h, y).dim_ == 4  # C from the labels


# ---------------------------------------------------------------------------------------------------
# One API for every detector
# ---------------------------------------------------------------------------------------------------


def test_detector_registry():
    assert list(DETECTORS) == ["msp", "maxlogit", "energy", "mahalanobis", "vim", "neco"]
    assert DETECTORS["vim"] is ViM and DETECTORS["neco"] is NECO


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_has_the_same_fit_and_score(name):
    h, y, W, b, test = gaussian_classes(dtype=torch.float32)
    det = DETECTORS[name]()
    assert det.fit(h, y, W, b) is det
    scores = det.score(test)
    assert scores.shape == (50,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert det.n_features_ == 8 and "(" in repr(det)
    # numpy in, same scores out
    scores_np = DETECTORS[name]().fit(h.numpy(), y.numpy(), W.numpy(), b.numpy()).score(test.numpy())
    torch.testing.assert_close(scores_np, scores)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_score_before_fit_says_to_call_fit(name):
    with pytest.raises(RuntimeError, match=r"not fitted yet: call \.fit\("):
        DETECTORS[name]().score(torch.zeros(3, 8))


@pytest.mark.parametrize("name", list(DETECTORS))
def test_bad_features_raise(name):
    h, y, W, b, test = gaussian_classes()
    with pytest.raises(ValueError, match="p = 7"):
        DETECTORS[name]().fit(h[:, :7], y, W, b)  # p ≠ the weight's p
    det = DETECTORS[name]().fit(h, y, W, b)
    with pytest.raises(ValueError, match="p = 7"):
        det.score(test[:, :7])
    bad = test.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="features contains NaN or inf"):
        det.score(bad)
    bad[3, 2] = float("inf")
    with pytest.raises(ValueError, match="train_features contains NaN or inf"):
        DETECTORS[name]().fit(torch.cat([h, bad]), torch.cat([y, y[:50]]), W, b)
    with pytest.raises(ValueError, match="bias must have shape"):
        DETECTORS[name]().fit(h, y, W, b[:-1])
    with pytest.raises(ValueError, match="2-D"):
        det.score(test[0])


def test_missing_inputs_raise():
    h, y, W, b, _ = gaussian_classes()
    for detector in (MSP(), MaxLogit(), Energy(), ViM(), NECO(times_maxlogit=True)):
        with pytest.raises(ValueError, match="needs weight"):
            detector.fit(h, y)
    with pytest.raises(ValueError, match="needs train_labels"):
        Mahalanobis().fit(h, None, W, b)
    with pytest.raises(ValueError, match="default dim is C − 1"):
        NECO().fit(h)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        MSP().fit(h, y, W[0])
    with pytest.raises(ValueError, match="rows but train_labels have"):
        Mahalanobis().fit(h, y[:-1])
    with pytest.raises(ValueError, match="train_labels must be a 1-D array of integer class indices"):
        Mahalanobis().fit(h, y.double())
    with pytest.raises(ValueError, match="negative label -1"):
        Mahalanobis().fit(h, y - 1)


def test_a_failed_or_repeated_fit_leaves_no_stale_state():
    h, y, W, b, test = gaussian_classes(p=8, C=5)
    det = ViM(dim=3).fit(h, y, W, b)
    with pytest.raises(ValueError):
        det.fit(h[:, :7], y, W[:, :7], b[:2])  # bad bias: the old fit is gone too
    with pytest.raises(RuntimeError, match="not fitted"):
        det.score(test)
    det = NECO(dim=2).fit(h, y, W, b)
    assert hasattr(det, "weight_") and not hasattr(det.fit(h, y), "weight_")


def test_out_of_range_hyperparameters_raise():
    h, y, W, b, _ = gaussian_classes(p=8, C=5)
    for dim in (8, 9):
        with pytest.raises(ValueError, match="1 ≤ dim < p = 8"):
            ViM(dim=dim).fit(h, y, W, b)
    with pytest.raises(ValueError, match="1 ≤ dim ≤ p = 8"):
        NECO(dim=9).fit(h, y, W, b)
    assert NECO(dim=8).fit(h, y, W, b).dim_ == 8
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="ViM dim"):
            ViM(dim=bad)
        with pytest.raises(ValueError, match="NECO dim"):
            NECO(dim=bad)
    for T in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            Energy(temperature=T)
    with pytest.raises(ValueError, match="1 ≤ dim ≤ p = 3"):  # default C − 1 = 4 > p
        NECO().fit(h[:, :3], y, W[:, :3], b)


# ---------------------------------------------------------------------------------------------------
# A learning-free end-to-end check
# ---------------------------------------------------------------------------------------------------


def test_every_detector_separates_far_ood():
    g = torch.Generator().manual_seed(3)
    C, p, n = 10, 32, 2000
    means = 3 * torch.randn(C, p, generator=g)
    y = torch.arange(n) % C
    train = means[y] + 0.3 * torch.randn(n, p, generator=g)
    test_id = means[torch.arange(500) % C] + 0.3 * torch.randn(500, p, generator=g)
    test_ood = 3 * torch.randn(500, p, generator=g)  # far from every class mean
    W, b = means / means.norm(dim=1, keepdim=True), torch.zeros(C)
    for name, Detector in DETECTORS.items():  # a flipped sign would give AUROC ≈ 0
        det = Detector().fit(train, y, W, b)
        result = detection_metrics(det.score(test_id), det.score(test_ood))
        assert result["auroc"] > 0.9 and result["fpr95"] < 0.5, (name, result)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", list(DETECTORS))
def test_gpu_scores_match_cpu(name):
    h, y, W, b, test = gaussian_classes()
    cpu = DETECTORS[name]().fit(h, y, W, b).score(test)
    det = DETECTORS[name]().fit(h.cuda(), y.cuda(), W, b)  # the head follows the features' device
    gpu = det.score(test.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu)
    assert math.isfinite(detection_metrics(gpu, cpu)["auroc"])
