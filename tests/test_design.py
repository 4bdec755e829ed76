"""Neural collapse by design (nclab.methods.design): each loss brings its head, the fixed-ETF head does not
move, the NC trace measures without changing what is learnt and survives a resume, the running prototypes
follow the class means, and the tables of notebook 08 on hand cases."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from nclab import data, heads, losses, models, plots, tables, train
from nclab.features import FeatureSet
from nclab.methods import design, spa


def _config(method, dataset="cifar100", epochs=2, **overrides):
    settings = dict(regime="test", dataset=dataset, method=method, width=2, epochs=epochs, batch_size=32,
                    augment=False, lr=0.05, snapshot_epochs=())  # fmt: skip
    return train.TrainConfig(**{**settings, **overrides})


def _fit(method, data_set, folder=None, extra_hooks=(), **overrides):
    config = _config(method, data_set.name.split("/")[0], **overrides)
    torch.manual_seed(0)
    model = method.build_model(config, data_set)
    loader = data.GpuLoader(data_set, 32, shuffle=True, augment=False, drop_last=True, seed=0, device="cpu")
    loss, hooks = method.training(config, data_set)
    train.fit(model, config, loader, run_dir=folder, loss=loss, hooks=[*hooks, *extra_hooks], progress=False)
    return model, loss, hooks


@pytest.mark.parametrize(
    "loss, head, criterion",
    [
        ("ce", heads.Linear, losses.CrossEntropy),
        ("normface", heads.Cosine, losses.NormFaceLoss),
        ("ntce", heads.Cosine, losses.NTCELoss),
        ("nonl", heads.Cosine, losses.NONLLoss),
        ("etf-dr", heads.FixedETF, losses.DotRegressionLoss),
        ("supcon", heads.Prototype, losses.SupConLoss),
    ],
)
def test_each_loss_brings_its_head_and_its_loss(small_train, loss, head, criterion):
    method = design.by_design(loss, tau=0.2)
    config = _config(method)
    model = method.build_model(config, small_train)
    built, hooks = method.training(config, small_train)
    assert isinstance(model.head, head) and isinstance(built, criterion)
    assert any(isinstance(hook, design.NCTrace) for hook in hooks)
    assert (loss == "supcon") == any(isinstance(hook, design.RunningPrototypes) for hook in hooks)
    if head is heads.Cosine:
        assert model.head.tau == built.tau == 0.2  # the head's logits and the loss use one temperature
    assert method.name == loss and ("tau" in method.hparams) == (loss in ("normface", "ntce", "nonl", "supcon"))


def test_untraced_cross_entropy_is_the_plain_cross_entropy_run(small_train):
    plain, traced = design.by_design("ce", trace=0), design.by_design("ce")
    assert _config(plain).key() == _config(spa.long_tail_method()).key()  # one run, shared with notebook 07
    assert _config(traced).key() != _config(plain).key()
    assert design.by_design("ntce", tau=0.1).params != design.by_design("ntce", tau=0.2).params
    # ... and it is the same run: the same model and the same loss
    built = []
    for method in (plain, spa.long_tail_method()):
        torch.manual_seed(0)
        built.append((method.build_model(_config(method), small_train), *method.training(_config(method), small_train)))
    (ours, our_loss, our_hooks), (theirs, their_loss, their_hooks) = built
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert type(our_loss) is type(their_loss) and our_hooks == their_hooks == []


def test_every_loss_starts_from_the_same_encoder(small_train):
    weights = {}
    for loss in design.LOSSES:
        method = design.by_design(loss, trace=0)
        torch.manual_seed(0)
        state = method.build_model(_config(method), small_train).state_dict()
        weights[loss] = {name: value for name, value in state.items() if not name.startswith("head.")}
    for loss, state in weights.items():
        assert all(torch.equal(state[name], value) for name, value in weights["ce"].items()), loss


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="loss must be one of"):
        design.by_design("arcface")
    with pytest.raises(ValueError, match="tau > 0"):
        design.by_design("ntce", tau=0)


def test_the_fixed_etf_head_does_not_move_and_the_features_do(small_train):
    method = design.by_design("etf-dr", trace=0)
    config = _config(method)
    torch.manual_seed(0)
    before = method.build_model(config, small_train).state_dict()
    model, _, _ = _fit(method, small_train)
    after = model.state_dict()
    assert torch.equal(before["head.weight"], after["head.weight"])  # a buffer: no optimiser moves it
    first = next(name for name in before if name.endswith("weight") and not name.startswith("head"))
    assert not torch.equal(before[first], after[first])
    trained = {name for name, _ in model.named_parameters() if name.startswith("head.")}
    assert trained == {"head.norm.weight", "head.norm.bias"}  # the authors' BatchNorm learns, M never does


def test_the_trace_measures_at_its_steps_without_changing_what_is_learnt(small_train):
    traced = design.by_design("ntce", trace=5)
    model, _, hooks = _fit(traced, small_train)
    untraced, _, _ = _fit(design.by_design("ntce", trace=0), small_train)
    for (name, a), b in zip(model.state_dict().items(), untraced.state_dict().values()):
        assert torch.equal(a, b), name  # eval-mode passes leave BatchNorm's statistics and the RNG alone
    trace = hooks[-1]
    total = 2 * (len(small_train) // 32)
    assert [r["step"] for r in trace.records] == sorted(trace.steps) == list(train.log_spaced_epochs(total, 5))
    assert {"accuracy", "nc1", "nc3", "nc4_ncc_mismatch"} <= set(trace.records[-1])
    # the last record is the final model's NC on the training images
    final = tables.model_nc(model, _extract(model, small_train))
    assert trace.records[-1]["nc1"] == pytest.approx(final["nc1"], rel=1e-5)


def test_the_trace_measures_a_stratified_subset_of_a_large_training_set(small_train):
    method = design.by_design("ntce", trace=3, trace_images=40)
    _, hooks = method.training(_config(method), small_train)
    traced = hooks[-1].data
    assert len(traced) == 40 and traced.fingerprint == small_train.subset(40, seed=0).fingerprint
    assert torch.bincount(traced.labels).tolist() == [5] * 8  # stratified: every class alike


def _extract(model, data_set):
    from nclab.features import extract_features

    return extract_features(model, data.GpuLoader(data_set, 500, shuffle=False, augment=False, drop_last=False))


def test_the_trace_survives_an_interrupted_run(small_train, tmp_path, disconnect_at):
    DisconnectAt, Disconnect = disconnect_at
    method = design.by_design("nonl", trace=6)
    _, _, whole = _fit(method, small_train, tmp_path / "whole", [DisconnectAt(None)], epochs=3)
    with pytest.raises(Disconnect):
        _fit(method, small_train, tmp_path / "resumed", [DisconnectAt(2)], epochs=3)
    _, _, resumed = _fit(method, small_train, tmp_path / "resumed", [DisconnectAt(None)], epochs=3)
    assert resumed[-1].records == whole[-1].records and resumed[-1].step == whole[-1].step


def test_a_supcon_run_resumes_to_the_same_weights_and_prototypes(small_train, tmp_path, disconnect_at):
    DisconnectAt, Disconnect = disconnect_at  # the second view's random crops and the running means
    method = design.by_design("supcon", trace=0)
    whole, _, whole_hooks = _fit(method, small_train, tmp_path / "whole", [DisconnectAt(None)], epochs=3)
    with pytest.raises(Disconnect):
        _fit(method, small_train, tmp_path / "resumed", [DisconnectAt(2)], epochs=3)
    resumed, _, resumed_hooks = _fit(method, small_train, tmp_path / "resumed", [DisconnectAt(None)], epochs=3)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(whole_hooks[0].means, resumed_hooks[0].means)


def test_running_prototypes_are_the_normalised_means_of_the_normalised_features():
    head = heads.Prototype(2, 3)
    head.prototypes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    model = SimpleNamespace(head=head)
    hook = design.RunningPrototypes(3, momentum=0.5)
    features = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]])  # class 0: (1, 0) and (0, 1) once normalised
    out = losses.BatchOutput(features, torch.zeros(3, 3), model=model)
    hook.after_step(out, torch.tensor([0, 0, 1]))
    assert torch.allclose(head.prototypes[0], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    assert torch.allclose(head.prototypes[1], F.normalize(torch.tensor([1.0, 1.0]), dim=0))
    assert torch.equal(head.prototypes[2], torch.tensor([-1.0, 0.0]))  # not seen: as initialised
    hook.after_step(losses.BatchOutput(torch.tensor([[0.0, 2.0]]), torch.zeros(1, 3), model=model), torch.tensor([0]))
    # EMA with momentum 0.5 of the normalised means: 0.5·(½, ½) + 0.5·(0, 1) = (¼, ¾)
    assert torch.allclose(head.prototypes[0], F.normalize(torch.tensor([0.25, 0.75]), dim=0))


def test_supcon_trains_its_prototype_head_through_fit(small_train):
    model, _, hooks = _fit(design.by_design("supcon", trace=0), small_train, epochs=1)
    prototypes = hooks[0]
    assert bool(prototypes.seen.all())
    assert torch.allclose(model.head.prototypes, F.normalize(prototypes.means, dim=1))


def test_traces_put_every_run_in_one_table():
    def run(records, epochs=2):
        trace = design.NCTrace(None, steps=[r["step"] for r in records])
        trace.records = records
        return SimpleNamespace(hooks=[trace], config=SimpleNamespace(epochs=epochs))

    table = design.traces({"CE": run([{"step": 2, "nc1": 1.0}, {"step": 8, "nc1": 0.5}]),
                           "NTCE": run([{"step": 2, "nc1": 0.4}, {"step": 8, "nc1": 0.1}])})  # fmt: skip
    assert list(table.columns[:3]) == ["run", "step", "epoch"]
    assert table["epoch"].tolist() == [0.5, 2.0, 0.5, 2.0]  # 8 steps = 2 epochs of 4
    with pytest.raises(ValueError, match="not traced"):
        design.traces({"x": SimpleNamespace(hooks=[], config=None)})


def test_first_match_reaches_and_keeps_the_reference_value():
    trace = pd.DataFrame(
        {
            "run": ["CE"] * 4 + ["A"] * 4 + ["B"] * 4 + ["C"] * 4,
            "step": [1, 2, 3, 4] * 4,
            "nc1": [4, 3, 2, 1, 2, 0.5, 1.5, 0.5, 0.9, 0.8, 0.7, 0.6, 2, 2, 2, math.nan],
        }
    )
    table = tables.first_match(trace, ["nc1"], within=0.3).set_index("run")
    assert table.loc["CE", "step"] == 4 and table.loc["CE", "fraction"] == 1.0
    assert table.loc["A", "step"] == 4  # below at step 2, above again at step 3: reached only at 4
    assert table.loc["B", "step"] == 1 and table.loc["B", "fraction"] == 0.25 and table.loc["B", "within"]
    assert math.isnan(table.loc["C", "step"]) and not table.loc["C", "within"]
    assert set(table["target"]) == {1.0}
    with pytest.raises(ValueError, match="no run 'CE'"):
        tables.first_match(trace[trace["run"] != "CE"], ["nc1"])


def test_prototypes_and_probe_on_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    labels = torch.arange(3).repeat(20)
    h = centres[labels] * (1 + torch.rand(60, 1, generator=generator)) + 0.3 * torch.randn(60, 3, generator=generator)
    logits = -torch.cdist(h, centres)  # a "trained head": the nearest centre
    fs = FeatureSet(h, logits, labels)
    table = tables.prototype_vs_probe(fs, fs).set_index("classifier")
    assert list(table.index) == ["trained head", "class-mean prototypes", "linear probe"]
    assert table["test_accuracy"].tolist() == [1.0, 1.0, 1.0]
    assert math.isnan(table.loc["trained head", "fit_seconds"]) and table.loc["linear probe", "fit_seconds"] > 0


def test_the_prototypes_average_directions_not_raw_features():
    # class 0: one long feature at 80° and two short ones at 0°; class 1: unit features at 120°
    polar = lambda degrees, norm: [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]  # noqa: E731
    train = FeatureSet(torch.tensor([polar(80, 20), polar(0, 1), polar(0, 1), polar(120, 1), polar(120, 1)]),
                       torch.zeros(5, 2), torch.tensor([0, 0, 0, 1, 1]))  # fmt: skip
    query = FeatureSet(torch.tensor([polar(95, 1)]), torch.zeros(1, 2), torch.tensor([1]))
    # the mean direction of class 0 is ≈ 27°, so 95° is nearer 120° (class 1); the raw mean points at ≈ 74°
    table = tables.prototype_vs_probe(train, query).set_index("classifier")
    assert table.loc["class-mean prototypes", "test_accuracy"] == 1.0


def test_transfer_probes_are_relative_to_the_reference(tmp_path):
    target_train, target_test = data.train_test_sets("cifar10", "smoke")
    torch.manual_seed(0)
    runs = {name: SimpleNamespace(model=models.resnet18(8, width=2).eval(), run_dir=tmp_path / name)
            for name in ("CE", "NTCE")}  # fmt: skip
    table = tables.transfer_probes(runs, target_train, target_test).set_index("run")
    assert table.loc["CE", "relative_gain"] == 0
    ntce = table.loc["NTCE"]
    assert ntce["relative_gain"] == pytest.approx(ntce["accuracy"] / table.loc["CE", "accuracy"] - 1)
    assert 0.5 <= table["accuracy"].min() <= 1  # two classes: a probe does at least as well as chance


def test_per_class_alignment_reads_a_cosine_head_on_normalised_features():
    generator = torch.Generator().manual_seed(1)
    h = torch.randn(40, 4, generator=generator) * torch.rand(40, 1, generator=generator) * 10
    labels = torch.arange(4).repeat(10)
    cosine = heads.Cosine(4, 4, tau=0.5)
    fs = FeatureSet(h, cosine(h).detach(), labels)
    got = tables.per_class_alignment(fs, fs, cosine)
    linear = heads.Linear(4, 4, bias=False)
    linear.weight.data = F.normalize(cosine.weight.data, dim=1) / 0.5
    expected = tables.per_class_alignment(FeatureSet(F.normalize(h, dim=1), fs.logits, labels), fs, linear)
    pd.testing.assert_frame_equal(got, expected)


def test_the_race_gives_no_converged_reference_without_its_training_accuracy():
    matches = pd.DataFrame(
        {"run": ["NTCE"] * 3 + ["NONL"] * 3, "metric": ["a", "b", "c"] * 2,
         "fraction": [0.05, 0.07, 0.5, 0.01, float("nan"), 0.075]}
    )  # fmt: skip
    table = tables.race(matches, 1.0)
    assert table.loc["NTCE", "reached within"] == 2 and table.loc["NONL", "reached within"] == 2
    assert table["of"].eq(3).all() and table["reference converged"].all()
    assert not tables.race(matches, float("nan"))["reference converged"].any()  # missing is not converged
    assert not tables.race(matches, 0.98)["reference converged"].any()


def test_design_differences_pair_the_same_images_for_each_claim():
    ones, zeros = torch.ones(100, dtype=torch.uint8), torch.zeros(100, dtype=torch.uint8)
    half = torch.cat([ones[:50], zeros[:50]])
    correct = {"CE": half, "NTCE": torch.cat([ones[:60], zeros[:40]]), "NONL": half}
    classifiers = pd.DataFrame(
        {"run": ["SupCon"] * 3, "classifier": ["trained head", "class-mean prototypes", "linear probe"],
         "correct": [half, half, half]}
    )  # fmt: skip
    transfer = pd.DataFrame(
        {"run": ["CE", "NTCE", "NONL"], "correct": [half, torch.cat([ones[:55], zeros[:45]]), half]}
    )
    measured = tables.design_differences(correct, classifiers, transfer, transfer)
    ntce = measured["NTCE beats CE"]["NTCE against CE"]
    assert ntce.estimate == pytest.approx(10.0) and ntce.lo > 0  # 10 more right, none fewer: paired
    assert measured["NONL beats CE"]["NONL against CE"].estimate == 0.0
    assert measured["transfer gain"]["NTCE encoder against CE's"].estimate == pytest.approx(10.0)  # 55/50 − 1
    table = tables.verdict_table(measured)
    assert table.loc[("NTCE beats CE", "NTCE against CE"), "verdict"] == "reproduced"
    assert table.loc[("prototypes match probing", "SupCon: prototypes against linear probe"), "verdict"] == (
        "reproduced"
    )


def test_dot_regression_in_the_authors_form_acts_on_unit_batch_normalised_features(small_train):
    method = design.by_design("etf-dr", trace=0)
    config = _config(method)
    model = method.build_model(config, small_train)
    head = model.head
    assert head.embeds and isinstance(head.norm, torch.nn.BatchNorm1d)
    h = torch.randn(16, head.in_features) * 5 + 3
    phi = head.embed(h)
    assert torch.allclose(phi.norm(dim=1), torch.ones(16), atol=1e-5)
    y = torch.arange(16) % small_train.num_classes
    out = losses.BatchOutput(features=h, logits=head(h), model=model)
    value = losses.DotRegressionLoss()(out, y)
    expected = 0.5 * ((phi * head.weight[y]).sum(1) - 1) ** 2  # unit features, unit class vectors
    assert value.item() == pytest.approx(expected.mean().item(), rel=1e-5)
    raw = design.by_design("etf-dr", trace=0, dr="raw").build_model(config, small_train).head
    assert not raw.embeds and raw.norm is None
    with pytest.raises(ValueError, match="authors"):
        design.by_design("etf-dr", dr="bn")


def test_the_trace_measures_every_run_on_the_sphere_too(small_train):
    for loss, same in [("ntce", True), ("ce", False)]:
        _, _, hooks = _fit(design.by_design(loss, trace=3), small_train)
        last = hooks[-1].records[-1]
        assert {"sphere:nc1", "sphere:nc3", "sphere:nc4_ncc_mismatch"} <= set(last)
        if same:  # a cosine head already classifies unit features: the two spaces are one
            assert last["sphere:nc1"] == pytest.approx(last["nc1"], rel=1e-5)
        else:
            assert last["sphere:nc1"] != pytest.approx(last["nc1"], rel=1e-3)


def test_race_table_races_in_both_spaces_and_the_sphere_can_reverse_the_order():
    """CE's raw features keep their norm spread (a large NC1 on h), a cosine run's do not: in its own space the
    cosine run reaches CE's final value at once, on the sphere (CE's NC1 far smaller there) only at the end."""
    steps = [1, 2, 4]
    trace = pd.DataFrame(
        {"run": ["CE"] * 3 + ["NTCE"] * 3, "step": steps * 2,
         "nc1": [9.0, 6.0, 4.0, 1.0, 0.8, 0.5], "sphere:nc1": [2.0, 1.0, 0.4, 1.0, 0.8, 0.5]}
    )  # fmt: skip
    table = tables.race_table(trace, ["nc1"])
    assert list(table.index) == ["CE", "NTCE"] and list(table.columns.get_level_values("space")) == list(tables.SPACES)
    assert table.loc["NTCE", ("classifier's space", "nc1")] == 0.25  # step 1 of CE's 4
    assert np.isnan(table.loc["NTCE", ("unit sphere", "nc1")])  # 0.5 never goes below CE's 0.4
    assert table.loc["CE", ("unit sphere", "nc1")] == 1.0
    fig = plots.plot_first_match(tables.first_match(trace, ["sphere:nc1"]))
    assert "unit sphere" in fig.axes[0].get_title() and fig.axes[0].get_xticklabels()[0].get_text() == "NC1"
    fig = plots.plot_first_match(tables.first_match(trace, ["nc1"]))
    assert "classifier's space" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="one space at a time"):
        plots.plot_first_match(tables.first_match(trace, ["nc1", "sphere:nc1"]))


def test_on_real_digits_nonl_learns_and_collapses():
    """Notebook 08's NONL run (the smoke recipe on the real-pixel stand-in, in the test session's cache, so
    that the notebook's nbval run loads it): it classifies the training set and its traced NC1 falls by an
    order of magnitude over the run (learning happened, and collapse began)."""
    train_set = data.train_test_sets("cifar100", "smoke")[0].subset(design.SCALES["smoke"].images, seed=0)
    run = train.load_or_train(design.recipe("smoke", design.by_design("nonl")), train_set, progress=False)
    trace = design.traces({"NONL": run})
    assert run.final["train_acc"] > 0.9
    assert trace["nc1"].iloc[-1] < trace["nc1"].iloc[0] / 10
    assert trace["accuracy"].iloc[-1] > 0.9
