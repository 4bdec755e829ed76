"""The repository is named once (``_config.yml``): every badge and Colab install cell follows it, a fork
changes one line, and the install cell keeps checkpoints on Google Drive unless told not to."""

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from nclab.course import prepare, repository
from nclab.course.student import student_notebook

ROOT = Path(__file__).resolve().parents[1]


def test_every_notebook_follows_the_repository_in_the_config():
    repo, pack = repository.repository(ROOT / "_config.yml"), repository.run_pack(ROOT / "_config.yml")
    assert repository.stale_notebooks(ROOT / "notebooks", repo, pack) == [], "run `make student`"
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert repository.badge(repo, "notebooks", path.name) in cells[0].source
        assert cells[1].source == repository.install_cell(repo, pack)


def test_a_fork_changes_one_line_and_sync_follows_it(tmp_path):
    for name in ("01_train_resnet18_cifar100.ipynb", "03_ood_detection.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, tmp_path / name)
    fork = repository.Repository("lecturer/nc-course", "spring-2027")
    assert repository.stale_notebooks(tmp_path, fork) == ["01_train_resnet18_cifar100.ipynb", "03_ood_detection.ipynb"]
    assert repository.sync_notebooks(tmp_path, fork) == ["01_train_resnet18_cifar100.ipynb", "03_ood_detection.ipynb"]
    assert repository.stale_notebooks(tmp_path, fork) == [] and repository.sync_notebooks(tmp_path, fork) == []
    notebook = nbformat.read(tmp_path / "03_ood_detection.ipynb", as_version=4)
    assert "github/lecturer/nc-course/blob/spring-2027/notebooks/03_ood_detection.ipynb" in notebook.cells[0].source
    assert "nclab-course" not in notebook.cells[0].source + notebook.cells[1].source
    assert "git+https://github.com/lecturer/nc-course@spring-2027" in notebook.cells[1].source
    student = student_notebook(notebook, "03_ood_detection.ipynb")
    assert "github/lecturer/nc-course/blob/spring-2027/student/03_ood_detection.ipynb" in student.cells[0].source
    # everything but the two generated cells is left as it was
    original = nbformat.read(ROOT / "notebooks" / "03_ood_detection.ipynb", as_version=4)
    assert [c.source for c in notebook.cells[2:]] == [c.source for c in original.cells[2:]]


@pytest.mark.parametrize(
    "text, error",
    [
        ("repository:\n  url: https://github.com/a/b.git\n", None),
        ("repository:\n  url: https://gitlab.com/a/b\n", "must be https://github.com/OWNER/NAME"),
        ("title: x\n", "must be https://github.com/OWNER/NAME"),
        ("repository:\n  url: https://github.com/a\n", "owner/name"),
        ("repository:\n  url: https://github.com/a/b\n  branch: has space\n", "cannot carry"),
        ("repository:\n  url: https://github.com/a/b\n  branch: feature/x\n", "cannot carry"),
        ("repository:\n  url: https://github.com/a/b\n  branch: 2027\n", 'quote it, branch: "2027"'),
    ],
)
def test_the_config_names_a_github_repository(tmp_path, text, error):
    config = tmp_path / "_config.yml"
    config.write_text(text)
    if error is None:
        assert repository.repository(config) == repository.Repository("a/b", "main")
    else:
        with pytest.raises(ValueError, match=error):
            repository.repository(config)
    with pytest.raises(FileNotFoundError, match="course's root folder"):
        repository.repository(tmp_path / "missing.yml")


def _run_install_cell(
    monkeypatch, on_colab: bool, no_drive: bool = False, mount_fails: bool = False, cache=None, pack=None, **env
):
    """Execute the install cell (of ``pack``: none by default) with Colab's modules faked and the variables
    ``env`` set (None: unset): what it pip-installed, mounted and set."""
    calls = {"pip": [], "mount": []}
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what the cell sets stays in this copy

    def mount(path):
        calls["mount"].append(path)
        if mount_fails:
            raise ValueError("mount failed: user refused")

    monkeypatch.setattr(subprocess, "run", lambda args, check: calls["pip"].append(args))
    for variable, value in (
        ("NCLAB_CACHE", cache),
        ("NCLAB_DATA", None),
        ("NCLAB_NO_DRIVE", "1" if no_drive else None),
        *env.items(),
    ):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    if on_colab:
        colab = types.ModuleType("google.colab")
        colab.drive = types.SimpleNamespace(mount=mount)
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        sys.modules["google"].colab = colab
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(repository.install_cell(repository.Repository("o/n", "b"), pack), {})
    calls["cache"], calls["data"] = os.environ.get("NCLAB_CACHE"), os.environ.get("NCLAB_DATA")
    if pack is not None:
        calls["runs_url"] = os.environ.get("NCLAB_RUNS_URL")
    return calls


def test_the_install_cell_keeps_checkpoints_on_drive_on_colab_only(monkeypatch, capsys):
    colab = _run_install_cell(monkeypatch, on_colab=True)
    assert colab["pip"] == [[sys.executable, "-m", "pip", "install", "-q", "nclab @ git+https://github.com/o/n@b"]]
    assert colab["mount"] == ["/content/drive"] and colab["cache"] == repository.DRIVE_CACHE
    assert colab["data"] == "/content/data"  # the data sets stay in the runtime, off the student's Drive quota
    opted_out = _run_install_cell(monkeypatch, on_colab=True, no_drive=True)
    assert len(opted_out["pip"]) == 1 and opted_out["mount"] == [] and opted_out["cache"] is None
    refused = _run_install_cell(monkeypatch, on_colab=True, mount_fails=True)
    assert refused["cache"] is None and "Google Drive not mounted (mount failed" in capsys.readouterr().out
    chosen = _run_install_cell(monkeypatch, on_colab=True, cache="/content/elsewhere")
    assert chosen["mount"] == ["/content/drive"] and chosen["cache"] == "/content/elsewhere"  # the user's choice
    elsewhere = _run_install_cell(monkeypatch, on_colab=False)
    assert elsewhere == {"pip": [], "mount": [], "cache": None, "data": None}


def test_the_install_cell_carries_the_run_pack_at_its_profile_only(monkeypatch):
    pack = repository.RunPack("https://example.org/runs-full", "full")
    on_colab = _run_install_cell(monkeypatch, on_colab=True, pack=pack, NCLAB_PROFILE="full", NCLAB_RUNS_URL=None)
    assert on_colab["runs_url"] == "https://example.org/runs-full" and len(on_colab["pip"]) == 1
    other = _run_install_cell(monkeypatch, on_colab=True, pack=pack, NCLAB_PROFILE="smoke", NCLAB_RUNS_URL=None)
    assert other["runs_url"] is None  # a smoke run is not in a full pack: trained, and the network never asked
    chosen = _run_install_cell(monkeypatch, on_colab=True, pack=pack, NCLAB_PROFILE="full", NCLAB_RUNS_URL="")
    assert chosen["runs_url"] == ""  # a student who set it ('' : train the runs yourself) keeps it
    elsewhere = _run_install_cell(monkeypatch, on_colab=False, pack=pack, NCLAB_PROFILE="full", NCLAB_RUNS_URL=None)
    assert elsewhere["runs_url"] is None  # a clone has _config.yml, which names the pack itself
    repo = repository.Repository("o/n", "b")
    assert repository.install_cell(repo, repository.RunPack()) == repository.install_cell(repo)
    assert "NCLAB_RUNS_URL" not in repository.install_cell(repo)  # no pack: the cell committed today, unchanged


@pytest.mark.parametrize(
    "text, pack",
    [
        ("title: x\n", repository.RunPack()),
        ("nclab:\n  runs:\n    url: ''\n    profile: full\n", repository.RunPack("", "full")),
        ("nclab:\n  runs:\n    url: https://example.org/p\n", repository.RunPack("https://example.org/p", "full")),
        ("nclab:\n  runs:\n    url: http://h:8/p\n    profile: quick\n", repository.RunPack("http://h:8/p", "quick")),
        ("nclab:\n  runs: https://example.org/p\n", "nclab.runs must hold url and profile"),
        ("nclab:\n  runs:\n    url: example.org/p\n", "must be the http\\(s\\) address of the pack's files"),
        ("nclab:\n  runs:\n    url: 'https://e.org/p\"); import os; (\"'\n", "must be the http\\(s\\) address"),
        ("nclab:\n  runs:\n    url: https://e.org/p\n    profile: Full\n", r"one of \['full', 'quick', 'smoke'\]"),
    ],
)  # fmt: skip
def test_the_config_names_the_run_pack(tmp_path, text, pack):
    config = tmp_path / "_config.yml"
    config.write_text(text)
    if isinstance(pack, repository.RunPack):
        assert repository.run_pack(config) == pack
    else:
        with pytest.raises(ValueError, match=pack):
            repository.run_pack(config)


def test_nclab_sync_writes_the_run_pack_into_every_install_cell_and_takes_it_out_again(tmp_path, capsys):
    from nclab.course.cli import main

    original = nbformat.read(ROOT / "notebooks" / "04_neco_nc5.ipynb", as_version=4)
    shutil.copy(ROOT / "notebooks" / "04_neco_nc5.ipynb", tmp_path / "04_neco_nc5.ipynb")
    config, repo = tmp_path / "_config.yml", repository.repository(ROOT / "_config.yml")
    named = f"repository:\n  url: https://github.com/{repo.slug}\n  branch: {repo.branch}\nnclab:\n  runs:\n    url: "
    command = ["sync", "--notebooks", str(tmp_path), "--config", str(config)]
    config.write_text(named + "https://example.org/runs-full\n    profile: full\n")
    assert main([*command, "--check"]) == 1 and main(command) == 0 and main([*command, "--check"]) == 0
    assert "and the run pack at https://example.org/runs-full." in capsys.readouterr().out
    cell = nbformat.read(tmp_path / "04_neco_nc5.ipynb", as_version=4).cells[1].source
    assert cell == repository.install_cell(repo, repository.RunPack("https://example.org/runs-full", "full"))
    assert 'os.environ.setdefault("NCLAB_RUNS_URL", "https://example.org/runs-full")' in cell
    config.write_text(named + "''\n    profile: full\n")  # the pack taken out again: the cell as it was
    assert main([*command, "--check"]) == 1 and main(command) == 0
    assert nbformat.read(tmp_path / "04_neco_nc5.ipynb", as_version=4) == original


def test_nclab_sync_check_fails_on_a_stale_notebook_and_sync_repairs_it(tmp_path):
    shutil.copy(ROOT / "notebooks" / "04_neco_nc5.ipynb", tmp_path / "04_neco_nc5.ipynb")
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://github.com/someone/else\n  branch: main\n")
    command = [sys.executable, "-m", "nclab", "sync", "--notebooks", str(tmp_path), "--config", str(config)]
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1 and "04_neco_nc5.ipynb disagree with" in stale.stderr
    assert subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 0
    assert subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=120).returncode == 0


