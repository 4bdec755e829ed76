"""Models: an encoder and a head. ResNet-18 with the CIFAR stem, built on torchvision's ResNet.

Every nclab model follows one contract, which the trainer, the feature extraction and the methods rely on:

- ``model.features(x)`` → penultimate features h (B, p), from images x (B, C, H, W) in [0, 1];
- ``model.head(h)`` → logits (B, C), a head of ``nclab.heads``; ``model(x)`` = ``model.head(model.features(x))``;
- the model normalises its inputs itself (its first layer, :class:`Normalize`) with the mean and std of
  the data set it is trained on, so any images given to it (OOD sets, another data set) are seen exactly
  as in training.

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

from .heads import Head, Linear

__all__ = [
    "Normalize",
    "CifarResNet",
    "resnet18",
    "SmallCNN",
    "small_cnn",
    "imagenet_weights",
    "load_imagenet_weights",
    "PretrainedWeightsUnavailable",
    "STAGES",
]

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")  # the outputs read by ``stage_features``


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet weights of regime B could not be loaded."""


class Normalize(nn.Module):
    """x ↦ (x − mean) / std per channel, x in [0, 1]: a model's first layer, with its training set's
    statistics (buffers, saved with the weights). Without statistics it is the identity (mean 0, std 1)."""

    def __init__(self, mean: tuple[float, ...] = (0.0, 0.0, 0.0), std: tuple[float, ...] = (1.0, 1.0, 1.0)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _checked_head(head: Head | None, p: int, num_classes: int) -> Head:
    """``head`` (default: a trained Linear) after checking that it maps p features to C classes."""
    head = head if head is not None else Linear(p, num_classes)
    if (head.in_features, head.num_classes) != (p, num_classes):
        raise ValueError(
            f"the head maps {head.in_features} features to {head.num_classes} classes; this "
            f"network has p = {p} features and C = {num_classes} classes"
        )
    return head


class CifarResNet(torchvision.models.ResNet):
    """torchvision's ResNet with a 3×3, stride-1 stem, no max-pool, a configurable width and a head.

    ``model(x)`` → logits (B, C); ``model.features(x)`` → penultimate features h (B, p), p = 8·width;
    ``model.head`` the classifier head (``nclab.heads``; a trained Linear by default);
    ``model.stage_features(x)`` → {stage: (B, channels)} global-average-pooled output of every stage.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 64,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        head: Head | None = None,
        normalization: tuple | None = None,
    ):
        nn.Module.__init__(self)  # torchvision's __init__ hard-codes width 64: set up its fields here
        self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
        self.inplanes = width
        self.normalize = Normalize(*normalization) if normalization is not None else Normalize()
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)  # CIFAR stem
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # no max-pool
        self.layer1 = self._make_layer(BasicBlock, width, layers[0])
        self.layer2 = self._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.width, self.num_classes, self.feature_dim = width, num_classes, 8 * width
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.head = _checked_head(head, self.feature_dim, num_classes)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(self.normalize(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features h: (B, 3, 32, 32) in [0, 1] → (B, p)."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self._stem(x)))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: (B, 3, 32, 32) in [0, 1] → (B, C)."""
        return self.head(self.features(x))

    def stage_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Global-average-pooled output of every stage: {"stem": (B, w), …, "layer4": (B, 8w)}."""
        outputs = {"stem": self._stem(x)}
        for previous, name in zip(STAGES, STAGES[1:]):
            outputs[name] = getattr(self, name)(outputs[previous])
        return {name: torch.flatten(self.avgpool(out), 1) for name, out in outputs.items()}


def resnet18(
    num_classes: int, width: int = 64, *, head: Head | None = None, normalization: tuple | None = None
) -> CifarResNet:
    """ResNet-18 with the CIFAR stem for ``num_classes`` classes.

    ``head``: a head of ``nclab.heads`` for p = 8·width features (default: a trained Linear);
    ``normalization``: (mean, std) per channel of the training set (``ImageSet.normalization``), applied
    by the model to its [0, 1] inputs (default: none). ImageNet weights: :func:`load_imagenet_weights`.
    """
    if 8 * width < num_classes - 1:
        raise ValueError(
            f"width={width} gives {8 * width}-d features, fewer than C - 1 = {num_classes - 1}: "
            f"a {num_classes}-class simplex ETF cannot exist there. Use width ≥ {-(-(num_classes - 1) // 8)}."
        )
    return CifarResNet(num_classes, width, head=head, normalization=normalization)


class SmallCNN(nn.Module):
    """A small CNN for 28×28 digits (Colored-MNIST), with the same contract as :class:`CifarResNet`.

    Three 3×3 convolution blocks (BatchNorm, ReLU; a 2×2 max-pool after the first two: 28 → 14 → 7) of
    ``width``, 2·width and 4·width channels, then global average pooling: h has p = 4·width dimensions.
    ``model.features(x)`` → h, ``model.head(h)`` → logits (a trained Linear by default), ``model(x)`` →
    both; the first layer normalises the [0, 1] inputs with the training set's statistics.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 32,
        in_channels: int = 3,
        head: Head | None = None,
        normalization: tuple | None = None,
    ):
        super().__init__()
        self.normalize = (
            Normalize(*normalization)
            if normalization is not None
            else Normalize((0.0,) * in_channels, (1.0,) * in_channels)
        )

        def block(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        self.encoder = nn.Sequential(
            *block(in_channels, width, True),
            *block(width, 2 * width, True),
            *block(2 * width, 4 * width, False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.width, self.num_classes, self.feature_dim = width, num_classes, 4 * width
        self.head = _checked_head(head, self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features h: (B, C_in, 28, 28) in [0, 1] → (B, 4·width)."""
        return self.encoder(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: (B, C_in, 28, 28) in [0, 1] → (B, C)."""
        return self.head(self.features(x))

    def stage_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            "SmallCNN has no residual stages: extract its features with stages=False (the penultimate h only)."
        )


def small_cnn(
    num_classes: int, width: int = 32, *, head: Head | None = None, normalization: tuple | None = None
) -> SmallCNN:
    """A :class:`SmallCNN` for 3-channel 28×28 images: p = 4·width features (128 by default)."""
    channels = 3 if normalization is None else len(normalization[0])
    return SmallCNN(num_classes, width, channels, head=head, normalization=normalization)


def imagenet_weights(width: int = 64) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 weights (regime B), downloaded once into ``$TORCH_HOME``.

    Raises :class:`PretrainedWeightsUnavailable`, with what to do, for a width other than 64 or when the
    weights cannot be fetched (offline).
    """
    if width != 64:
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights exist for width 64 only, not width={width} (the smoke profile's narrow "
            f"network): use pretrained=False, or the quick/full profile."
        )
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # no internet, a proxy, a truncated download …
        raise PretrainedWeightsUnavailable(
            f"Could not fetch torchvision's ImageNet ResNet-18 weights ({type(error).__name__}: {error}). "
            f"Regime B needs internet access once (Colab has it); offline, copy "
            f"{weights.url.rsplit('/', 1)[-1]} into $TORCH_HOME/hub/checkpoints, or train from scratch "
            f"(pretrained=False)."
        ) from None


def load_imagenet_weights(model: CifarResNet, state: dict[str, torch.Tensor] | None = None) -> CifarResNet:
    """Copy ImageNet weights (``state``, default :func:`imagenet_weights`) into every layer of ``model``
    but the new 3×3 stem and the head, which keep their initialisation; returns the model."""
    state = imagenet_weights(model.width) if state is None else state
    state = {k: v for k, v in state.items() if not k.startswith(("conv1.", "fc."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("conv1.", "head.", "normalize.")) for k in missing):
        raise PretrainedWeightsUnavailable(
            f"these ImageNet weights do not fit the network (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model
