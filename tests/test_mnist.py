"""Colored-MNIST (nclab.data.mnist): the IRM construction, checked on large samples against the binomial,
and the trap checked on real digits: plain ERM learns the colour."""

import math

import pytest
import torch

from nclab import data, features, models, train
from nclab.data import mnist
from nclab.methods import invariance


def _within_binomial(successes: torch.Tensor, p: float, sigmas: float = 5.0) -> bool:
    """The observed rate is within ``sigmas`` standard deviations of p for n Bernoulli(p) draws."""
    n = len(successes)
    return abs(successes.float().mean().item() - p) <= sigmas * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("color_flip", [0.1, 0.2, 0.9])
def test_colour_agrees_with_the_label_at_one_minus_e_and_the_label_noise_is_25_percent(color_flip):
    N = 200_000
    generator = torch.Generator().manual_seed(int(100 * color_flip))
    digits = torch.randint(0, 10, (N,), generator=generator)
    images = torch.full((N, 2, 2), 200, dtype=torch.uint8)
    colored, labels, colors = mnist.make_environment(images, digits, color_flip, 0.25, generator)
    assert _within_binomial(colors == labels, 1 - color_flip)  # SPEC §5: 0.9 / 0.8 / 0.1
    assert _within_binomial(labels != (digits >= 5).long(), 0.25)  # label noise
    agree_with_digit = (1 - 0.25) * (1 - color_flip) + 0.25 * color_flip
    assert _within_binomial(colors == (digits >= 5).long(), agree_with_digit)
    red, green = colored[:, 0], colored[:, 1]
    assert torch.equal(red[colors == 0], images[colors == 0]) and (red[colors == 1] == 0).all()
    assert torch.equal(green[colors == 1], images[colors == 1]) and (green[colors == 0] == 0).all()
    assert (colored[:, 2] == 0).all() and colored.dtype == torch.uint8


def test_make_environment_checks_its_inputs():
    images, digits = torch.zeros(4, 2, 2, dtype=torch.uint8), torch.arange(4)
    with pytest.raises(ValueError, match="color_flip is a probability"):
        mnist.make_environment(images, digits, 1.5)
    with pytest.raises(ValueError, match="label_noise is a probability"):
        mnist.make_environment(images, digits, 0.1, -0.1)
    with pytest.raises(ValueError, match="uint8"):
        mnist.make_environment(images.float(), digits, 0.1)
    _, labels, colors = mnist.make_environment(images, digits, 0.0, 0.0)  # no noise: exact
    assert labels.tolist() == [0, 0, 0, 0] and torch.equal(colors, labels)
    _, labels, colors = mnist.make_environment(images, digits + 5, 1.0, 0.0)  # colour always flipped
    assert labels.tolist() == [1, 1, 1, 1] and colors.tolist() == [0, 0, 0, 0]


@pytest.fixture
def train_erm(digits_config):
    """3 epochs of ERM on the digits model (width 8): seconds on the CPU."""

    def run(train_set, test_set, root):
        config = digits_config(invariance.ERM_DIGITS, train_set.name.split("/")[0], width=8, epochs=3)
        return train.load_or_train(config, train_set, test_set, device="cpu", root=root, progress=False)

    return run


@pytest.fixture(scope="module")
def smoke_colored():
    return data.colored_mnist("smoke")


