import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from nclab import config, data


def _constant_images(values):
    """One 3×32×32 image per value, every pixel equal to it: its label can be read from any pixel."""
    values = torch.as_tensor(values, dtype=torch.uint8)
    return values.view(-1, 1, 1, 1).expand(-1, 3, 32, 32).contiguous()


def _pixels(x):
    """Loader floats in [0, 1] back to 0..255."""
    return x * 255


# --- augmentation as tensor ops -----------------------------------------------------------------------


def test_random_crop_matches_torchvision_pad_then_crop():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    shifts = torch.tensor([[0, 0], [8, 8], [4, 4], [0, 8], [3, 5], [7, 1]])
    crops = data.random_crop(images, shifts)
    assert crops.shape == images.shape and crops.dtype == torch.uint8
    for image, crop, (top, left) in zip(images, crops, shifts.tolist()):
        expected = TF.crop(F.pad(image, (4, 4, 4, 4)), top, left, 32, 32)
        assert torch.equal(crop, expected)


def test_random_crop_centre_shift_is_identity_and_corner_shift_brings_zeros():
    images = torch.randint(1, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(data.random_crop(images, torch.tensor([[4, 4], [4, 4]])), images)
    corner = data.random_crop(images, torch.tensor([[0, 0], [0, 0]]))
    assert torch.equal(corner[:, :, 4:, 4:], images[:, :, :28, :28])
    assert (corner[:, :, :4, :] == 0).all() and (corner[:, :, :, :4] == 0).all()


def test_random_flip_mirrors_only_the_chosen_images():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    flips = torch.tensor([True, False, True, False])
    out = data.random_flip(images, flips)
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])
    assert torch.equal(data.random_flip(out, flips), images)


# --- the loader -------------------------------------------------------------------------------------


def _labelled_set(n=50, classes=5):
    labels = torch.arange(n) % classes
    return data.ImageSet(_constant_images(labels * 40 + 10), labels, [str(c) for c in range(classes)], "toy/train")


@pytest.mark.parametrize("augment", [False, True])
def test_loader_keeps_images_and_labels_aligned(augment):
    loader = data.GpuLoader(_labelled_set(), 8, shuffle=True, augment=augment, drop_last=False, device="cpu")
    seen = []
    for x, y, _ in loader:
        centre = _pixels(x)[:, 0, 16, 16].round()  # crops move ≤ 4 px: the centre stays
        assert torch.equal(centre, (y * 40 + 10).float())
        seen.append(y)
    assert len(torch.cat(seen)) == 50


def test_loader_last_batch_policy_is_explicit():
    toy = _labelled_set(n=10)
    keep = data.GpuLoader(toy, 4, shuffle=True, augment=False, drop_last=False, device="cpu")
    drop = data.GpuLoader(toy, 4, shuffle=True, augment=False, drop_last=True, device="cpu")
    assert [len(y) for _, y, _ in keep] == [4, 4, 2] and len(keep) == 3
    assert [len(y) for _, y, _ in drop] == [4, 4] and len(drop) == 2
    with pytest.raises(TypeError):
        data.GpuLoader(toy, 4, shuffle=True, augment=False)  # drop_last has no default
    with pytest.raises(ValueError, match="batch_size"):
        data.GpuLoader(toy, 11, shuffle=True, augment=False, drop_last=True)


def test_loader_visits_every_image_once_per_epoch():
    toy = data.ImageSet(_constant_images(torch.arange(40)), torch.arange(40), [str(i) for i in range(40)], "toy/train")
    loader = data.GpuLoader(toy, 8, shuffle=True, augment=False, drop_last=False, device="cpu")
    order = torch.cat([y for _, y, _ in loader])
    assert sorted(order.tolist()) == list(range(40)) and order.tolist() != list(range(40))


def test_loader_is_deterministic_per_seed_and_epoch(small_train):
    def batches(seed, epoch):
        loader = data.GpuLoader(small_train, 32, shuffle=True, augment=True, drop_last=True, device="cpu", seed=seed)
        loader.set_epoch(epoch)
        return [(x.clone(), y.clone()) for x, y, _ in loader]

    first, again = batches(0, 1), batches(0, 1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], batches(0, 2)[0][0])  # a new epoch, a new order
    assert not torch.equal(first[0][0], batches(1, 1)[0][0])  # another seed, another order


def test_loader_without_augmentation_returns_the_images_in_0_1(small_train):
    loader = data.GpuLoader(small_train, 64, shuffle=False, augment=False, drop_last=False, device="cpu")
    x, y, extras = next(iter(loader))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(extras["index"], torch.arange(64))
    assert torch.allclose(_pixels(x), small_train.images[:64].float(), atol=1e-3)
    assert torch.equal(y, small_train.labels[:64])


