"""Space alignment (nclab.methods.spa): SpA-Proj against a per-row transcription of SPEC §6 and on hand
cases, SpA-Reg's zero when aligned, SLERP's geometry, the logit-adjusted loss, and the class centres that
survive an interrupted run."""

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from nclab import data, models, train
from nclab.losses import BatchOutput, CrossEntropy
from nclab.methods import spa


def _per_row(weight, grad, centres, keep):
    """SPEC §6, one classifier row at a time, written as the spec reads."""
    rows = []
    for w, g, mu in zip(weight.double(), grad.double(), centres.double()):
        w_hat = w / w.norm()
        g_t = g - (g @ w_hat) * w_hat
        toward = mu - (mu @ w_hat) * w_hat
        if toward.norm() > 0:
            d = toward / toward.norm()
            if g_t @ d > 0:
                g_t = g_t - (g_t @ d) * d
        rows.append(keep * g_t + (1 - keep) * g)
    return torch.stack(rows)


def test_spa_project_equals_the_rule_row_by_row():
    generator = torch.Generator().manual_seed(0)
    weight, grad, centres = (torch.randn(50, 16, generator=generator, dtype=torch.float64) for _ in range(3))
    centres[3] = 0  # a class without a centre yet: only the keep mix
    got = spa.spa_project(weight, grad, F.normalize(centres, dim=1), keep=0.4)
    torch.testing.assert_close(got, _per_row(weight, grad, F.normalize(centres, dim=1), 0.4), rtol=1e-5, atol=1e-6)
    assert got.dtype == grad.dtype


def test_spa_project_removes_exactly_the_opposing_component():
    w = torch.tensor([[1.0, 0.0, 0.0]])
    centre = torch.tensor([[0.0, 1.0, 0.0]])  # the centre lies along e2, 90° from the row
    away = torch.tensor([[0.3, 1.0, 2.0]])  # −g would turn w away from e2 (and along e3)
    got = spa.spa_project(w, away, centre, keep=0.4)
    # tangent part (0, 1, 2) loses its e2 component → (0, 0, 2); then 0.4 · (0, 0, 2) + 0.6 · g
    torch.testing.assert_close(got, 0.4 * torch.tensor([[0.0, 0.0, 2.0]]) + 0.6 * away)
    toward = torch.tensor([[0.3, -1.0, 2.0]])  # −g already turns w toward e2: nothing removed
    torch.testing.assert_close(
        spa.spa_project(w, toward, centre, 0.4), 0.4 * torch.tensor([[0.0, -1.0, 2.0]]) + 0.6 * toward
    )
    torch.testing.assert_close(spa.spa_project(w, away, centre, keep=0.0), away)  # keep 0: the raw gradient
    with pytest.raises(ValueError, match="must all be"):
        spa.spa_project(w, away[:, :2], centre)


def test_class_centres_are_an_ema_of_batch_means_centred_on_their_mean():
    centres = spa.ClassCentres(3, momentum=0.9)
    h = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    centres.update(h, torch.tensor([0, 0, 1]))  # class 2 not seen yet
    torch.testing.assert_close(centres.means[:2], torch.tensor([[2.0, 0.0], [0.0, 2.0]]))  # first batch: its means
    centres.update(torch.tensor([[4.0, 0.0]]), torch.tensor([0]))
    torch.testing.assert_close(centres.means[0], torch.tensor([0.9 * 2 + 0.1 * 4, 0.0]))
    mu_G = centres.means[:2].mean(0)
    torch.testing.assert_close(centres.centres()[:2], centres.means[:2] - mu_G)
    assert centres.centres()[2].abs().sum() == 0 and centres.seen.tolist() == [True, True, False]


def _batch(W, h, y):
    """A batch whose model is only a linear head with rows W."""
    model = SimpleNamespace(head=torch.nn.Linear(W.shape[1], W.shape[0], bias=False))
    with torch.no_grad():
        model.head.weight.copy_(W)
    return BatchOutput(h, h @ W.T, {}, model), y


