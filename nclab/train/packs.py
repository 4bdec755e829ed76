"""Run packs: an instructor's trained runs, written once as archives that every student can download.

The ``full`` profile takes about 12 T4-hours; a pack lets a class load the instructor's runs instead. A pack
is a folder, published as is (the assets of a GitHub release): one uncompressed tar per run, named by its
sha256 (content-addressed: packing the same files again writes the same archive), and ``manifest.json``,
which lists for each run key (the run's folder name under ``<cache>/runs``) the nclab version and profile,
the archive's name, sha256 and size, and the sha256 and size of every file inside it.

:func:`pack_runs` writes a pack; ``nclab.train.fetch`` downloads a run from one when ``load_or_train`` finds
its folder missing. Which runs to pack comes from what ``load_or_train`` leaves behind: ``run.json`` in each
run folder (:func:`write_run_info`: the profiles that used it, how many epochs it has trained), read by
:func:`runs_of_profile`; and, while ``nclab runs pack --notebook NN`` executes a notebook, the runs that
notebook loads (:func:`recording`, :func:`record_use`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..config import cache_dir, get_profile

__all__ = [
    "MANIFEST",
    "RUN_INFO",
    "RECORD",
    "PackError",
    "file_sha256",
    "write_run_info",
    "read_run_info",
    "record_use",
    "recording",
    "runs_of_profile",
    "pack_runs",
]

MANIFEST = "manifest.json"  # the pack's table of contents
FORMAT = 1  # bump when the manifest's layout changes
RUN_INFO = "run.json"  # in every run folder: what the run is, which profiles used it, how far it has trained
RECORD = "NCLAB_RUNS_RECORD"  # a file: while set, load_or_train notes each run it loads there, and trains none
FEATURES = "features"  # a run's feature caches (nclab.features.cached_features): packed with features=True only
CHUNK = 1 << 20  # bytes read at a time


class PackError(RuntimeError):
    """A run pack that cannot be written or used: no run to pack, a damaged or partial download, an archive
    missing from the pack."""


def file_sha256(path: str | Path) -> str:
    """The sha256 of the file at ``path``, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` atomically (a crash leaves the previous file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_run_info(run_dir: str | Path) -> dict | None:
    """The ``run.json`` of ``run_dir``, or None when it has none (a run trained before nclab wrote it)."""
    try:
        return json.loads((Path(run_dir) / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_run_info(run_dir: Path, key: dict, epochs: int, epochs_done: int, profile: str) -> None:
    """Write ``run_dir/run.json``: the run's key (what ``run_directory`` hashes), the profiles that used it
    (``profile`` added to those already there), and ``epochs_done`` of ``epochs``; what :func:`runs_of_profile`
    selects by. Nothing is written for a run folder that does not exist (no epoch trained) or cannot be
    written to."""
    if not run_dir.is_dir():
        return
    old = read_run_info(run_dir) or {}
    profiles = sorted({*old.get("profiles", []), profile})
    info = dict(run=run_dir.name, nclab=key["nclab"], profiles=profiles, epochs=epochs, epochs_done=epochs_done)
    info["key"] = json.loads(json.dumps(key))  # tuples as lists, as they read back
    if info != old:
        try:
            _write_json(run_dir / RUN_INFO, info)
        except OSError:  # a read-only cache (shared by a class) still loads its runs; they are packed elsewhere
            pass


def record_use(run_dir: Path, epochs_done: int, epochs: int) -> None:
    """While :data:`RECORD` names a file (:func:`recording`), note in it that ``run_dir`` is loaded; a run
    not trained to ``epochs`` is refused, so that packing never starts hours of training."""
    record = os.environ.get(RECORD)
    if not record:
        return
    if epochs_done < epochs:
        raise PackError(
            f"Run {run_dir.name} has trained {epochs_done} of {epochs} epochs: only finished runs are packed. Train "
            f"it first (nclab train --profile {get_profile().name}), then pack again."
        )
    with open(record, "a", encoding="utf-8") as f:
        f.write(run_dir.name + "\n")


@contextmanager
def recording() -> Iterator[list[str]]:
    """Within: every run that ``load_or_train`` loads, in this process or in a kernel it starts, is noted,
    and none is trained or downloaded. Yields a list that holds the run keys (folder names), in order of
    first use, once the block ends."""
    used: list[str] = []
    previous = os.environ.get(RECORD)
    with tempfile.TemporaryDirectory(prefix="nclab-record-") as folder:
        record = Path(folder) / "runs.txt"
        record.touch()
        os.environ[RECORD] = str(record)
        try:
            yield used
        finally:
            if previous is None:
                os.environ.pop(RECORD, None)
            else:
                os.environ[RECORD] = previous
            used.extend(dict.fromkeys(record.read_text(encoding="utf-8").split()))


def runs_of_profile(profile: str, root: str | Path | None = None) -> tuple[list[Path], list[Path]]:
    """(the finished runs of ``profile`` under ``root`` (default ``<cache>/runs``): those whose ``run.json``
    names the profile and this nclab version and has every epoch trained, dry runs left out; the run
    folders without ``run.json``, which cannot be told apart)."""
    root = Path(root or cache_dir() / "runs")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    finished, unlabelled = [], []
    for run_dir in folders:
        info = read_run_info(run_dir)
        if info is None:
            unlabelled.append(run_dir)
        elif (
            profile in info["profiles"]
            and info["nclab"] == __version__
            and info["epochs_done"] >= info["epochs"]
            and "max_steps" not in info["key"]
        ):
            finished.append(run_dir)
    return finished, unlabelled


def _files(run_dir: Path, features: bool) -> list[str]:
    """The files of ``run_dir`` that a pack holds, relative and sorted: every file but those in writing
    (``*.tmp``), and the feature caches only with ``features``."""
    names = []
    for path in sorted(run_dir.rglob("*")):
        name = path.relative_to(run_dir).as_posix()
        if path.is_file() and not path.name.endswith(".tmp") and (features or name.split("/")[0] != FEATURES):
            names.append(name)
    return names


class _Hashing:
    """A file read through this object, as ``tarfile`` reads it: the sha256 and size of what it read."""

    def __init__(self, file):
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        block = self.file.read(size)
        self.sha256.update(block)
        self.size += len(block)
        return block


def _archive(run_dir: Path, out: Path, profile: str, features: bool) -> dict:
    """Write ``run_dir`` as ``out/<sha256>.tar`` (the same bytes for the same files: no dates, no owners);
    its manifest entry."""
    names = _files(run_dir, features)
    info = read_run_info(run_dir) or {}
    if "last.pt" not in names:
        raise PackError(f"{run_dir} holds no last.pt: it is not a trained run. Train it first (nclab train).")
    if info.get("nclab", __version__) != __version__:
        raise PackError(f"{run_dir.name} was trained by nclab {info['nclab']}, this is {__version__}: not packed.")
    files = {}
    tmp = out / f".{run_dir.name}.{os.getpid()}.tar.tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = (run_dir / name).stat().st_size, 0o644, 0
            with open(run_dir / name, "rb") as f:
                source = _Hashing(f)
                tar.addfile(member, source)  # the hash of the very bytes archived, even if the file changes later
            files[name] = {"sha256": source.sha256.hexdigest(), "size": source.size}
    sha256 = file_sha256(tmp)
    archive = out / f"{sha256}.tar"
    os.replace(tmp, archive)
    entry = dict(nclab=__version__, profile=profile, archive=archive.name, sha256=sha256, size=archive.stat().st_size)
    return {**entry, "files": files}


def _manifest_in(out: Path, profile: str) -> dict:
    """The manifest already in ``out`` (its runs whose archive is there), to add runs to; else a new one.
    A pack holds one nclab version and one profile: another's manifest there is an error."""
    new = {"format": FORMAT, "nclab": __version__, "profile": profile, "runs": {}}
    try:
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return new
    except ValueError:
        raise PackError(f"{out / MANIFEST} is not JSON: delete it, or pack into another folder.") from None
    if (old.get("nclab"), old.get("profile")) != (__version__, profile):
        raise PackError(
            f"{out} holds a pack of nclab {old.get('nclab')}, profile {old.get('profile')}, and a pack holds one "
            f"nclab version and one profile: pack nclab {__version__}'s {profile} runs into another folder."
        )
    runs = {key: entry for key, entry in old.get("runs", {}).items() if (out / entry["archive"]).is_file()}
    return {**new, "runs": runs}


def pack_runs(run_dirs: list[Path], out: str | Path, profile: str, *, features: bool = False) -> dict:
    """Write ``run_dirs`` into the pack folder ``out`` (one ``<sha256>.tar`` per run) and ``out/manifest.json``
    (atomically, last, so that it never lists an archive that is not there); the manifest. Runs already
    packed in ``out`` stay listed. ``features``: with each run's feature caches too."""
    if not run_dirs:
        raise PackError(f"No run to pack: train the {profile} runs first (nclab train --profile {profile}).")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest_in(out, profile)
    for run_dir in run_dirs:
        manifest["runs"][Path(run_dir).name] = _archive(Path(run_dir), out, profile, features)
    _write_json(out / MANIFEST, manifest)
    return manifest
