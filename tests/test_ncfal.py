"""NCFAL's environment inference (nclab.methods.ncfal): reassignment by the largest label logit, the
agreement up to renaming, and the whole loop on a hand case whose answer is known."""

import pytest
import torch

from nclab import data, models
from nclab.methods import ncfal


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