def test_spa_reg_is_zero_when_rows_and_centres_are_aligned_and_negative_weight_misaligns():
    W = F.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(1)), dim=1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    h = 5.0 * W[y]  # every feature on its row: class means = 5 w_c, their mean μ_G = 5 mean(w)
    reg = spa.SpARegLoss(CrossEntropy(), 3, weight=2.0)
    reg.update(h, y)  # the EMA mean of the class means is μ_G
    out, y = _batch(W - W.mean(0), h, y)  # rows centred like the means: exactly aligned
    base = CrossEntropy()(out, y)
    torch.testing.assert_close(reg(out, y), base)
    opposite, _ = _batch(-(W - W.mean(0)), h, y)
    value = spa.SpARegLoss(CrossEntropy(), 3, weight=2.0)
    value.update(h, y)
    torch.testing.assert_close(value(opposite, y), CrossEntropy()(opposite, y) + 2.0 * 2.0)  # 1 − cos = 2
    misalign = spa.SpARegLoss(CrossEntropy(), 3, weight=-1.0)
    misalign.update(h, y)
    torch.testing.assert_close(misalign(out, y), base)  # aligned: 1 − cos = 0 whatever the sign of λ


def test_slerp_turns_along_the_great_circle_and_the_hook_keeps_the_norms():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    half = spa.slerp(a, b, 0.5)
    torch.testing.assert_close(half, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]))
    torch.testing.assert_close(spa.slerp(a, b, 0.0), a)
    torch.testing.assert_close(spa.slerp(a, b, 1.0), b, atol=1e-6, rtol=0)
    torch.testing.assert_close(spa.slerp(a, torch.zeros(1, 2), 0.5), a)  # no centre: no move
    hook = spa.SpASLERP(2, t=0.5, every=2)
    W = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    h, y = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1])  # centres ±(−1, 1)/√2 … swapped
    out, y = _batch(W, h, y)
    hook.after_step(out, y)
    assert torch.equal(out.model.head.weight, W)  # step 1 of 2: nothing yet
    hook.after_step(out, y)
    turned = out.model.head.weight.detach()
    torch.testing.assert_close(turned.norm(dim=1), torch.tensor([3.0, 2.0]))
    target = hook.normalised()
    assert (F.cosine_similarity(turned, target) > F.cosine_similarity(W, target)).all()


def test_logit_adjusted_loss_adds_the_log_prior():
    counts = torch.tensor([90, 9, 1])
    loss = spa.LogitAdjusted(counts, tau=1.0)
    logits, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 2])
    expected = F.cross_entropy(logits + torch.log(torch.tensor([0.9, 0.09, 0.01])), y)
    torch.testing.assert_close(loss(BatchOutput(torch.zeros(4, 2), logits), y), expected)
    uniform = spa.LogitAdjusted(torch.tensor([5, 5, 5]))
    torch.testing.assert_close(uniform(BatchOutput(torch.zeros(4, 2), logits), y), F.cross_entropy(logits, y))
    with pytest.raises(ValueError, match="positive count"):
        spa.LogitAdjusted(torch.tensor([3, 0, 1]))


def test_long_tail_methods_are_named_by_their_pieces():
    assert spa.long_tail_method().name == "ce" and spa.long_tail_method().hparams == {}
    proj = spa.long_tail_method("proj", "la", keep=0.3)
    assert proj.name == "la-spa-proj" and proj.hparams == {"tau": 1.0, "keep": 0.3}
    assert spa.long_tail_method("slerp").hparams == {"t": 0.2, "every": 20}
    assert spa.long_tail_method("reg", reg_weight=-1.0).hparams == {"reg_weight": -1.0}
    for bad in [dict(spa="ortho"), dict(base="focal")]:
        with pytest.raises(ValueError):
            spa.long_tail_method(**bad)
    with pytest.raises(ValueError, match="trained linear classifier"):
        spa._classifier_weight(models.resnet18(3, 4, head=__import__("nclab").heads.FixedETF(32, 3)))


