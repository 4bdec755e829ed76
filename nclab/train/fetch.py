"""A run downloaded from the instructor's run pack (``nclab runs pack``) instead of trained.

``load_or_train`` calls :func:`fetch_run` when a run's folder is missing. When a pack is configured
(``config.runs_url``: ``$NCLAB_RUNS_URL``, or ``nclab: runs:`` in ``_config.yml``) and its manifest lists the
run, the run's archive is downloaded with pooch, from a registry made of the manifest (its sha256 checks the
archive; a progress bar shows the download). A cut connection resumes: :class:`ResumingDownloader` keeps the
bytes in a ``.part`` file and asks for the rest with an HTTP ``Range`` request; a lock file beside it lets one
process at a time download an archive (another waits, then finds the run in place). Every file is then checked
against its sha256 and size as it is unpacked into a fresh temporary folder in the cache, which is renamed into
place at the end: a damaged or partial download leaves no run folder, an archive holding anything but the
manifest's plain files (a link, a device, a path out of the folder) is refused, and a run folder that exists is
never replaced.

Offline, a configured pack is an error that says what to do; ``NCLAB_RUNS_FALLBACK=train`` trains instead.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

try:
    import fcntl
except ImportError:  # Windows: no lock, one process at a time is the user's care
    fcntl = None

from .. import __version__
from ..config import in_cache, runs_url
from .packs import CHUNK, MANIFEST, RECORD, PackError

__all__ = ["FALLBACK", "PackUnavailable", "ResumingDownloader", "read_manifest", "fetch_run"]

FALLBACK = "NCLAB_RUNS_FALLBACK"  # "train": train a run when the pack cannot be used (offline, another version)
ATTEMPTS = 3  # connections per download, each resuming where the last one was cut
TIMEOUT = 30  # seconds without an answer before a connection counts as cut
BLOCK = 1 << 16  # bytes written to the .part file at a time: a cut connection loses at most the block in flight


class PackUnavailable(PackError):
    """The pack as a whole cannot be used: no connection, no manifest at its address, or another nclab's."""


def _configure_hint(url: str) -> str:
    return (
        f"or set NCLAB_RUNS_URL='' (no pack) or {FALLBACK}=train to train the run here instead (hours at the full "
        f"profile). The pack's address ({url}) comes from NCLAB_RUNS_URL, else nclab.runs.url in _config.yml."
    )


def read_manifest(url: str) -> dict:
    """The manifest of the pack at ``url``, checked to be this nclab version's; :class:`PackUnavailable`
    when it cannot be had or used, saying what to do."""
    import requests

    address = f"{url.rstrip('/')}/{MANIFEST}"
    try:
        response = requests.get(address, timeout=TIMEOUT)
    except requests.RequestException as error:
        raise PackUnavailable(
            f"Cannot reach the run pack at {url} ({type(error).__name__}): is this machine online? Connect and "
            f"rerun to download the run, " + _configure_hint(url)
        ) from None
    if not response.ok:
        raise PackUnavailable(
            f"The run pack has no {MANIFEST} at {address} (HTTP {response.status_code}): it is not published "
            f"there. Check the address, " + _configure_hint(url)
        )
    try:
        manifest = response.json()
        made_by, runs = manifest["nclab"], manifest["runs"]
    except (ValueError, KeyError, TypeError):
        raise PackUnavailable(
            f"{address} is not an nclab run pack's manifest. Check the address, " + _configure_hint(url)
        ) from None
    if made_by != __version__:
        raise PackUnavailable(
            f"The run pack at {url} was made by nclab {made_by}; this is nclab {__version__}, whose runs it "
            f"cannot hold (a run's key includes the version). Install nclab {made_by}, ask for a pack made by "
            f"{__version__}, " + _configure_hint(url)
        )
    if not isinstance(runs, dict):
        raise PackUnavailable(f"{address} lists no runs. Check the address, " + _configure_hint(url))
    return manifest


