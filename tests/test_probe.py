"""nclab.probe.LinearProbe: scikit-learn's logistic regression on standardised features, in torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nclab import features, train
from nclab.probe import LinearProbe


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8×8 digits (real pixels, 64 features, several of them constant), split 70/30 by class."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def test_probe_matches_scikit_learn_logistic_regression(digits):
    X_train, X_test, y_train, y_test = digits
    l2, N = 1e-2, len(X_train)
    probe = LinearProbe(l2=l2).fit(torch.tensor(X_train), torch.tensor(y_train))
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1 / (l2 * N), max_iter=5000, tol=1e-10))
    reference.fit(X_train, y_train)

    accuracy = probe.accuracy(torch.tensor(X_test), torch.tensor(y_test))
    assert accuracy == pytest.approx(reference.score(X_test, y_test), abs=0.01) and accuracy > 0.9
    ours, theirs = probe.logits(torch.tensor(X_test)).double().numpy(), reference.decision_function(X_test)
    assert np.abs(theirs).max() > 5  # logits of order 10: the tolerance below is half a percent of them
    centred = ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True)  # b is free up to a constant
    np.testing.assert_allclose(*centred, atol=5e-2)
    np.testing.assert_allclose(
        torch.softmax(torch.tensor(ours), 1).numpy(), torch.softmax(torch.tensor(theirs), 1).numpy(), atol=2e-3
    )

    # the same objective value: (1/N) Σ CE(W s + b, y) + (l2/2)‖W‖², W on the standardised features s
    scaler, classifier = reference[0], reference[1]
    S, y = torch.tensor(scaler.transform(X_train)), torch.tensor(y_train)
    std, mean = torch.tensor(scaler.scale_), torch.tensor(scaler.mean_)

    def objective(W, b):
        return (F.cross_entropy(S @ W.T + b, y) + 0.5 * l2 * (W * W).sum()).item()

    W = probe.weight_.double() * std  # back to the standardised features
    b = probe.bias_.double() + W @ (mean / std)
    ours_value = objective(W, b)
    theirs_value = objective(torch.tensor(classifier.coef_), torch.tensor(classifier.intercept_))
    assert ours_value == pytest.approx(theirs_value, rel=1e-5)


def test_a_two_class_probe_is_scikit_learns_binary_model_at_twice_its_C(digits):
    """Two classes: scikit-learn fits one vector v, the probe two rows with w1 = −w0 = v/2, so its penalty
    (l2/2)(‖w0‖² + ‖w1‖²) = (l2/4)‖v‖² is sklearn's at C = 2/(l2·N); at C = 1/(l2·N) the logits differ."""
    X_train, X_test, y_train, y_test = digits
    keep_train, keep_test = np.isin(y_train, (3, 8)), np.isin(y_test, (3, 8))  # a hard pair of digits
    X_train, y_train = X_train[keep_train], (y_train[keep_train] == 8).astype(int)
    X_test, y_test = X_test[keep_test], (y_test[keep_test] == 8).astype(int)
    l2, N = 1e-2, len(X_train)
    probe = LinearProbe(l2=l2).fit(torch.tensor(X_train), torch.tensor(y_train))
    ours = probe.logits(torch.tensor(X_test)).double().numpy()
    margin = ours[:, 1] - ours[:, 0]  # the probe's binary logit
    w = probe.weight_.double()
    assert torch.allclose(w[0], -w[1], atol=1e-4 * w.abs().max().item())  # the optimum is symmetric

    def sklearn_margin(C):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, tol=1e-10))
        return model.fit(X_train, y_train).decision_function(X_test)

    assert np.abs(margin).max() > 3
    np.testing.assert_allclose(margin, sklearn_margin(2 / (l2 * N)), atol=2e-2)
    assert np.abs(margin - sklearn_margin(1 / (l2 * N))).max() > 0.2  # the multiclass formula is not it


