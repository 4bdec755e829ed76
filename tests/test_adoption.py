"""Issue 30's adoption path, end to end, as the instructor guide tells it ("Before the first class", "Full-scale
runs for every student"), at the smoke profile: the code path of ``full``, in minutes.

The instructor trains the runs a notebook needs, packs them (``nclab runs pack --notebook 04``), publishes the
pack (here: served from 127.0.0.1) and releases the students' repository (``nclab release``). A student
installs the release, not editable, into a fresh virtual environment, starts from an empty cache with
``NCLAB_RUNS_URL`` naming the pack, and runs the release's notebook 04 to its end: its run is downloaded,
never trained, and arrives bit for bit.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from test_packs import PackServer
from test_release import execute_in_venv, install_in_fresh_venv

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "04_neco_nc5.ipynb"  # short, and it loads one run, regime A of notebook 01


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _nclab(*args: str, env: dict[str, str]) -> str:
    """``python -m nclab ARGS`` run from the course's root, as the guide runs it; its output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "nclab", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"nclab {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_instructor_packs_publishes_and_releases_and_a_student_downloads_the_runs(tmp_path):
    # a. The instructor's runs, in the session's cache (CI's NCLAB_TEST_CACHE, where `make book` trained every
    # smoke run; else conftest's temporary one, where `nclab train` trains regime A, ≈ 1 min, once).
    instructor_cache = Path(os.environ.get("NCLAB_TEST_CACHE") or os.environ["NCLAB_CACHE"])
    unset = ("NCLAB_RUNS_URL", "NCLAB_RUNS_RECORD", "NCLAB_RUNS_FALLBACK")
    instructor = {key: value for key, value in os.environ.items() if key not in unset}
    instructor |= {"NCLAB_PROFILE": "smoke", "NCLAB_CACHE": str(instructor_cache)}
    _nclab("train", "--regime", "A", env=instructor)  # loads it, when trained already
    pack = tmp_path / "pack"
    _nclab("runs", "pack", "--notebook", NOTEBOOK[:2], "--out", str(pack), env=instructor)
    manifest = json.loads((pack / "manifest.json").read_text())
    ((key, entry),) = manifest["runs"].items()  # notebook 04 loads regime A's run, and only it
    assert re.fullmatch(r"cifar100-erm-A-w16-[0-9a-f]{12}", key) and manifest["profile"] == "smoke"
    assert sorted(path.name for path in pack.iterdir()) == sorted([entry["archive"], "manifest.json"])

    # b. Published: the pack's folder served over HTTP.
    server = PackServer(pack)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # c. The students' repository.
        release = tmp_path / "release"
        _nclab("release", "--out", str(release), env=instructor)

        # d. A student: the release installed into a fresh environment, an empty cache, the pack's address.
        venv = tmp_path / "venv"
        site = install_in_fresh_venv(release, venv)
        student_cache = tmp_path / "student-cache"
        student = {"NCLAB_PROFILE": "smoke", "NCLAB_CACHE": str(student_cache), "NCLAB_RUNS_URL": server.url}
        student |= {"NCLAB_DATA": str(tmp_path / "student-data"), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        student |= {"NCLAB_RUNS_RECORD": None, "NCLAB_RUNS_FALLBACK": None}
        assert not student_cache.exists()
        notebook = release / "notebooks" / NOTEBOOK
        cells, imported, _ = execute_in_venv(venv, notebook, tmp_path / "executed.ipynb", student)
    finally:
        server.shutdown()
        server.server_close()

    # e. It ran to its end from the installed release, downloading the run, never training it.
    assert Path(imported) == site / "nclab" / "__init__.py"
    printed = "".join(output.get("text", "") for cell in cells if cell.cell_type == "code" for output in cell.outputs)
    assert f"Downloading run {key} from the pack at {server.url}" in printed
    assert "Found checkpoint" in printed and "No checkpoint" not in printed
    runs = student_cache / "runs"
    assert sorted(path.name for path in runs.iterdir() if not path.name.startswith(".")) == [key]
    for name, file in entry["files"].items():  # every packed file, bit for bit the instructor's
        assert _sha256(runs / key / name) == _sha256(instructor_cache / "runs" / key / name) == file["sha256"], name
    paths = [path for path, _ in server.requests]
    assert paths[0] == "/pack/manifest.json" and f"/pack/{entry['archive']}" in paths
    assert set(paths) == {"/pack/manifest.json", f"/pack/{entry['archive']}"}
