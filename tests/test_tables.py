"""The notebooks' shared tables: NC over training snapshots, and "fit every detector, score, evaluate"."""

import pandas as pd
import pytest
import torch

from nclab import collapse, data, features, heads, methods, models, ood, tables, train
from nclab.features import FeatureSet
from nclab.methods import control
from nclab.probe import LinearProbe


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


def test_detection_table_carries_bootstrap_intervals_around_every_point_estimate():
    train_fs, sets = _feature_sets()
    scores = tables.score_sets(tables.fit_detectors(train_fs, heads.Linear(6, 3)), sets)
    table = tables.detection_table(scores)  # 200 resamples by default
    for metric in ("auroc", "fpr95"):
        assert (table[f"{metric}_lo"] <= table[metric]).all() and (table[metric] <= table[f"{metric}_hi"]).all()
    row = table[(table.detector == "energy") & (table["OOD set"] == "near")].iloc[0]
    expected = ood.detection_metrics(scores["energy"]["ID"], scores["energy"]["near"], n_bootstrap=200, seed=0)
    assert row[list(expected)].to_dict() == pytest.approx(expected)
    assert tables.detection_table(scores).equals(table)  # the same seed, the same intervals
    bare = tables.detection_table(scores, n_bootstrap=0)
    assert "auroc_lo" not in bare and bare["auroc"].equals(table["auroc"])


def test_detection_report_with_intervals_and_names():
    table = pd.DataFrame(
        {
            "detector": ["a", "b"],
            "OOD set": ["svhn", "svhn"],
            "fpr95": [0.5, 0.25],
            "fpr95_lo": [0.4, 0.125],
            "fpr95_hi": [0.6, 0.375],
            "auroc": [0.9, 0.93],
            "auroc_lo": [0.88, 0.91],
            "auroc_hi": [0.92, 0.95],
            "aupr_in": [0.8, 0.7],
        }
    )
    names = {"svhn": "SVHN (stand-in: photo crops)"}
    report = tables.detection_report(table, intervals=True, names=names, digits=2)
    assert report.loc[("SVHN (stand-in: photo crops)", "AUROC ↑"), "b"] == "0.93 [0.91, 0.95]"
    assert report.loc[("SVHN (stand-in: photo crops)", "FPR@95 ↓"), "a"] == "0.50 [0.40, 0.60]"
    assert report.loc[("SVHN (stand-in: photo crops)", "AUPR-in ↑"), "a"] == "0.80"  # no interval: the number
    numbers = tables.detection_report(table)
    assert numbers.loc[("svhn", "AUROC ↑"), "a"] == 0.9 and list(numbers.columns) == ["a", "b"]
    styled = tables.styled_report(table, names=names)
    html = styled.to_html()
    assert "0.930 [0.910, 0.950]" in html and "SVHN (stand-in: photo crops)" in html
    bold = styled.data.map(lambda _: "").copy()
    for (row, column), css in styled._compute().ctx.items():
        bold.iloc[row, column] = ";".join(f"{k}: {v}" for k, v in css)
    assert bold.loc[("SVHN (stand-in: photo crops)", "AUROC ↑")].tolist() == ["", "font-weight: bold"]
    assert bold.loc[("SVHN (stand-in: photo crops)", "FPR@95 ↓")].tolist() == ["", "font-weight: bold"]  # lowest
    assert bold.loc[("SVHN (stand-in: photo crops)", "AUPR-in ↑")].tolist() == ["font-weight: bold", ""]


def test_set_names_say_what_the_stand_in_shows(standin_test):
    real = data.ImageSet(standin_test.images[:4], standin_test.labels[:4], standin_test.classes, "cifar10/test")
    sets = {
        "ID": standin_test,
        "cifar10": real,
        "svhn": data.ImageSet(real.images, real.labels, real.classes, "svhn/test", standin=True),
        "gaussian": data.noise_images("gaussian", 2),
        "uniform": data.noise_images("uniform", 2),
        "mine": data.ImageSet(real.images, real.labels, real.classes, "something/test"),
    }
    assert tables.set_names(sets) == {
        "ID": "CIFAR-100 (stand-in: MNIST digits 0–7)",
        "cifar10": "CIFAR-10",
        "svhn": "SVHN (stand-in: photo crops)",
        "gaussian": "Gaussian noise",
        "uniform": "uniform noise",
        "mine": "mine",
    }


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


