"""NCFAL (nclab.methods.ncfal): environment inference (reassignment by the largest label logit, the
agreement up to renaming, the loop on a hand case whose answer is known), the input mask, the alignment
penalty and the loss on hand cases, the fixed ETF heads that do not move, and the whole pipeline on real
digits against ERM."""

import math

import pytest
import torch
import torch.nn.functional as F

from nclab import data, etf, heads, models, tables, train
from nclab.losses import BatchOutput
from nclab.methods import invariance, ncfal


def test_each_sample_goes_to_the_local_model_with_the_largest_logit_for_its_label():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [1.0, 0.0, 0.5, 4.0], [0.0, 5.0, -2.0, 1.0]])  # (E = 3, N = 4)
    assert ncfal.reassign_environments(logits).tolist() == [0, 2, 0, 1]  # sample 2: a tie, the lower e
    with pytest.raises(ValueError, match="at least 2 local models"):
        ncfal.reassign_environments(torch.ones(1, 4))


def test_agreement_ignores_the_names_of_the_environments():
    true = torch.tensor([0, 0, 0, 1, 1, 1])
    assert ncfal.environment_agreement(1 - true, true) == 1.0  # swapped names: the same partition
    assert ncfal.environment_agreement(torch.tensor([0, 0, 1, 1, 1, 1]), true) == pytest.approx(5 / 6)
    assert ncfal.environment_agreement(torch.tensor([0, 1, 0, 1, 0, 1]), true) == pytest.approx(4 / 6)
    assert ncfal.environment_agreement(torch.tensor([2, 2, 2, 0, 0, 5]), true) == pytest.approx(5 / 6)
    assert ncfal.environment_agreement(torch.tensor([5, 5, 5, 0, 0, 2]), true) == pytest.approx(5 / 6)  # 3 for 2
    assert ncfal.environment_agreement(torch.tensor([7, 7, 3, 3, 9, 9]), true) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="one entry each"):
        ncfal.environment_agreement(true[:3], true)


def _two_clusters():
    """12 one-pixel images: env 0 near 50, env 1 near 200; labels all 0."""
    values = torch.tensor([40, 50, 60, 45, 55, 52, 190, 200, 210, 205, 195, 199], dtype=torch.uint8)
    images = values.view(-1, 1, 1, 1).expand(-1, 3, 1, 1).contiguous()
    env = (values > 128).long()
    return data.ImageSet(images, torch.zeros(12, dtype=torch.long), ["a"], "toy/train", extras={"env": env})


def test_inference_finds_the_true_environments_of_a_hand_case_and_stops():
    """Local model = the mean pixel of its environment; label logit = −|x − mean|: each round moves every
    sample to the nearer mean, so from a partly right start the true split is found, then nothing moves."""
    toy = _two_clusters()
    fitted = []

    def fit_local(subset, environment, round_):
        fitted.append((round_, environment, len(subset)))
        return subset.images[:, 0].float().mean()

    def scores(mean, s):
        return -(s.images[:, 0, 0, 0].float() - mean).abs()

    initial = torch.tensor([0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0])  # 8 of 12 right
    assigned, rounds = ncfal.infer_environments(toy, initial, fit_local, max_rounds=5, scores=scores)
    assert ncfal.environment_agreement(assigned, toy.extras["env"]) == 1.0
    assert rounds["round"].tolist() == [1, 2] and rounds["changed"].tolist() == [4, 0]
    assert rounds["agreement"].tolist() == [1.0, 1.0] and rounds["sizes"].tolist()[-1] == [6, 6]
    assert [(r, e, n) for r, e, n in fitted] == [(1, 0, 6), (1, 1, 6), (2, 0, 6), (2, 1, 6)]

    one_round, table = ncfal.infer_environments(toy, initial, fit_local, max_rounds=1, scores=scores)
    assert len(table) == 1 and torch.equal(one_round, assigned)
    with pytest.raises(ValueError, match="one environment per sample"):
        ncfal.infer_environments(toy, initial[:5], fit_local, scores=scores)
    with pytest.raises(ValueError, match="reassignment needs two or more"):
        ncfal.infer_environments(toy, torch.zeros(12, dtype=torch.long), fit_local, scores=scores)


