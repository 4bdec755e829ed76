"""Long-tailed data (nclab.data.longtail): the exponential profile's counts, the subset drawn without
replacement, and the many / medium / few groups."""

import pytest
import torch

from nclab import data


@pytest.mark.parametrize("imbalance_factor, total", [(10, 19_573), (50, 12_608), (100, 10_847)])
def test_cifar100_lt_counts(imbalance_factor, total):
    counts = data.long_tailed_counts(500, 100, imbalance_factor)
    assert sum(counts) == total and counts[0] == 500 and counts[-1] == 500 // imbalance_factor
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # non-increasing


def _balanced(per_class=500, classes=100):
    """A balanced 100 × 500 set of 1-pixel images whose pixel is the sample's index within its class."""
    labels = torch.arange(classes).repeat_interleave(per_class)
    pixel = (torch.arange(per_class).repeat(classes) % 256).to(torch.uint8)
    images = pixel.view(-1, 1, 1, 1).expand(-1, 3, 1, 1).contiguous()
    return data.ImageSet(
        images, labels, [f"c{c}" for c in range(classes)], "toy/train", extras={"id": torch.arange(len(labels))}
    )


@pytest.mark.parametrize("imbalance_factor", [10, 50, 100])
def test_long_tailed_subset_has_the_profile_and_no_repeats(imbalance_factor):
    balanced = _balanced()
    lt = data.long_tailed(balanced, imbalance_factor, seed=0)
    assert torch.bincount(lt.labels, minlength=100).tolist() == data.long_tailed_counts(500, 100, imbalance_factor)
    assert len(torch.unique(lt.extras["id"])) == len(lt)  # without replacement
    assert lt.name == f"toy-lt{imbalance_factor}/train" and lt.num_classes == 100
    again = data.long_tailed(balanced, imbalance_factor, seed=0)
    assert torch.equal(again.extras["id"], lt.extras["id"])  # seeded
    other = data.long_tailed(balanced, imbalance_factor, seed=1)
    assert not torch.equal(other.extras["id"], lt.extras["id"])


def test_long_tailed_checks_its_input():
    with pytest.raises(ValueError, match="≥ 1"):
        data.long_tailed_counts(500, 100, 0.5)
    empty = data.ImageSet(torch.zeros(2, 3, 1, 1, dtype=torch.uint8), torch.tensor([0, 0]), ["a", "b"], "toy/train")
    with pytest.raises(ValueError, match="every class needs images"):
        data.long_tailed(empty, 10)


def test_groups_of_cifar100_lt_and_scaled_thresholds():
    groups, thresholds = data.class_groups(data.long_tailed_counts(500, 100, 100))
    assert thresholds == (100, 20)
    assert (groups.count("many"), groups.count("medium"), groups.count("few")) == (35, 35, 30)
    groups, thresholds = data.class_groups([250, 129, 67, 34, 17, 9, 4, 2])  # n_max 250: thresholds halved
    assert thresholds == (50, 10) and groups == ["many"] * 3 + ["medium"] * 2 + ["few"] * 3


def test_the_smoke_stand_in_becomes_long_tailed():
    train_set, _ = data.train_test_sets("cifar100", "smoke")
    lt = data.long_tailed(train_set, 100)
    counts = torch.bincount(lt.labels)
    assert counts[0] == torch.bincount(train_set.labels).min() and counts[-1] == counts[0] // 100
    assert lt.standin and lt.name == "cifar100-lt100/train"
