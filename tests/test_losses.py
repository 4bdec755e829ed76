"""The default loss, by hand: cross-entropy with label smoothing on the logits of a BatchOutput."""

import math

import pytest
import torch

from nclab import heads, losses, models
from nclab.etf import simplex_etf


def test_cross_entropy_with_label_smoothing_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0]])  # softmax = [3/4, 1/4]
    out = losses.BatchOutput(features=torch.zeros(1, 4), logits=logits)
    y = torch.tensor([0])
    ce, uniform = -math.log(0.75), (-math.log(0.75) - math.log(0.25)) / 2  # CE(l, y), mean_c −log p_c
    assert losses.CrossEntropy()(out, y).item() == pytest.approx(ce)
    assert losses.CrossEntropy(0.2)(out, y).item() == pytest.approx(0.8 * ce + 0.2 * uniform)
    assert losses.CrossEntropy(0.2)(out, y).item() != pytest.approx(ce, abs=1e-3)  # the smoothing matters


def test_half_precision_logits_are_computed_in_float32():
    logits = torch.tensor([[20.0, -20.0, 0.0]], dtype=torch.float16)
    value = losses.CrossEntropy(0.1)(losses.BatchOutput(torch.zeros(1, 2), logits), torch.tensor([1]))
    assert value.dtype == torch.float32 and math.isfinite(value.item())
    assert value.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits.float(), torch.tensor([1]), label_smoothing=0.1).item()
    )


def test_bad_smoothing_is_refused():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing"):
            losses.CrossEntropy(bad)
    assert repr(losses.CrossEntropy(0.1)) == "CrossEntropy(label_smoothing=0.1)"


# ----------------------------------------------------------------------------------------------------
# Neural collapse by design: each loss against a per-sample transcription of SPEC §7


