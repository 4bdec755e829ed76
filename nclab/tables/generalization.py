"""Tables of OOD generalisation on Colored-MNIST (notebook 06): accuracy and ETF distance of every model in
every environment, and what environment inference put where, round by round."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..collapse import class_means
from ..data import ImageSet
from ..data.mnist import COLOR_FLIPS
from ..features import features_of

__all__ = [
    "ENVIRONMENT_NAMES",
    "colour_statistics",
    "etf_distance",
    "environment_metrics",
    "ood_generalization",
    "partition_rounds",
]


def colour_statistics(*sets: ImageSet) -> pd.DataFrame:
    """How often the colour and the digit's class agree with the (noisy) label, per environment of each of
    the Colored-MNIST ``sets``: one row per environment, columns ("colour = label" | "shape = label",
    "mean" | "size"). The spurious feature agrees more often than the shape in training, less in test."""
    frames = []
    for s in sets:
        labels = s.labels.numpy()
        agree = pd.DataFrame(
            {
                "environment": s.extras["env"].numpy(),
                "colour = label": s.extras["color"].numpy() == labels,
                "shape = label": (s.extras["digit"] >= 5).long().numpy() == labels,  # digits 5–9: class 1
            }
        )
        frames.append(agree.groupby("environment")[["colour = label", "shape = label"]].agg(["mean", "size"]))
    return pd.concat(frames)


def etf_distance(prototypes: torch.Tensor, classifier: torch.Tensor) -> float:
    """‖P − Ŵ‖_F: P (C, p) class prototypes, Ŵ the classifier's rows centred over the classes; both
    row-normalised. 0 when each class's prototype points along its classifier vector; for a fixed
    simplex-ETF head Ŵ is the ETF itself. Up to 2√C when every prototype points away from its own. Not
    SPEC §1's ``nc2_etf_distance``, which compares the normalised Gram W Wᵀ of the classifier with the
    ETF's (any rotation of an ETF scores 0 there): this one compares each class mean with its own
    classifier row, in one environment."""
    W = classifier.double() - classifier.double().mean(0)
    return float(torch.linalg.norm(F.normalize(prototypes.double(), dim=1) - F.normalize(W, dim=1)))


def environment_metrics(model: nn.Module, sets: list[ImageSet], key: str = "env") -> pd.DataFrame:
    """One row per environment of the extra ``key`` across ``sets`` (e.g. [train, test]): ``samples``,
    ``accuracy`` and ``etf_distance`` (:func:`etf_distance` between the environment's class means,
    centred by the mean class mean of the first set, and the model's classifier). The paper's motivating
    quantity: features that collapse onto the same ETF in every environment are aligned. Every
    environment needs a sample of every class (ValueError otherwise)."""
    W, _ = model.head.linear()
    centre, rows = None, []
    for data in sets:
        fs = features_of(model, data, batch_size=1_000)
        env, C = data.extras[key].cpu(), data.num_classes
        for e in torch.unique(env).tolist():
            inside = env == e
            try:
                means, _ = class_means(fs.features[inside], fs.labels[inside], C)
            except ValueError as error:
                raise ValueError(f"{data.name}, environment {e}: {error}") from None
            if centre is None:  # the first set's environments together
                centre = class_means(fs.features, fs.labels, C)[0].mean(0)
            accuracy = float((fs.logits[inside].argmax(1) == fs.labels[inside]).float().mean())
            distance = etf_distance(means - centre, W.detach().cpu())
            rows.append(
                {"environment": e, "samples": int(inside.sum()), "accuracy": accuracy, "etf_distance": distance}
            )
    return pd.DataFrame(rows)


ENVIRONMENT_NAMES = {  # Colored-MNIST's environments, named by their colour flip e
    env: f"{'test' if env == 2 else 'train'} (e = {flip:g})" for env, flip in enumerate(COLOR_FLIPS)
}


def ood_generalization(entries: dict[str, tuple], names: dict[int, str] | None = None) -> pd.DataFrame:
    """One row per (method, environment): ``accuracy``, ``etf_distance`` (:func:`environment_metrics`) and
    ``samples``. ``entries``: {method: (model, [train, test])}, each model
    measured on its own sets (the grayscale oracle on the grayscale ones) and on their **true**
    environments (the extra ``env`` of the sets as ``nclab.data.colored_mnist`` made them); ``names``
    labels the environments (default: Colored-MNIST's colour flips)."""
    names = ENVIRONMENT_NAMES if names is None else names
    frames = []
    for method, (model, sets) in entries.items():
        if any("true_env" in s.extras for s in sets):
            raise ValueError(
                f"{method}: measure on the original sets (true environments), not on a set whose 'env' was replaced"
            )
        frame = environment_metrics(model, sets)
        frames.append(frame.assign(method=method, environment=frame["environment"].map(lambda e: names.get(e, e))))
    return pd.concat(frames, ignore_index=True)[["method", "environment", "samples", "accuracy", "etf_distance"]]


def partition_rounds(data: ImageSet, history: pd.DataFrame, initial: torch.Tensor | None = None) -> pd.DataFrame:
    """What environment inference put where: one row per (round, inferred environment) with ``samples``,
    ``colour_agrees`` (the fraction whose colour agrees with their label, when ``data`` has the extra
    ``color``) and ``from_env_<k>`` (the fraction from true environment k, when it has ``env``). Round 0
    is ``initial`` (the starting split) when given. ``history``: the table of
    ``nclab.methods.ncfal.infer_environments`` (its ``assigned`` column)."""
    rounds = [(0, initial)] if initial is not None else []
    rounds += list(zip(history["round"], history["assigned"]))
    labels, color, true = data.labels.cpu(), data.extras.get("color"), data.extras.get("env")
    rows = []
    for round_, assigned in rounds:
        assigned = assigned.cpu()
        for e in torch.unique(assigned).tolist():
            inside = assigned == e
            row = {"round": int(round_), "environment": e, "samples": int(inside.sum())}
            if color is not None:
                row["colour_agrees"] = float((color.cpu()[inside] == labels[inside]).float().mean())
            if true is not None:
                for k in torch.unique(true).tolist():
                    row[f"from_env_{k}"] = float((true.cpu()[inside] == k).float().mean())
            rows.append(row)
    return pd.DataFrame(rows)