def test_loader_channels_last_option(small_train):
    loader = data.GpuLoader(
        small_train, 8, shuffle=False, augment=True, drop_last=True, device="cpu", channels_last=True
    )
    x, _, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last)


# --- data sets and the offline stand-in ---------------------------------------------------------------


def test_standin_replaces_cifar100_in_cifar_format(standin_train, standin_test):
    assert standin_train.standin and "STAND-IN" in repr(standin_train)
    assert standin_train.images.dtype == torch.uint8 and standin_train.images.shape[1:] == (3, 32, 32)
    assert standin_train.classes == ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    assert len(standin_train) > 3_000 and len(standin_test) > 700
    assert set(standin_train.labels.tolist()) == set(range(8))
    assert standin_train.images.float().std() > 30  # real pixels, not a blank image


def test_standin_is_written_in_the_real_pickle_format():
    folder = config.data_dir() / "nclab-standin" / "cifar100" / "cifar-100-python"
    with open(folder / "test", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    assert entry["data"].shape[1] == 3 * 32 * 32 and len(entry["fine_labels"]) == len(entry["data"])


def test_ood_standins_hold_other_content():
    near = data.load("cifar10", "test", standin=True)
    far = data.load("svhn", "test", standin=True)
    assert near.classes == ["eight", "nine"] and near.standin
    assert far.standin and len(far) == 1_000 and far.images.shape[1:] == (3, 32, 32)


def test_damaged_standin_file_is_rebuilt(standin_test):
    path = config.data_dir() / "nclab-standin" / "cifar100" / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:1000])
    again = data.load("cifar100", "test", standin=True)
    assert torch.equal(again.images, standin_test.images)


def test_missing_data_gives_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nclab.data.download\('cifar100'\).*NCLAB_DATA.*smoke"):
        data.load("cifar100", "train", root=tmp_path, standin=False)


def test_failed_download_gives_one_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(FileNotFoundError, match="could not be downloaded.*internet"):
        data.load("cifar100", "train", root=tmp_path, download=True)


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="knows"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load("cifar100", "validation")


def test_subset_is_stratified_and_deterministic(standin_train):
    part = standin_train.subset(400, seed=0)
    assert len(part) == 400 and torch.bincount(part.labels).tolist() == [50] * 8
    assert torch.equal(part.images, standin_train.subset(400, seed=0).images)
    assert not torch.equal(part.labels, standin_train.subset(400, seed=1).labels) or not torch.equal(
        part.images, standin_train.subset(400, seed=1).images
    )
    assert standin_train.subset(None) is standin_train


def test_profile_sizes_apply():
    train_set, test_set = data.train_test_sets("cifar100", "smoke")
    assert len(train_set) == 2_000 and len(test_set) <= 1_000 and train_set.standin


def test_imageset_checks_its_input():
    with pytest.raises(ValueError, match="uint8"):
        data.ImageSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), ["a"], "x")
    with pytest.raises(ValueError, match="labels"):
        data.ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ["a"], "x")


def test_noise_images_have_the_stated_distribution():
    gaussian = data.noise_images("gaussian", 200, seed=0)
    uniform = data.noise_images("uniform", 200, seed=0)
    assert gaussian.images.shape == (200, 3, 32, 32) and gaussian.name == "gaussian-noise/test"
    assert abs(gaussian.images.float().mean().item() / 255 - 0.5) < 0.01
    assert 0.23 < gaussian.images.float().std().item() / 255 < 0.25  # clipping at ±2σ trims a little
    assert abs(uniform.images.float().std().item() / 255 - 12**-0.5) < 0.01
    assert torch.equal(data.noise_images("uniform", 5, seed=3).images, data.noise_images("uniform", 5, seed=3).images)
    with pytest.raises(ValueError, match="gaussian"):
        data.noise_images("pink", 3)


def test_ood_sets_of_the_smoke_profile_are_offline():
    sets = data.ood_sets("smoke")
    assert list(sets) == ["cifar10", "svhn", "gaussian", "uniform"]
    assert sets["cifar10"].standin and sets["svhn"].standin and len(sets["gaussian"]) == 1_000


# --- per-sample extras, padding, normalisation, content fingerprint ------------------------------------


def _set_with_extras(n=60, classes=6):
    labels = torch.arange(n) % classes
    extras = {"env": labels * 7 + 1, "color": (labels % 2).bool()}
    return data.ImageSet(
        _constant_images(labels * 40 + 10), labels, [str(c) for c in range(classes)], "toy/train", extras=extras
    )


