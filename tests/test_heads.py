"""Classifier heads against hand-computed logits, and the one accessor that reads W and b."""

import math

import pytest
import torch

from nclab import heads, models
from nclab.etf import simplex_etf, simplex_etf_gram


def f32(values):
    return torch.tensor(values, dtype=torch.float32)


def test_linear_head_is_w_h_plus_b():
    head = heads.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(f32([[1, 0, 2], [0, -1, 1]]))
        head.bias.copy_(f32([0.5, -0.5]))
    h = f32([[1, 2, 3], [0, 0, 1]])
    assert torch.allclose(head(h), f32([[7.5, 0.5], [2.5, 0.5]]))
    W, b = heads.weight_and_bias(head)
    assert torch.equal(W, head.weight) and torch.equal(b, head.bias) and not W.requires_grad
    assert heads.weight_and_bias(heads.Linear(3, 2, bias=False))[1] is None  # no bias: said by None


def test_fixed_etf_head_is_a_frozen_exact_simplex():
    head = heads.FixedETF(in_features=6, num_classes=4, scale=2.5, seed=1)
    assert [name for name, _ in head.named_parameters()] == [] and "weight" in head.state_dict()
    assert torch.allclose(head.weight.double(), 2.5 * simplex_etf(4, 6, seed=1), atol=1e-6)
    assert torch.allclose(head.weight.double() @ head.weight.double().T / 2.5**2, simplex_etf_gram(4), atol=1e-6)
    h = torch.randn(5, 6)
    assert torch.allclose(head(h), h @ head.weight.T)
    W, b = heads.weight_and_bias(head)
    assert torch.equal(W, head.weight) and b is None
    with pytest.raises(ValueError, match="scale"):
        heads.FixedETF(6, 4, scale=0)
    with pytest.raises(ValueError, match="p >= C - 1"):
        heads.FixedETF(2, 4)


def test_cosine_head_by_hand():
    head = heads.Cosine(2, 3, tau=0.5)
    with torch.no_grad():
        head.weight.copy_(f32([[1, 0], [0, 2], [-1, -1]]))
    h = f32([[3, 0], [1, 1]])
    r = math.sqrt(2)
    expected = f32([[2, 0, -r], [r, r, -2]])  # cos(w_c, h) / τ
    assert torch.allclose(head(h), expected, atol=1e-6)
    assert torch.allclose(head(10 * h), expected, atol=1e-6)  # the norm of h plays no part
    with pytest.raises(ValueError, match="embedded=True"):
        heads.weight_and_bias(head)
    assert torch.allclose(head.embed(h), torch.nn.functional.normalize(h))
    W, b = heads.weight_and_bias(head, embedded=True)
    assert b is None and torch.allclose(torch.nn.functional.normalize(h) @ W.T, expected, atol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        heads.Cosine(2, 3, tau=0)


def test_prototype_head_by_hand():
    features = f32([[2, 0], [1, 1], [0, 3]])  # class 0: 0° and 45°; class 1: 90°
    labels = torch.tensor([0, 0, 1])
    head = heads.Prototype(2, 2)
    with pytest.raises(RuntimeError, match="no prototypes yet"):
        head(features)
    with pytest.raises(RuntimeError, match="no prototypes yet"):
        heads.weight_and_bias(head, embedded=True)
    head.fit(features, labels)
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)  # the mean direction: 22.5°
    assert torch.allclose(head.prototypes, f32([[c, s], [0, 1]]), atol=1e-6)
    assert torch.allclose(head(f32([[1, 0], [0, 5]])), f32([[c, 0], [s, 1]]), atol=1e-6)
    assert head(features).argmax(1).tolist() == [0, 0, 1]
    built = heads.Prototype.from_features(features, labels)
    assert torch.equal(built.prototypes, head.prototypes) and bool(built.fitted)
    restored = heads.Prototype(2, 2)
    restored.load_state_dict(head.state_dict())  # saved with the model
    assert torch.equal(restored(features), head(features))
    with pytest.raises(ValueError, match="every class"):
        heads.Prototype(2, 3).fit(features, labels)  # class 2 has no feature


def test_weight_and_bias_reads_a_models_head_and_says_what_is_missing():
    model = models.resnet18(10, width=8)
    W, b = heads.weight_and_bias(model)
    assert torch.equal(W, model.head.weight) and torch.equal(b, model.head.bias)
    with pytest.raises(ValueError, match="raw features"):
        heads.weight_and_bias(model, embedded=True)
    cosine = models.resnet18(10, width=8, head=heads.Cosine(64, 10))
    assert heads.head_of(cosine).embeds and not heads.head_of(model).embeds
    assert heads.head_of(model) is model.head and heads.head_of(model.head) is model.head
    with pytest.raises(ValueError, match="embedded=True"):
        heads.weight_and_bias(cosine)
    with pytest.raises(TypeError, match="no nclab head"):
        heads.weight_and_bias(torch.nn.Linear(3, 2))