class ResumingDownloader:
    """A pooch downloader that resumes: the bytes go to ``<archive>.part`` in the pooch folder, a block of
    :data:`BLOCK` bytes at a time, and a cut connection (in this call, up to :data:`ATTEMPTS` connections, or
    in a later one) asks for the rest with an HTTP ``Range`` request. The whole file must be ``size`` bytes,
    the manifest's; pooch then checks its sha256."""

    def __init__(self, size: int, progressbar: bool = True):
        self.size, self.progressbar = size, progressbar

    def __call__(self, url: str, output_file: str, pooch, check_only: bool = False):
        import requests

        if check_only:
            return requests.head(url, timeout=TIMEOUT, allow_redirects=True).ok
        part = Path(pooch.abspath) / f"{url.rsplit('/', 1)[-1]}.part"
        cut = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._continue(url, part)
                break
            except cut as error:
                if attempt == ATTEMPTS:
                    have = part.stat().st_size if part.exists() else 0
                    raise PackError(
                        f"The download of {url} was cut {ATTEMPTS} times ({type(error).__name__}), at {have:,} of "
                        f"{self.size:,} bytes: rerun to resume it from {in_cache(part)}."
                    ) from None
        have = part.stat().st_size
        if have != self.size:
            part.unlink()
            raise PackError(
                f"{url} is {have:,} bytes, but the pack's manifest says {self.size:,}: the archive in the pack is "
                f"truncated or was replaced. Nothing was unpacked; tell your instructor."
            )
        os.replace(part, output_file)

    def _continue(self, url: str, part: Path) -> None:
        """Append to ``part`` what the server has past its end (all of it when the server ignores Range)."""
        import requests
        from tqdm.auto import tqdm

        have = part.stat().st_size if part.exists() else 0
        if have >= self.size:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
            if have and response.status_code == 416:  # nothing past `have`: the size check says what is wrong
                return
            response.raise_for_status()
            resumed = response.status_code == 206
            start, quiet = (have if resumed else 0), not self.progressbar
            progress = tqdm(total=self.size, initial=start, unit="B", unit_scale=True, disable=quiet)
            with open(part, "ab" if resumed else "wb") as f, progress:
                for block in response.iter_content(BLOCK):
                    f.write(block)
                    progress.update(len(block))


def _archive_name(url: str, entry: dict) -> str:
    """The manifest's name of a run's archive, checked to be ``<sha256>.tar`` (a safe file name)."""
    name = entry["archive"]
    if name != f"{entry['sha256']}.tar" or not re.fullmatch(r"[0-9a-f]{64}\.tar", name):
        raise PackError(f"The run pack at {url} names an archive {name!r}, not <sha256>.tar: tell your instructor.")
    return name


@contextmanager
def _locked(lock: Path, done: Path) -> Iterator[None]:
    """Within, hold an exclusive lock on the file ``lock`` (``fcntl.flock``): a second process waits, saying
    so, until the first leaves. On leaving, the lock file is removed once ``done`` exists: every later process,
    whichever lock file it holds, then finds ``done`` and stops. Without locks (Windows, a filesystem that
    refuses them) the block runs unlocked. Processes on other machines sharing one Drive folder see each
    other's files but not their locks."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"Another process is downloading run {done.name}: waiting for it to finish.")
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # no locks on this filesystem
                pass
        yield
        if done.exists():
            lock.unlink(missing_ok=True)  # while held: a process waiting on it then finds `done`
    finally:
        os.close(fd)  # releases the lock


def _download(url: str, entry: dict, folder: Path, progressbar: bool) -> Path:
    """The run's archive, downloaded into ``folder`` by pooch and checked against the manifest's sha256."""
    try:
        import pooch
        import requests
    except ImportError as missing:
        raise PackError(f"Downloading a run needs {missing.name}: `pip install pooch`, then rerun.") from None

    name = _archive_name(url, entry)
    pack = pooch.create(path=folder, base_url=f"{url.rstrip('/')}/", registry={name: f"sha256:{entry['sha256']}"})
    logger, level = pooch.get_logger(), pooch.get_logger().level
    logger.setLevel(logging.WARNING)  # not pooch's line naming this machine's folders: ours says what happens
    try:
        return Path(pack.fetch(name, downloader=ResumingDownloader(entry["size"], progressbar)))
    except ValueError:  # pooch: the sha256 differs (it has deleted the download)
        raise PackError(
            f"Archive {name} from {url} is damaged: its sha256 is not the manifest's. Nothing was unpacked; rerun "
            f"to download it again, and if it fails again tell your instructor (the pack may be corrupt)."
        ) from None
    except requests.HTTPError as error:
        raise PackError(
            f"Archive {name} is missing from the run pack at {url} (HTTP {error.response.status_code}): the pack is "
            f"incomplete. Tell your instructor, or set NCLAB_RUNS_URL='' to train the run yourself."
        ) from None
    finally:
        logger.setLevel(level)


def _safe(name: str) -> bool:
    """Whether ``name`` is a plain relative path (no ``..``, not absolute): a file inside the run folder."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and path.as_posix() == name


