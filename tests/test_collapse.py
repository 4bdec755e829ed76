"""Tests of nclab.collapse against hand-computed numbers and naive per-class loops (SPEC §1, §9)."""

import math

import numpy as np
import pytest
import torch

from nclab.collapse import (
    between_class_covariance,
    centred_means,
    class_means,
    gram_of_means,
    nc1_as_written,
    nc4_as_written,
    nc5,
    nc_metrics,
    per_class_variability,
    within_class_covariance,
)
from nclab.etf import simplex_etf

NC_KEYS = {"nc1", "nc1_trace_ratio", "nc2_equinorm_means", "nc2_equiangular_means", "nc2_maxangle_means"}
WEIGHT_KEYS = {
    "nc2_equinorm_weights",
    "nc2_equiangular_weights",
    "nc2_maxangle_weights",
    "nc2_etf_distance",
    "nc3",
    "nc4_ncc_mismatch",
}


def f64(values):
    return torch.tensor(values, dtype=torch.float64)


def etf_features(C=5, p=8, per_class=4, dtype=torch.float64):
    """Every sample sits exactly on its class's simplex-ETF vertex."""
    E = simplex_etf(C, p)  # (C, p), rows = vertices
    labels = torch.arange(C).repeat(per_class)
    return E[labels].to(dtype), labels, E


