"""nclab.methods.control: the entropy regulariser by hand, the frozen exact-ETF projector, the loss and its
epoch means, the run key, an exact resume, the authors' rectangular matrix and the experiment's recipe."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from nclab import data, heads, methods, train
from nclab.etf import simplex_etf_gram
from nclab.losses import BatchOutput
from nclab.methods import control

TIMING = ("seconds", "images_per_s")


def _entropy_by_hand(z: torch.Tensor) -> float:
    """−(1/B) Σ_i log(‖ẑ_i − ẑ_nn(i)‖ + 1e-8), nn(i) = argmax_{j≠i} cos(z_i, z_j): one sample at a time, float64."""
    rows = [row.double() for row in z]
    total = 0.0
    for i, zi in enumerate(rows):
        best, best_cosine = None, -math.inf
        for j, zj in enumerate(rows):
            if j == i:
                continue
            cosine = float(zi @ zj) / (float(zi.norm()) * float(zj.norm()))
            if cosine > best_cosine:
                best, best_cosine = j, cosine
        difference = zi / zi.norm() - rows[best] / rows[best].norm()
        total += math.log(float(difference.norm()) + 1e-8)
    return -total / len(rows)


# --- the entropy regulariser ------------------------------------------------------------------------


def test_entropy_regularizer_equals_the_per_sample_formula():
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0)) * 3
    value = control.entropy_regularizer(z)
    assert value.ndim == 0 and value.dtype == torch.float32
    torch.testing.assert_close(value.double(), torch.tensor(_entropy_by_hand(z), dtype=torch.float64))
    z64 = z.double()
    torch.testing.assert_close(
        control.entropy_regularizer(z64).double(), torch.tensor(_entropy_by_hand(z64), dtype=torch.float64)
    )
    assert control.entropy_regularizer(5 * z).item() == pytest.approx(value.item(), abs=1e-5)  # only directions


def test_entropy_regularizer_is_lower_for_spread_embeddings_than_for_clumped_ones():
    g = torch.Generator().manual_seed(1)
    spread = 3 * torch.eye(8)  # orthogonal directions: every nearest neighbour at distance √2
    clumped = torch.ones(8, 8) + 0.01 * torch.randn(8, 8, generator=g)  # small noise around one direction
    random_directions = torch.randn(8, 64, generator=g)
    assert control.entropy_regularizer(spread).item() == pytest.approx(-math.log(math.sqrt(2) + 1e-8), abs=1e-6)
    assert control.entropy_regularizer(spread) < control.entropy_regularizer(clumped)
    assert control.entropy_regularizer(random_directions) < control.entropy_regularizer(clumped)
    assert control.entropy_regularizer(clumped).item() > 3  # distances ~1e-2: −log ≈ 4.6


def test_entropy_regularizer_backpropagates_the_gradient_of_the_formula():
    z = torch.randn(10, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    control.entropy_regularizer(z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    w = z.detach().clone().requires_grad_(True)  # the same loss, one sample at a time, differentiated by autograd
    unit = w / w.norm(dim=1, keepdim=True)
    total = 0
    for i in range(len(w)):
        j = max((j for j in range(len(w)) if j != i), key=lambda j: float((unit[i] @ unit[j]).detach()))
        total = total - torch.log((unit[i] - unit[j]).norm() + 1e-8)
    (total / len(w)).backward()
    torch.testing.assert_close(z.grad.float(), w.grad.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_entropy_regularizer_and_projector_under_mixed_precision(dtype):
    """Under AMP the encoder's features are half precision; the loss computes in float32 (it runs outside
    autocast), the projector in the features' dtype."""
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    value = control.entropy_regularizer(z.to(dtype))
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(control.entropy_regularizer(z.to(dtype).float()).item(), rel=1e-6)
    head = control.EtfProjector(16, 4)
    phi = head.embed(z.relu().to(dtype))
    assert phi.dtype == dtype and torch.isfinite(phi).all()
    torch.testing.assert_close(phi.float(), head.embed(z.relu()), atol=2e-2, rtol=0)


@pytest.mark.parametrize("shape", [(1, 4), (4,), (2, 3, 4)])
def test_entropy_regularizer_needs_a_batch_of_at_least_two_rows(shape):
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        control.entropy_regularizer(torch.randn(shape))