# --- layer by layer (notebook 05) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def layerwise_runs(small_train, tmp_path_factory):
    """A controlled run (frozen ETF projector) and its baseline, one epoch each on 256 stand-in images."""
    root = tmp_path_factory.mktemp("layerwise")
    configs = {
        "baseline": control.recipe("smoke", methods.ERM, epochs=1),
        "controlled": control.recipe("smoke", epochs=1, width=16),
    }
    return {name: train.load_or_train(c, small_train, root=root, progress=False) for name, c in configs.items()}


@pytest.fixture(scope="module")
def layerwise_test(standin_test):
    return standin_test.subset(160, seed=0)


def test_layerwise_nc_measures_every_layer_and_the_classifier_at_the_last(layerwise_runs, layerwise_test):
    frame = tables.layerwise_nc(layerwise_runs, layerwise_test)
    assert list(frame.columns) == ["model", "stage", "metric", "value"]
    stages = {name: list(dict.fromkeys(frame[frame.model == name].stage)) for name in layerwise_runs}
    assert stages == {"baseline": list(models.STAGES), "controlled": [*models.STAGES, "projector"]}
    assert frame.value.notna().all() and not frame.duplicated(["model", "stage", "metric"]).any()
    for name, last in (("baseline", "layer4"), ("controlled", "projector")):
        rows = frame[frame.model == name]
        for metric in ("nc3", "nc4_ncc_mismatch", "nc2_etf_distance", "nc2_equinorm_weights"):
            assert set(rows[rows.metric == metric].stage) == {last}, (name, metric)
        for metric in ("nc1", "ncc_accuracy", "nc2_equinorm_means"):  # width 16: every stage has d ≥ C − 1 = 7
            assert set(rows[rows.metric == metric].stage) == set(stages[name]), (name, metric)

    run = layerwise_runs["controlled"]
    fs = features.extract_features(
        run.model, data.GpuLoader(layerwise_test, 64, shuffle=False, augment=False, drop_last=False, device="cpu")
    )
    W, b = heads.weight_and_bias(run.model, embedded=True)
    with torch.no_grad():
        phi = run.model.head.embed(fs.features)
    by_hand = collapse.nc_metrics(phi, fs.labels, W, b)

    def value(model, stage, metric):
        return frame[(frame.model == model) & (frame.stage == stage) & (frame.metric == metric)].value.item()

    for metric in ("nc1", "nc3", "nc4_ncc_mismatch"):
        assert value("controlled", "projector", metric) == pytest.approx(by_hand[metric], rel=1e-4, abs=1e-6)
    expected = collapse.variability_metrics(fs.features, fs.labels)["nc1"]  # layer4 is the penultimate h
    assert value("controlled", "layer4", "nc1") == pytest.approx(expected, rel=1e-4)