def test_weight_and_bias_act_on_the_raw_features(digits):
    X_train, X_test, y_train, _ = digits
    X, X_new = torch.tensor(X_train, dtype=torch.float32), torch.tensor(X_test, dtype=torch.float32)
    constant = (X.std(0) == 0).nonzero().flatten()
    assert len(constant) > 0  # the digits' border pixels are always 0
    probe = LinearProbe(l2=1e-3).fit(X, torch.tensor(y_train))
    assert probe.weight_.shape == (10, 64) and probe.bias_.shape == (10,) and probe.weight_.dtype == torch.float32
    assert torch.isfinite(probe.weight_).all() and torch.isfinite(probe.bias_).all()
    assert (probe.weight_[:, constant] == 0).all()  # a constant feature says nothing
    torch.testing.assert_close(probe.logits(X_new), X_new @ probe.weight_.T + probe.bias_)
    assert torch.equal(probe.predict(X_new), probe.logits(X_new).argmax(1))
    # the standardisation is folded in: an affine change of every feature gives the same logits
    scale, shift = torch.linspace(0.5, 4, 64), torch.linspace(-3, 3, 64)
    moved = LinearProbe(l2=1e-3).fit(X * scale + shift, torch.tensor(y_train))
    torch.testing.assert_close(moved.logits(X_new * scale + shift), probe.logits(X_new), atol=2e-2, rtol=0)


def test_a_constant_feature_gives_no_nan():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    H = torch.randn(60, 4, generator=g) + 3 * torch.nn.functional.one_hot(y, 4)
    H[:, 3] = 7.0  # constant: std 0
    probe = LinearProbe().fit(H, y)
    logits = probe.logits(H)
    assert torch.isfinite(logits).all() and probe.weight_[:, 3].abs().max() == 0
    assert probe.accuracy(H, y) > 0.9


def test_probe_on_the_frozen_features_of_a_trained_model(standin_train, standin_test, tmp_path):
    train_set, test_set = standin_train.subset(512, seed=0), standin_test.subset(400, seed=0)
    config = train.TrainConfig(regime="test", width=8, epochs=3, batch_size=32, lr=0.05, snapshot_epochs=())
    run = train.load_or_train(config, train_set, root=tmp_path, progress=False)
    train_fs = features.cached_features(run.model, train_set, run.run_dir)
    test_fs = features.cached_features(run.model, test_set, run.run_dir)
    assert train_fs.features.shape == (512, 64)
    probe = LinearProbe().fit(train_fs.features, train_fs.labels)
    chance = 1 / train_set.num_classes
    assert chance == 1 / 8
    assert probe.accuracy(test_fs.features, test_fs.labels) > 2 * chance
    assert probe.accuracy(train_fs.features, train_fs.labels) > probe.accuracy(test_fs.features, test_fs.labels)


def test_probe_errors():
    H, y = torch.randn(10, 3), torch.arange(10) % 2
    with pytest.raises(RuntimeError, match="fit"):
        LinearProbe().logits(H)
    with pytest.raises(RuntimeError, match="fit"):
        LinearProbe().accuracy(H, y)
    for l2 in (0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="l2"):
            LinearProbe(l2=l2)
    with pytest.raises(ValueError, match="max_iter"):
        LinearProbe(max_iter=0)
    with pytest.raises(ValueError, match="C ≥ 2"):
        LinearProbe().fit(H, torch.zeros(10, dtype=torch.int64))  # a single class
    with pytest.raises(ValueError, match="max label"):
        LinearProbe().fit(H, y, num_classes=1)
    wider = LinearProbe().fit(H, y, num_classes=4)  # classes 2 and 3 never seen: still logits for them
    assert wider.weight_.shape == (4, 3) and wider.logits(H).shape == (10, 4)


def test_the_probe_says_whether_lbfgs_converged():
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    probe = LinearProbe(l2=1e-2).fit(X, y)
    assert probe.converged_ and 0 < probe.iterations_ < probe.max_iter
    stopped = LinearProbe(l2=1e-2, max_iter=5).fit(X, y)
    assert not stopped.converged_ and stopped.iterations_ == 5
