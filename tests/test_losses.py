"""The default loss, by hand: cross-entropy with label smoothing on the logits of a BatchOutput."""

import math

import pytest
import torch

from nclab import losses


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
