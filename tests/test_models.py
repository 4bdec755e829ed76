import urllib.error

import pytest
import torch
import torchvision

from nclab import models


@pytest.mark.parametrize("width, p", [(16, 128), (64, 512)])
def test_feature_dimension_is_eight_times_the_width(width, p):
    model = models.resnet18(100, width=width).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.feature_dim == p and model.features(x).shape == (2, p)
    assert model(x).shape == (2, 100) and model.fc.weight.shape == (100, p)


def test_logits_are_the_linear_head_of_the_features():
    model = models.resnet18(10, width=8).eval()
    x = torch.randn(3, 3, 32, 32)
    h = model.features(x)
    assert torch.allclose(model(x), h @ model.fc.weight.T + model.fc.bias, atol=1e-5)


def test_cifar_stem_keeps_full_resolution():
    model = models.resnet18(10, width=8)
    assert isinstance(model, torchvision.models.ResNet)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    x = torch.randn(1, 3, 32, 32)
    assert model.layer1(model.relu(model.bn1(model.conv1(x)))).shape[-2:] == (32, 32)


def test_stage_features_read_every_residual_stage():
    model = models.resnet18(10, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    stages = model.stage_features(x)
    assert list(stages) == list(models.STAGES)
    assert [s.shape[1] for s in stages.values()] == [8, 8, 16, 32, 64]
    assert torch.allclose(stages["layer4"], model.features(x), atol=1e-6)


def test_too_narrow_for_a_simplex_etf_is_refused():
    with pytest.raises(ValueError, match="C - 1 = 99"):
        models.resnet18(100, width=8)


def test_pretrained_needs_width_64():
    with pytest.raises(models.PretrainedWeightsUnavailable, match="width 64"):
        models.resnet18(100, width=16, pretrained=True)


def test_pretrained_offline_explains_itself(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(models.PretrainedWeightsUnavailable, match="internet.*pretrained=False"):
        models.resnet18(100, width=64, pretrained=True)


def test_pretrained_loads_every_layer_but_stem_and_head(monkeypatch):
    imagenet = torchvision.models.resnet18()                         # stands for the downloaded weights
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, **kw: imagenet.state_dict())
    model = models.resnet18(100, width=64, pretrained=True)
    assert model.pretrained
    assert torch.equal(model.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, imagenet.bn1.running_var)
    assert model.conv1.weight.shape == (64, 3, 3, 3) and model.fc.weight.shape == (100, 512)