def test_entropy_regularizer_of_a_duplicate_row_is_finite():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 4, generator=g)
    z[1] = z[0]  # a duplicate embedding: its distance to its nearest neighbour is 0
    z.requires_grad_(True)
    value = control.entropy_regularizer(z)
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(_entropy_by_hand(z.detach()), abs=1e-5)
    assert value.item() > 2 * -math.log(1e-8) / 5  # the two −log(1e-8) ≈ 18.4 terms dominate
    value.backward()
    assert torch.isfinite(z.grad).all()


# --- the frozen projector ---------------------------------------------------------------------------


@pytest.mark.parametrize("hidden, out", [(None, None), (12, 10), (17, 18)])
def test_projector_layers_are_exact_simplex_etfs(hidden, out):
    head = control.EtfProjector(16, 5, hidden, out)
    expected_shapes = {
        (None, None): ((16, 16), (16, 16)),
        (12, 10): ((12, 16), (10, 12)),
        (17, 18): ((17, 16), (18, 17)),
    }
    assert (tuple(head.first.shape), tuple(head.second.shape)) == expected_shapes[(hidden, out)]
    for M in (head.first, head.second):
        assert M.dtype == torch.float32
        torch.testing.assert_close(M.double().norm(dim=1), torch.ones(len(M), dtype=torch.float64))
        unit = M.double() / M.double().norm(dim=1, keepdim=True)
        torch.testing.assert_close(unit @ unit.T, simplex_etf_gram(len(M)), atol=1e-6, rtol=0)
    assert [name for name, _ in head.named_parameters()] == ["classifier.weight", "classifier.bias"]
    assert {"first", "second"} <= set(head.state_dict())  # saved with the model


def test_projector_wider_than_an_exact_etf_allows_is_refused():
    with pytest.raises(ValueError, match=r"hidden = 10.*at least 9 input dimensions.*hidden ≤ 9"):
        control.EtfProjector(8, 3, hidden=10)
    with pytest.raises(ValueError, match=r"out = 8.*at least 7 input dimensions"):
        control.EtfProjector(8, 3, hidden=6, out=8)
    control.EtfProjector(8, 3, hidden=9, out=10)  # p + 1 and hidden + 1 are the widest exact ones


def test_projector_embedding_and_classifier():
    head = control.EtfProjector(16, 5, hidden=12, out=10)
    h = torch.randn(7, 16, generator=torch.Generator().manual_seed(4))
    phi = head.embed(h)
    assert phi.shape == (7, 10)
    torch.testing.assert_close(phi.norm(dim=1), torch.ones(7))
    by_hand = F.relu(h @ head.first.T) @ head.second.T
    torch.testing.assert_close(phi, by_hand / by_hand.norm(dim=1, keepdim=True))
    W, b = heads.weight_and_bias(head, embedded=True)
    assert torch.equal(W, head.classifier.weight) and torch.equal(b, head.classifier.bias)
    torch.testing.assert_close(head(h), phi @ W.T + b)
    with pytest.raises(ValueError, match="embedded=True"):
        heads.weight_and_bias(head)
    assert head.embeds and head.embedding_name == "projector"


# --- training a controlled model --------------------------------------------------------------------


def _controlled_model(config, train_set):
    torch.manual_seed(config.seed)
    return config.method.build_model(config, train_set)


def _loader(train_set, batch_size, loader=data.GpuLoader):
    return loader(train_set, batch_size, shuffle=True, augment=True, drop_last=True, device="cpu", seed=0)


def test_training_moves_the_encoder_and_classifier_but_never_the_projector(small_train):
    config = control.recipe("smoke", epochs=1, width=4, batch_size=32)
    model = _controlled_model(config, small_train)
    head = model.head
    assert isinstance(head, control.EtfProjector) and (head.first.shape, head.second.shape) == ((32, 32), (32, 32))
    first, second = head.first.clone(), head.second.clone()
    encoder = {name: p.detach().clone() for name, p in model.named_parameters() if not name.startswith("head.")}
    classifier = head.classifier.weight.detach().clone()
    optimizer = train.make_optimizer(model, config)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(head.first) not in in_optimizer and id(head.second) not in in_optimizer
    assert not any(buffer.requires_grad for buffer in head.buffers())

    history = train.fit(model, config, _loader(small_train, 32), progress=False)
    assert {"ce", "entropy"} <= set(history[0])
    assert torch.equal(head.first, first) and torch.equal(head.second, second)
    assert not any(buffer.requires_grad for buffer in head.buffers())
    moved = [name for name, p in model.named_parameters() if name in encoder and not torch.equal(p, encoder[name])]
    assert moved  # the encoder learns
    assert not torch.equal(head.classifier.weight, classifier)


