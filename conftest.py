"""Test-session environment: the smoke profile and a fresh, private cache (also seen by nbval's kernels).

Set here, before any kernel starts, so notebooks executed by nbval inherit it. Nothing is downloaded:
the smoke profile reads the offline stand-in data sets.
"""

import os
import shutil
import tempfile

os.environ["NCLAB_PROFILE"] = "smoke"
_CACHE = tempfile.mkdtemp(prefix="nclab-test-cache-")
os.environ["NCLAB_CACHE"] = _CACHE
os.environ["NCLAB_DATA"] = os.path.join(_CACHE, "data")
os.environ.pop("NCLAB_DEVICE", None)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
