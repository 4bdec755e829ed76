"""The exact simplex ETF: its Gram by hand, its construction at every dimension p ≥ C − 1."""

import pytest
import torch

from nclab.collapse import gram_of_means
from nclab.etf import simplex_etf, simplex_etf_gram


@pytest.mark.parametrize("C, p", [(2, 1), (5, 4), (5, 5), (10, 64)])
def test_simplex_etf_rows_have_the_etf_gram(C, p):
    E = simplex_etf(C, p, seed=3)
    assert E.shape == (C, p) and E.dtype == torch.float64
    assert torch.allclose(E @ E.T, simplex_etf_gram(C), atol=1e-12)  # unit rows, cos = −1/(C−1)
    assert torch.allclose(E.sum(0), torch.zeros(p, dtype=torch.float64), atol=1e-12)  # centred
    assert torch.allclose(gram_of_means(E), simplex_etf_gram(C), atol=1e-12)
    assert torch.equal(E, simplex_etf(C, p, seed=3))
    assert p == 1 or not torch.allclose(E, simplex_etf(C, p, seed=4))  # another seed, another rotation


def test_simplex_etf_gram_by_hand_and_too_few_dimensions():
    expected = torch.tensor([[1, -0.5, -0.5], [-0.5, 1, -0.5], [-0.5, -0.5, 1]], dtype=torch.float64)
    assert torch.allclose(simplex_etf_gram(3), expected)
    assert torch.allclose(simplex_etf_gram(2), torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="p >= C - 1"):
        simplex_etf(10, 8)
    with pytest.raises(ValueError, match="at least 2 classes"):
        simplex_etf_gram(1)