@pytest.mark.parametrize("variant", ["proj", "reg", "slerp"])
def test_the_centres_survive_an_interrupted_run(small_train, tmp_path, variant, disconnect_at):
    DisconnectAt, Disconnect = disconnect_at
    lt = data.long_tailed(small_train, 4)
    method = spa.long_tail_method(variant, every=3)
    config = train.TrainConfig(regime="test", dataset=lt.name.split("/")[0], method=method, width=4, epochs=3,
                               batch_size=16, lr=0.05, snapshot_epochs=())  # fmt: skip

    def run(folder, stop_at=None):
        torch.manual_seed(0)
        model = method.build_model(config, lt)
        loader = data.GpuLoader(lt, 16, shuffle=True, augment=True, drop_last=True, seed=0, device="cpu")
        loss, hooks = method.training(config, lt)
        train.fit(
            model, config, loader, run_dir=folder, loss=loss, hooks=[*hooks, DisconnectAt(stop_at)], progress=False
        )
        return model, (loss if variant == "reg" else hooks[0])

    whole, whole_hook = run(tmp_path / "whole")
    with pytest.raises(Disconnect):
        run(tmp_path / "resumed", stop_at=2)
    resumed, resumed_hook = run(tmp_path / "resumed")
    assert torch.equal(whole_hook.means, resumed_hook.means) and torch.equal(whole_hook.seen, resumed_hook.seen)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _feature_set(features, labels, logits):
    from nclab.features import FeatureSet

    return FeatureSet(features=features, logits=logits, labels=labels)


def test_per_class_alignment_and_groups_on_a_hand_case():
    """8 classes with the long-tailed counts of the smoke stand-in (n_max 250, IF 100); each feature is 3·e_c
    plus an offset, the classifier rows are e_c − mean: perfectly aligned, every norm known."""
    from nclab import tables

    counts = data.long_tailed_counts(250, 8, 100)
    labels = torch.arange(8).repeat_interleave(torch.tensor(counts))
    E = torch.eye(8)
    features = 3 * E[labels] + 1.0  # a common offset: removed by the centring on μ_G
    head = torch.nn.Linear(8, 8)
    with torch.no_grad():
        head.weight.copy_(E - E.mean(0))
        head.bias.zero_()
    model = SimpleNamespace(head=__import__("nclab").heads.Linear(8, 8))
    model.head.load_state_dict(head.state_dict())
    test_labels = torch.arange(8).repeat_interleave(10)
    test_logits = torch.eye(8)[test_labels]
    test_logits[test_labels == 7] = torch.eye(8)[0]  # the last class is always mistaken for class 0
    train_fs = _feature_set(features, labels, features @ head.weight.T)
    test_fs = _feature_set(3 * E[test_labels], test_labels, test_logits)
    per_class = tables.per_class_alignment(train_fs, test_fs, model.head)
    assert per_class["train_images"].tolist() == counts
    assert per_class["group"].tolist() == ["many"] * 3 + ["medium"] * 2 + ["few"] * 3
    assert per_class["alignment"].tolist() == pytest.approx([1.0] * 8)
    assert per_class["test_accuracy"].tolist() == [1.0] * 7 + [0.0]
    groups = tables.long_tail_groups(train_fs, test_fs, model.head).set_index("group")
    assert groups.loc["few", "test_accuracy"] == pytest.approx(2 / 3) and groups.loc["all", "classes"] == 8
    assert groups.loc["many", "nc1"] == pytest.approx(0.0, abs=1e-9)  # no within-class spread
    assert groups.loc["all", "train_images"] == sum(counts)
    assert groups.loc["many", "max_cos_means"] == pytest.approx(-1 / 7)  # centred one-hot means: a simplex ETF
    assert groups.loc["many", "max_cos_weights"] == pytest.approx(-1 / 7)


