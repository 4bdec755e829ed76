import dataclasses

import pytest
import torch

from nclab import config


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("NCLAB_PROFILE", "quick")
    assert config.get_profile().name == "quick"
    monkeypatch.setenv("NCLAB_PROFILE", "FULL")
    assert config.get_profile().name == "full"


def test_default_profile_without_gpu_is_smoke(monkeypatch):
    monkeypatch.delenv("NCLAB_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.get_profile().name == "smoke"
    assert config.get_device().type == "cpu"


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="full.*quick.*smoke"):
        config.get_profile("huge")


def test_profiles_respect_the_course_limits():
    smoke = config.PROFILES["smoke"]
    assert smoke.width == 16 and smoke.train_size <= 2_000 and smoke.regime_train_size <= smoke.train_size
    # regimes A and B: 20 epochs on 1,000 images, the terminal phase within about 40 s each on two CPU cores
    assert smoke.regime_train_size * smoke.epochs <= 20_000
    assert not smoke.augment, "the smoke runs reach the terminal phase only without augmentation"
    assert config.PROFILES["quick"].augment and config.PROFILES["full"].augment  # SPEC §3
    assert config.PROFILES["quick"].regime_train_size is None is config.PROFILES["full"].regime_train_size
    assert not smoke.download and smoke.standin
    for profile in config.PROFILES.values():
        assert 8 * profile.width >= 100 - 1, "a CIFAR-100 simplex ETF needs p >= C - 1"
    assert config.PROFILES["full"].epochs >= 350 and config.PROFILES["full"].width == 64


def test_profiles_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.PROFILES["smoke"].epochs = 100


def test_paths_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NCLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NCLAB_DATA", raising=False)
    assert config.cache_dir() == tmp_path / "cache" and config.cache_dir().is_dir()
    assert config.data_dir() == tmp_path / "cache" / "data"
    monkeypatch.setenv("NCLAB_DATA", str(tmp_path / "elsewhere"))
    assert config.data_dir() == tmp_path / "elsewhere"


def test_seed_everything_makes_torch_repeatable():
    config.seed_everything(3)
    a = torch.rand(4)
    config.seed_everything(3)
    assert torch.equal(a, torch.rand(4))


def test_describe_names_profile_and_device():
    text = config.describe("smoke", "cpu")
    assert "nclab profile: smoke" in text and "device: cpu" in text and "width=16" in text


@pytest.mark.parametrize(
    "text",
    [
        "- a Jekyll site's list\n- of pages\n",  # top level not a mapping
        "title: A blog\nnclab: a word\n",  # nclab not a mapping
        "title: [unclosed\n",  # not YAML
        "title: A blog\ntheme: minima\n",  # no nclab at all
    ],
    ids=["list", "nclab a string", "bad yaml", "no nclab"],
)
def test_another_projects_config_yml_names_no_run_pack(tmp_path, monkeypatch, text):
    (tmp_path / "_config.yml").write_text(text)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # the nearest _config.yml, one folder up, is not the course's
    monkeypatch.delenv("NCLAB_RUNS_URL", raising=False)
    assert config.runs_url("full") == ""


def test_a_malformed_runs_entry_of_our_config_yml_says_how_to_write_it(tmp_path, monkeypatch):
    (tmp_path / "_config.yml").write_text("nclab:\n  runs: https://example.org/pack\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NCLAB_RUNS_URL", raising=False)
    with pytest.raises(ValueError, match=r"nclab\.runs must hold url and profile, e\.g\. \{url: https://…"):
        config.runs_url("full")
    (tmp_path / "_config.yml").write_text("nclab:\n  runs:\n    url: https://example.org/pack\n")
    assert config.runs_url("full") == "https://example.org/pack"  # profile full by default
