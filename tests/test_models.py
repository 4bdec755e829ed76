import urllib.error

import pytest
import torch
import torchvision

from nclab import heads, models


@pytest.mark.parametrize("width, p", [(16, 128), (64, 512)])
def test_feature_dimension_is_eight_times_the_width(width, p):
    model = models.resnet18(100, width=width).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.feature_dim == p and model.features(x).shape == (2, p)
    assert model(x).shape == (2, 100) and model.head.weight.shape == (100, p)
    assert isinstance(model.head, heads.Linear)


def test_model_is_an_encoder_and_a_head():
    model = models.resnet18(10, width=8).eval()
    x = torch.rand(3, 3, 32, 32)
    h = model.features(x)
    assert torch.allclose(model(x), model.head(h)) and torch.allclose(
        model(x), h @ model.head.weight.T + model.head.bias, atol=1e-5
    )
    etf = models.resnet18(10, width=8, head=heads.FixedETF(64, 10)).eval()
    assert isinstance(etf.head, heads.FixedETF) and etf(x).shape == (3, 10)
    with pytest.raises(ValueError, match="p = 64 features and C = 10"):
        models.resnet18(10, width=8, head=heads.Linear(32, 10))


def test_the_model_normalises_its_inputs_with_its_training_statistics():
    mean, std = (0.2, 0.4, 0.6), (0.1, 0.2, 0.3)
    model = models.resnet18(10, width=8, normalization=(mean, std)).eval()
    plain = models.resnet18(10, width=8).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}, strict=False)
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model.features(x), plain.features(normalised), atol=1e-5)
    assert torch.allclose(model.stage_features(x)["stem"], plain.stage_features(normalised)["stem"], atol=1e-5)
    assert torch.allclose(model.state_dict()["normalize.std"].flatten(), torch.tensor(std))  # saved with it
    rebuilt = models.resnet18(10, width=8)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(x), model(x))  # a checkpoint restores the statistics


def test_cifar_stem_keeps_full_resolution():
    model = models.resnet18(10, width=8)
    assert isinstance(model, torchvision.models.ResNet)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    x = torch.rand(1, 3, 32, 32)
    assert model.layer1(model.relu(model.bn1(model.conv1(model.normalize(x))))).shape[-2:] == (32, 32)


def test_stage_features_read_every_residual_stage():
    model = models.resnet18(10, width=8).eval()
    x = torch.rand(2, 3, 32, 32)
    stages = model.stage_features(x)
    assert list(stages) == list(models.STAGES)
    assert [s.shape[1] for s in stages.values()] == [8, 8, 16, 32, 64]
    assert torch.allclose(stages["layer4"], model.features(x), atol=1e-6)


def test_too_narrow_for_a_simplex_etf_is_refused():
    with pytest.raises(ValueError, match="C - 1 = 99"):
        models.resnet18(100, width=8)


def test_pretrained_needs_width_64():
    with pytest.raises(models.PretrainedWeightsUnavailable, match="width 64"):
        models.imagenet_weights(16)


def test_pretrained_offline_explains_itself(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(models.PretrainedWeightsUnavailable, match="internet.*pretrained=False"):
        models.imagenet_weights(64)


def test_pretrained_loads_every_layer_but_stem_and_head(monkeypatch):
    imagenet = torchvision.models.resnet18()  # stands for the downloaded weights
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, **kw: imagenet.state_dict())
    torch.manual_seed(0)
    fresh = models.resnet18(100, width=64)
    torch.manual_seed(0)
    model = models.load_imagenet_weights(models.resnet18(100, width=64))
    assert torch.equal(model.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert torch.equal(model.bn1.running_var, imagenet.bn1.running_var)
    assert model.conv1.weight.shape == (64, 3, 3, 3) and model.head.weight.shape == (100, 512)
    assert torch.equal(model.conv1.weight, fresh.conv1.weight) and torch.equal(model.head.weight, fresh.head.weight)