def _stays_inside(member: tarfile.TarInfo, folder: Path) -> bool:
    """Whether tarfile's ``data`` filter (Python 3.11.4+, 3.10.12+; else only our own checks) lets ``member``
    be extracted into ``folder``: no absolute path, no path out of it, no device, no link leading out."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return True
    try:
        data_filter(member, str(folder))
    except tarfile.FilterError:
        return False
    return True


def _check_members(members: list[tarfile.TarInfo], expected: dict, archive: Path, folder: Path) -> None:
    """Refuse, before anything is written, an archive that holds anything but the manifest's files, each a
    plain file inside ``folder``: a link, a device, a folder entry, an absolute path or one climbing out
    (``../``), a file the manifest does not list or one it lists missing."""
    for member in members:
        if not (member.isfile() and _safe(member.name) and _stays_inside(member, folder)):
            raise PackError(
                f"Archive {archive.name} holds {member.name!r}, which is not a plain file inside the run folder (a "
                f"link, a device, or a path out of it): the pack is damaged or forged. Nothing was unpacked; tell "
                f"your instructor."
            )
    names = sorted(member.name for member in members)
    if names != sorted(expected):
        raise PackError(
            f"Archive {archive.name} holds {names}, but the manifest lists {sorted(expected)}: the pack is "
            f"damaged. Nothing was unpacked; tell your instructor."
        )


def _move_into_place(folder: Path, run_dir: Path) -> bool:
    """Rename ``folder`` to ``run_dir`` (atomic: the run folder appears whole, or not at all); False, nothing
    moved, when ``run_dir`` exists, even empty (``os.rename`` would replace an empty folder), or appears
    between the check and the rename (the rename then fails: a folder with files is never replaced)."""
    if run_dir.exists():
        return False
    try:
        os.rename(folder, run_dir)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def _unpack(archive: Path, entry: dict, run_dir: Path) -> bool:
    """Unpack ``archive`` into a fresh temporary folder beside ``run_dir`` (its name unique even among
    machines that share the cache), each file checked against the manifest's sha256 and size, then rename it
    to ``run_dir``; False (nothing changed) when ``run_dir`` appeared meanwhile. The temporary folder is
    removed whatever happens."""
    expected = entry["files"]
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.unpacking-"))
    try:
        tmp.chmod(run_dir.parent.stat().st_mode & 0o777)  # mkdtemp's is 0o700: a class's shared cache reads it too
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _check_members(members, expected, archive, tmp)
            for member in members:
                target = tmp / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest, size = hashlib.sha256(), 0
                with tar.extractfile(member) as source, open(target, "wb") as sink:
                    for block in iter(lambda: source.read(CHUNK), b""):
                        digest.update(block)
                        size += sink.write(block)
                want = expected[member.name]
                if (digest.hexdigest(), size) != (want["sha256"], want["size"]):
                    raise PackError(
                        f"File {member.name} of archive {archive.name} differs from the manifest (sha256 or size): "
                        f"the pack is damaged. Nothing was unpacked; tell your instructor."
                    )
        return _move_into_place(tmp, run_dir)
    except tarfile.TarError as error:
        raise PackError(f"Archive {archive.name} cannot be read ({error}): nothing was unpacked.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_run(run_dir: Path, progressbar: bool = True) -> bool:
    """Download the run ``run_dir`` from the configured pack when its folder is missing and the pack lists
    it (its key is the folder's name); True when it did. Says what it does. Nothing happens without a pack,
    for a folder that exists (a local run is never overwritten) or while packing (:func:`packs.recording`).

    Raises :class:`PackUnavailable` when the pack cannot be used (unless ``$NCLAB_RUNS_FALLBACK`` is
    ``train``: then it says so and returns False) and :class:`PackError` for a damaged, partial or missing
    archive; either way no run folder is left behind."""
    url = runs_url()
    if not url or run_dir.exists() or os.environ.get(RECORD):
        return False
    try:
        entry = read_manifest(url)["runs"].get(run_dir.name)
    except PackUnavailable as error:
        if os.environ.get(FALLBACK, "").strip().lower() != "train":
            raise
        print(f"{error}\n→ {FALLBACK}=train: training the run here instead.")
        return False
    if entry is None:
        print(f"The run pack at {url} has no run {run_dir.name}.")
        return False
    downloads = run_dir.parent / ".downloads"
    with _locked(downloads / f"{_archive_name(url, entry)}.lock", run_dir):  # one process writes the .part
        unpacked = False
        if not run_dir.exists():  # else another process has just unpacked it
            size = entry["size"] / 1e6
            print(f"Downloading run {run_dir.name} from the pack at {url} ({size:,.1f} MB) instead of training it.")
            archive = _download(url, entry, downloads, progressbar)
            try:
                unpacked = _unpack(archive, entry, run_dir)
            finally:
                archive.unlink(missing_ok=True)  # the run folder holds the same bytes: no second copy on a Drive quota
    if not unpacked:
        print(f"{in_cache(run_dir)} appeared meanwhile: kept it, the pack's copy is not used.")
    return unpacked
