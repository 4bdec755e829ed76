"""Training losses: callables ``loss(out, y) → scalar`` that plug into ``nclab.train.fit``.

The training loop runs the model once per batch and hands what it produced to the loss (and to the
hooks) as one :class:`BatchOutput`: the penultimate features, the logits, the batch's per-sample extras
(``index``, an environment id, …) and the model itself, for a loss that needs its head's class vectors
or a per-environment choice. A loss is any callable of ``(out, y)``; it keeps no state of its own
(state that must survive a resume belongs in a hook, ``nclab.train.Hook``).

Under mixed precision (AMP) the model runs under autocast and the features and logits may be float16 or
bfloat16; the loss itself is called *outside* autocast, so ``.float()`` really gives float32 arithmetic
(:class:`CrossEntropy` does that), which a loss with its own matmuls and norms needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BatchOutput", "CrossEntropy"]


@dataclass
class BatchOutput:
    """What the model produced for one batch, as the loss and the hooks see it.

    features: h = model.features(x), (B, p); logits: model.head(h), (B, C); extras: the loader's
    per-sample extras, each (B, …) and aligned with the labels ("index" = position in the data set);
    model: the model being trained (its head, its parameters and their gradients); inputs: the batch's
    images x (B, C, H, W), for a loss that runs other modules on them (a per-environment model).
    """

    features: torch.Tensor
    logits: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    model: nn.Module | None = None
    inputs: torch.Tensor | None = None


class CrossEntropy:
    """Cross-entropy of the logits with label smoothing ε: (1 − ε)·CE(l, y) + ε·mean_c(−log softmax(l)_c).

    The default loss of ``nclab.train.fit`` (ε = ``TrainConfig.label_smoothing``, 0 in regimes A and B).
    Computed in float32 from the logits (never from a softmax: ``F.cross_entropy`` includes it, SPEC §9).
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, out: BatchOutput, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.logits.float(), y, label_smoothing=self.label_smoothing)

    def __repr__(self) -> str:
        return f"CrossEntropy(label_smoothing={self.label_smoothing})"
