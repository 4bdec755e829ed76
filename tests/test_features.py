import pytest
import torch

from nclab import data, features, models


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return models.resnet18(8, width=4).eval()


def _eval_loader(dataset, batch_size=100):
    return data.GpuLoader(dataset, batch_size, shuffle=False, augment=False, drop_last=False, device="cpu")


def test_features_logits_and_labels_line_up(tiny_model, small_train):
    result = features.extract_features(tiny_model, _eval_loader(small_train))
    assert result.features.shape == (256, 32) and result.logits.shape == (256, 8) and len(result) == 256
    assert torch.equal(result.labels, small_train.labels)  # data order kept, last batch kept
    W, b = tiny_model.head.weight.detach(), tiny_model.head.bias.detach()
    assert torch.allclose(result.logits, result.features @ W.T + b, atol=1e-5)
    x, _, _ = next(iter(_eval_loader(small_train, 10)))
    with torch.no_grad():
        assert torch.allclose(result.features[:10], tiny_model.features(x), atol=1e-5)
    assert result.accuracy == pytest.approx((result.logits.argmax(1) == result.labels).float().mean().item())


def test_stage_outputs_are_extracted_on_request(tiny_model, small_train):
    result = features.extract_features(tiny_model, _eval_loader(small_train), stages=True)
    assert list(result.stages) == list(models.STAGES)
    assert torch.allclose(result.stages["layer4"], result.features)
    assert result.stages["layer2"].shape == (256, 8)


def test_augmenting_loader_is_refused(tiny_model, small_train):
    loader = data.GpuLoader(small_train, 32, shuffle=False, augment=True, drop_last=False, device="cpu")
    with pytest.raises(ValueError, match="augment"):
        features.extract_features(tiny_model, loader)


def test_extraction_leaves_the_model_in_its_mode(tiny_model, small_train):
    tiny_model.train()
    features.extract_features(tiny_model, _eval_loader(small_train))
    assert tiny_model.training
    tiny_model.eval()


def test_features_are_cached_on_disk(tiny_model, small_train, tmp_path, monkeypatch):
    first = features.cached_features(tiny_model, small_train, tmp_path)
    files = list((tmp_path / "features").iterdir())
    assert len(files) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(features, "extract_features", must_not_run)
    again = features.cached_features(tiny_model, small_train, tmp_path)
    assert torch.equal(first.features, again.features) and torch.equal(first.labels, again.labels)


def test_new_weights_never_read_stale_features(small_train, tmp_path):
    torch.manual_seed(1)
    a = models.resnet18(8, width=4).eval()
    torch.manual_seed(2)
    b = models.resnet18(8, width=4).eval()
    fa = features.cached_features(a, small_train, tmp_path)
    fb = features.cached_features(b, small_train, tmp_path)
    assert not torch.allclose(fa.features, fb.features)
    assert len(list((tmp_path / "features").iterdir())) == 2


def test_damaged_cache_file_is_recomputed(tiny_model, small_train, tmp_path):
    first = features.cached_features(tiny_model, small_train, tmp_path)
    (cache_file,) = (tmp_path / "features").iterdir()
    cache_file.write_bytes(b"garbage")
    again = features.cached_features(tiny_model, small_train, tmp_path)
    assert torch.equal(first.features, again.features)


def test_features_cached_with_stages_serve_a_request_without(tiny_model, small_train, tmp_path, monkeypatch):
    full = features.cached_features(tiny_model, small_train, tmp_path, stages=True)
    monkeypatch.setattr(features, "extract_features", lambda *a, **k: pytest.fail("should come from the cache"))
    plain = features.cached_features(tiny_model, small_train, tmp_path)
    assert torch.equal(plain.features, full.features) and plain.stages == {}


def test_features_are_keyed_on_the_images_not_the_name_and_size(tiny_model, standin_train, tmp_path):
    a, b = standin_train.subset(100, seed=0), standin_train.subset(100, seed=1)  # same name, same size
    assert a.name == b.name and len(a) == len(b)
    fa = features.cached_features(tiny_model, a, tmp_path)
    fb = features.cached_features(tiny_model, b, tmp_path)
    assert torch.equal(fb.labels, b.labels) and not torch.equal(fa.features, fb.features)
    direct = features.extract_features(tiny_model, _eval_loader(b))
    assert torch.equal(fb.features, direct.features)  # the second set is not served stale
    n1, n2 = data.noise_images("gaussian", 50, seed=1), data.noise_images("gaussian", 50, seed=2)
    assert not torch.equal(
        features.cached_features(tiny_model, n1, tmp_path).features,
        features.cached_features(tiny_model, n2, tmp_path).features,
    )
    assert len(list((tmp_path / "features").iterdir())) == 4


def test_first_call_and_cache_hit_return_the_same_kind_of_tensor(tiny_model, small_train, tmp_path):
    first = features.cached_features(tiny_model, small_train, tmp_path)
    again = features.cached_features(tiny_model, small_train, tmp_path)
    for fs in (first, again):
        assert not fs.features.is_inference() and not fs.logits.is_inference()
        probe = torch.nn.Linear(fs.features.shape[1], 8)  # a linear probe trains on both
        loss = torch.nn.functional.cross_entropy(probe(fs.features), fs.labels)
        loss.backward()
        assert probe.weight.grad is not None


def test_extras_are_collected_with_the_features(tiny_model, small_train, tmp_path):
    env = (small_train.labels % 3).clone()
    with_env = data.ImageSet(
        small_train.images,
        small_train.labels,
        small_train.classes,
        small_train.name,
        small_train.standin,
        small_train.normalization,
        extras={"env": env},
    )
    fs = features.cached_features(tiny_model, with_env, tmp_path)
    assert set(fs.extras) == {"env"} and torch.equal(fs.extras["env"], env)
    assert torch.equal(features.cached_features(tiny_model, with_env, tmp_path).extras["env"], env)


def test_cache_uses_the_profiles_eval_batch_size(tiny_model, small_train, tmp_path, monkeypatch):
    sizes = []
    monkeypatch.setattr(
        features,
        "extract_features",
        lambda model, loader, stages=False: (
            sizes.append(loader.batch_size)
            or features.FeatureSet(torch.zeros(1, 32), torch.zeros(1, 8), torch.zeros(1, dtype=torch.long))
        ),
    )
    features.cached_features(tiny_model, small_train, tmp_path)
    assert sizes == [500]  # smoke profile: eval_batch_size
