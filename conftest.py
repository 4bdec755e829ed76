"""Test-session environment: the smoke profile and a fresh, private cache (also seen by nbval's kernels).

Set here, before any kernel starts, so notebooks executed by nbval inherit it. Nothing is downloaded:
the smoke profile reads the offline stand-in data sets.

``NCLAB_TEST_CACHE`` (optional) names a folder to use as that cache and to keep after the session: CI
(``.ci/run``) and ``make test`` build the book with it as ``NCLAB_CACHE`` first, so that nbval loads the
runs the book trained instead of training them a second time. Without it the cache is a temporary folder,
removed at the end.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ["NCLAB_PROFILE"] = "smoke"
_KEEP = bool(os.environ.get("NCLAB_TEST_CACHE"))
_CACHE = os.environ["NCLAB_TEST_CACHE"] if _KEEP else tempfile.mkdtemp(prefix="nclab-test-cache-")
os.makedirs(_CACHE, exist_ok=True)
os.environ["NCLAB_CACHE"] = _CACHE
os.environ["NCLAB_DATA"] = os.path.join(_CACHE, "data")
os.environ.pop("NCLAB_DEVICE", None)


# The slow tier: test modules that train networks, start kernels, run the grader or open the built site
# (``pytest -m "not slow"`` leaves them and the notebooks out; ``make test`` runs everything).
SLOW_MODULES = {
    "test_adoption",
    "test_attacks",
    "test_benchmarks",
    "test_bounds",
    "test_browser",
    "test_control",
    "test_design",
    "test_distributed",
    "test_grade",
    "test_invariance",
    "test_mnist",
    "test_ncfal",
    "test_packs",
    "test_probe",
    "test_sandbox",
    "test_secret_seeds",
    "test_spa",
    "test_tables",
    "test_train",
    "test_ufm",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb" or path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session, exitstatus):
    if not _KEEP:
        shutil.rmtree(_CACHE, ignore_errors=True)