def test_inference_stops_when_every_sample_lands_in_one_environment():
    toy = _two_clusters()

    def fit_local(subset, environment, round_):
        return environment

    def scores(environment, s):  # local model 1 wins every sample
        return torch.full((len(s),), float(environment))

    initial = torch.tensor([0, 1] * 6)
    assigned, rounds = ncfal.infer_environments(toy, initial, fit_local, max_rounds=5, scores=scores)
    assert (assigned == 1).all() and rounds["collapsed"].tolist() == [True] and len(rounds) == 1
    assert rounds["agreement"].tolist() == [0.5]


def test_label_logits_reads_each_samples_own_label():
    train_set, _ = data.colored_mnist("smoke")
    subset = train_set.select(torch.arange(40))
    model = models.small_cnn(2, width=4, normalization=train_set.normalization).eval()
    values = ncfal.label_logits(model, subset, batch_size=16)
    with torch.no_grad():
        logits = model(subset.images.float() / 255)
    torch.testing.assert_close(values, logits[torch.arange(40), subset.labels])
    assert model.training is False


# --- the method: mask, alignment, loss, fixed ETF heads -------------------------------------------------


def _digits(colour):
    """Two 4×4 'digits' with the same ink, in the red (0) or green (1) channel, as Colored-MNIST draws them."""
    ink = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    image = torch.zeros(1, 3, 4, 4)
    image[0, colour] = ink
    return image


def test_an_open_mask_changes_nothing_and_the_opponent_basis_is_orthonormal():
    basis = ncfal.OPPONENT_BASIS
    torch.testing.assert_close(basis @ basis.T, torch.eye(3))
    mask = ncfal.InputMask((3, 4, 4), init=50.0).eval()  # sigmoid(50) = 1
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(mask(x), x)
    assert mask.values().shape == (3, 4, 4) and torch.allclose(mask.logits, torch.full((3, 4, 4), 50.0))
    assert ncfal.InputMask((3, 4, 4), init=3.0, gain=100.0).weight.flatten()[0].item() == pytest.approx(0.03)


def test_a_mask_that_keeps_only_luminance_removes_the_colour_and_an_rgb_mask_cannot():
    mask = ncfal.InputMask((3, 4, 4)).eval()
    with torch.no_grad():
        mask.weight.copy_(torch.tensor([50.0, -50.0, -50.0])[:, None, None] / mask.gain)  # keep luminance only
    red, green = mask(_digits(0)), mask(_digits(1))
    torch.testing.assert_close(red, green, atol=1e-6, rtol=0)  # the colour is gone, the shape is kept
    torch.testing.assert_close(red[0, 0], _digits(0)[0, 0] / 3, atol=1e-6, rtol=0)  # grey: (R + G + B)/3 each
    rgb = ncfal.InputMask((3, 4, 4), basis="rgb").eval()
    with torch.no_grad():
        rgb.weight.copy_(torch.tensor([50.0, 50.0, -50.0])[:, None, None] / rgb.gain)
    assert not torch.allclose(rgb(_digits(0)), rgb(_digits(1)))  # in RGB the ink's channel is the colour


def test_the_mask_is_noisy_only_while_training():
    mask = ncfal.InputMask((3, 4, 4), noise=1.0)
    x = torch.rand(2, 3, 4, 4)
    assert not torch.equal(mask.train()(x), mask(x))
    assert torch.equal(mask.eval()(x), mask(x))
    quiet = ncfal.InputMask((3, 4, 4), noise=0.0).train()
    assert torch.equal(quiet(x), quiet(x))
    for bad, match in [(dict(basis="hsv"), "basis"), (dict(noise=-1.0), "noise"), (dict(gain=0.0), "gain")]:
        with pytest.raises(ValueError, match=match):
            ncfal.InputMask((3, 4, 4), **bad)
    with pytest.raises(ValueError, match="3-channel"):
        ncfal.InputMask((1, 4, 4))


