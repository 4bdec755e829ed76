import math
from dataclasses import replace

import pytest
import torch

from nclab import checkpoints, config, data, heads, losses, methods, models, train
from nclab.checkpoints import CheckpointError


def _tiny_config(**overrides):
    options = dict(regime="test", width=4, epochs=3, batch_size=32, lr=0.05, snapshot_epochs=(1, 3))
    return train.TrainConfig(**{**options, **overrides})


def _loaders(train_set, seed=0):
    return data.GpuLoader(train_set, 32, shuffle=True, augment=True, drop_last=True, device="cpu", seed=seed)


def _fresh_model(num_classes=8, width=4):
    torch.manual_seed(0)
    return models.resnet18(num_classes, width)


def _fit(train_set, run_dir=None, **overrides):
    """``fit`` a fresh tiny model on ``train_set`` with ``_tiny_config(**overrides)``; its history."""
    return train.fit(_fresh_model(), _tiny_config(**overrides), _loaders(train_set), run_dir=run_dir, progress=False)


TIMING = ("seconds", "images_per_s")


def _without_timing(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


# --- configuration and schedule ---------------------------------------------------------------------


def test_regimes_follow_the_practical_work():
    a, b = train.regime("A", "full"), train.regime("b", "full")
    assert (a.lr, a.momentum, a.weight_decay, a.schedule, a.batch_size) == (0.1, 0.9, 5e-4, "multistep", 128)
    assert a.milestones == (1 / 3, 2 / 3) and a.epochs == 350 and not a.pretrained
    assert (b.lr, b.schedule, b.pretrained) == (0.01, "cosine", True)
    assert not train.regime("B", "smoke").pretrained  # no ImageNet weights at width 16
    assert train.regime("A", "smoke", epochs=1).epochs == 1
    with pytest.raises(ValueError, match="Unknown regime"):
        train.regime("C", "smoke")


def test_multistep_decays_at_a_third_and_two_thirds_of_training():
    factor = train.lr_factor(train.TrainConfig(epochs=350), steps_per_epoch=10)
    assert factor(0) == 1 and factor(1165) == 1  # Papyan: decay at epoch ≈ 116
    assert factor(1166) == pytest.approx(0.1) and factor(2332) == pytest.approx(0.1)
    assert factor(2333) == pytest.approx(0.01) and factor(3499) == pytest.approx(0.01)


def test_cosine_with_warmup():
    factor = train.lr_factor(train.TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1), steps_per_epoch=100)
    assert factor(0) == pytest.approx(0.01) and factor(49) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(1.0)
    assert factor(550) == pytest.approx(0.5)  # halfway through the cosine part
    assert factor(999) == pytest.approx(0.5 * (1 + math.cos(math.pi * 899 / 900)))


def test_log_spaced_epochs_keep_early_and_late():
    epochs = train.log_spaced_epochs(350, 10)
    assert epochs[0] == 1 and epochs[-1] == 350 and list(epochs) == sorted(set(epochs))
    assert sum(e <= 10 for e in epochs) >= 3  # dense early, sparse late
    assert train.log_spaced_epochs(2, 2) == (1, 2)


def test_bad_configs_are_refused():
    for bad in (
        dict(optimizer="adam"),
        dict(schedule="step"),
        dict(amp="fp8"),
        dict(epochs=0),
        dict(milestones=(1.5,)),
        dict(epochs=3, snapshot_epochs=(4,)),
    ):
        with pytest.raises(ValueError):
            train.TrainConfig(**bad)


def test_speed_only_fields_do_not_change_the_run_folder(small_train):
    base = train.run_directory(_tiny_config(), small_train)
    assert train.run_directory(_tiny_config(compile=True, amp="off", channels_last=False), small_train) == base
    assert train.run_directory(_tiny_config(lr=0.01), small_train) != base
    assert train.run_directory(_tiny_config(), small_train.subset(128)) != base


# --- learning on real pixels --------------------------------------------------------------------------


