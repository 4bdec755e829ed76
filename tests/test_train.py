import math

import pytest
import torch

from nclab import data, models, train


def _tiny_config(**overrides):
    options = dict(regime="test", width=4, epochs=3, batch_size=32, lr=0.05, snapshot_epochs=(1, 3))
    return train.TrainConfig(**{**options, **overrides})


def _loaders(train_set, seed=0):
    return data.GpuLoader(train_set, 32, shuffle=True, augment=True, drop_last=True, device="cpu", seed=seed)


def _fresh_model(num_classes=8, width=4):
    torch.manual_seed(0)
    return models.resnet18(num_classes, width)


TIMING = ("seconds", "images_per_s")


def _without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


# --- configuration and schedule ---------------------------------------------------------------------

def test_regimes_follow_the_practical_work():
    a, b = train.regime("A", "full"), train.regime("b", "full")
    assert (a.lr, a.momentum, a.weight_decay, a.schedule, a.batch_size) == (0.1, 0.9, 5e-4, "multistep", 128)
    assert a.milestones == (1 / 3, 2 / 3) and a.epochs == 350 and not a.pretrained
    assert (b.lr, b.schedule, b.pretrained) == (0.01, "cosine", True)
    assert not train.regime("B", "smoke").pretrained                  # no ImageNet weights at width 16
    assert train.regime("A", "smoke", epochs=1).epochs == 1
    with pytest.raises(ValueError, match="Unknown regime"):
        train.regime("C", "smoke")


def test_multistep_decays_at_a_third_and_two_thirds_of_training():
    factor = train.lr_factor(train.TrainConfig(epochs=350), steps_per_epoch=10)
    assert factor(0) == 1 and factor(1165) == 1                       # Papyan: decay at epoch ≈ 116
    assert factor(1166) == pytest.approx(0.1) and factor(2332) == pytest.approx(0.1)
    assert factor(2333) == pytest.approx(0.01) and factor(3499) == pytest.approx(0.01)


def test_cosine_with_warmup():
    factor = train.lr_factor(train.TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1), steps_per_epoch=100)
    assert factor(0) == pytest.approx(0.01) and factor(49) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(1.0)
    assert factor(550) == pytest.approx(0.5)                          # halfway through the cosine part
    assert factor(999) == pytest.approx(0.5 * (1 + math.cos(math.pi * 899 / 900)))


def test_log_spaced_epochs_keep_early_and_late():
    epochs = train.log_spaced_epochs(350, 10)
    assert epochs[0] == 1 and epochs[-1] == 350 and list(epochs) == sorted(set(epochs))
    assert sum(e <= 10 for e in epochs) >= 3                           # dense early, sparse late
    assert train.log_spaced_epochs(2, 2) == (1, 2)


def test_bad_configs_are_refused():
    for bad in (dict(optimizer="adam"), dict(schedule="step"), dict(amp="fp8"), dict(epochs=0),
                dict(milestones=(1.5,)), dict(epochs=3, snapshot_epochs=(4,))):
        with pytest.raises(ValueError):
            train.TrainConfig(**bad)


def test_speed_only_fields_do_not_change_the_run_folder(small_train):
    base = train.run_directory(_tiny_config(), small_train)
    assert train.run_directory(_tiny_config(compile=True, amp="off", channels_last=False), small_train) == base
    assert train.run_directory(_tiny_config(lr=0.01), small_train) != base
    assert train.run_directory(_tiny_config(), small_train.subset(128)) != base


# --- learning on real pixels --------------------------------------------------------------------------

def test_smoke_run_learns_the_standin_clearly_above_chance():
    train_set, test_set = data.for_profile("cifar100", "smoke")        # the same run notebook 01 makes
    run = train.load_or_train(train.regime("A", "smoke"), train_set, test_set, progress=False)
    chance = 1 / train_set.num_classes
    assert run.final["test_acc"] > 3 * chance, run.history
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert sorted(run.snapshots) == list(run.config.snapshot_epochs)


def test_adamw_and_label_smoothing_train_too(small_train):
    config_ = _tiny_config(optimizer="adamw", lr=2e-3, weight_decay=0.05, label_smoothing=0.1, epochs=2,
                           snapshot_epochs=())
    history = train.fit(_fresh_model(), config_, _loaders(small_train), progress=False)
    assert len(history) == 2 and history[-1]["train_loss"] < history[0]["train_loss"]


# --- checkpoints: resume, corruption, atomic writes ----------------------------------------------------

class _Disconnect(Exception):
    pass


class _LoaderThatDies(data.GpuLoader):
    """Raises in the middle of epoch ``die_at``, as a Colab disconnect would."""

    die_at = 2

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if self.epoch == self.die_at and i == 3:
                raise _Disconnect
            yield batch