def _cells(shift):
    """Features of 2 environments × 2 classes × 4 samples (2 in each half), p = 2: class c at (±1, 0), and
    environment e moved by (0, ±shift/2); no noise inside a cell."""
    env = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1] * 2)
    y = torch.tensor([0, 0, 1, 1] * 4)
    h = torch.stack([2.0 * y - 1, shift * (env - 0.5)], dim=1)
    return h, y, env


def test_alignment_penalty_is_zero_for_equal_class_means_and_known_for_a_shift():
    h, y, env = _cells(0.0)
    assert ncfal.alignment_penalty(h, y, env).item() == pytest.approx(0.0, abs=1e-12)
    h, y, env = _cells(2.0)  # every cell 1 away from its class's mean over the environments
    total = (h - h.mean(0)).pow(2).sum(1).mean()  # 1 + 1
    assert ncfal.alignment_penalty(h, y, env).item() == pytest.approx(1.0 / total.item(), rel=1e-6)
    one_env = ncfal.alignment_penalty(h, y, torch.zeros_like(env))
    assert one_env.item() == 0.0 and one_env.requires_grad is False  # nothing to align: 0
    h.requires_grad_(True)
    ncfal.alignment_penalty(h, y, env).backward()
    assert h.grad.abs().sum() > 0


def test_alignment_penalty_is_unbiased_where_the_plain_distance_sees_noise():
    """Features that do not depend on the environment: the split-batch estimate averages to 0 over many
    batches, the squared distance of the estimated means does not."""
    generator = torch.Generator().manual_seed(0)
    split, plain = [], []
    for _ in range(400):
        y = torch.randint(0, 2, (64,), generator=generator)
        env = torch.randint(0, 2, (64,), generator=generator)
        h = torch.randn(64, 8, generator=generator) + 3 * y[:, None]
        split.append(ncfal.alignment_penalty(h, y, env).item())
        means = torch.stack([torch.stack([h[(env == e) & (y == c)].mean(0) for c in (0, 1)]) for e in (0, 1)])
        plain.append(((means - means.mean(0)) ** 2).sum(-1).mean().item() / (h - h.mean(0)).pow(2).sum(1).mean().item())
    standard_error = torch.tensor(split).std().item() / 20
    assert abs(sum(split) / 400) < 4 * standard_error
    assert sum(plain) / 400 > 10 * standard_error


