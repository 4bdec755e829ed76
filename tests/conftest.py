"""Shared fixtures: small real-pixel data sets from the offline stand-in (written once per session)."""

import pytest
import torch

from nclab import data, methods, train


@pytest.fixture(scope="session")
def standin_train():
    """The cifar100 stand-in's training split: real MNIST digits 0-7, tinted, (N, 3, 32, 32) uint8."""
    return data.load("cifar100", "train", standin=True)


@pytest.fixture(scope="session")
def standin_test():
    return data.load("cifar100", "test", standin=True)


@pytest.fixture(scope="session")
def small_train(standin_train):
    """256 stratified training images: enough for a few fast, deterministic CPU epochs."""
    return standin_train.subset(256, seed=0)


@pytest.fixture
def toy_scores():
    """OOD scores of two detectors (higher = ID): "good" separates ID from both sets, "flipped" has the sign
    wrong on the near set and no signal on the far one. {detector: {"ID": (200,), "near": (100,), "far": (80,)}}."""
    generator = torch.Generator().manual_seed(0)
    ind = torch.randn(200, generator=generator) + 2
    near, far = torch.randn(100, generator=generator) + 1, torch.randn(80, generator=generator) - 3
    return {
        "good": {"ID": ind, "near": near, "far": far},
        "flipped": {"ID": -ind, "near": -near, "far": torch.randn(80, generator=generator)},
    }


@pytest.fixture(scope="session")
def digits_config():
    """A TrainConfig factory for the Colored-MNIST tests: the digits model's training (AdamW lr 1e-3,
    cosine, batch 64, no augmentation) with the given method, data set name, width and epochs."""

    def make(method, dataset="colored-mnist", width=16, epochs=8):
        return train.TrainConfig(
            regime="adamw",
            dataset=dataset,
            method=method,
            width=width,
            epochs=epochs,
            batch_size=64,
            augment=False,
            optimizer="adamw",
            lr=1e-3,
            weight_decay=1e-4,
            schedule="cosine",
        )

    return make


class CheatingTensor(torch.Tensor):
    """What a student's answer could return to fake a comparison: a tensor subclass that says it equals
    anything (``torch.equal``/``torch.allclose`` → True). Every exercise check must reject it."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.equal, torch.allclose):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


class Disconnect(Exception):
    """What a dying kernel looks like to a test: raised by :class:`DisconnectAt`."""


class DisconnectAt(methods.Hook):
    """A hook that raises :class:`Disconnect` at the end of epoch ``at``, before that epoch's checkpoint."""

    def __init__(self, at):
        self.at = at

    def end_epoch(self, epoch, model, train_loader):
        if epoch == self.at:
            raise Disconnect


@pytest.fixture
def disconnect_at():
    """(DisconnectAt, Disconnect): a hook that interrupts a run at an epoch's end, and what it raises."""
    return DisconnectAt, Disconnect
