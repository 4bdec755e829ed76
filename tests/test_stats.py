"""The statistics shared by collapse and ood: float64 class sums, scatter matrices, input checks, pinvh."""

import numpy as np
import pytest
import scipy.linalg
import torch

from nclab import stats


def test_class_sums_and_means_are_float64_and_match_a_loop():
    g = torch.Generator().manual_seed(0)
    H = (1e4 + torch.randn(3_000, 5, generator=g)).float()  # a large offset: float32 sums drift
    y = torch.randint(0, 4, (3_000,), generator=g)
    sums = stats.class_sums(H, y, 4)
    assert sums.dtype == torch.float64
    expected = torch.stack([H[y == c].double().sum(0) for c in range(4)])
    assert torch.equal(sums, expected) or torch.allclose(sums, expected, rtol=1e-15, atol=0)
    means, counts = stats.class_means(H, y, 4)
    assert torch.allclose(means, expected / counts[:, None]) and counts.tolist() == torch.bincount(y).tolist()
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.class_means(torch.tensor([[1.0], [float("nan")]]), torch.tensor([0, 1]), 2)


def test_scatter_matches_the_naive_sum_around_a_point_or_class_means():
    g = torch.Generator().manual_seed(1)
    H, y = torch.randn(2_500, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (2_500,), generator=g)
    mu = torch.stack([H[y == c].mean(0) for c in range(3)])
    around_means = sum(torch.outer(h - mu[c], h - mu[c]) for h, c in zip(H, y))
    assert torch.allclose(stats.scatter(H, mu, y), around_means)
    point = torch.tensor([1.0, -2, 0, 3], dtype=torch.float64)
    assert torch.allclose(stats.scatter(H, point), (H - point).T @ (H - point))
    assert stats.scatter(H.float(), point, dtype=torch.float64).dtype == torch.float64


def test_inputs_are_converted_or_refused_with_a_clear_message():
    assert stats.as_matrix(np.ones((2, 3), dtype=np.float16), "h").dtype == torch.float32
    assert stats.as_matrix(torch.ones(2, 3, dtype=torch.int32), "h").dtype == torch.float64
    for bad, match in (
        ([[1.0]], "torch tensor or a numpy array"),
        (torch.ones(3), "2-D"),
        (torch.ones(0, 3), "no rows"),
        (torch.tensor([[1.0, float("inf")]]), "NaN or inf"),
    ):
        with pytest.raises(ValueError, match=match):
            stats.as_matrix(bad, "h")
    assert stats.as_labels(np.array([0, 2]), 2).dtype == torch.int64
    for bad, match in (
        (torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([0, -1]), "negative"),
        (torch.tensor([0, 1, 2]), "rows but labels"),
    ):
        with pytest.raises(ValueError, match=match):
            stats.as_labels(bad, 2)


def test_pinv_psd_is_scipys_pinvh_and_restores_the_thread_count():
    g = torch.Generator().manual_seed(2)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64)).Q
    Sigma = Q @ torch.diag(torch.tensor([1.0, 1e-3, 1e-6, 1e-9, 1e-18, 0.0], dtype=torch.float64)) @ Q.T
    rtol = 6 * np.finfo(np.float64).eps
    expected = scipy.linalg.pinvh(Sigma.numpy(), rtol=rtol)  # scikit-learn's pinvh
    assert np.allclose(stats.pinv_psd(Sigma, rtol).numpy(), expected, rtol=1e-6, atol=0)
    threads = torch.get_num_threads()
    stats.eigh(Sigma)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="zero"):
        stats.pinv_psd(torch.zeros(3, 3, dtype=torch.float64), rtol)