@pytest.mark.parametrize("augment", [False, True])
def test_loader_extras_stay_aligned_with_labels_through_shuffling(augment):
    toy = _set_with_extras()
    loader = data.GpuLoader(toy, 8, shuffle=True, augment=augment, drop_last=False, device="cpu", seed=3)
    loader.set_epoch(2)
    indices = []
    for x, y, extras in loader:
        assert torch.equal(_pixels(x)[:, 0, 16, 16].round(), (y * 40 + 10).float())  # the image is the label's
        assert set(extras) == {"index", "env", "color"}
        assert torch.equal(extras["env"], y * 7 + 1) and torch.equal(extras["color"], (y % 2).bool())
        assert torch.equal(toy.labels[extras["index"]], y)  # index points at the sample itself
        indices.append(extras["index"])
    order = torch.cat(indices)
    assert sorted(order.tolist()) == list(range(60)) and order.tolist() != list(range(60))


def test_subset_and_select_carry_the_extras():
    toy = _set_with_extras()
    part = toy.subset(30, seed=1)
    assert torch.equal(part.extras["env"], part.labels * 7 + 1) and len(part.extras["color"]) == 30
    picked = toy.select(torch.tensor([5, 0, 7]))
    assert picked.labels.tolist() == [5, 0, 1] and picked.extras["env"].tolist() == [36, 1, 8]


def test_extras_are_checked():
    images, labels = _constant_images([1, 2, 3]), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="extra 'env' has 2 entries"):
        data.ImageSet(images, labels, ["a", "b", "c"], "x", extras={"env": torch.zeros(2)})
    with pytest.raises(ValueError, match="reserved"):
        data.ImageSet(images, labels, ["a", "b", "c"], "x", extras={"index": torch.zeros(3)})


@pytest.mark.parametrize("padding", [0, 2, 4])
def test_crop_offsets_follow_the_padding(padding):
    white = data.ImageSet(
        torch.full((64, 3, 8, 8), 255, dtype=torch.uint8), torch.zeros(64, dtype=torch.long), ["white"], "white/train"
    )
    loader = data.GpuLoader(white, 64, shuffle=False, augment=True, drop_last=True, device="cpu", padding=padding)
    x, _, _ = next(iter(loader))
    dark_rows = (x[:, 0].amax(dim=2) == 0).sum(dim=1)  # zero-padding rows in each crop
    dark_cols = (x[:, 0].amax(dim=1) == 0).sum(dim=1)
    assert dark_rows.max() == padding and dark_cols.max() == padding  # offsets reach 0 and 2·padding …
    assert dark_rows.min() == 0  # … and the centre


def test_normalisation_belongs_to_the_data_set(standin_train, standin_test):
    mean, std = data.channel_statistics(standin_train.images)
    assert torch.allclose(torch.tensor(standin_train.normalization), torch.tensor((mean, std)), atol=1e-6)
    assert standin_test.normalization == standin_train.normalization  # the training split's statistics
    assert abs(standin_train.normalization[0][0] - data.CIFAR100_MEAN[0]) > 0.1  # the stand-in's, not CIFAR-100's
    assert data.NORMALIZATION["cifar100"] == (data.CIFAR100_MEAN, data.CIFAR100_STD)
    assert data.NORMALIZATION["svhn"] != data.NORMALIZATION["cifar10"]
    near = data.load("cifar10", "test", standin=True)
    assert near.normalization != standin_train.normalization
    plain = data.ImageSet(_constant_images([0, 255]), torch.tensor([0, 1]), ["a", "b"], "x")
    assert torch.allclose(torch.tensor(plain.normalization), torch.full((2, 3), 0.5))  # computed when not given
    with pytest.raises(ValueError, match="normalization"):
        data.ImageSet(
            _constant_images([0, 255]), torch.tensor([0, 1]), ["a", "b"], "x", normalization=((0.5,) * 3, (0.0,) * 3)
        )


def test_fingerprint_follows_the_content(standin_train):
    a, b = standin_train.subset(200, seed=0), standin_train.subset(200, seed=1)
    assert a.fingerprint == standin_train.subset(200, seed=0).fingerprint
    assert a.fingerprint != b.fingerprint and a.name == b.name and len(a) == len(b)
    relabelled = data.ImageSet(a.images, a.labels.flip(0), a.classes, a.name)
    assert relabelled.fingerprint != a.fingerprint
    g1, g2 = data.noise_images("gaussian", 50, seed=1), data.noise_images("gaussian", 50, seed=2)
    assert g1.fingerprint != g2.fingerprint


def test_overview_lists_sets_and_their_source(standin_test):
    table = data.overview({"ID": standin_test, "noise": data.noise_images("uniform", 10)})
    assert table.loc["ID", "source"] == "OFFLINE STAND-IN" and table.loc["noise", "source"] == "real data"
    assert table.loc["noise", "images"] == 10 and table.loc["ID", "classes"] == 8


def test_the_standin_note_is_printed_once_per_data_set(capsys, tmp_path):
    data.sets._ANNOUNCED.discard("svhn")
    data.load("svhn", "test", standin=True, root=tmp_path)
    data.load("svhn", "train", standin=True, root=tmp_path)
    assert capsys.readouterr().out.count("OFFLINE STAND-IN") == 1