def test_layerwise_probes_detect_and_transfer_at_every_layer(layerwise_runs, small_train, layerwise_test):
    ood_sets = {"gaussian": data.noise_images("gaussian", 64), "itself": layerwise_test}
    cifar10_train, cifar10_test = data.train_test_sets("cifar10", "smoke")  # the stand-in: digits 8 and 9
    target = cifar10_train, cifar10_test.subset(200, seed=0)
    assert cifar10_train.num_classes == 2 and cifar10_train.standin
    frame = tables.layerwise_probes(layerwise_runs, small_train, layerwise_test, ood_sets, target)
    assert set(frame.columns) == {
        "model",
        "stage",
        "id_accuracy",
        "auroc:gaussian",
        "auroc:itself",
        "transfer_accuracy",
        "converged",
    }
    assert frame["converged"].all()
    assert list(zip(frame.model, frame.stage)) == [
        *(("baseline", s) for s in models.STAGES),
        *(("controlled", s) for s in (*models.STAGES, "projector")),
    ]
    for column in ("id_accuracy", "transfer_accuracy", "auroc:gaussian"):
        assert frame[column].between(0, 1).all(), column
    # the ID set as an OOD set: identical scores, AUROC 0.5 (to the last bit of the trapezoid sum, as sklearn)
    assert frame["auroc:itself"].tolist() == pytest.approx([0.5] * len(frame), abs=1e-12)
    assert frame.transfer_accuracy.max() > 0.5  # two classes: some layer transfers better than chance

    run = layerwise_runs["controlled"]
    train_layers, train_labels = tables.layer_features(run, small_train)
    test_layers, test_labels = tables.layer_features(run, layerwise_test)
    noise_layers, _ = tables.layer_features(run, ood_sets["gaussian"])
    probe = LinearProbe(1e-4).fit(train_layers["projector"], train_labels)
    energy = ood.Energy().fit(None, weight=probe.weight_, bias=probe.bias_)
    row = frame[(frame.model == "controlled") & (frame.stage == "projector")].iloc[0]
    assert row["id_accuracy"] == pytest.approx(probe.accuracy(test_layers["projector"], test_labels))
    auroc = ood.detection_metrics(energy.score(test_layers["projector"]), energy.score(noise_layers["projector"]))
    assert row["auroc:gaussian"] == pytest.approx(auroc["auroc"])
    source_layers, source_labels = tables.layer_features(run, target[0])  # transfer: a probe on CIFAR-10's
    target_layers, target_labels = tables.layer_features(run, target[1])  # features of the same layer
    transfer = LinearProbe(1e-4).fit(source_layers["layer4"], source_labels)
    row = frame[(frame.model == "controlled") & (frame.stage == "layer4")].iloc[0]
    assert row["transfer_accuracy"] == pytest.approx(transfer.accuracy(target_layers["layer4"], target_labels))


def test_tradeoff_joins_nc1_with_the_mean_auroc_over_the_chosen_sets():
    nc = pd.DataFrame(
        [
            {"model": m, "stage": s, "metric": k, "value": v}
            for m, s, nc1 in [("a", "layer3", 4.0), ("a", "layer4", 1.0), ("b", "layer4", 2.0)]
            for k, v in (("nc1", nc1), ("ncc_accuracy", 0.5))
        ]
    )
    probes = pd.DataFrame(
        {
            "model": ["a", "a", "b"],
            "stage": ["layer3", "layer4", "layer4"],
            "id_accuracy": [0.7, 0.8, 0.9],
            "auroc:x": [0.6, 0.8, 1.0],
            "auroc:y": [0.4, 0.6, 0.5],
            "transfer_accuracy": [0.9, 0.7, 0.8],
        }
    )
    points = tables.tradeoff(nc, probes)
    assert list(points.columns) == ["model", "stage", "nc1", "auroc", "transfer_accuracy", "id_accuracy"]
    assert points["nc1"].tolist() == [4.0, 1.0, 2.0]
    assert points["auroc"].tolist() == pytest.approx([0.5, 0.7, 0.75])
    assert tables.tradeoff(nc, probes, ["x"])["auroc"].tolist() == [0.6, 0.8, 1.0]
    with pytest.raises(ValueError, match="auroc:z"):
        tables.tradeoff(nc, probes, ["z"])


def test_collapse_references_puts_the_report_beside_the_measured_runs():
    features_, labels_ = torch.randn(40, 6, dtype=torch.float64), torch.arange(40) % 4
    measured = collapse.practical_work_metrics(features_, labels_, torch.randn(4, 6))
    frame = tables.collapse_references({"run": measured})
    assert list(frame.index) == list(collapse.PRACTICAL_WORK_REPORT)
    assert frame.columns[0] == "run" and frame.columns[-1].startswith("report (seed 002)")
    assert (
        frame.loc["NCC agreement"].iloc[-1] == 0.9998 and frame.loc["equinorm CoV", "run"] == measured["equinorm CoV"]
    )
    with pytest.raises(ValueError, match="lacks"):
        tables.collapse_references({"partial": {"equinorm CoV": 0.1}})