def test_smoke_run_learns_the_standin_clearly_above_chance():
    train_set, test_set = data.train_test_sets("cifar100", "smoke")  # the same run notebook 01 makes
    run = train.load_or_train(train.regime("A", "smoke"), train_set, test_set, progress=False)
    chance = 1 / train_set.num_classes
    assert run.final["test_acc"] > 3 * chance, run.history
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert sorted(run.snapshots) == list(run.config.snapshot_epochs)


def test_adamw_and_label_smoothing_train_too(small_train):
    config_ = _tiny_config(
        optimizer="adamw", lr=2e-3, weight_decay=0.05, label_smoothing=0.1, epochs=2, snapshot_epochs=()
    )
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
    assert checkpoints.load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1

    resumed = _fresh_model()  # a new kernel: fresh weights
    history_resumed = train.fit(resumed, config_, _loaders(small_train), run_dir=tmp_path / "resumed", progress=False)
    assert _without_timing(history_resumed) == _without_timing(history_whole)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["epoch_0001.pt", "epoch_0003.pt", "last.pt"]


def test_messages_show_runs_relative_to_the_cache_and_no_nan_for_an_absent_test_set(
    small_train, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("NCLAB_CACHE", str(tmp_path / "cache"))
    train.load_or_train(_tiny_config(epochs=1, snapshot_epochs=(1,)), small_train, progress=True)
    out, err = capsys.readouterr()
    assert "in cache/runs/" in out and str(tmp_path) not in out  # no folder of the machine that built the page
    assert "acc=" in err and "test=" not in err and "nan" not in err  # the bar: no test set, no test column
    assert config.in_cache(tmp_path / "elsewhere" / "x.pt") == str(tmp_path / "elsewhere" / "x.pt")


def test_on_a_static_page_training_prints_one_final_line_and_no_live_bar(small_train, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NCLAB_PROGRESS", "final")
    run = train.load_or_train(_tiny_config(epochs=2, snapshot_epochs=(2,)), small_train, root=tmp_path)
    out, err = capsys.readouterr()
    finals = [line for line in out.splitlines() if "epochs, 2 trained in" in line]
    assert len(finals) == 1 and f"acc={run.history[-1]['train_acc']:.3f}" in finals[0]
    assert "it/s" not in err and "epoch 1" not in err  # no tqdm bar at all


def test_completed_run_is_loaded_not_retrained(small_train, tmp_path, capsys):
    config_ = _tiny_config(epochs=1, snapshot_epochs=(1,))
    first = train.load_or_train(config_, small_train, root=tmp_path, progress=False)
    assert "No checkpoint" in capsys.readouterr().out
    second = train.load_or_train(config_, small_train, root=tmp_path, progress=False)
    assert "Found checkpoint" in capsys.readouterr().out
    assert second.history == first.history
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    snapshot = second.load_snapshot(1)
    assert torch.equal(snapshot.head.weight, second.model.head.weight)
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
    with pytest.raises(CheckpointError, match="corrupted or truncated.*untouched.*Delete"):
        _fit(small_train, tmp_path, epochs=2, snapshot_epochs=())
    assert last.read_bytes() == bad  # nothing overwritten


def test_checkpoint_of_another_configuration_is_refused(small_train, tmp_path):
    _fit(small_train, tmp_path, epochs=1, snapshot_epochs=())
    with pytest.raises(CheckpointError, match="another configuration"):
        _fit(small_train, tmp_path, epochs=1, lr=0.3, snapshot_epochs=())


def test_checkpoints_load_with_weights_only(small_train, tmp_path):
    _fit(small_train, tmp_path, epochs=1, snapshot_epochs=())
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "hooks", "rng", "history", "config", "epoch"} <= set(state)


def test_pretrained_regime_falls_back_with_a_reason(small_train, tmp_path, capsys, monkeypatch):
    def unavailable(width=64):
        raise models.PretrainedWeightsUnavailable("no internet here")

    monkeypatch.setattr(models, "imagenet_weights", unavailable)
    run = train.load_or_train(
        _tiny_config(epochs=1, snapshot_epochs=(), pretrained=True), small_train, root=tmp_path, progress=False
    )
    assert "no internet here" in capsys.readouterr().out and not run.config.pretrained


def _imagenet_like_weights(width=4):
    """Stands for the downloaded ImageNet weights: a (seeded) torchvision-layout state dict of this width."""
    torch.manual_seed(123)
    return {
        k.replace("head.", "fc."): v
        for k, v in models.CifarResNet(1000, width).state_dict().items()
        if not k.startswith("normalize.")
    }


def test_pretrained_runs_are_seeded_and_offline_resume_fetches_nothing(small_train, tmp_path, capsys, monkeypatch):
    fetched = []
    monkeypatch.setattr(models, "imagenet_weights", lambda width=64: fetched.append(width) or _imagenet_like_weights())
    config_ = _tiny_config(epochs=1, snapshot_epochs=(), pretrained=True)
    first = train.load_or_train(config_, small_train, root=tmp_path / "a", progress=False)
    second = train.load_or_train(config_, small_train, root=tmp_path / "b", progress=False)
    assert fetched == [4, 4] and first.config.pretrained
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name  # stem and head seeded: same run twice

    def offline(width=64):
        raise models.PretrainedWeightsUnavailable("offline now")

    monkeypatch.setattr(models, "imagenet_weights", offline)
    capsys.readouterr()
    again = train.load_or_train(config_, small_train, root=tmp_path / "a", progress=False)
    out = capsys.readouterr().out
    assert "Found checkpoint" in out and "offline now" not in out and again.config.pretrained
    assert again.run_dir == first.run_dir


def test_dataset_mismatch_is_refused(small_train, tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        train.load_or_train(_tiny_config(dataset="svhn"), small_train, root=tmp_path, progress=False)


def test_mixed_precision_choice(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert train.amp_dtype("auto", cpu) is None and train.amp_dtype("off", gpu) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4
    assert train.amp_dtype("auto", gpu) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # H100
    assert train.amp_dtype("auto", gpu) == torch.bfloat16
    assert train.amp_dtype("fp16", gpu) == torch.float16


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_paths_train(small_train, amp):
    """The GPU's autocast (+ GradScaler for fp16) path, exercised on the CPU, with channels-last batches."""
    loader = data.GpuLoader(
        small_train.subset(64), 32, shuffle=True, augment=True, drop_last=True, device="cpu", channels_last=True
    )
    history = train.fit(_fresh_model(), _tiny_config(amp=amp, epochs=1, snapshot_epochs=()), loader, progress=False)
    assert math.isfinite(history[0]["train_loss"]) and 0 <= history[0]["train_acc"] <= 1


# --- the plug-in points: methods, losses, hooks ------------------------------------------------------


class _ClassMeans(methods.Hook):
    """An EMA of every class's mean feature (as SpA keeps its class centres) and a step counter."""

    def __init__(self, num_classes=8, momentum=0.9):
        self.num_classes, self.momentum, self.means, self.steps = num_classes, momentum, None, 0

    def after_step(self, out, y):
        h = out.features.detach().float()
        sums = torch.zeros(self.num_classes, h.shape[1]).index_add_(0, y, h)
        counts = torch.bincount(y, minlength=self.num_classes)
        batch = sums / counts.clamp_min(1)[:, None]
        present = (counts > 0)[:, None]
        self.means = (
            batch
            if self.means is None
            else torch.where(present, self.momentum * self.means + (1 - self.momentum) * batch, self.means)
        )
        self.steps += 1

    def end_epoch(self, epoch, model, train_loader):
        assert train_loader.data.name == "cifar100/train"  # the training ImageSet, for a pass over it
        return {"hook_steps": self.steps}

    def state_dict(self):
        return {"means": self.means, "steps": self.steps}

    def load_state_dict(self, state):
        self.means, self.steps = state["means"], state["steps"]


def test_a_hooks_state_survives_an_interrupted_run_bit_for_bit(small_train, tmp_path):
    config_ = _tiny_config()
    whole_hook = _ClassMeans()
    whole = _fresh_model()
    history = train.fit(
        whole, config_, _loaders(small_train), run_dir=tmp_path / "whole", hooks=[whole_hook], progress=False
    )
    assert [r["hook_steps"] for r in history] == [8, 16, 24]  # end_epoch feeds the history

    dying = _LoaderThatDies(small_train, 32, shuffle=True, augment=True, drop_last=True, device="cpu")
    with pytest.raises(_Disconnect):
        train.fit(_fresh_model(), config_, dying, run_dir=tmp_path / "resumed", hooks=[_ClassMeans()], progress=False)
    resumed_hook = _ClassMeans()  # a new kernel: a fresh hook
    resumed = _fresh_model()
    history_resumed = train.fit(
        resumed, config_, _loaders(small_train), run_dir=tmp_path / "resumed", hooks=[resumed_hook], progress=False
    )
    assert _without_timing(history_resumed) == _without_timing(history)
    assert resumed_hook.steps == whole_hook.steps and torch.equal(resumed_hook.means, whole_hook.means)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="hook"):
        train.fit(
            _fresh_model(),
            _tiny_config(epochs=4, snapshot_epochs=()),
            _loaders(small_train),
            run_dir=tmp_path / "resumed",
            hooks=[],
            progress=False,
        )


class _ZeroHeadGradient(methods.Hook):
    """Sees the gradients between backward and the step; zeroes the head's and records their size."""

    def __init__(self):
        self.largest = []

    def after_backward(self, out, y):
        grad = out.model.head.weight.grad
        self.largest.append(grad.abs().max().item())
        grad.zero_()


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_hooks_act_between_backward_and_step_on_unscaled_gradients(small_train, amp):
    model = _fresh_model()
    before = model.head.weight.detach().clone()
    hook = _ZeroHeadGradient()
    config_ = _tiny_config(epochs=1, snapshot_epochs=(), momentum=0.0, weight_decay=0.0, amp=amp)
    train.fit(model, config_, _loaders(small_train.subset(64)), hooks=[hook], progress=False)
    assert torch.equal(model.head.weight, before)  # the zeroed gradient reached the step
    assert len(hook.largest) == 2 and 0 < max(hook.largest) < 100  # unscaled: the fp16 scale is 65536


class _RestartAt(methods.Hook):
    """Asks for a fresh optimiser state once, right after step ``at``."""

    def __init__(self, at):
        self.at, self.steps = at, 0

    def after_step(self, out, y):
        self.steps += 1

    def restart_optimizer(self):
        return self.steps == self.at


def test_a_hook_can_restart_the_optimiser_and_the_schedule_goes_on(small_train, monkeypatch):
    """AdamW's state after 6 steps with a restart after step 2 counts 4 steps (the moments start again);
    the learning-rate schedule is the same as without the restart."""
    part = small_train.subset(64)  # 2 steps per epoch, 3 epochs
    config_ = _tiny_config(optimizer="adamw", lr=1e-3, weight_decay=0.0, snapshot_epochs=())
    model = _fresh_model()
    optimizers = []
    original = train.loop.make_optimizer

    def spy(model_, config__):
        optimizers.append(original(model_, config__))
        return optimizers[-1]

    monkeypatch.setattr(train.loop, "make_optimizer", spy)
    hook = _RestartAt(2)
    history = train.fit(model, config_, _loaders(part), hooks=[hook], progress=False)
    monkeypatch.undo()
    state = optimizers[0].state[model.head.weight]
    assert float(state["step"]) == 4 and hook.steps == 6
    assert [round(r["lr"], 8) for r in history] == [
        round(r["lr"], 8) for r in train.fit(_fresh_model(), config_, _loaders(part), progress=False)
    ]  # the schedule is not restarted


def test_loss_sees_features_logits_extras_and_the_model(small_train):
    seen, part = [], small_train.subset(64)

    def loss(out, y):
        seen.append((out.features.shape, out.logits.shape, sorted(out.extras), out.model))
        assert torch.equal(out.logits, out.model.head(out.features))
        assert torch.equal(part.labels[out.extras["index"]], y)
        return losses.CrossEntropy()(out, y)

    model = _fresh_model()
    train.fit(model, _tiny_config(epochs=1, snapshot_epochs=()), _loaders(part), loss=loss, progress=False)
    assert seen == [((32, 32), (32, 8), ["index"], model)] * 2


def test_default_loss_is_cross_entropy_with_the_configs_label_smoothing(small_train):
    batch = small_train.subset(32)
    loader = data.GpuLoader(batch, 32, shuffle=False, augment=False, drop_last=True, device="cpu")
    x, y, _ = next(iter(loader))
    model = _fresh_model()
    with torch.no_grad():  # the loss of the first (only) step
        logits = model.train()(x)
        smoothed = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1).item()
        plain = torch.nn.functional.cross_entropy(logits, y).item()
    assert abs(smoothed - plain) > 1e-3
    config_ = _tiny_config(epochs=1, snapshot_epochs=(), batch_size=32, label_smoothing=0.1)
    history = train.fit(_fresh_model(), config_, loader, progress=False)
    assert history[0]["train_loss"] == pytest.approx(smoothed, rel=1e-6)
    out = losses.BatchOutput(features=torch.zeros(32, 1), logits=logits, extras={}, model=model)
    assert losses.CrossEntropy(0.1)(out, y).item() == pytest.approx(smoothed, rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.CrossEntropy(1.5)


def test_a_method_and_its_hyperparameters_are_in_the_run_key(small_train):
    base = _tiny_config()
    alpha = methods.Method("control", {"alpha": 0.05})
    folders = {
        train.run_directory(c, small_train)
        for c in (
            base,
            _tiny_config(method=alpha),
            _tiny_config(method=methods.Method("control", {"alpha": 0.1})),
            _tiny_config(method=methods.Method("other", {"alpha": 0.05})),
        )
    }
    assert len(folders) == 4
    assert train.run_directory(
        _tiny_config(method=methods.Method("control", {"alpha": 0.05})), small_train
    ) == train.run_directory(_tiny_config(method=alpha), small_train)
    assert _tiny_config(method=alpha).key()["method.alpha"] == 0.05 and base.key()["method"] == "erm"
    assert "-control-" in train.run_directory(_tiny_config(method=alpha), small_train).name
    assert _tiny_config(decay_norm_and_bias=False).key() != base.key()
    with pytest.raises(ValueError, match="params"):
        methods.Method("bad", {"mask": torch.zeros(3)})
    with pytest.raises(ValueError, match="name"):
        methods.Method("no spaces")
    with pytest.raises(ValueError, match="nclab.methods.Method"):
        train.TrainConfig(method="control")


def _etf_model(config_, train_set):
    return models.resnet18(
        train_set.num_classes, config_.width, head=heads.FixedETF(8 * config_.width, train_set.num_classes, scale=5)
    )


ETF = methods.Method("fixed-etf", {"scale": 5}, build_model=_etf_model)


def test_a_fixed_etf_head_does_not_move_and_snapshots_use_the_methods_builder(small_train, tmp_path):
    config_ = _tiny_config(method=ETF, epochs=2, snapshot_epochs=(1,))
    run = train.load_or_train(config_, small_train, root=tmp_path, progress=False)
    torch.manual_seed(config_.seed)
    expected = _etf_model(config_, small_train).head.weight
    assert isinstance(run.model.head, heads.FixedETF) and torch.equal(run.model.head.weight, expected)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]  # the encoder learned
    optimizer = train.make_optimizer(run.model, config_)
    assert all(p is not run.model.head.weight for group in optimizer.param_groups for p in group["params"])
    snapshot = run.load_snapshot(1)
    assert isinstance(snapshot.head, heads.FixedETF) and torch.equal(snapshot.head.weight, expected)


def test_weight_decay_follows_the_sources_by_default():
    model = _fresh_model()
    model.conv1.weight.requires_grad_(False)  # a frozen layer stays out
    every = train.make_optimizer(model, _tiny_config()).param_groups
    assert len(every) == 1 and every[0]["weight_decay"] == 5e-4
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(every[0]["params"]) == len(trainable) == len(list(model.parameters())) - 1
    spared = train.make_optimizer(model, _tiny_config(decay_norm_and_bias=False)).param_groups
    assert [g["weight_decay"] for g in spared] == [5e-4, 0.0]
    assert all(p.ndim > 1 for p in spared[0]["params"]) and all(p.ndim == 1 for p in spared[1]["params"])
    spared_ids = {id(p) for p in spared[1]["params"]}
    assert id(model.bn1.weight) in spared_ids and id(model.head.bias) in spared_ids


def test_resume_with_another_amp_mode_reinitialises_the_scaler(small_train, tmp_path, capsys):
    """A run written with AMP off, resumed on a T4 in fp16 (GradScaler), then back in bf16: it never crashes."""
    part, config_ = small_train.subset(160), _tiny_config(epochs=3, snapshot_epochs=())  # 5 batches per epoch

    def dying_at(epoch):
        loader = _LoaderThatDies(part, 32, shuffle=True, augment=True, drop_last=True, device="cpu")
        loader.die_at = epoch
        return loader

    with pytest.raises(_Disconnect):  # epoch 1 saved, AMP off
        train.fit(_fresh_model(), replace(config_, amp="off"), dying_at(2), run_dir=tmp_path, progress=False)
    with pytest.raises(_Disconnect):  # epoch 2 saved, fp16 + GradScaler
        train.fit(_fresh_model(), replace(config_, amp="fp16"), dying_at(3), run_dir=tmp_path, progress=False)
    assert "scaler starts afresh" in capsys.readouterr().out
    assert checkpoints.load_checkpoint(tmp_path / "last.pt")["scaler"]  # an fp16 run's scaler state
    history = train.fit(
        _fresh_model(), replace(config_, amp="bf16"), _loaders(part), run_dir=tmp_path, progress=False
    )  # and back: the scaler is ignored
    assert len(history) == 3 and all(math.isfinite(r["train_loss"]) for r in history)


def test_test_metrics_use_the_profiles_eval_batch_size(small_train, tmp_path, monkeypatch):
    sizes = []
    real = train.runs.GpuLoader

    class Recording(real):
        def __init__(self, data_, batch_size, **options):
            sizes.append((batch_size, options["augment"]))
            super().__init__(data_, batch_size, **options)

    monkeypatch.setattr(train.runs, "GpuLoader", Recording)
    train.load_or_train(
        _tiny_config(epochs=1, snapshot_epochs=()), small_train, small_train.subset(64), root=tmp_path, progress=False
    )
    assert sizes == [(32, True), (500, False)]  # smoke: eval_batch_size 500


def test_the_loss_runs_outside_autocast_in_float32(small_train):
    seen = []

    def loss(out, y):
        u = out.features.float()
        seen.append((out.features.dtype, torch.is_autocast_enabled("cpu"), (u @ u.T).dtype, out.inputs.shape))
        return losses.CrossEntropy()(out, y)

    config_ = _tiny_config(epochs=1, snapshot_epochs=(), amp="bf16")
    train.fit(_fresh_model(), config_, _loaders(small_train.subset(64)), loss=loss, progress=False)
    assert seen[0] == (torch.bfloat16, False, torch.float32, (32, 3, 32, 32))  # the model ran in bf16


def test_hook_states_are_moved_to_the_training_device():
    state = {"centres": torch.ones(3, 2), "history": [torch.zeros(2), 5], "pair": (torch.ones(1), "x"), "n": 7}
    moved = train.loop._to_device(state, torch.device("meta"))
    assert moved["centres"].is_meta and moved["history"][0].is_meta and moved["pair"][0].is_meta
    assert moved["history"][1] == 5 and moved["pair"][1] == "x" and moved["n"] == 7
    assert isinstance(moved["pair"], tuple) and not state["centres"].is_meta  # the saved state is untouched


class _CountingLoss(methods.Hook):
    """A loss that is a hook too: cross-entropy that counts its own calls, checkpointed with the run."""

    def __init__(self):
        self.calls = 0

    def __call__(self, out, y):
        self.calls += 1
        return losses.CrossEntropy()(out, y)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


COUNTING = methods.Method("counting", training=lambda config, train_set: (_CountingLoss(), [_ClassMeans()]))


def test_a_loss_that_is_a_hook_is_checkpointed_and_the_run_exposes_its_hooks(small_train, tmp_path, capsys):
    config_ = _tiny_config(method=COUNTING, epochs=2, snapshot_epochs=())
    first = train.load_or_train(config_, small_train, root=tmp_path, progress=False)
    assert isinstance(first.loss, _CountingLoss) and first.hooks[0] is first.loss and first.loss.calls == 16
    assert isinstance(first.hooks[1], _ClassMeans) and first.hooks[1].steps == 16
    loaded = train.load_or_train(config_, small_train, root=tmp_path, progress=False)  # nothing to train
    assert "no training needed" in capsys.readouterr().out
    assert loaded.loss.calls == 16 and torch.equal(loaded.hooks[1].means, first.hooks[1].means)


def test_terminal_phase_is_the_first_epoch_of_the_final_run_at_full_training_accuracy():
    def history(accuracies):
        return [{"epoch": e, "train_acc": a} for e, a in enumerate(accuracies, start=1)]

    assert train.terminal_phase(history([0.5, 1.0, 0.99, 1.0, 1.0])) == 4  # the dip at epoch 3 restarts it
    assert train.terminal_phase(history([0.5, 1.0, 1.0])) == 2
    assert train.terminal_phase(history([1.0, 1.0, 0.999])) is None
    assert train.terminal_phase([]) is None


def test_the_regimes_augment_as_their_profile_says_and_train_on_its_regime_sets():
    assert not train.regime("A", "smoke").augment and not train.regime("B", "smoke").augment
    assert train.regime("A", "quick").augment and train.regime("B", "full").augment
    assert train.regime("A", "smoke", augment=True).augment  # an override still wins
    smoke = config.PROFILES["smoke"]
    train_set, test_set = train.regime_data(smoke)
    assert len(train_set) == smoke.regime_train_size < smoke.train_size
    assert torch.equal(test_set.labels, data.train_test_sets("cifar100", smoke)[1].labels)  # the same test set
    assert torch.bincount(train_set.labels).tolist() == [len(train_set) // 8] * 8  # stratified


def test_until_stops_after_an_epoch_and_a_later_call_goes_on_to_the_uninterrupted_weights(small_train, tmp_path):
    config_ = _tiny_config()
    whole = train.load_or_train(config_, small_train, root=tmp_path / "whole", progress=False)
    first = train.load_or_train(config_, small_train, root=tmp_path / "parts", progress=False, until=2)
    assert [r["epoch"] for r in first.history] == [1, 2]
    assert sorted(first.snapshots) == [1]  # epoch 3's snapshot is still to come
    again = train.load_or_train(config_, small_train, root=tmp_path / "parts", progress=False, until=2)
    assert again.history == first.history  # nothing more to train before epoch 2
    rest = train.load_or_train(config_, small_train, root=tmp_path / "parts", progress=False)
    assert _without_timing(rest.history) == _without_timing(whole.history)
    for (name, a), b in zip(whole.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="until must lie in 1..3"):
        train.load_or_train(config_, small_train, root=tmp_path / "parts", progress=False, until=4)


def test_a_dry_run_takes_max_steps_per_epoch_in_a_folder_of_its_own(small_train, tmp_path):
    config_ = _tiny_config(epochs=2, snapshot_epochs=(2,))
    steps = []

    class Count(methods.Hook):
        def after_step(self, out, y):
            steps.append(len(y))

    method = methods.Method("count", training=lambda c, s: (losses.CrossEntropy(), [Count()]))
    dry = train.load_or_train(replace(config_, method=method), small_train, root=tmp_path, progress=False, max_steps=3)
    assert steps == [32] * 6  # 3 of the 8 steps of each epoch
    normal = train.run_directory(replace(config_, method=method), small_train, tmp_path)
    assert dry.run_dir != normal and dry.run_dir.parent == normal.parent
    assert (dry.run_dir / "epoch_0002.pt").exists()