class _Disconnect(Exception):
    pass


class _LoaderThatDies(data.GpuLoader):
    """Raises in the middle of epoch 2, as a Colab disconnect would."""

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if self.epoch == 2 and i == 3:
                raise _Disconnect
            yield batch


def _without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def test_a_controlled_run_resumes_bit_for_bit(small_train, tmp_path):
    config = control.recipe("smoke", epochs=2, width=4, batch_size=32)
    whole = _controlled_model(config, small_train)
    history = train.fit(whole, config, _loader(small_train, 32), run_dir=tmp_path / "whole", progress=False)
    assert [sorted({"ce", "entropy"} & set(record)) for record in history] == [["ce", "entropy"]] * 2
    assert all(math.isfinite(record["ce"]) and math.isfinite(record["entropy"]) for record in history)

    with pytest.raises(_Disconnect):
        train.fit(
            _controlled_model(config, small_train),
            config,
            _loader(small_train, 32, _LoaderThatDies),
            run_dir=tmp_path / "resumed",
            progress=False,
        )
    resumed = _controlled_model(config, small_train)  # a new kernel: fresh weights, a fresh loss
    history_resumed = train.fit(resumed, config, _loader(small_train, 32), run_dir=tmp_path / "resumed", progress=False)
    assert _without_timing(history_resumed) == _without_timing(history)
    assert list(whole.state_dict()) == list(resumed.state_dict())
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# --- the loss ---------------------------------------------------------------------------------------


def _batch(seed, B=16, p=8, C=5):
    g = torch.Generator().manual_seed(seed)
    return BatchOutput(torch.randn(B, p, generator=g), torch.randn(B, C, generator=g)), torch.randint(
        C, (B,), generator=g
    )


def test_control_loss_is_smoothed_cross_entropy_plus_alpha_entropy():
    out, y = _batch(0)
    expected = F.cross_entropy(out.logits, y, label_smoothing=0.1) + 0.05 * control.entropy_regularizer(out.features)
    torch.testing.assert_close(control.ControlLoss()(out, y), expected)
    plain = F.cross_entropy(out.logits, y)
    torch.testing.assert_close(control.ControlLoss(alpha=0, label_smoothing=0)(out, y), plain)
    with pytest.raises(ValueError, match="alpha"):
        control.ControlLoss(alpha=-0.01)
    with pytest.raises(ValueError, match="alpha"):
        control.ControlLoss(alpha=float("nan"))
    with pytest.raises(ValueError, match="label_smoothing"):
        control.ControlLoss(label_smoothing=1.0)


def test_the_methods_loss_takes_the_configs_label_smoothing(small_train):
    """One setting serves the baseline's cross-entropy and the controlled loss: a comparison stays fair."""
    for smoothing in (0.0, 0.1, 0.2):
        config = control.recipe("smoke", label_smoothing=smoothing)
        loss, hooks = config.method.training(config, small_train)
        assert isinstance(loss, control.ControlLoss) and hooks == []
        assert (loss.label_smoothing, loss.alpha) == (smoothing, 0.05)


def test_control_loss_reports_the_epoch_means_of_its_two_terms():
    loss = control.ControlLoss(alpha=0.5)
    assert loss.end_epoch(1, None, None) is None  # no step yet
    batches = [_batch(seed) for seed in range(3)]
    for out, y in batches:
        loss(out, y)
    ce = [F.cross_entropy(out.logits, y, label_smoothing=0.1).item() for out, y in batches]
    entropy = [control.entropy_regularizer(out.features).item() for out, _ in batches]
    means = loss.end_epoch(1, None, None)
    assert means == pytest.approx({"ce": sum(ce) / 3, "entropy": sum(entropy) / 3}, rel=1e-6)
    assert loss.end_epoch(2, None, None) is None  # reset
    loss(*batches[2])
    assert loss.end_epoch(3, None, None) == pytest.approx({"ce": ce[2], "entropy": entropy[2]}, rel=1e-6)
    loss(*batches[0])  # an epoch interrupted after one step, then resumed with the same loss object
    loss.load_state_dict(loss.state_dict())
    loss(*batches[1])
    assert loss.end_epoch(4, None, None) == pytest.approx({"ce": ce[1], "entropy": entropy[1]}, rel=1e-6)


# --- the method, its run key, the recipe --------------------------------------------------------------


