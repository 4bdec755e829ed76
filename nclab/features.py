"""Penultimate features, logits and labels of a data set, extracted once and cached on disk.

Every measurement of the course (NC1–NC5, every OOD score) starts from the same three tensors:
features h = model.features(x) (N, p), logits = model.head(h) (N, C) and labels y (N,). They are
computed in eval mode without gradients and without augmentation, and cached beside the checkpoint they
come from, under a name made of a digest of the weights and a digest of the images: another model or
other images never read stale features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .config import get_profile
from .data import GpuLoader, ImageSet, content_digest
from .models import STAGES

__all__ = ["FeatureSet", "extract_features", "features_of", "cached_features"]

FIELDS = ("features", "logits", "labels", "stages", "extras")  # what a cache file holds


@dataclass
class FeatureSet:
    """features: (N, p) float32; logits: (N, C) float32; labels: (N,) int64 — all on the CPU.

    ``stages`` (optional) maps each residual stage to its global-average-pooled output (N, channels);
    ``extras`` holds the data set's per-sample extras (an environment id, …), aligned with the labels.
    """

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    stages: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predictions(self) -> torch.Tensor:
        """argmax_c l_c: (N,) int64."""
        return self.logits.argmax(1)

    @property
    def accuracy(self) -> float:
        return (self.predictions == self.labels).float().mean().item()


@torch.no_grad()
def extract_features(model: nn.Module, loader: GpuLoader, stages: bool = False) -> FeatureSet:
    """Run ``model`` (in eval mode) over ``loader`` and collect features, logits, labels, extras (and stages).

    The loader must not augment: features of augmented images are not the features of the data set.
    The tensors come back as ordinary tensors (``no_grad``, not ``inference_mode``), so they can be used
    anywhere, a linear probe trained on them included.
    """
    if loader.augment:
        raise ValueError("Extract features with a loader that does not augment (augment=False).")
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"features": [], "logits": [], "labels": []}
    extras: dict[str, list[torch.Tensor]] = {}
    for x, y, batch_extras in loader:
        if stages:
            outputs = model.stage_features(x)
            h = outputs[STAGES[-1]]
            for name in STAGES:
                parts.setdefault(name, []).append(outputs[name].float().cpu())
        else:
            h = model.features(x)
        parts["features"].append(h.float().cpu())
        parts["logits"].append(model.head(h).float().cpu())
        parts["labels"].append(y.cpu())
        for key, values in batch_extras.items():
            if key != "index":
                extras.setdefault(key, []).append(values.cpu())
    model.train(was_training)
    joined = {name: torch.cat(chunks) for name, chunks in parts.items()}
    return FeatureSet(
        joined.pop("features"),
        joined.pop("logits"),
        joined.pop("labels"),
        joined,
        {key: torch.cat(chunks) for key, chunks in extras.items()},
    )


def features_of(model: nn.Module, data: ImageSet, *, batch_size: int | None = None, stages: bool = False) -> FeatureSet:
    """:func:`extract_features` of ``model`` on all of ``data`` (in order, un-augmented), on the model's
    device, in batches of ``batch_size`` images (default: the profile's ``eval_batch_size``); not cached."""
    device = next(model.parameters()).device
    loader = GpuLoader(
        data, batch_size or get_profile().eval_batch_size, shuffle=False, augment=False, drop_last=False, device=device
    )
    return extract_features(model, loader, stages=stages)


def cached_features(
    model: nn.Module, data: ImageSet, cache: str | Path, *, batch_size: int | None = None, stages: bool = False
) -> FeatureSet:
    """:func:`extract_features` of ``model`` on ``data``, cached in the folder ``cache``.

    The cache file is named after a digest of the weights and a digest of the images, labels and extras
    (``ImageSet.fingerprint``), so a retrained model, or another subset or noise seed of the same size,
    never reads stale features. ``batch_size`` defaults to the profile's ``eval_batch_size``. Typical use:
    ``cached_features(run.load_snapshot(epoch), test_set, run.run_dir)``.
    """
    tag = f"{data.name.replace('/', '-')}-{data.fingerprint}-{content_digest(model.state_dict().items())}"
    path = Path(cache) / "features" / f"{tag}{'-stages' if stages else ''}.pt"
    for candidate in dict.fromkeys([path, path.with_name(f"{tag}-stages.pt")]):  # with stages: serves both
        if candidate.exists():
            try:
                state = load_checkpoint(candidate, keys=FIELDS)
                return FeatureSet(
                    *(state[key] for key in FIELDS[:3]), state["stages"] if stages else {}, state["extras"]
                )
            except CheckpointError as error:
                print(f"{error}\n→ recomputing the features (a cache file is safe to replace).")
    result = features_of(model, data, batch_size=batch_size, stages=stages)
    save_checkpoint({"format": FORMAT, **{key: getattr(result, key) for key in FIELDS}}, path)
    return result
