"""ResNet-18 with the CIFAR stem, built on torchvision's ResNet.

The ImageNet ResNet-18 starts with a 7×7 convolution of stride 2 and a max-pool: on a 32×32 CIFAR image
that leaves an 8×8 map before the first residual stage. The CIFAR stem replaces both with one 3×3
convolution of stride 1, so the stages see 32, 16, 8 and 4 pixels. ``width`` scales every stage
(64 is the standard network with 512-dimensional features; the smoke profile uses 16, i.e. 128-d).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock

__all__ = ["CifarResNet", "resnet18", "PretrainedWeightsUnavailable", "STAGES"]

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # the outputs read by ``stage_features``


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights of regime B could not be loaded."""


class CifarResNet(torchvision.models.ResNet):
    """torchvision's ResNet with a 3×3, stride-1 stem, no max-pool and a configurable width.

    ``model(x)`` → logits (B, C); ``model.features(x)`` → penultimate features h (B, p), p = 8·width;
    ``model.fc`` is the linear head (W = fc.weight (C, p), b = fc.bias (C,));
    ``model.stage_features(x)`` → {stage: (B, channels)} global-average-pooled output of every stage.
    """

    def __init__(self, num_classes: int, width: int = 64, layers: tuple[int, ...] = (2, 2, 2, 2)):
        nn.Module.__init__(self)  # torchvision's __init__ hard-codes width 64: set up its fields here
        self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)  # CIFAR stem
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()                                                     # no max-pool
        self.layer1 = self._make_layer(BasicBlock, width, layers[0])
        self.layer2 = self._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)
        self.width, self.num_classes, self.feature_dim = width, num_classes, 8 * width
        self.pretrained = False
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features h: (B, 3, 32, 32) → (B, p)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits l = W h + b: (B, 3, 32, 32) → (B, C)."""
        return self.fc(self.features(x))

    def stage_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Global-average-pooled output of every stage: {"stem": (B, w), …, "layer4": (B, 8w)}."""
        outputs = {"stem": self.relu(self.bn1(self.conv1(x)))}
        for previous, name in zip(STAGES, STAGES[1:]):
            outputs[name] = getattr(self, name)(outputs[previous])
        return {name: torch.flatten(self.avgpool(out), 1) for name, out in outputs.items()}


def resnet18(num_classes: int, width: int = 64, pretrained: bool = False) -> CifarResNet:
    """ResNet-18 with the CIFAR stem for ``num_classes`` classes.

    ``pretrained=True`` (regime B) loads torchvision's ImageNet weights into every layer but the new
    3×3 stem and the head (both keep their fresh initialisation); it needs width 64 and internet access
    the first time, and raises :class:`PretrainedWeightsUnavailable` with what to do otherwise.
    """
    if 8 * width < num_classes - 1:
        raise ValueError(f"width={width} gives {8 * width}-d features, fewer than C - 1 = {num_classes - 1}: "
                         f"a {num_classes}-class simplex ETF cannot exist there. Use width ≥ {-(-(num_classes - 1) // 8)}.")
    model = CifarResNet(num_classes, width)
    if pretrained:
        if width != 64:
            raise PretrainedWeightsUnavailable(
                f"ImageNet weights exist for width 64 only, not width={width} (the smoke profile's narrow "
                f"network): use pretrained=False, or the quick/full profile.")
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=True)
        except Exception as error:  # no internet, a proxy, a truncated download …
            raise PretrainedWeightsUnavailable(
                f"Could not fetch torchvision's ImageNet ResNet-18 weights ({type(error).__name__}: {error}). "
                f"Regime B needs internet access once (Colab has it); offline, copy "
                f"{weights.url.rsplit('/', 1)[-1]} into $TORCH_HOME/hub/checkpoints, or train from scratch "
                f"(pretrained=False).") from None
        state = {k: v for k, v in state.items() if not k.startswith(("conv1.", "fc."))}
        model.load_state_dict(state, strict=False)
        model.pretrained = True
    return model