def _batch(seed=0, B=10, p=6, C=4, dtype=torch.float64):
    """Random features, class vectors and labels; class 3 appears once, every class at least once."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(B, p, generator=generator, dtype=dtype) * 3
    w = torch.randn(C, p, generator=generator, dtype=dtype) * 2
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])[:B]
    return u, w, y


def _unit(v):
    return v / v.norm()


def normface_by_hand(u, w, y, tau):
    total = 0.0
    for i in range(len(y)):
        logits = [_unit(w[c]) @ _unit(u[i]) / tau for c in range(len(w))]
        total += -math.log(math.exp(logits[y[i]]) / sum(math.exp(v) for v in logits))
    return total / len(y)


def ntce_by_hand(u, w, y, tau, negatives_only=False):
    B, total = len(y), 0.0
    for i in range(B):
        s = [float(_unit(w[y[i]]) @ _unit(u[j]) / tau) for j in range(B)]
        others = [s[j] for j in range(B) if not negatives_only or y[j] != y[i]]
        total += -math.log(math.exp(s[i]) / sum(math.exp(v) for v in others))
    return total / B


def supcon_by_hand(u, y, tau):
    B, terms = len(y), []
    for i in range(B):
        positives = [p for p in range(B) if p != i and y[p] == y[i]]
        if not positives:
            continue
        s = [float(_unit(u[i]) @ _unit(u[a]) / tau) for a in range(B)]
        below = sum(math.exp(s[a]) for a in range(B) if a != i)
        terms.append(-sum(math.log(math.exp(s[p]) / below) for p in positives) / len(positives))
    return sum(terms) / len(terms)


def dot_regression_by_hand(h, w, y):
    total = 0.0
    for i in range(len(y)):
        norm_h, w_y = float(h[i].norm()), w[y[i]]
        total += 0.5 * (float(h[i] @ w_y) - float(w_y.norm()) * norm_h) ** 2 / norm_h
    return total / len(y)


@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_each_loss_equals_its_per_sample_formula(seed, tau):
    u, w, y = _batch(seed)  # class 3 appears once: one anchor of SupCon without a positive
    assert losses.normface(u, w, y, tau).item() == pytest.approx(normface_by_hand(u, w, y, tau), rel=1e-9)
    assert losses.ntce(u, w, y, tau).item() == pytest.approx(ntce_by_hand(u, w, y, tau), rel=1e-9)
    nonl = ntce_by_hand(u, w, y, tau, negatives_only=True)
    assert losses.nonl(u, w, y, tau).item() == pytest.approx(nonl, rel=1e-9)
    assert losses.nonl(u, w, y, tau).item() < losses.ntce(u, w, y, tau).item()  # fewer terms below
    assert losses.supcon(u, y, tau).item() == pytest.approx(supcon_by_hand(u, y, tau), rel=1e-9)
    assert losses.dot_regression(u, w, y).item() == pytest.approx(dot_regression_by_hand(u, w, y), rel=1e-9)


def test_the_normalised_losses_ignore_the_scale_of_their_inputs():
    u, w, y = _batch(2)
    for loss in (losses.normface, losses.ntce, losses.nonl):
        assert loss(5 * u, 0.1 * w, y, 0.2).item() == pytest.approx(loss(u, w, y, 0.2).item(), rel=1e-9)
    assert losses.supcon(7 * u, y, 0.2).item() == pytest.approx(losses.supcon(u, y, 0.2).item(), rel=1e-9)


def test_nonl_without_negatives_keeps_only_its_alignment_term():
    u, w, _ = _batch(3)
    same = torch.zeros(len(u), dtype=torch.long)  # one class fills the batch: nothing to push against
    alignment = -sum(float(_unit(w[0]) @ _unit(u[i])) for i in range(len(u))) / len(u) / 0.1
    assert losses.nonl(u, w, same, 0.1).item() == pytest.approx(alignment, rel=1e-9)
    # one sample of another class: it has negatives, the others have one negative each
    mixed = same.clone()
    mixed[0] = 1
    assert losses.nonl(u, w, mixed, 0.1).item() == pytest.approx(ntce_by_hand(u, w, mixed, 0.1, True), rel=1e-9)


def test_supcon_without_any_positive_is_zero_with_a_zero_gradient():
    u = torch.randn(4, 3, requires_grad=True)
    value = losses.supcon(u, torch.arange(4), 0.1)
    value.backward()
    assert value.item() == 0 and torch.equal(u.grad, torch.zeros_like(u))


def _on_etf(C=4, p=6, per_class=3, scale=4.0):
    """Features sitting exactly on the simplex ETF of their class vectors, and random ones."""
    w = simplex_etf(C, p, seed=0).double()
    y = torch.arange(C).repeat_interleave(per_class)
    collapsed = scale * w[y]
    generator = torch.Generator().manual_seed(5)
    return w, y, collapsed, scale * torch.randn(len(y), p, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("loss", ["normface", "ntce", "nonl", "supcon", "dot_regression"])
def test_each_loss_is_lower_on_the_etf_than_on_random_features(loss):
    w, y, collapsed, random = _on_etf()
    if loss == "supcon":
        values = [losses.supcon(h, y, 0.1).item() for h in (collapsed, random)]
    elif loss == "dot_regression":
        values = [losses.dot_regression(h, w, y).item() for h in (collapsed, random)]
        assert values[0] == pytest.approx(0, abs=1e-12)  # its minimum: every h along its class vector
    else:
        values = [getattr(losses, loss)(h, w, y, 0.1).item() for h in (collapsed, random)]
    assert values[0] < values[1] - 0.5, values


@pytest.mark.parametrize("loss", ["normface", "ntce", "nonl", "supcon", "dot_regression"])
def test_gradients_are_finite_at_a_low_temperature(loss):
    u, w, y = _batch(4, dtype=torch.float32)
    u = (u * 50).requires_grad_()  # large features, τ = 0.05: logits of ±20 and more
    w = w.requires_grad_()
    if loss == "supcon":
        value = losses.supcon(u, y, 0.05)
    elif loss == "dot_regression":
        value = losses.dot_regression(u, w, y)
    else:
        value = getattr(losses, loss)(u, w, y, 0.05)
    value.backward()
    assert math.isfinite(value.item())
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    if loss != "supcon":
        assert torch.isfinite(w.grad).all()


def test_dot_regression_detaches_the_feature_norm():
    h = torch.tensor([[3.0, 4.0]], requires_grad=True)  # ‖h‖ = 5
    w = torch.tensor([[1.0, 0.0]])
    losses.dot_regression(h, w, torch.tensor([0])).backward()
    # ℓ = ½ (hᵀw − ‖w‖·5)² / 5 with 5 a constant: ∂ℓ/∂h = (3 − 5)/5 · w = (−0.4, 0)
    assert h.grad[0].tolist() == pytest.approx([-0.4, 0.0])


def test_bad_inputs_are_refused_with_a_clear_message():
    u, w, y = _batch(0)
    with pytest.raises(ValueError, match="tau"):
        losses.ntce(u, w, y, 0)
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        losses.nonl(u, w, y + 1, 0.1)
    with pytest.raises(ValueError, match="class vectors must be"):
        losses.normface(u, w[:, :3], y, 0.1)
    with pytest.raises(ValueError, match="one label each"):
        losses.supcon(u, y[:3], 0.1)
    with pytest.raises(ValueError, match="tau"):
        losses.NTCELoss(-1)


def test_the_module_losses_read_the_class_vectors_of_the_head():
    u, _, y = _batch(6, dtype=torch.float32)
    model = models.resnet18(4, width=2, head=heads.Cosine(16, 4, tau=0.1))
    features = torch.randn(len(y), 16)
    out = losses.BatchOutput(features, model.head(features), model=model)
    W = model.head.weight
    assert losses.NTCELoss(0.1)(out, y).item() == pytest.approx(losses.ntce(features, W, y, 0.1).item())
    assert losses.NONLLoss(0.1)(out, y).item() == pytest.approx(losses.nonl(features, W, y, 0.1).item())
    # NormFace through the loss = cross-entropy of the cosine head's own logits
    assert losses.NormFaceLoss(0.1)(out, y).item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits, y).item(), rel=1e-5
    )
    losses.NTCELoss(0.1)(out, y).backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="class vectors"):
        losses.NTCELoss(0.1)(losses.BatchOutput(features, out.logits), y)


def test_supcon_loss_adds_a_second_view_through_the_encoder():
    torch.manual_seed(0)
    model = models.resnet18(3, width=2)
    x = torch.rand(6, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    h = model.features(x)
    out = losses.BatchOutput(h, model.head(h), model=model, inputs=x)
    one = losses.SupConLoss(0.1, views=1)(out, y)
    assert one.item() == pytest.approx(losses.supcon(h, y, 0.1).item())
    two = losses.SupConLoss(0.1, views=2, padding=0)  # no shift: the second view is a flip of the first
    torch.manual_seed(1)
    value = two(out, y)
    torch.manual_seed(1)
    torch.randint(0, 1, (6, 2))  # the crop offsets (all 0 without padding), drawn first
    flips = torch.rand(6) < 0.5
    second = model.features(torch.where(flips[:, None, None, None], x.flip(-1), x))
    assert value.item() == pytest.approx(losses.supcon(torch.cat([h, second]), torch.cat([y, y]), 0.1).item(), rel=1e-5)
    with pytest.raises(ValueError, match="second view"):
        two(losses.BatchOutput(h, out.logits), y)


def test_mixed_and_half_precision_inputs_are_computed_in_a_common_float_type():
    u, w, y = _batch(7)
    for loss in (losses.normface, losses.ntce, losses.nonl):
        exact = loss(u, w, y, 0.1)
        assert loss(u, w.float(), y, 0.1).dtype == torch.float64  # float64 features, float32 class vectors
        half = loss(u.half().requires_grad_(), w.float(), y, 0.1)
        assert half.dtype == torch.float32 and half.item() == pytest.approx(exact.item(), rel=1e-2)
    # zero rows (no direction: a normalised loss's gradient there is 1/ε, finite in float32; in float16 it
    # overflows and the GradScaler skips the step, as for any overflow)
    h = torch.zeros(len(y), u.shape[1], requires_grad=True)
    for value in (
        losses.dot_regression(h, w.float(), y),
        losses.ntce(h, w.float(), y, 0.05),
        losses.supcon(h, y, 0.05),
    ):
        value.backward()
        assert math.isfinite(value.item()) and torch.isfinite(h.grad).all()
        h.grad = None


def test_supcon_loss_runs_under_bfloat16_autocast_on_the_cpu():
    torch.manual_seed(0)
    model = models.resnet18(3, width=2)
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = model.features(x)
    assert h.dtype == torch.bfloat16
    value = losses.SupConLoss(0.1)(losses.BatchOutput(h, model.head(h.float()), model=model, inputs=x), y)
    value.backward()
    assert value.dtype == torch.float32 and math.isfinite(value.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