def test_resume_after_interruption_equals_uninterrupted_run(small_train, tmp_path):
    config_ = _tiny_config()
    whole = _fresh_model()
    history_whole = train.fit(whole, config_, _loaders(small_train), run_dir=tmp_path / "whole", progress=False)

    broken = _fresh_model()
    dying = _LoaderThatDies(small_train, 32, shuffle=True, augment=True, drop_last=True, device="cpu")
    with pytest.raises(_Disconnect):
        train.fit(broken, config_, dying, run_dir=tmp_path / "resumed", progress=False)
    assert train.load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1

    resumed = _fresh_model()                                             # a new kernel: fresh weights
    history_resumed = train.fit(resumed, config_, _loaders(small_train), run_dir=tmp_path / "resumed", progress=False)
    assert _without_timing(history_resumed) == _without_timing(history_whole)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["epoch_0001.pt", "epoch_0003.pt", "last.pt"]


def test_completed_run_is_loaded_not_retrained(small_train, tmp_path, capsys):
    config_ = _tiny_config(epochs=1, snapshot_epochs=(1,))
    first = train.load_or_train(config_, small_train, root=tmp_path, progress=False)
    assert "No checkpoint" in capsys.readouterr().out
    second = train.load_or_train(config_, small_train, root=tmp_path, progress=False)
    assert "Found checkpoint" in capsys.readouterr().out
    assert second.history == first.history
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    snapshot = second.load_snapshot(1)
    assert torch.equal(snapshot.fc.weight, second.model.fc.weight)
    with pytest.raises(KeyError, match="kept"):
        second.load_snapshot(7)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_stops_with_a_clear_error_and_is_kept(small_train, tmp_path, damage):
    config_ = _tiny_config(epochs=1, snapshot_epochs=())
    train.fit(_fresh_model(), config_, _loaders(small_train), run_dir=tmp_path, progress=False)
    last = tmp_path / "last.pt"
    good = last.read_bytes()
    bad = {"truncate": good[: len(good) // 2], "garbage": b"not a checkpoint" * 100, "empty": b""}[damage]
    last.write_bytes(bad)
    with pytest.raises(train.CheckpointError, match="corrupted or truncated.*untouched.*Delete"):
        train.fit(_fresh_model(), _tiny_config(epochs=2, snapshot_epochs=()), _loaders(small_train),
                  run_dir=tmp_path, progress=False)
    assert last.read_bytes() == bad                                       # nothing overwritten


def test_checkpoint_of_another_configuration_is_refused(small_train, tmp_path):
    train.fit(_fresh_model(), _tiny_config(epochs=1, snapshot_epochs=()), _loaders(small_train), run_dir=tmp_path,
              progress=False)
    with pytest.raises(train.CheckpointError, match="another configuration"):
        train.fit(_fresh_model(), _tiny_config(epochs=1, lr=0.3, snapshot_epochs=()), _loaders(small_train),
                  run_dir=tmp_path, progress=False)


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    train.save_checkpoint({"format": 1, "model": {"w": torch.ones(3)}}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint({"format": 1, "model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(train.load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_checkpoints_load_with_weights_only(small_train, tmp_path):
    train.fit(_fresh_model(), _tiny_config(epochs=1, snapshot_epochs=()), _loaders(small_train), run_dir=tmp_path,
              progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "history", "config", "epoch"} <= set(state)


def test_pretrained_regime_falls_back_with_a_reason(small_train, tmp_path, capsys, monkeypatch):
    def unavailable(*args, **kwargs):
        raise models.PretrainedWeightsUnavailable("no internet here")

    monkeypatch.setattr(train, "resnet18", lambda c, w, pretrained=False: unavailable() if pretrained
                        else models.resnet18(c, w))
    run = train.load_or_train(_tiny_config(epochs=1, snapshot_epochs=(), pretrained=True), small_train,
                              root=tmp_path, progress=False)
    assert "no internet here" in capsys.readouterr().out and not run.config.pretrained


def test_dataset_mismatch_is_refused(small_train, tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        train.load_or_train(_tiny_config(dataset="svhn"), small_train, root=tmp_path, progress=False)


def test_mixed_precision_choice(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert train.amp_dtype("auto", cpu) is None and train.amp_dtype("off", gpu) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))    # T4
    assert train.amp_dtype("auto", gpu) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))    # H100
    assert train.amp_dtype("auto", gpu) == torch.bfloat16
    assert train.amp_dtype("fp16", gpu) == torch.float16


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_paths_train(small_train, amp):
    """The GPU's autocast (+ GradScaler for fp16) path, exercised on the CPU, with channels-last batches."""
    loader = data.GpuLoader(small_train.subset(64), 32, shuffle=True, augment=True, drop_last=True, device="cpu",
                            channels_last=True)
    history = train.fit(_fresh_model(), _tiny_config(amp=amp, epochs=1, snapshot_epochs=()), loader, progress=False)
    assert math.isfinite(history[0]["train_loss"]) and 0 <= history[0]["train_acc"] <= 1
