"""Shared fixtures: small real-pixel data sets from the offline stand-in (written once per session)."""

import pytest

from nclab import data


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