def test_the_licenses_and_citation_an_adopting_instructor_looks_for():
    import tomllib
    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License") and project["license"] == "MIT"
    assert "CC BY 4.0" in (ROOT / "LICENSE-CONTENT").read_text()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == project["license"]
    assert citation["version"] == project["version"] and citation["title"].startswith("nclab")


def _notebook(path, *sources):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_select_notebooks_in_course_order_by_number(tmp_path):
    for name in ("02_b.ipynb", "00_a.ipynb", "10_c.ipynb"):
        _notebook(tmp_path / name, "1")
    assert [p.name for p in prepare.select_notebooks(tmp_path)] == ["00_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.name for p in prepare.select_notebooks(tmp_path, ["10", "0", "10"])] == ["10_c.ipynb", "00_a.ipynb"]
    with pytest.raises(ValueError, match="no notebook numbered 07 .*there are 00, 02, 10"):
        prepare.select_notebooks(tmp_path, ["7"])
    with pytest.raises(FileNotFoundError):
        prepare.select_notebooks(tmp_path / "empty")


def test_prepare_runs_the_notebooks_headless_under_the_profile_and_names_a_failing_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NCLAB_CACHE", str(tmp_path / "cache"))
    record = "import os, pathlib\npathlib.Path(os.environ['NCLAB_CACHE'], '{}').write_text(os.environ['NCLAB_PROFILE'])"
    _notebook(tmp_path / "01_first.ipynb", "import os; os.makedirs(os.environ['NCLAB_CACHE'], exist_ok=True)",
              record.format("first"))  # fmt: skip
    _notebook(tmp_path / "02_second.ipynb", record.format("second"))
    times = prepare.prepare(prepare.select_notebooks(tmp_path), "full", progress=False)
    assert [name for name, _ in times] == ["01_first.ipynb", "02_second.ipynb"]
    assert (tmp_path / "cache" / "first").read_text() == "full" == (tmp_path / "cache" / "second").read_text()
    _notebook(tmp_path / "03_broken.ipynb", "raise ValueError('no data')")
    with pytest.raises(RuntimeError, match="03_broken.ipynb: a cell raised ValueError: no data"):
        prepare.prepare(prepare.select_notebooks(tmp_path, ["3"]), "smoke", progress=False)


def test_a_kernel_that_dies_before_it_answers_is_started_again(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    real, failures, failing = NotebookClient.async_start_new_kernel_client, [], [prepare.KERNEL_STARTS - 1]

    async def flaky(client):  # two kernels racing for one port: the first ones die before kernel_info
        if len(failures) < failing[0]:
            failures.append(True)
            await client._async_cleanup_kernel()
            raise RuntimeError("Kernel died before replying to kernel_info")
        return await real(client)

    monkeypatch.setattr(NotebookClient, "async_start_new_kernel_client", flaky)
    _notebook(tmp_path / "01_a.ipynb", "import os; print(6 * 7, os.environ.get('NCLAB_PROGRESS'))")
    executed = prepare.execute_notebook(tmp_path / "01_a.ipynb")
    assert len(failures) == prepare.KERNEL_STARTS - 1
    assert executed.cells[0].outputs[0].text == "42 final\n"  # a page: one line per training run, no live bars

    failures.clear()
    failing[0] = prepare.KERNEL_STARTS
    with pytest.raises(RuntimeError, match="01_a.ipynb: the Python kernel failed to start 3 times"):
        prepare.execute_notebook(tmp_path / "01_a.ipynb")
    assert len(failures) == prepare.KERNEL_STARTS


def test_nclab_train_regime_trains_that_regime_on_the_regime_data(monkeypatch, capsys):
    from nclab import config, train
    from nclab.course.cli import main

    trained = []

    def fake_load_or_train(cfg, train_set, test_set):
        trained.append((cfg, len(train_set)))
        return types.SimpleNamespace(final={"epoch": cfg.epochs}, run_dir=Path("runs") / cfg.regime)

    monkeypatch.setattr(train, "load_or_train", fake_load_or_train)
    assert main(["train", "--profile", "smoke", "--regime", "B", "--regime", "A", "--regime", "B"]) == 0
    smoke = config.PROFILES["smoke"]
    assert [(cfg.regime, size) for cfg, size in trained] == [
        ("B", smoke.regime_train_size),
        ("A", smoke.regime_train_size),
    ]
    assert trained[0][0] == train.regime("B", smoke) and "regime A: 20 epochs" in capsys.readouterr().out
    assert main(["train", "--profile", "smoke", "--notebook", "99"]) == 1  # no such notebook: a clear error


def test_nclab_train_method_runs_that_methods_notebook(monkeypatch, capsys):
    from nclab.course.cli import main

    ran = []
    monkeypatch.setattr(
        prepare, "prepare", lambda paths, profile, **options: ran.extend(p.name[:2] for p in paths) or []
    )
    assert main(["train", "--profile", "smoke", "--method", "spa", "--method", "control", "--notebook", "7"]) == 0
    assert ran == ["07", "05"]  # in the order asked, each once
    assert "make book now only loads them" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse: an unknown method lists the choices
        main(["train", "--method", "nothing"])


NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].glob("notebooks/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_says_how_long_it_takes_in_class_and_to_compute(path):
    intro = nbformat.read(path, 4).cells[0].source
    assert "**Time in class.**" in intro
    assert "CPU" in intro and ("T4" in intro or "every profile" in intro), "the compute time on a CPU and on Colab"


@pytest.mark.slow
@pytest.mark.parametrize("number", ["00", "04", "09"])
def test_run_all_goes_past_an_unanswered_exercise_in_the_student_version(number):
    """The notebooks whose later cells call an exercise's answer: as released (every exercise unanswered),
    "Run all" reaches the end, the library's computation standing in with a notice (exercises.stand_in)."""
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    path = next((root / "student").glob(f"{number}_*.ipynb"))
    notebook = nbformat.read(path, 4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    printed = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "is not answered yet, so the cells below use nclab's own computation" in printed
    assert "not answered yet (it raises NotImplementedError)" in printed  # the checks still say so