def test_on_a_real_long_tail_ce_shows_minority_collapse_and_spa_reg_aligns(standin_train):
    """The smoke stand-in at IF 100 (512 real digit images): under CE the head classes' rows are longer than
    the tail's and the tail is never predicted; SpA-Reg raises the mean alignment cosine. Notebook 07's own
    runs, in the test session's cache (its nbval run loads them)."""
    from nclab import features, tables

    test_set = data.train_test_sets("cifar100", "smoke")[1]
    lt = data.long_tailed(standin_train.subset(2000, seed=0), 100)
    results, runs, all_accuracy = {}, {}, {}
    for name, method in {"ce": spa.long_tail_method(), "reg": spa.long_tail_method("reg")}.items():
        config = spa.recipe("smoke", method, dataset="cifar100-lt100")
        runs[name] = run = train.load_or_train(config, lt, device="cpu", progress=False)
        fs = [features.cached_features(run.model, s, run.run_dir) for s in (lt, test_set)]
        results[name] = tables.per_class_alignment(*fs, run.model)
        # the per-image correctness the verdicts of notebook 07 pair is the "all" accuracy its tables print
        groups = tables.long_tail_tables(run, lt, test_set)[1].set_index("group")
        correct = tables.head_correct({name: run}, test_set)[name]
        assert correct.shape == (len(test_set),) and set(correct.unique().tolist()) <= {0, 1}
        all_accuracy[name] = groups.loc["all", "test_accuracy"]
        assert correct.double().mean().item() == pytest.approx(all_accuracy[name])
    d = tables.accuracy_difference(*(tables.head_correct(runs, test_set)[name] for name in ("ce", "reg")))
    assert d.estimate == pytest.approx(100 * (all_accuracy["reg"] - all_accuracy["ce"])) and d.lo <= d.estimate <= d.hi
    ce = results["ce"]
    head, tail = ce[ce.group == "many"], ce[ce.group == "few"]
    assert head["weight_norm"].mean() > tail["weight_norm"].mean()
    assert head["test_accuracy"].mean() > 0.7 and tail["test_accuracy"].mean() < 0.2
    assert results["reg"]["alignment"].mean() > ce["alignment"].mean() + 0.1


def test_the_published_anchor_cites_a_paper_of_the_bibliography():
    """GLMC's top-1 is quoted beside its source (book/references.bib), in notebook 07 and in its chapter."""
    root = Path(__file__).resolve().parents[1]
    anchor = spa.PUBLISHED_ANCHOR
    bibliography = (root / "book" / "references.bib").read_text(encoding="utf-8")
    assert anchor["source"] in re.findall(r"@\w+\{([^,]+),", bibliography)
    assert 0 < anchor["top1"] < 1
    for path in (root / "book" / "07_long_tailed.md", root / "notebooks" / "07_long_tailed_alignment.ipynb"):
        assert f"{{cite:p}}`{anchor['source']}`" in path.read_text(encoding="utf-8"), path.name


def test_a_non_finite_feature_row_does_not_poison_the_centres():
    centres = spa.ClassCentres(2)
    h = torch.tensor([[1.0, 0.0], [float("inf"), 0.0], [0.0, 1.0]])
    centres.update(h, torch.tensor([0, 0, 1]))
    assert torch.isfinite(centres.centres()).all()
    torch.testing.assert_close(centres.means, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_spa_reg_aligns_the_rows_of_classes_absent_from_the_batch():
    """Class 2 is not in the batch: its row still counts, against its running centre."""
    W = torch.eye(3, 4)
    reg = spa.SpARegLoss(CrossEntropy(), 3, weight=1.0)
    reg.update(3 * torch.eye(3, 4), torch.arange(3))  # every class seen once
    h, y = 3 * torch.eye(3, 4)[:2], torch.tensor([0, 1])
    out, y = _batch(-W, h, y)  # every row points away from its class
    with_absent = reg(out, y) - CrossEntropy()(out, y)
    assert with_absent.item() > 1.0  # three rows, all misaligned: the mean of 1 − cos is above 1
    W_fixed = -W.clone()
    W_fixed[2] = -W_fixed[2]  # now row 2 (absent from the batch) points at its centre
    out, y = _batch(W_fixed, h, y)
    assert (reg(out, y) - CrossEntropy()(out, y)).item() < with_absent.item()