def _batch(model, env, y=None):
    y = torch.tensor([0, 1] * (len(env) // 2)) if y is None else y
    x = torch.rand(len(env), 3, 28, 28)
    h = model.features(x)
    return BatchOutput(h, model.head(h), {"env": torch.tensor(env)}, model, x), y


def _ncfal_model(width=4):
    config = ncfal.recipe("smoke", width=width)
    train_set, _ = data.colored_mnist("smoke")
    return config.method.build_model(config, train_set.select(torch.arange(64)))


def test_ncfal_loss_adds_the_terms_anneals_and_restarts_the_optimiser_at_the_jump():
    model = _ncfal_model()
    out, y = _batch(model, [0, 0, 0, 0, 1, 1, 1, 1])
    loss = ncfal.NcfalLoss(penalty_weight=100.0, anneal_steps=1, mask_weight=0.5)
    risks = torch.stack([F.cross_entropy(out.logits[:4], y[:4]), F.cross_entropy(out.logits[4:], y[4:])])
    alignment = ncfal.alignment_penalty(out.features, y, out.extras["env"])
    kept = torch.sigmoid(model.mask.logits).mean()
    torch.testing.assert_close(loss(out, y), risks.mean() + alignment + 0.5 * kept)
    assert loss.restart_optimizer() is False
    loss.after_step(out, y)
    assert loss.restart_optimizer() is True  # λ jumps now
    torch.testing.assert_close(loss(out, y), (risks.mean() + 100 * alignment) / 100 + 0.5 * kept)
    loss.after_step(out, y)
    assert loss.restart_optimizer() is False and loss.state_dict() == {"steps": 2}
    assert set(loss.end_epoch(1, model, None)) == {"risk", "alignment", "mask"}
    assert ncfal.NcfalLoss(1.0, 1, 0.0).restart_optimizer() is False  # no jump when λ stays 1


def test_ncfal_says_what_it_needs():
    model = _ncfal_model()
    out, y = _batch(model, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="extra 'env'"):
        ncfal.NcfalLoss(10.0, 0, 0.1)(BatchOutput(out.features, out.logits, {}, model), y)
    plain = models.small_cnn(2, 4)
    with pytest.raises(ValueError, match="masked network"):
        ncfal.NcfalLoss(10.0, 0, 0.1)(
            BatchOutput(out.features, out.logits, {"env": torch.tensor([0, 1, 0, 1])}, plain), y
        )
    for bad in [dict(penalty_weight=-1.0), dict(anneal_steps=-1), dict(mask_weight=-0.1)]:
        with pytest.raises(ValueError, match=list(bad)[0]):
            ncfal.ncfal(**bad)
    with pytest.raises(ValueError, match="encoder"):
        ncfal.recipe("smoke", ncfal.ncfal(encoder="vit")).method.build_model(
            ncfal.recipe("smoke"), data.colored_mnist("smoke")[0]
        )
    key = ncfal.recipe("smoke", ncfal.ncfal(penalty_weight=10.0, gain=5.0)).key()
    assert key["method"] == "ncfal" and key["method.penalty_weight"] == 10.0 and key["method.gain"] == 5.0


def test_the_resnet18_encoder_is_an_option():
    config = ncfal.recipe("smoke", ncfal.ncfal(encoder="resnet18"), width=4)
    train_set, _ = data.colored_mnist("smoke")
    model = config.method.build_model(config, train_set)
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 2) and model.feature_dim == 32


def test_every_environment_shares_one_etf_head_that_training_does_not_move(tmp_path):
    train_set, test_set = data.colored_mnist("smoke")
    part = ncfal.with_environments(train_set.select(torch.arange(256)), ncfal.random_split(train_set)[:256])
    config = ncfal.recipe("smoke", ncfal.ncfal(anneal_steps=2), width=4, epochs=2)
    torch.manual_seed(0)
    model = config.method.build_model(config, part)
    etf_before, mask_before = model.head.weight.clone(), model.mask.logits.detach().clone()
    assert isinstance(model.head, heads.FixedETF) and "head.weight" not in dict(model.named_parameters())
    train.fit(
        model,
        config,
        data.GpuLoader(part, 64, shuffle=True, augment=False, drop_last=True, device="cpu"),
        progress=False,
    )
    assert torch.equal(model.head.weight, etf_before)  # the ETF did not move
    assert not torch.equal(model.mask.logits.detach(), mask_before)  # the mask learnt
    gram = model.head.weight @ model.head.weight.T
    torch.testing.assert_close(gram, etf.simplex_etf_gram(2).float(), atol=1e-6, rtol=0)
    local = ncfal.local_model().build_model(config, part)
    assert torch.equal(local.head.weight, model.head.weight)  # the local models use the same ETF


def test_etf_distance_of_aligned_and_opposite_prototypes():
    W = etf.simplex_etf(3, 5).float() * 4.0
    assert tables.etf_distance(2.0 * W, W) == pytest.approx(0.0, abs=1e-6)
    assert tables.etf_distance(-W, W) == pytest.approx(2 * math.sqrt(3), rel=1e-6)  # every prototype reversed
    shifted = W + torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # a classifier with a common offset: centred first
    assert tables.etf_distance(W, shifted) == pytest.approx(0.0, abs=1e-6)


def test_with_environments_keeps_the_true_ones_and_random_split_keeps_the_sizes():
    train_set, _ = data.colored_mnist("smoke")
    split = ncfal.random_split(train_set, seed=1)
    assert torch.equal(torch.bincount(split), torch.bincount(train_set.extras["env"]))
    assert 0.4 < ncfal.environment_agreement(split, train_set.extras["env"]) < 0.6
    moved = ncfal.with_environments(train_set, split)
    assert torch.equal(moved.extras["env"], split) and torch.equal(moved.extras["true_env"], train_set.extras["env"])
    assert moved.fingerprint != train_set.fingerprint and moved.name == train_set.name
    again = ncfal.with_environments(moved, 1 - split)
    assert torch.equal(again.extras["true_env"], train_set.extras["env"])  # still the true ones
    with pytest.raises(ValueError, match="one environment per sample"):
        ncfal.with_environments(train_set, split[:10])


@pytest.fixture(scope="module")
def inferred(tmp_path_factory):
    """The smoke profile's whole NCFAL pipeline on real digits: environment inference from a random split
    with cached local models, then NCFAL on the inferred environments, and ERM with the same recipe. Exactly
    notebook 06's runs, in the test session's cache: its nbval run then loads them instead of training."""
    train_set, test_set = data.colored_mnist("smoke")
    config = ncfal.recipe("smoke")
    fit_local = ncfal.local_fitter(config, device="cpu")
    start = ncfal.random_split(train_set, seed=0)
    assigned, rounds = ncfal.infer_environments(train_set, start, fit_local, max_rounds=5)
    runs = {
        name: train.load_or_train(cfg, s, test_set, device="cpu", progress=False)
        for name, cfg, s in [
            ("ERM", ncfal.recipe("smoke", invariance.ERM_DIGITS), train_set),
            ("NCFAL (inferred)", config, ncfal.with_environments(train_set, assigned)),
        ]
    }
    return train_set, test_set, start, assigned, rounds, runs


def test_inferred_environments_split_the_samples_by_whether_their_colour_agrees(inferred):
    train_set, _, start, assigned, rounds, _ = inferred
    partition = tables.partition_rounds(train_set, rounds, start)
    last = partition[partition["round"] == partition["round"].max()]
    assert sorted(last["colour_agrees"].round(1).tolist()) == [0.0, 1.0] or (
        last["colour_agrees"].min() < 0.1 and last["colour_agrees"].max() > 0.9
    ), last
    first = partition[partition["round"] == 0]
    assert first["colour_agrees"].between(0.8, 0.9).all()  # a random split: 85 % everywhere
    assert first["samples"].tolist() == [1000, 1000] and last["samples"].sum() == 2000
    assert {"from_env_0", "from_env_1"} <= set(partition)


def test_ncfal_with_inferred_environments_beats_erm_on_the_test_environment(inferred):
    train_set, test_set, _, _, _, runs = inferred
    table = tables.ood_generalization({name: (run.model, [train_set, test_set]) for name, run in runs.items()})
    accuracy = table.set_index(["method", "environment"])["accuracy"]
    erm, method = accuracy[("ERM", "test (e = 0.9)")], accuracy[("NCFAL (inferred)", "test (e = 0.9)")]
    assert erm < 0.2 and method > erm + 0.3, table
    assert accuracy[("ERM", "train (e = 0.1)")] > 0.85  # ERM reads the colour
    distance = table.set_index(["method", "environment"])["etf_distance"]
    assert distance[("NCFAL (inferred)", "test (e = 0.9)")] < distance[("ERM", "test (e = 0.9)")]
    assert runs["NCFAL (inferred)"].history[-1]["mask"] < 0.9  # the mask closed where it was not needed
    with pytest.raises(ValueError, match="true environments"):
        tables.ood_generalization(
            {"x": (runs["ERM"].model, [ncfal.with_environments(train_set, 1 - train_set.extras["env"])])}
        )


def test_local_models_train_on_environments_smaller_than_a_batch():
    train_set, _ = data.colored_mnist("smoke")
    fit_local = ncfal.local_fitter(ncfal.recipe("smoke", width=4), epochs=1, device="cpu")
    small = train_set.select(torch.arange(30))  # fewer than the batch of 64
    model = fit_local(small, 0, 1)
    assert isinstance(model.head, heads.FixedETF) and ncfal.label_logits(model, small).shape == (30,)