def test_the_methods_hyperparameters_name_the_run(small_train, tmp_path):
    method = control.control()
    assert method.name == "control"
    assert method.hparams == {"alpha": 0.05, "hidden": None, "out": None, "seed": 0, "basis": "random"}
    variants = [{}, {"alpha": 0.1}, {"hidden": 64}, {"seed": 1}, {"basis": "identity"}]
    folders = {
        train.run_directory(control.recipe("smoke", control.control(**v)), small_train, tmp_path) for v in variants
    }
    assert len(folders) == 5
    with pytest.raises(ValueError, match="basis"):
        control.control(basis="eye")
    key = train.TrainConfig(method=control.control(alpha=0.1)).key()
    assert key["method"] == "control" and key["method.alpha"] == 0.1 and key["method.hidden"] is None
    same = train.run_directory(control.recipe("smoke", control.control()), small_train, tmp_path)
    assert same in folders  # a new Method object with the same params: the same run


def test_rectangular_etf_is_exact_only_when_square():
    square = control.rectangular_etf(4, 4)
    assert square.dtype == torch.float64 and square.shape == (4, 4)
    torch.testing.assert_close(square @ square.T, simplex_etf_gram(4))

    wide = control.rectangular_etf(512, 2048)
    unit = wide / wide.norm(dim=1, keepdim=True)
    cosines = (unit @ unit.T)[~torch.eye(512, dtype=torch.bool)]
    assert cosines.min() > 0  # slightly positive, not −1/511
    torch.testing.assert_close(cosines, torch.full_like(cosines, cosines[0].item()))  # all alike
    assert not torch.allclose(cosines, torch.full_like(cosines, -1 / 511))

    assert cosines[0].item() == pytest.approx(1 / 257)  # (−2/c + n/c²) / (1 − 2/c + n/c²), c = 512, n = 2048

    tall = control.rectangular_etf(8, 4)
    assert all(torch.equal(tall[4], tall[i]) for i in range(5, 8))
    torch.testing.assert_close(tall[4], torch.full((4,), -math.sqrt(4 / 3) / 4, dtype=torch.float64))
    assert not torch.equal(tall[3], tall[4])


def test_the_recipe_is_the_authors_for_both_methods():
    config = control.recipe("smoke")
    assert (config.optimizer, config.schedule, config.label_smoothing, config.method.name) == (
        "adamw",
        "cosine",
        0.1,
        "control",
    )
    assert (config.epochs, config.width, config.batch_size) == (control.SCALES["smoke"].epochs, 16, 64)
    assert (config.lr, config.weight_decay, config.warmup_epochs) == (2.5e-3, 0.05, pytest.approx(0.1))
    assert config.snapshot_epochs[-1] == config.epochs
    baseline = control.recipe("smoke", methods.ERM)
    assert baseline.method is methods.ERM
    assert replace(config, method=methods.ERM) == baseline  # only the method differs
    assert control.recipe("quick").epochs == 10 and control.recipe("full").epochs == 100
    longer = control.recipe("smoke", epochs=5, lr=1e-3)
    assert (longer.epochs, longer.lr, longer.snapshot_epochs[-1], longer.warmup_epochs) == (5, 1e-3, 5, 0.25)


def test_the_authors_projector_is_the_identity_basis_etf_on_nonnegative_features():
    """512 → 2048 → 512 with the rectangular matrices = normalise(S ReLU(S h)), S the square ETF with U = I,
    as soon as h ≥ 0 (a ResNet's pooled features): the 1536 extra hidden units are always 0."""
    first, second = control.rectangular_etf(2048, 512), control.rectangular_etf(512, 2048)
    head = control.EtfProjector(512, 10, basis="identity").double()
    h = 3 * torch.rand(64, 512, dtype=torch.float64)  # ≥ 0
    hidden = F.relu(h @ first.T)
    assert (hidden[:, 512:] == 0).all()
    authors = F.normalize(hidden @ second.T, dim=1)
    torch.testing.assert_close(head.embed(h), authors, atol=1e-6, rtol=0)
    signed = torch.randn(64, 512, dtype=torch.float64)  # e.g. a ViT's features: the maps differ
    assert (head.embed(signed) - F.normalize(F.relu(signed @ first.T) @ second.T, dim=1)).abs().max() > 1e-2
    torch.testing.assert_close(head.first @ head.first.T, simplex_etf_gram(512), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="hidden = out = p"):
        control.EtfProjector(512, 10, hidden=256, basis="identity")
