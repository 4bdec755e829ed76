"""Penultimate features, logits and labels of a data set, extracted once and cached on disk.

Every measurement of the course (NC1–NC5, every OOD score) starts from the same three tensors:
features h (N, p), logits l = W h + b (N, C) and labels y (N,). They are computed in eval mode under
``torch.inference_mode``, without augmentation, and cached beside the checkpoint they come from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import GpuLoader, ImageSet
from .models import STAGES, CifarResNet
from .train import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["FeatureSet", "extract_features", "cached_features"]

FIELDS = ("features", "logits", "labels", "stages")  # what a cache file holds


@dataclass
class FeatureSet:
    """features: (N, p) float32; logits: (N, C) float32; labels: (N,) int64 — all on the CPU.

    ``stages`` (optional) maps each residual stage to its global-average-pooled output (N, channels).
    """

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    stages: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predictions(self) -> torch.Tensor:
        """argmax_c l_c: (N,) int64."""
        return self.logits.argmax(1)

    @property
    def accuracy(self) -> float:
        return (self.predictions == self.labels).float().mean().item()


@torch.inference_mode()
def extract_features(model: CifarResNet, loader: GpuLoader, stages: bool = False) -> FeatureSet:
    """Run ``model`` (in eval mode) over ``loader`` and collect features, logits, labels (and stages).

    The loader must not augment: features of augmented images are not the features of the data set.
    """
    if loader.augment:
        raise ValueError("Extract features with a loader that does not augment (augment=False).")
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"features": [], "logits": [], "labels": []}
    for x, y in loader:
        if stages:
            outputs = model.stage_features(x)
            h = outputs["layer4"]
            for name in STAGES:
                parts.setdefault(name, []).append(outputs[name].float().cpu())
        else:
            h = model.features(x)
        parts["features"].append(h.float().cpu())
        parts["logits"].append(model.fc(h).float().cpu())
        parts["labels"].append(y.cpu())
    model.train(was_training)
    joined = {name: torch.cat(chunks) for name, chunks in parts.items()}
    return FeatureSet(joined.pop("features"), joined.pop("logits"), joined.pop("labels"), joined)


def _weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_features(model: CifarResNet, data: ImageSet, cache: str | Path, *, batch_size: int = 1_000,
                    stages: bool = False) -> FeatureSet:
    """:func:`extract_features` of ``model`` on ``data``, cached in the folder ``cache``.

    The cache file is named after the data set and a digest of the weights, so a retrained model never
    reads stale features. Typical use: ``cached_features(run.load_snapshot(epoch), test_set, run.run_dir)``.
    """
    tag = f"{data.name.replace('/', '-')}-{'standin' if data.standin else 'real'}-{len(data)}"
    path = Path(cache) / "features" / f"{tag}-{_weights_digest(model)}{'-stages' if stages else ''}.pt"
    with_stages = path.with_name(path.stem.removesuffix("-stages") + "-stages.pt")  # a superset: serves both
    for candidate in dict.fromkeys([path, with_stages]):
        if candidate.exists():
            try:
                state = load_checkpoint(candidate, keys=FIELDS)
                return FeatureSet(*(state[key] for key in FIELDS[:3]), state["stages"] if stages else {})
            except CheckpointError as error:
                print(f"{error}\n→ recomputing the features (a cache file is safe to replace).")
    device = next(model.parameters()).device
    loader = GpuLoader(data, batch_size, shuffle=False, augment=False, drop_last=False, device=device)
    result = extract_features(model, loader, stages=stages)
    save_checkpoint({"format": CHECKPOINT_FORMAT, **{key: getattr(result, key) for key in FIELDS}}, path)
    return result