def random_features(C=6, p=10, seed=0, dtype=torch.float64):
    """Imbalanced classes (N_c = 3 + 2c) around random means, with random within-class spread."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((3 + 2 * c,), c) for c in range(C)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    centres = 3 * torch.randn(C, p, generator=g, dtype=torch.float64)
    features = centres[labels] + torch.randn(len(labels), p, generator=g, dtype=torch.float64)
    return features.to(dtype), labels


def naive_pieces(features, labels):
    """Σ_W, Σ_B, μ_c straight from the SPEC formulas with a loop over classes (numpy float64)."""
    H, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    C, (N, p) = int(y.max()) + 1, H.shape
    mu = np.stack([H[y == c].mean(axis=0) for c in range(C)])
    Sigma_W = np.zeros((p, p))
    for c in range(C):
        Z = H[y == c] - mu[c]
        Sigma_W += Z.T @ Z
    Sigma_W /= N
    M = (mu - mu.mean(axis=0)).T
    return Sigma_W, M @ M.T / C, mu


def naive_nc1(Sigma_W, Sigma_B, C):
    lam, V = np.linalg.eigh(Sigma_B)
    lam, V = lam[-(C - 1) :], V[:, -(C - 1) :]  # top C−1 eigenpairs
    return np.trace(Sigma_W @ V @ np.diag(1 / lam) @ V.T) / C


# ---- a perfect simplex ETF: every metric at its ideal 0 -------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p", [8, 4])  # p = C − 1 = 4: the tightest fit
def test_features_on_a_simplex_etf_are_fully_collapsed(dtype, p):
    H, y, E = etf_features(C=5, p=p, dtype=dtype)
    out = nc_metrics(H, y, weight=E.to(dtype))  # W = Mᵀ: rows = centred means
    assert set(out) == NC_KEYS | WEIGHT_KEYS and all(type(v) is float for v in out.values())
    for key, value in out.items():
        assert value == pytest.approx(0, abs=1e-6), key


def test_without_weight_only_the_feature_keys():
    H, y, _ = etf_features()
    assert set(nc_metrics(H, y)) == NC_KEYS


def test_nc4_follows_the_bias_on_shifted_noisy_etf():
    # Class c's samples: vertex e_c + shift a ± 0.1 u_j (symmetric noise, so μ_c = e_c + a exactly and the
    # centred means are the ETF rows: equinorm). W = centred means.
    C, p = 5, 8
    E = simplex_etf(C, p)
    U = 0.1 * torch.eye(p, dtype=torch.float64)[:3]  # three noise directions
    noise = torch.cat([U, -U])  # (6, p), zero mean
    a = 3 * E[0]  # global shift towards class 0
    H = (E[:, None, :] + a + noise[None]).reshape(-1, p)  # (C·6, p)
    y = torch.arange(C).repeat_interleave(len(noise))
    means, _ = class_means(H, y)
    M, mu_G = centred_means(means)
    W = M.T  # (C, p)
    # b = −W μ_G: l_c = (μ_c − μ_G)ᵀ(h − μ_G), the NCC rule for equinorm centred means → no mismatch.
    out = nc_metrics(H, y, weight=W, bias=-W @ mu_G)
    assert out["nc4_ncc_mismatch"] == pytest.approx(0, abs=1e-12)
    assert out["nc3"] == pytest.approx(0, abs=1e-12)
    assert out["nc2_etf_distance"] == pytest.approx(0, abs=1e-12)
    # b = 0: l_c = e_cᵀ(e_y + 3 e_0 + noise). For y ≠ 0, class 0 scores −1/4 + 3 = 2.75 against
    # 1 − 3/4 = 0.25 for class y (± 0.1·|noise|): every sample of classes 1..4 is misread → 4/5.
    # The NCC rule ignores the shift, so the mismatch is 4/5.
    assert nc_metrics(H, y, weight=W)["nc4_ncc_mismatch"] == pytest.approx(4 / 5)


# ---- a hand-built 3-class case in R² --------------------------------------------------------------------


def hand_case():
    # class 0: (1,0), (3,0)      → μ_0 = (2, 0),  deviations (∓1, 0)
    # class 1: (0,.5), (0,3.5)   → μ_1 = (0, 2),  deviations (0, ∓1.5)
    # class 2: (−1,−2), (−3,−2)  → μ_2 = (−2,−2), deviations (±1, 0)
    H = torch.tensor([[1, 0], [3, 0], [0, 0.5], [0, 3.5], [-1, -2], [-3, -2]], dtype=torch.float64)
    return H, torch.tensor([0, 0, 1, 1, 2, 2])


def test_hand_built_case_pieces():
    H, y = hand_case()
    means, counts = class_means(H, y)
    assert means.tolist() == [[2, 0], [0, 2], [-2, -2]] and counts.tolist() == [2, 2, 2]
    M, mu_G = centred_means(means)  # μ_G = 0, so M = μᵀ
    assert mu_G.tolist() == [0, 0] and M.tolist() == [[2, 0, -2], [0, 2, -2]]
    # Σ_B = (1/3)[(4,0;0,0) + (0,0;0,4) + (4,4;4,4)] = (1/3)(8,4;4,8)
    assert torch.allclose(between_class_covariance(means), f64([[8, 4], [4, 8]]) / 3)
    # Σ_W = (1/6)[(1+1+1+1, 0; 0, 2.25+2.25)] = (2/3, 0; 0, 3/4)
    assert torch.allclose(within_class_covariance(H, y, means), f64([[2 / 3, 0], [0, 3 / 4]]))
    # Tr Σ_W,c = mean squared distance to μ_c = 1, 2.25, 1; Tr Σ_B = 16/3
    assert torch.allclose(per_class_variability(H, y, means), f64([3 / 16, 27 / 64, 3 / 16]))
    # cosines of (2,0), (0,2), (−2,−2): 0, −1/√2, −1/√2
    a = -1 / math.sqrt(2)
    assert torch.allclose(gram_of_means(means), f64([[1, 0, a], [0, 1, a], [a, a, 1]]))


def test_hand_built_case_metrics():
    H, y = hand_case()
    W = torch.tensor([[1.0, 0], [0, 1], [-1, 0]], dtype=torch.float64)
    out = nc_metrics(H, y, weight=W)
    # Σ_B⁻¹ = (1/4)(2,−1;−1,2) (rank 2 = C−1 = p); Tr(Σ_W Σ_B⁻¹) = (1/4)(2·2/3 + 2·3/4) = 17/24; /C = 17/72
    assert out["nc1"] == pytest.approx(17 / 72, rel=1e-12)
    # Tr Σ_W / Tr Σ_B = (17/12) / (16/3) = 17/64
    assert out["nc1_trace_ratio"] == pytest.approx(17 / 64, rel=1e-12)
    # norms 2, 2, 2√2: std = (2√2 − 2)/√3, mean = (4 + 2√2)/3
    std, mean = (2 * math.sqrt(2) - 2) / math.sqrt(3), (4 + 2 * math.sqrt(2)) / 3
    assert out["nc2_equinorm_means"] == pytest.approx(std / mean)
    # cosines 0, −1/√2, −1/√2: unbiased std = 1/√6; mean |cos + 1/2| = (1/2 + 2(1/√2 − 1/2))/3 = (√2 − 1/2)/3
    assert out["nc2_equiangular_means"] == pytest.approx(1 / math.sqrt(6))
    assert out["nc2_maxangle_means"] == pytest.approx((math.sqrt(2) - 0.5) / 3)
    # weights: norms 1,1,1; cosines 0, −1, 0 → std 1/√3; |cos + 1/2| = 1/2 each
    assert out["nc2_equinorm_weights"] == pytest.approx(0, abs=1e-12)
    assert out["nc2_equiangular_weights"] == pytest.approx(1 / math.sqrt(3))
    assert out["nc2_maxangle_weights"] == pytest.approx(0.5)
    # W Wᵀ = (1,0,−1; 0,1,0; −1,0,1), ‖·‖_F = √5; target (I − 11ᵀ/3)/√2: 2/(3√2) on, −1/(3√2) off
    d2 = (
        3 * (1 / math.sqrt(5) - 2 / (3 * math.sqrt(2))) ** 2
        + 4 * (1 / (3 * math.sqrt(2))) ** 2
        + 2 * (-1 / math.sqrt(5) + 1 / (3 * math.sqrt(2))) ** 2
    )
    assert out["nc2_etf_distance"] == pytest.approx(math.sqrt(d2))
    # ‖W‖_F = √3, ‖M‖_F = 4: ‖Wᵀ/√3 − M/4‖² = 3(1/√3 − 1/2)² + (1/2)² = 2 − √3
    assert out["nc3"] == pytest.approx(2 - math.sqrt(3))
    # b = 0: every argmax logit is the nearest class mean; b = (0, 0, −2.5): (−1,−2) gets logits
    # (−1, −2, −1.5) → class 0, its nearest mean is μ_2 → 1 mismatch in 6
    assert out["nc4_ncc_mismatch"] == 0
    bias = torch.tensor([0, 0, -2.5])
    assert nc_metrics(H, y, weight=W, bias=bias)["nc4_ncc_mismatch"] == pytest.approx(1 / 6)


# ---- invariances and naive references -------------------------------------------------------------------


def test_nc1_invariant_to_global_shift_and_scale():
    H, y = random_features()
    shift = 100 * torch.randn(H.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    base = nc_metrics(H, y)
    moved = nc_metrics(3.7 * H + shift, y)
    for key in ("nc1", "nc1_trace_ratio", "nc2_equinorm_means", "nc2_equiangular_means"):
        assert moved[key] == pytest.approx(base[key], rel=1e-9), key


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_covariances_and_nc1_match_a_naive_loop(dtype):
    H, y = random_features(dtype=dtype)
    Sigma_W_ref, Sigma_B_ref, mu_ref = naive_pieces(H, y)
    means, counts = class_means(H, y)
    assert np.allclose(means.numpy(), mu_ref, rtol=1e-12, atol=0)
    assert counts.tolist() == [3 + 2 * c for c in range(6)]
    Sigma_W = within_class_covariance(H, y, means).numpy()
    Sigma_B = between_class_covariance(means).numpy()
    assert np.linalg.norm(Sigma_W - Sigma_W_ref) <= 1e-8 * np.linalg.norm(Sigma_W_ref)
    assert np.linalg.norm(Sigma_B - Sigma_B_ref) <= 1e-8 * np.linalg.norm(Sigma_B_ref)
    out = nc_metrics(H, y)
    rel = 1e-8 if dtype == torch.float64 else 1e-5  # float32 path: float32 products
    assert out["nc1"] == pytest.approx(naive_nc1(Sigma_W_ref, Sigma_B_ref, 6), rel=rel)
    assert out["nc1_trace_ratio"] == pytest.approx(np.trace(Sigma_W_ref) / np.trace(Sigma_B_ref), rel=rel)


def test_per_class_variability_matches_loop_and_adds_up_to_trace_ratio():
    H, y = random_features()
    means, counts = class_means(H, y)
    v = per_class_variability(H, y, means)
    _, Sigma_B_ref, mu = naive_pieces(H, y)
    expected = [((H[y == c] - means[c]) ** 2).sum(dim=1).mean().item() / np.trace(Sigma_B_ref) for c in range(6)]
    assert np.allclose(v.numpy(), expected, rtol=1e-10)
    assert (v * counts / len(y)).sum().item() == pytest.approx(nc_metrics(H, y)["nc1_trace_ratio"], rel=1e-10)


def test_nc1_keeps_only_the_top_c_minus_1_eigenpairs():
    # The hand case lifted to R³ with z = ±1 inside every class (means keep z = 0), then rotated at random:
    # Σ_B has rank 2 and a third eigenvalue that is zero only up to rounding (≈ 1e-16).
    H2, y = hand_case()
    z = torch.tensor([1.0, -1, 1, -1, 1, -1], dtype=torch.float64)[:, None]
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    H = torch.cat([H2, z], dim=1) @ Q.T
    Sigma_W, Sigma_B, _ = naive_pieces(H, y)
    lam, V = np.linalg.eigh(Sigma_B)
    with np.errstate(divide="ignore"):
        nc1_all_eigenpairs = np.trace(Sigma_W @ V @ np.diag(1 / lam) @ V.T) / 3  # the SPEC §9 pitfall
    assert abs(nc1_all_eigenpairs) > 1e6
    out = nc_metrics(H, y)
    assert out["nc1"] == pytest.approx(17 / 72, rel=1e-9)  # z-spread is outside span(M)
    assert out["nc1_trace_ratio"] == pytest.approx((17 / 12 + 1) / (16 / 3), rel=1e-9)


def test_nc1_drops_eigenvalues_that_are_zero_when_two_class_means_coincide():
    # class 0: (1, ±1) → μ_0 = (1, 0); class 1: (1, ±2) → μ_1 = (1, 0); class 2: (−2 ± 1, 0) → μ_2 = (−2, 0).
    # μ_G = 0, Σ_B = diag(1 + 1 + 4, 0)/3 = diag(2, 0): rank 1 < C − 1, Σ_B† = diag(1/2, 0).
    # Σ_W = diag(1 + 1, 1 + 1 + 4 + 4)/6 = diag(1/3, 5/3); Tr(Σ_W Σ_B†) = 1/6; nc1 = 1/18.
    H = torch.tensor([[1.0, 1], [1, -1], [1, 2], [1, -2], [-1, 0], [-3, 0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    Q, _ = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    out = nc_metrics(H @ Q.T, y)  # rotated: the zero is only ≈ 0
    assert out["nc1"] == pytest.approx(1 / 18, rel=1e-9)
    assert out["nc1_trace_ratio"] == pytest.approx(2 / 2, rel=1e-9)  # Tr Σ_W = 2, Tr Σ_B = 2


@pytest.mark.parametrize("offset", [0, 20, 200])
def test_float32_features_with_a_large_offset_stay_accurate(offset):
    # post-ReLU-like features: a common offset up to 200× the largest coordinate (float32 centres before
    # it multiplies; multiplying first would lose ~4 digits at offset 200)
    H, y = random_features(C=10, p=64)
    H32 = (H + offset * H.abs().max()).float()
    exact, single = nc_metrics(H32.double(), y), nc_metrics(H32, y)  # the same numbers, float64 vs 32
    for key in exact:
        assert single[key] == pytest.approx(exact[key], rel=1e-6), key


# ---- NC4 from the centred pass: the same decisions as explicit logits and distances ---------------------


def naive_nc4(features, labels, W, b):
    """argmax_c (W h + b)_c ≠ argmin_c ‖h − μ_c‖ straight from the formulas (numpy float64), and the smallest
    gap between the best and the second-best class of either rule (how far the data is from a tie)."""
    H, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    mu = np.stack([H[y == c].mean(axis=0) for c in range(int(y.max()) + 1)])
    logits = H @ np.asarray(W, dtype=np.float64).T + np.asarray(b, dtype=np.float64)  # (N, C)
    distances = ((H[:, None, :] - mu[None]) ** 2).sum(axis=2)  # ‖h_i − μ_c‖² (N, C), fine at this size
    gap = min(np.diff(np.sort(logits, axis=1)[:, -2:]).min(), np.diff(np.sort(distances, axis=1)[:, :2]).min())
    return float(np.mean(logits.argmax(axis=1) != distances.argmin(axis=1))), gap


def test_nc4_hand_case_with_spread_outside_the_span_of_the_means():
    # The hand case lifted to R³ with z = ±1 inside every class (class means keep z = 0, so Σ_B has rank 2 and
    # the NCC decision uses only the span of the means), rotated at random; w_2 = (−1, 0, 3) reads z.
    # (1,0,1): logits (1, 0, 2) → 2, nearest mean μ_0 (squared distances 2, 6, 14): a mismatch.
    # (0,.5,1): logits (0, .5, 3) → 2, nearest μ_1 (5.25, 3.25, 11.25): a mismatch. The other four agree
    # ((3,0,−1) → 0, (0,3.5,−1) → 1, (−1,−2,1) and (−3,−2,−1) → 2): nc4 = 2/6.
    H2, y = hand_case()
    z = torch.tensor([1.0, -1, 1, -1, 1, -1], dtype=torch.float64)[:, None]
    W = torch.tensor([[1.0, 0, 0], [0, 1, 0], [-1, 0, 3]], dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    H = torch.cat([H2, z], dim=1) @ Q.T  # W Qᵀ · Q h = W h: the same logits
    assert nc_metrics(H, y, weight=W @ Q.T)["nc4_ncc_mismatch"] == pytest.approx(1 / 3, abs=1e-15)
    assert naive_nc4(H, y, W @ Q.T, np.zeros(3))[0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("dtype", "offset"), [(torch.float64, 0), (torch.float32, 0), (torch.float32, 200)])
def test_nc4_matches_explicit_logits_and_distances(seed, dtype, offset):
    # W near the centred means plus noise and a random bias: some samples agree, some do not.
    C, p = 12, 16
    H, y = random_features(C=C, p=p, seed=seed)
    H = (H + offset * H.abs().max()).to(dtype)  # post-ReLU-like: a common offset, float32 centres first
    g = torch.Generator().manual_seed(100 + seed)
    M, mu_G = centred_means(class_means(H, y)[0])
    W = M.T + 8 * torch.randn(C, p, generator=g, dtype=torch.float64)
    b = -W @ mu_G + 20 * torch.randn(C, generator=g, dtype=torch.float64)
    expected, gap = naive_nc4(H, y, W, b)
    assert gap > 1e-3  # no ties, so float rounding cannot flip a decision
    assert 0.1 < expected < 0.9
    assert nc_metrics(H, y, weight=W.to(dtype), bias=b.to(dtype))["nc4_ncc_mismatch"] == expected


def test_class_means_torch_and_numpy_agree():
    H, y = random_features(dtype=torch.float32)
    means_t, counts_t = class_means(H, y)
    means_n, counts_n = class_means(H.numpy(), y.numpy().astype(np.int32))
    assert means_t.dtype == means_n.dtype == torch.float64
    assert torch.equal(means_t, means_n) and torch.equal(counts_t, counts_n)
    assert nc_metrics(H.numpy(), y.numpy()) == nc_metrics(H, y)


def test_two_classes_are_trivially_equiangular():
    H = torch.tensor([[1.0, 0], [1, 1], [-1, 0], [-1, -1]])
    out = nc_metrics(H, torch.tensor([0, 0, 1, 1]))
    assert out["nc2_equiangular_means"] == 0 and out["nc2_maxangle_means"] == pytest.approx(0, abs=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    H, y = random_features(C=10, p=32, dtype=torch.float32)
    W = torch.randn(10, 32)
    cpu, gpu = nc_metrics(H, y, weight=W), nc_metrics(H.cuda(), y.cuda(), weight=W.cuda())
    for key in cpu:
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4, abs=1e-6), key


# ---- bad input ------------------------------------------------------------------------------------------


def with_value(H, i, j, value):
    H = H.clone()
    H[i, j] = value
    return H


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda H, y: (H[:-1], y), "rows but labels"),
        (lambda H, y: (H[0], y), "2-D"),
        (lambda H, y: (H[None], y), "2-D"),
        (lambda H, y: (with_value(H, 3, 1, float("nan")), y), "NaN or inf"),
        (lambda H, y: (with_value(H, 0, 0, -float("inf")), y), "NaN or inf"),
        (lambda H, y: (H, torch.where(y == 1, 6, y)), r"class\(es\) \[1\] have no samples"),  # labels skip 1
        (lambda H, y: (H, torch.where(y == 2, -1, y)), "negative"),
        (lambda H, y: (H, y.double()), "integer"),
        (lambda H, y: (H, torch.zeros_like(y)), "at least 2 classes"),
    ],
)
def test_bad_features_or_labels_raise(make, match):
    H, y = random_features()
    with pytest.raises(ValueError, match=match):
        nc_metrics(*make(H, y))


def test_num_classes_errors():
    H, y = random_features()  # labels 0..5
    with pytest.raises(ValueError, match=r"class\(es\) \[6\] have no samples"):
        class_means(H, y, num_classes=7)
    with pytest.raises(ValueError, match="found label 5"):
        nc_metrics(H, y, num_classes=5)


def test_bad_weight_bias_and_dimension_raise():
    H, y = random_features()  # C = 6, p = 10
    with pytest.raises(ValueError, match=r"weight must have shape \(C, p\) = \(6, 10\)"):
        nc_metrics(H, y, weight=torch.zeros(10, 6))
    with pytest.raises(ValueError, match="bias must have shape"):
        nc_metrics(H, y, weight=torch.ones(6, 10), bias=torch.zeros(5))
    with pytest.raises(ValueError, match="NaN or inf"):
        nc_metrics(H, y, weight=torch.full((6, 10), float("nan")))
    with pytest.raises(ValueError, match="fewer than C - 1"):
        nc_metrics(H[:, :4], y)  # p = 4 < C − 1 = 5


# ---- NC5 and the simplex ETF ----------------------------------------------------------------------------


def test_identical_class_means_and_zero_ood_mean_raise():
    H = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])  # both class means are 0
    with pytest.raises(ValueError, match="all class means coincide"):
        nc_metrics(H, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="mean OOD feature is zero"):
        nc5(H + 1, torch.tensor([0, 0, 1, 1]), H)


def test_half_precision_and_integer_features_are_upcast():
    H, y = hand_case()
    expected = nc_metrics(H, y)
    assert nc_metrics(H.half(), y) == pytest.approx(expected, rel=1e-6)  # the hand case is exact in fp16
    assert nc_metrics((2 * H).long(), y) == pytest.approx(expected, rel=1e-12)  # integers: 2H is integral


def test_nc5_orthogonal_parallel_and_in_between():
    H = torch.tensor([[1.0, 0, 0], [3, 0, 0], [0, 2, 0], [0, 4, 0]])  # μ_0 = 2e_0, μ_1 = 3e_1
    y = torch.tensor([0, 0, 1, 1])
    assert nc5(H, y, torch.tensor([[0.0, 0, 1], [0, 0, 3]])) == pytest.approx(0, abs=1e-12)
    assert nc5(H, y, np.array([[1.0, 1, 0], [1, 1, 0]])) == pytest.approx(1 / math.sqrt(2))  # cos = 1/√2 each
    H_parallel = torch.tensor([[1.0, 0, 0], [2, 0, 0], [-3, 0, 0]])  # μ_0 = 1.5e_0, μ_1 = −3e_0
    assert nc5(H_parallel, torch.tensor([0, 0, 1]), torch.tensor([[-2.0, 0, 0]])) == pytest.approx(1)
    with pytest.raises(ValueError, match="dimensions"):
        nc5(H, y, torch.zeros(2, 2))


# --- layer-wise NC1, the report's table, NC over training -----------------------------------------------


def test_ncc_predictions_by_hand():
    means = f64([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    h = f64([[0.5, 0.5], [3.0, 1.0], [1.0, 3.5], [2.1, 0.0]])
    from nclab.collapse import ncc_predictions

    assert ncc_predictions(h, means).tolist() == [0, 1, 2, 1]


def test_variability_metrics_work_below_c_minus_1_dimensions():
    from nclab.collapse import variability_metrics

    features, labels = random_features(C=6, p=3)  # p = 3 < C − 1 = 5
    with pytest.raises(ValueError, match="variability_metrics"):
        nc_metrics(features, labels)
    out = variability_metrics(features, labels)
    Sigma_W, Sigma_B, _ = naive_pieces(features, labels)
    assert out["nc1_trace_ratio"] == pytest.approx(np.trace(Sigma_W) / np.trace(Sigma_B), rel=1e-9)
    assert out["nc1"] == pytest.approx(naive_nc1(Sigma_W, Sigma_B, 6), rel=1e-6)
    assert 0 < out["ncc_accuracy"] <= 1
    collapsed = variability_metrics(*etf_features(C=5, p=8)[:2])
    assert collapsed["nc1"] == pytest.approx(0, abs=1e-12) and collapsed["ncc_accuracy"] == 1


def test_practical_work_metrics_on_a_perfect_simplex_etf():
    from nclab.collapse import practical_work_metrics

    features, labels, E = etf_features(C=5, p=8)
    M, _ = centred_means(class_means(features, labels)[0])
    table = practical_work_metrics(features, labels, 3 * M.T)  # W ∝ Mᵀ: self-dual
    assert table["tr(S_W)/tr(S_B)"] == pytest.approx(0, abs=1e-12)
    assert table["||S_W||_F/||S_B||_F"] == pytest.approx(0, abs=1e-12)
    assert table["||G - G_etf||_F/||G_etf||_F"] == pytest.approx(0, abs=1e-9)
    assert table["off-diagonal cosine mean"] == pytest.approx(-1 / 4) and table["off-diagonal cosine std"] < 1e-9
    assert table["||W^T/||W|| - M/||M||||_F"] == pytest.approx(0, abs=1e-7)
    assert table["cos(w_c, mu_c - mu_G) min"] == pytest.approx(1)
    assert table["NCC agreement"] == 1 and table["train accuracy (network)"] == 1
    assert table["train accuracy (NCC)"] == 1


def test_report_frobenius_ratio_by_naive_formula():
    from nclab.collapse import practical_work_metrics

    features, labels = random_features(C=4, p=6)
    W = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    Sigma_W, Sigma_B, _ = naive_pieces(features, labels)
    ratio = practical_work_metrics(features, labels, W)["||S_W||_F/||S_B||_F"]
    assert ratio == pytest.approx(np.linalg.norm(Sigma_W) / np.linalg.norm(Sigma_B), rel=1e-9)


def test_collapse_stays_pure():
    """nclab.collapse imports no model, data, training or feature code (the metrics over training are in tables)."""
    import subprocess
    import sys

    code = (
        "import sys, nclab.collapse; "
        "print(sorted(m for m in sys.modules if m.startswith('nclab.') and m not in "
        "('nclab.collapse', 'nclab.stats', 'nclab.etf')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_formulas_as_written_equal_the_single_pass():
    """collapse.nc1_as_written and nc4_as_written build every matrix of SPEC §1; nc_metrics never does."""
    generator = torch.Generator().manual_seed(3)
    mismatches = []
    for C, p, n, spread in [(4, 6, 30, 1.0), (10, 32, 20, 0.3), (3, 2, 50, 2.0)]:
        y = torch.arange(C).repeat(n)
        H = 5 * torch.randn(C, p, generator=generator)[y] + spread * torch.randn(C * n, p, generator=generator)
        W, b = torch.randn(C, p, generator=generator), torch.randn(C, generator=generator)
        fast = nc_metrics(H.double(), y, W, b)
        assert nc1_as_written(H, y) == pytest.approx(fast["nc1"], rel=1e-9)
        assert nc4_as_written(H, y, W, b) == fast["nc4_ncc_mismatch"]
        mismatches.append(fast["nc4_ncc_mismatch"])
    assert max(mismatches) > 0  # the two decisions differ somewhere: the equality is not 0 == 0
    etf = simplex_etf(5, 8)  # five class means at the vertices, no spread: NC1 = 0, NC4 = 0
    y = torch.arange(5).repeat(3)
    assert nc1_as_written(etf[y], y) == pytest.approx(0.0, abs=1e-12)
    assert nc4_as_written(etf[y], y, etf) == 0.0
