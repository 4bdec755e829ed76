"""The run cache: every run in a folder keyed by what it learns, loaded, resumed or trained on demand.

:func:`load_or_train` keys the checkpoint folder by the config and the data (:func:`run_directory`), so a
later notebook reuses the run of notebook 01, or trains it, and says which; :func:`train_recipe` does the
same for a method's recipe (``nclab.methods.<method>.load_or_train``). A :class:`Run` is what it returns.
A run missing here is first looked for in the instructor's run pack, when one is configured
(``nclab.train.fetch``); every run folder gets a ``run.json`` saying what it is (``nclab.train.packs``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from .. import __version__, distributed, models
from ..checkpoints import load_checkpoint
from ..config import Profile, cache_dir, get_profile, in_cache
from ..data import GpuLoader, ImageSet
from .contract import Hook, Method, TrainConfig
from .fetch import fetch_run
from .loop import fit, with_loss
from .packs import PackError, record_use, write_run_info

__all__ = ["Run", "run_directory", "load_or_train", "train_recipe"]


def run_directory(
    config: TrainConfig, train_set: ImageSet, root: str | Path | None = None, max_steps: int | None = None
) -> Path:
    """The folder of the run defined by ``config`` on ``train_set``:
    ``<cache>/runs/<dataset>-<method>-<regime>-w<width>-<hash of the config key, the data and nclab's version>``
    (and of ``max_steps``, the step limit of a dry run, when there is one)."""
    key = json.dumps(_run_key(config, train_set, max_steps), sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    name = f"{config.dataset}-{config.method.name}-{config.regime}-w{config.width}-{digest}"
    return Path(root or cache_dir() / "runs") / name


def _run_key(config: TrainConfig, train_set: ImageSet, max_steps: int | None = None) -> dict:
    """What a run's folder name is a hash of: the config's key, the data and nclab's version (and the step
    limit of a dry run)."""
    data = {
        "name": train_set.name,
        "size": len(train_set),
        "standin": train_set.standin,
        "content": train_set.fingerprint,
    }
    key = {"config": config.key(), "data": data, "nclab": __version__}
    return key if max_steps is None else {**key, "max_steps": max_steps}


@dataclass
class Run:
    """A trained (or resumed) run: its config, final model, history, data, snapshot files, and the
    method's loss and hooks (a hook's state, e.g. class centres, is there after loading too)."""

    config: TrainConfig
    model: nn.Module
    history: list[dict]
    run_dir: Path
    train_set: ImageSet
    snapshots: dict[int, Path] = field(default_factory=dict)  # epoch → weights file
    loss: Callable | None = None  # the method's loss, as trained
    hooks: list[Hook] = field(default_factory=list)  # the method's hooks, with their final (restored) state

    @property
    def final(self) -> dict:
        """The last epoch's metrics."""
        return self.history[-1]

    def load_snapshot(self, epoch: int) -> nn.Module:
        """A copy of the model with the weights saved at ``epoch`` (one of ``snapshots``), built by the
        run's own method."""
        if epoch not in self.snapshots:
            raise KeyError(f"No snapshot at epoch {epoch}; this run kept {sorted(self.snapshots)}.")
        model = self.config.method.build_model(self.config, self.train_set)
        model.load_state_dict(load_checkpoint(self.snapshots[epoch])["model"])
        return model.to(next(self.model.parameters()).device).eval()


def _imagenet_weights(width: int) -> tuple[dict | None, str | None]:
    """(torchvision's ImageNet weights for ``width``, None), or (None, why they cannot be had)."""
    try:
        return models.imagenet_weights(width), None
    except models.PretrainedWeightsUnavailable as reason:
        return None, str(reason)


def _shared_epochs_done(run_dir: Path) -> int:
    """The epochs ``run_dir`` holds, as rank 0 (which writes the checkpoints) reads them, on every rank."""
    return distributed.from_main(_epochs_done(run_dir) if distributed.is_main() else None)


def _epochs_done(run_dir: Path) -> int:
    last = run_dir / "last.pt"
    return load_checkpoint(last)["epoch"] if last.exists() else 0


def _fetch_missing(run_dir: Path, max_steps: int | None) -> None:
    """Rank 0 downloads ``run_dir`` from the instructor's run pack when it is missing and the pack holds it
    (``fetch.fetch_run``; never a dry run's); every rank then finds it, or stops with the same error."""
    failure = None
    if distributed.is_main() and max_steps is None:
        try:
            fetch_run(run_dir)
        except PackError as error:
            if not distributed.active():
                raise
            failure = str(error)
    failure = distributed.from_main(failure)
    if failure is not None:
        raise PackError(failure)


