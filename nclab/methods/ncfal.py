"""NCFAL (Chen et al., NeurIPS 2024, seed 001), SPEC §5: environment inference without environment labels.

NCFAL aligns the semantic features of every training environment to one fixed simplex ETF. When the
environments are not given, it infers them, in rounds:

1. start from a partition of the training set (e.g. a random split);
2. train one *local model* per environment, on that environment's samples only;
3. reassign every sample to the environment whose local model gives the largest logit **for the
   sample's own label** (:func:`reassign_environments`): a sample goes where the spurious rule it obeys
   is the one learnt;
4. repeat until no assignment changes, or for at most ``max_rounds`` rounds.

:func:`infer_environments` runs the loop with any ``fit_local`` (a function that trains a model on an
``ImageSet`` and returns it); :func:`environment_agreement` scores a partition against the true
environments up to a renaming of the environments (the seed compares with a random split of the same
sizes).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment

from ..data import GpuLoader, ImageSet

__all__ = ["reassign_environments", "environment_agreement", "label_logits", "infer_environments"]


def reassign_environments(logits_of_label: torch.Tensor) -> torch.Tensor:
    """argmax_e over the local models: logits_of_label (E, N), entry (e, i) = local model e's logit for
    sample i's own label → the new environment of every sample, (N,) int64. Ties go to the lower e."""
    if logits_of_label.ndim != 2 or len(logits_of_label) < 2:
        raise ValueError(
            f"need the label logits of at least 2 local models, (E, N), got {tuple(logits_of_label.shape)}"
        )
    return logits_of_label.argmax(dim=0)


def environment_agreement(assigned: torch.Tensor, true: torch.Tensor) -> float:
    """The fraction of samples whose inferred environment is their true one, under the best one-to-one
    renaming of the inferred environments (environment ids carry no meaning; with more inferred than true
    environments, the extra ones count as wrong). assigned, true: (N,) int64. The best renaming is a
    maximum-weight matching on the contingency table (``scipy.optimize.linear_sum_assignment``)."""
    if assigned.shape != true.shape:
        raise ValueError(f"assigned {tuple(assigned.shape)} and true {tuple(true.shape)} must have one entry each")
    inferred, rows = torch.unique(assigned.cpu(), return_inverse=True)
    actual, cols = torch.unique(true.cpu(), return_inverse=True)
    table = torch.zeros(len(inferred), len(actual), dtype=torch.long)
    table.index_put_((rows, cols), torch.ones_like(rows), accumulate=True)  # samples per (inferred, true)
    matched_rows, matched_cols = linear_sum_assignment(table.numpy(), maximize=True)
    return float(table[matched_rows, matched_cols].sum()) / len(true)


@torch.no_grad()
def label_logits(model: nn.Module, data: ImageSet, batch_size: int = 1_000) -> torch.Tensor:
    """The logit of each sample's own label, l_{y_i}(x_i), under ``model`` (eval mode): (N,) float32."""
    device = next(model.parameters()).device
    loader = GpuLoader(data, batch_size, shuffle=False, augment=False, drop_last=False, device=device)
    was_training = model.training
    model.eval()
    values = [model(x).float().gather(1, y[:, None])[:, 0].cpu() for x, y, _ in loader]
    model.train(was_training)
    return torch.cat(values)


def infer_environments(
    data: ImageSet,
    initial: torch.Tensor,
    fit_local: Callable[[ImageSet, int, int], nn.Module],
    max_rounds: int = 5,
    scores: Callable[[nn.Module, ImageSet], torch.Tensor] = label_logits,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Infer environments by alternating local training and reassignment (see the module docstring).

    data: the training ImageSet (its extra ``env``, when present, is used only to report the agreement);
    initial: (N,) the starting environment of every sample (E = its number of distinct values);
    fit_local(subset, environment, round) → a model trained on ``subset``; scores(model, data) → (N,) the
    logit of each sample's label (default :func:`label_logits`). Returns (final environments (N,), one
    row per round: ``round``, ``changed`` (samples that moved), ``sizes``, and ``agreement`` with the
    true environments when ``data`` has them, and ``collapsed``, True on the row after which every
    sample sits in one environment). Stops when nothing moves, when everything has collapsed into one
    environment (reassignment then has nothing to compare), or after ``max_rounds``. An environment that
    ends up empty has no local model in the next round.
    """
    if initial.shape != (len(data),):
        raise ValueError(f"initial needs one environment per sample, ({len(data)},), got {tuple(initial.shape)}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be ≥ 1, got {max_rounds}")
    assigned, rows = initial.clone().long().cpu(), []
    true = data.extras.get("env")
    if len(torch.unique(assigned)) < 2:
        raise ValueError("initial puts every sample in one environment; reassignment needs two or more")
    for round_ in range(1, max_rounds + 1):
        environments = torch.unique(assigned).tolist()
        logits = torch.stack(
            [scores(fit_local(data.select(assigned == e), e, round_), data).cpu() for e in environments]
        )  # (E, N)
        new = torch.tensor(environments)[reassign_environments(logits)]
        row = {"round": round_, "changed": int((new != assigned).sum()), "sizes": torch.bincount(new).tolist()}
        if true is not None:
            row["agreement"] = environment_agreement(new, true.cpu())
        row["collapsed"] = len(torch.unique(new)) < 2
        rows.append(row)
        assigned = new
        if row["changed"] == 0 or row["collapsed"]:
            break
    return assigned, pd.DataFrame(rows)
