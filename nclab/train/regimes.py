"""Recipes: the TrainConfig of a run at the scale of a profile.

:func:`regime` gives the two regimes of the practical-work report (notebooks 01–04) at the profile's own
scale. Every other method's module (``nclab.methods``) has the same recipe shape: a table ``SCALES`` of one
:class:`Scale` per profile (how big its runs are) and ``recipe(profile=None, method=None, *, dataset=…,
**overrides)`` → TrainConfig, which adds the method's optimiser and schedule to its scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import Profile, get_profile, log_spaced_epochs
from ..data import ImageSet, train_test_sets
from .contract import TrainConfig

__all__ = ["Scale", "regime", "regime_data", "terminal_phase"]


@dataclass(frozen=True)
class Scale:
    """How big one method's runs are in one profile: the fields of a TrainConfig that a profile changes.

    Why a table of these per method, and not the profile's own fields: the methods' papers train for very
    different budgets (100 epochs for layer-wise control, 200 for the long-tailed and NC-by-design runs, a
    digits network for Colored-MNIST), and a notebook that trains nine runs must give each a ninth of a
    Colab session. ``None`` means "the profile's value" (``nclab.config.Profile``), so that a method that
    has no reason to differ follows the profile.
    """

    epochs: int  # passes over the training set
    width: int | None = None  # network width (ResNet-18: channels of the first stage); None = the profile's
    batch_size: int | None = None  # images per optimisation step; None = the profile's
    images: int | None = None  # training images (a stratified subset, see :meth:`subset`); None = all of them
    augment: bool = True  # random crop (padding 4) and horizontal flip of the training batches
    snapshots: int = 0  # log-spaced epochs whose weights are kept (0: none; the last epoch is always in last.pt)

    def settings(self, profile: Profile | str | None = None, epochs: int | None = None) -> dict:
        """The TrainConfig fields of this scale in ``profile``, with ``epochs`` in place of the scale's own
        when given (the snapshots are spread over the epochs actually trained)."""
        profile, epochs = get_profile(profile), epochs or self.epochs
        settings = dict(
            width=self.width or profile.width,
            epochs=epochs,
            batch_size=self.batch_size or profile.batch_size,
            augment=self.augment,
        )
        if self.snapshots:
            settings["snapshot_epochs"] = log_spaced_epochs(epochs, self.snapshots)
        return settings

    def subset(self, data: ImageSet, seed: int = 0) -> ImageSet:
        """``data`` itself, or a stratified subset of :attr:`images` images of it (seeded)."""
        return data if self.images is None or self.images >= len(data) else data.subset(self.images, seed=seed)


def terminal_phase(history: list[dict]) -> int | None:
    """The epoch at which the terminal phase of training starts in ``history`` (``Run.history``): the first
    epoch from which the training accuracy stays at 100 % to the end; None if the last epoch is below it.

    The accuracy is the one the history records, averaged over the epoch's batches in train mode (augmented
    when the run augments, so a run with augmentation may never reach 100 % although it fits its clean
    training set)."""
    start = None
    for record in history:
        start = (start or record["epoch"]) if record["train_acc"] >= 1.0 else None
    return start


def regime(name: str, profile: Profile | str | None = None, **overrides) -> TrainConfig:
    """Regime "A" or "B" of the practical-work report, at the scale of ``profile``.

    A (Papyan et al.): SGD lr 0.1, momentum 0.9, weight decay 5e-4, lr × 0.1 at 1/3 and 2/3 of training.
    B: SGD lr 0.01, cosine schedule, from ImageNet weights (only width 64 has them: the smoke profile
    trains B from scratch). Augmentation as the profile says (off in ``smoke``, so that its runs reach the
    terminal phase). ``overrides`` replace any field (``method=…`` included).
    """
    profile = get_profile(profile)
    common = dict(
        width=profile.width,
        epochs=profile.epochs,
        batch_size=profile.batch_size,
        augment=profile.augment,
        snapshot_epochs=log_spaced_epochs(profile.epochs, profile.snapshots),
    )
    regimes = {
        "A": dict(lr=0.1, schedule="multistep"),
        "B": dict(lr=0.01, schedule="cosine", pretrained=profile.width == 64),
    }
    if name.upper() not in regimes:
        raise ValueError(f"Unknown regime {name!r}: 'A' or 'B' (or build a TrainConfig yourself).")
    if "epochs" in overrides and "snapshot_epochs" not in overrides:
        overrides["snapshot_epochs"] = log_spaced_epochs(overrides["epochs"], profile.snapshots)
    return TrainConfig(regime=name.upper(), **{**common, **regimes[name.upper()], **overrides})


def regime_data(profile: Profile | str | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test) of CIFAR-100 as regimes A and B see them at the scale of ``profile``: its
    ``regime_train_size`` training images (1,000 in ``smoke``, so that 20 epochs reach the terminal phase;
    the whole set in ``quick`` and ``full``) and its test images. Notebooks 01–04 use these sets."""
    profile = get_profile(profile)
    if profile.regime_train_size is not None:
        profile = replace(profile, train_size=profile.regime_train_size)
    return train_test_sets("cifar100", profile)
