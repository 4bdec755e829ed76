"""The notebooks' shared tables: NC over training snapshots, and "fit every detector, score, evaluate"."""

import pandas as pd
import pytest
import torch

from nclab import collapse, features, heads, models, ood, tables, train
from nclab.features import FeatureSet


@pytest.fixture(scope="module")
def tiny_run(small_train, tmp_path_factory):
    config_ = train.TrainConfig(regime="test", width=4, epochs=2, batch_size=32, lr=0.05, snapshot_epochs=(1, 2))
    return train.load_or_train(config_, small_train, root=tmp_path_factory.mktemp("runs"), progress=False)


def test_nc_over_training_has_every_snapshot_split_and_stage(tiny_run, small_train):
    test_like = small_train.subset(64, seed=1)
    frame = tables.nc_over_training({"A": tiny_run}, {"train": small_train, "test": test_like}, stages=True)
    output = frame[frame.stage == "output"]
    assert sorted(zip(output.epoch, output.split)) == [(1, "test"), (1, "train"), (2, "test"), (2, "train")]
    assert set(frame.stage) == {"output", *models.STAGES}
    row = output[(output.epoch == 1) & (output.split == "train")].iloc[0]
    snapshot = tiny_run.load_snapshot(1)
    fs = features.cached_features(snapshot, small_train, tiny_run.run_dir)
    W, b = heads.weight_and_bias(snapshot)
    expected = collapse.nc_metrics(fs.features, fs.labels, W, b)
    assert row["nc1"] == pytest.approx(expected["nc1"]) and row["nc3"] == pytest.approx(expected["nc3"])
    assert row["accuracy"] == pytest.approx(fs.accuracy)
    layer2 = frame[(frame.stage == "layer2") & (frame.epoch == 2) & (frame.split == "test")].iloc[0]
    assert 0 < layer2["ncc_accuracy"] <= 1 and "nc2_etf_distance" not in layer2.dropna()


def _feature_sets(p=6, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 4 * torch.randn(C, p, generator=g)

    def sample(n, shift=0.0):
        y = torch.arange(n) % C
        h = means[y] + torch.randn(n, p, generator=g) + shift
        return FeatureSet(h, torch.zeros(n, C), y)

    return sample(300), {"ID": sample(100), "near": sample(80, 1.0), "far": sample(60, 8.0)}


def test_fit_score_and_evaluate_every_detector():
    train_fs, sets = _feature_sets()
    head = heads.Linear(6, 3)
    detectors = tables.fit_detectors(train_fs, head)
    assert list(detectors) == list(ood.DETECTORS) and all(hasattr(d, "n_features_") for d in detectors.values())
    scores = tables.score_sets(detectors, sets)
    assert set(scores) == set(ood.DETECTORS) and list(scores["vim"]) == ["ID", "near", "far"]
    W, b = heads.weight_and_bias(head)
    by_hand = ood.Mahalanobis().fit(train_fs.features, train_fs.labels).score(sets["far"].features)
    assert torch.equal(scores["mahalanobis"]["far"], by_hand)
    table = tables.detection_table(scores)
    assert len(table) == 6 * 2 and set(table["OOD set"]) == {"near", "far"}
    row = table[(table.detector == "energy") & (table["OOD set"] == "near")].iloc[0]
    expected = ood.detection_metrics(
        ood.Energy().fit(None, weight=W, bias=b).score(sets["ID"].features),
        ood.Energy().fit(None, weight=W, bias=b).score(sets["near"].features),
    )
    assert row[list(expected)].to_dict() == pytest.approx(expected)
    assert table[(table.detector == "mahalanobis") & (table["OOD set"] == "far")]["auroc"].item() > 0.99


def test_custom_detectors_and_heads_on_normalised_features():
    train_fs, sets = _feature_sets()
    chosen = {"neco": ood.NECO, "neco × maxlogit": ood.NECO(times_maxlogit=True)}
    detectors = tables.fit_detectors(train_fs, heads.Linear(6, 3), chosen)
    assert list(detectors) == ["neco", "neco × maxlogit"] and detectors["neco × maxlogit"].times_maxlogit
    cosine = heads.Cosine(6, 3, tau=0.5)
    fitted = tables.fit_detectors(train_fs, cosine, {"msp": ood.MSP})
    scores = tables.score_sets(fitted, {"ID": sets["ID"]})["msp"]["ID"]
    expected = torch.softmax(cosine(sets["ID"].features), dim=1).amax(1).detach()  # the head's own logits
    assert torch.allclose(scores, expected, atol=1e-6)


def test_detection_report_has_the_practical_work_layout():
    train_fs, sets = _feature_sets()
    table = tables.detection_table(tables.score_sets(tables.fit_detectors(train_fs, heads.Linear(6, 3)), sets))
    report = tables.detection_report(table)
    assert list(report.columns) == list(ood.DETECTORS)
    assert list(report.index) == [(s, m) for s in ("near", "far") for m in ("FPR@95 ↓", "AUROC ↑", "AUPR-in ↑")]
    assert report.loc[("far", "AUROC ↑"), "vim"] == pytest.approx(
        table[(table.detector == "vim") & (table["OOD set"] == "far")]["auroc"].item()
    )
    assert isinstance(report, pd.DataFrame)


class _Projector(heads.Head):
    """φ(h) = normalise(ReLU(P h)) with P (d, p) frozen, then a trained linear classifier on φ(h)."""

    embeds = True

    def __init__(self, in_features, dim, num_classes):
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.project = torch.nn.Linear(in_features, dim).requires_grad_(False)
        self.classify = torch.nn.Linear(dim, num_classes)

    def embed(self, h):
        return torch.nn.functional.normalize(torch.relu(self.project(h)), dim=1)

    def forward(self, h):
        return self.classify(self.embed(h))

    def linear(self):
        return self.classify.weight, self.classify.bias


def test_detectors_on_a_head_that_embeds_into_another_dimension():
    torch.manual_seed(0)
    train_fs, sets = _feature_sets()  # p = 6
    head = _Projector(6, 4, 3)  # φ(h) in R^4
    detectors = tables.fit_detectors(train_fs, head)
    assert all(d.n_features_ == 4 for d in detectors.values())  # fitted on φ(h), not on h
    scores = tables.score_sets(detectors, sets)
    with torch.no_grad():
        expected = torch.softmax(head(sets["near"].features), dim=1).amax(1)
        phi = head.embed(sets["far"].features)
    assert torch.allclose(scores["msp"]["near"], expected, atol=1e-6)  # the head's own logits
    by_hand = ood.Mahalanobis().fit(head.embed(train_fs.features).detach(), train_fs.labels).score(phi)
    assert torch.allclose(scores["mahalanobis"]["far"], by_hand)
    with pytest.raises(ValueError, match="embedded=True"):
        heads.weight_and_bias(head)