def test_colored_mnist_has_two_training_environments_and_a_test_one(smoke_colored):
    train_set, test_set = smoke_colored
    assert train_set.standin and train_set.name == "colored-mnist/train" and train_set.classes == mnist.CLASSES
    assert train_set.images.shape[1:] == (3, 28, 28) and len(train_set) == 2_000  # the smoke profile's cap
    assert set(train_set.extras) == {"env", "color", "digit"}
    assert torch.bincount(train_set.extras["env"]).tolist() == [1_000, 1_000]
    assert (test_set.extras["env"] == 2).all() and 0 < len(test_set) <= 1_000
    for s in (train_set, test_set):  # the ink is in the colour's channel; the label follows the digit, noisily
        ink = s.images.flatten(2).amax(2)  # (N, 3)
        assert torch.equal(ink[:, :2].argmax(1), s.extras["color"]) and (ink[:, 2] == 0).all()
        assert _within_binomial(s.labels != (s.extras["digit"] >= 5).long(), 0.25)  # seeded: 5σ
    agree = [
        (s.extras["color"] == s.labels)[s.extras["env"] == e].float().mean().item()
        for s, e in ((train_set, 0), (train_set, 1), (test_set, 2))
    ]
    assert agree[0] > agree[1] > 0.7 and agree[2] < 0.2  # 0.9, 0.8, 0.1 up to sampling
    again, _ = data.colored_mnist("smoke")
    assert again.fingerprint == train_set.fingerprint  # seeded
    assert data.colored_mnist("smoke", seed=1)[0].fingerprint != train_set.fingerprint
    with pytest.raises(ValueError, match="two training environments and the test one"):
        data.colored_mnist("smoke", color_flips=(0.1, 0.9))


def test_the_environments_reach_the_training_loop_as_extras(smoke_colored):
    train_set, _ = smoke_colored
    loader = data.GpuLoader(train_set, 64, shuffle=True, augment=False, drop_last=True, device="cpu", seed=0)
    x, y, extras = next(iter(loader))
    assert x.shape == (64, 3, 28, 28) and x.max() <= 1
    index = extras["index"]
    for key in ("env", "color", "digit"):
        assert torch.equal(extras[key], train_set.extras[key][index])


def test_erm_learns_the_colour_and_fails_on_the_test_environment(smoke_colored, tmp_path, train_erm):
    """The trap is real on real digits: ERM's test-environment accuracy is below its training accuracy
    (and below chance: it follows the colour, which the test environment reverses)."""
    train_set, test_set = smoke_colored
    run = train_erm(train_set, test_set, tmp_path)
    train_acc, test_acc = run.history[-1]["train_acc"], run.history[-1]["test_acc"]
    assert train_acc > 0.75 and test_acc < 0.5 and test_acc < train_acc
    fs = features.extract_features(
        run.model, data.GpuLoader(test_set, 500, shuffle=False, augment=False, drop_last=False, device="cpu")
    )
    follows_colour = (fs.predictions == test_set.extras["color"]).float().mean().item()
    assert follows_colour > 0.8  # what it learnt is the colour


def test_small_cnn_follows_the_model_contract():
    model = models.small_cnn(2, width=8, normalization=((0.1, 0.1, 0.0), (0.2, 0.2, 1.0)))
    x = torch.rand(5, 3, 28, 28)
    h = model.features(x)
    assert h.shape == (5, 32) and model.feature_dim == 32
    torch.testing.assert_close(model(x), model.head(h))
    assert torch.equal(model.normalize.mean.flatten(), torch.tensor([0.1, 0.1, 0.0]))
    with pytest.raises(NotImplementedError, match="stages=False"):
        model.stage_features(x)
    with pytest.raises(ValueError, match="p = 32 features"):
        models.small_cnn(2, width=8, head=models.Linear(16, 2))


def test_without_colour_keeps_the_digits_and_removes_the_colour(smoke_colored, tmp_path, train_erm):
    train_set, test_set = smoke_colored
    gray_train, gray_test = data.without_colour(train_set), data.without_colour(test_set)
    assert gray_train.name == "grayscale-mnist/train" and torch.equal(gray_train.labels, train_set.labels)
    assert all(torch.equal(gray_train.extras[k], train_set.extras[k]) for k in train_set.extras)
    assert torch.equal(gray_train.images[:, 0], gray_train.images[:, 1])  # the same ink in red and green
    assert torch.equal(gray_train.images[:, 0], train_set.images.amax(1)) and (gray_train.images[:, 2] == 0).all()
    assert gray_train.normalization[0][0] == pytest.approx(gray_train.normalization[0][1])
    run = train_erm(gray_train, gray_test, tmp_path)
    assert run.history[-1]["test_acc"] > 0.55  # the shape transfers: no colour to be fooled by (ceiling 0.75)