def load_or_train(
    config: TrainConfig,
    train_set: ImageSet,
    test_set: ImageSet | None = None,
    *,
    device: str | torch.device | None = None,
    root: str | Path | None = None,
    eval_batch_size: int | None = None,
    progress: bool = True,
    until: int | None = None,
    max_steps: int | None = None,
) -> Run:
    """The run ``config`` on ``train_set``: loaded from its checkpoint folder, resumed, or trained.

    Says which of the three it does. The model is built by ``config.method.build_model`` after seeding
    with ``config.seed``. Regime B's ImageNet weights are fetched only when there is no checkpoint to
    resume; when they cannot be fetched (offline, or a narrow network), the run trains from scratch under
    its own key, with the reason printed. A run whose folder is missing is downloaded from the instructor's
    run pack when one is configured and holds it (``nclab.train.fetch``), and says so. Test metrics use
    batches of ``eval_batch_size`` images (default: the profile's). ``until`` stops after that epoch,
    leaving the run to be resumed by a later call (a Colab session at a time). ``max_steps`` makes a dry
    run: at most that many steps per epoch (and test batches per evaluation), in a run folder of its own.

    Under ``torchrun`` (``nclab.distributed``) every process calls this with the same arguments: each
    trains on its shard of every batch (when ``config.batch_size`` splits evenly over the processes; else
    each trains the whole run, as one process would), and only rank 0 prints and writes.
    """
    device = distributed.setup(device)  # config.get_device's choice, this process's GPU under torchrun
    say = distributed.say
    if config.dataset != train_set.name.split("/")[0]:
        raise ValueError(f"config.dataset is {config.dataset!r} but train_set is {train_set.name!r}.")
    run_dir = run_directory(config, train_set, root, max_steps)
    if distributed.from_main(run_dir.name) != run_dir.name:
        raise RuntimeError(
            f"rank {distributed.rank()} is to train {run_dir.name} but rank 0 another run: under torchrun every "
            f"process must train the same runs on the same data (compute what precedes training identically "
            f"on every rank, or train this notebook in one process)."
        )
    _fetch_missing(run_dir, max_steps)
    done, weights = _shared_epochs_done(run_dir), None
    if config.pretrained and not done:
        weights, reason = _imagenet_weights(config.width) if distributed.is_main() else (None, None)
        reason = distributed.from_main(reason)  # the others fetch only after rank 0 has, from its download
        if reason is None and weights is None:
            weights, reason = _imagenet_weights(config.width)
            if reason is not None:
                raise RuntimeError(f"rank {distributed.rank()} could not load the ImageNet weights: {reason}")
        if reason is not None:
            say(f"Regime {config.regime}: {reason}\n→ training regime {config.regime} from scratch instead.")
            config = replace(config, pretrained=False)
            run_dir = run_directory(config, train_set, root, max_steps)
            _fetch_missing(run_dir, max_steps)
            done = _shared_epochs_done(run_dir)
    record_use(run_dir, done, until or config.epochs)  # only while `nclab runs pack` records a notebook's runs
    torch.manual_seed(config.seed)
    model = config.method.build_model(config, train_set)
    if weights is not None:
        models.load_imagenet_weights(model, weights)

    last = run_dir / "last.pt"
    ranks = distributed.world_size()
    shard = dict(rank=distributed.rank(), world_size=ranks) if config.batch_size % ranks == 0 else {}
    where = f"{device}" + (f" × {ranks} processes" if shard.get("world_size", 1) > 1 else "")
    images = f"{config.epochs} epochs × {len(train_set):,} images on {where}"
    if done >= (until or config.epochs):
        say(f"Found checkpoint {in_cache(last)} (epoch {done}): loading, no training needed.")
    elif done:
        say(f"Found checkpoint {in_cache(last)} at epoch {done}/{config.epochs}: resuming ({images}).")
    else:
        say(
            f"No checkpoint for {config.method.name} regime {config.regime} in {in_cache(run_dir)}: training {images}. "
            f"The progress bar shows the time left; rerunning this cell resumes after a disconnect."
        )
    if ranks > 1 and not shard:
        say(f"Note: a batch of {config.batch_size} does not split over {ranks} processes: each trains this run whole.")
    options = dict(channels_last=config.channels_last and device.type == "cuda", device=device, max_batches=max_steps)
    train_loader = GpuLoader(
        train_set,
        config.batch_size,
        shuffle=True,
        augment=config.augment,
        drop_last=True,
        seed=config.seed,
        **options,
        **shard,
    )
    test_loader = None
    if test_set is not None:
        batch_size = eval_batch_size or get_profile().eval_batch_size
        test_loader = GpuLoader(test_set, batch_size, shuffle=False, augment=False, drop_last=False, **options)
    loss, hooks = config.method.training(config, train_set)
    hooks = with_loss(loss, hooks)
    history = fit(
        model,
        config,
        train_loader,
        test_loader,
        run_dir=run_dir,
        loss=loss,
        hooks=hooks,
        progress=progress,
        until=until,
    )
    if ranks > 1 and not shard:
        distributed.share_weights(model)  # rank 0's: the processes go on with one model, not N near-copies
    model.eval()
    if distributed.is_main():
        epochs_done = history[-1]["epoch"] if history else 0
        write_run_info(run_dir, _run_key(config, train_set, max_steps), config.epochs, epochs_done, get_profile().name)
    snapshots = {
        e: run_dir / f"epoch_{e:04d}.pt" for e in config.snapshot_epochs if (run_dir / f"epoch_{e:04d}.pt").exists()
    }
    return Run(config, model, history, run_dir, train_set, snapshots, loss, hooks)


def train_recipe(
    recipe: Callable[..., TrainConfig],
    method: Method | None,
    train_set: ImageSet,
    test_set: ImageSet | None = None,
    *,
    profile: Profile | str | None = None,
    overrides: dict | None = None,
    **options,
) -> Run:
    """:func:`load_or_train` of ``recipe(profile, method, dataset=<train_set's>, **overrides)`` on
    ``train_set``: what every method module's ``load_or_train`` does with its own recipe. ``options`` go to
    :func:`load_or_train` (``device``, ``progress``, ``until``, …)."""
    dataset = train_set.name.split("/")[0]  # "cifar100-lt100/train" → "cifar100-lt100"
    config = recipe(profile, method, dataset=dataset, **(overrides or {}))
    return load_or_train(config, train_set, test_set, **options)
