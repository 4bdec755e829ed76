"""Run packs (nclab.train.packs, nclab.train.fetch): a tiny run trained once, packed, served from 127.0.0.1, and
loaded by a fresh cache; every damaged, partial, foreign or unreachable pack refused with no run folder left."""

import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import stat
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from nclab import __version__, config, features, train
from nclab.course.cli import main
from nclab.train import fetch, packs


def _tiny_config(**overrides):
    options = dict(regime="pack", width=4, epochs=2, batch_size=32, lr=0.05, snapshot_epochs=(1, 2))
    return train.TrainConfig(**{**options, **overrides})


@pytest.fixture(scope="module")
def instructor(tmp_path_factory, small_train):
    """The instructor's side: a tiny run trained into its own cache (with a feature cache), and its pack."""
    root = tmp_path_factory.mktemp("instructor")
    run = train.load_or_train(_tiny_config(), small_train, root=root / "runs", progress=False)
    features.cached_features(run.model, small_train.subset(64, seed=0), run.run_dir, batch_size=64)
    manifest = packs.pack_runs([run.run_dir], root / "pack", "smoke")
    return run, root / "pack", manifest


class PackServer(http.server.ThreadingHTTPServer):
    """Serves ``folder`` on 127.0.0.1 at ``url`` (``http://127.0.0.1:PORT/pack``) with Range requests honoured;
    ``cuts`` (bytes) cut the next archive responses short, one per response; ``requests`` logs (path, Range
    header) of every GET. Start it in a thread (``serve_forever``); tests/test_adoption.py serves its pack too."""

    def __init__(self, folder):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder, self.cuts, self.requests = Path(folder), [], []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/pack"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        path = self.server.folder / self.path.removeprefix("/pack/")
        if not self.path.startswith("/pack/") or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers["Range"] else 0
        if start >= len(data) > 0 and self.headers["Range"]:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if self.headers["Range"] else 200)
        if self.headers["Range"]:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        cut = self.server.cuts.pop(0) if self.server.cuts and path.suffix == ".tar" else None
        self.wfile.write(data[start:] if cut is None else data[start : start + cut])  # then the connection closes


@pytest.fixture
def served(instructor, tmp_path, monkeypatch):
    """A copy of the pack served over HTTP, NCLAB_RUNS_URL pointing at it, and a fresh, empty student cache."""
    run, pack, manifest = instructor
    shutil.copytree(pack, tmp_path / "pack")
    server = PackServer(tmp_path / "pack")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NCLAB_CACHE", str(tmp_path / "student"))
    monkeypatch.setenv("NCLAB_RUNS_URL", server.url)
    monkeypatch.delenv(fetch.FALLBACK, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield server
    server.shutdown()
    server.server_close()


def _entry(manifest):
    (key, entry), *others = manifest["runs"].items()
    assert not others
    return key, entry


def _student_run_dir(instructor):
    return config.cache_dir() / "runs" / instructor[0].run_dir.name


def _nothing_unpacked(instructor):
    runs = config.cache_dir() / "runs"
    return not _student_run_dir(instructor).exists() and not list(runs.glob(".*.unpacking-*"))


# --- packing ------------------------------------------------------------------------------------------------


def test_the_manifest_lists_every_file_and_the_archive_is_named_by_its_hash(instructor, tmp_path):
    run, pack, manifest = instructor
    key, entry = _entry(manifest)
    assert key == run.run_dir.name and (manifest["nclab"], manifest["profile"]) == (__version__, "smoke")
    archive = pack / entry["archive"]
    assert entry["archive"] == f"{entry['sha256']}.tar" == f"{packs.file_sha256(archive)}.tar"
    assert entry["size"] == archive.stat().st_size and (entry["nclab"], entry["profile"]) == (__version__, "smoke")
    assert sorted(entry["files"]) == ["epoch_0001.pt", "epoch_0002.pt", "last.pt", "run.json"]  # no features
    for name, file in entry["files"].items():
        assert file == {"sha256": packs.file_sha256(run.run_dir / name), "size": (run.run_dir / name).stat().st_size}
    assert json.loads((pack / "manifest.json").read_text()) == manifest
    again = packs.pack_runs([run.run_dir], tmp_path / "again", "smoke")  # the same bytes: the same archive
    assert _entry(again)[1]["archive"] == entry["archive"]
    with_features = _entry(packs.pack_runs([run.run_dir], tmp_path / "features", "smoke", features=True))[1]
    (cached,) = [name for name in with_features["files"] if name.startswith("features/")]
    assert with_features["archive"] != entry["archive"] and (run.run_dir / cached).is_file()


def test_run_json_says_which_profile_used_a_run_and_how_far_it_trained(instructor, small_train, tmp_path):
    run, _, _ = instructor
    info = packs.read_run_info(run.run_dir)
    assert (info["profiles"], info["epochs"], info["epochs_done"], info["nclab"]) == (["smoke"], 2, 2, __version__)
    shutil.copytree(run.run_dir, tmp_path / "runs" / run.run_dir.name)
    half = train.load_or_train(_tiny_config(seed=1), small_train, root=tmp_path / "runs", until=1, progress=False)
    assert packs.read_run_info(half.run_dir)["epochs_done"] == 1
    (tmp_path / "runs" / "cifar100-erm-old-w4-000000000000").mkdir()  # trained before run.json existed
    finished, unlabelled = packs.runs_of_profile("smoke", tmp_path / "runs")
    assert [p.name for p in finished] == [run.run_dir.name] and [p.name for p in unlabelled] == [
        "cifar100-erm-old-w4-000000000000"
    ]
    assert packs.runs_of_profile("full", tmp_path / "runs")[0] == []
    with pytest.raises(packs.PackError, match="No run to pack"):
        packs.pack_runs([], tmp_path / "empty", "full")
    with pytest.raises(packs.PackError, match="one nclab version and one profile"):
        packs.pack_runs([run.run_dir], instructor[1], "full")


def test_recording_notes_the_runs_loaded_and_refuses_to_train(instructor, small_train, tmp_path, served):
    run, _, _ = instructor
    shutil.copytree(run.run_dir, tmp_path / "runs" / run.run_dir.name)
    with packs.recording() as used:
        train.load_or_train(_tiny_config(), small_train, root=tmp_path / "runs", progress=False)
        with pytest.raises(packs.PackError, match="trained 0 of 2 epochs.*Train it first"):
            train.load_or_train(_tiny_config(seed=5), small_train, root=tmp_path / "runs", progress=False)
    assert used == [run.run_dir.name] and packs.RECORD not in os.environ
    assert not served.requests  # while recording, nothing is downloaded


def test_the_cli_packs_the_finished_runs_of_a_profile(instructor, tmp_path, monkeypatch, capsys):
    run, _, manifest = instructor
    monkeypatch.setenv("NCLAB_CACHE", str(tmp_path / "cache"))
    shutil.copytree(run.run_dir, tmp_path / "cache" / "runs" / run.run_dir.name)
    assert main(["runs", "pack", "--out", str(tmp_path / "pack"), "--profile", "smoke"]) == 0
    written = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert written["runs"] == manifest["runs"] and "1 smoke runs" in capsys.readouterr().out
    assert main(["runs", "pack", "--out", str(tmp_path / "none"), "--profile", "full"]) == 1
    assert "No run to pack" in capsys.readouterr().err


# --- fetching ------------------------------------------------------------------------------------------------


def test_a_fresh_cache_downloads_the_run_bit_for_bit_and_says_so(instructor, small_train, served, capsys):
    run, _, manifest = instructor
    loaded = train.load_or_train(_tiny_config(), small_train, progress=False)
    out = capsys.readouterr().out
    assert f"Downloading run {run.run_dir.name} from the pack at {served.url}" in out
    assert "Found checkpoint" in out and "No checkpoint" not in out  # loaded, not trained
    assert loaded.run_dir == _student_run_dir(instructor)
    for (name, a), b in zip(run.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.history == run.history and sorted(loaded.snapshots) == [1, 2]
    for (name, a), b in zip(run.load_snapshot(1).state_dict().items(), loaded.load_snapshot(1).state_dict().values()):
        assert torch.equal(a, b), name
    assert not list((config.cache_dir() / "runs" / ".downloads").iterdir())  # the archive is not kept twice
    assert [path for path, _ in served.requests] == ["/pack/manifest.json", f"/pack/{_entry(manifest)[1]['archive']}"]


def _flip_a_byte(pack, entry):
    path = pack / entry["archive"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(pack, entry):
    path = pack / entry["archive"]
    path.write_bytes(path.read_bytes()[: entry["size"] // 2])


def _remove(pack, entry):
    (pack / entry["archive"]).unlink()


def _alter_a_file_inside(pack, entry):
    """A well-formed archive, its own hash and size in the manifest, holding a last.pt that is not the
    manifest's: only the check of every file finds it."""
    old = pack / entry["archive"]
    with tarfile.open(old) as tar:
        contents = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
    contents["last.pt"] = contents["last.pt"][:-1] + bytes([contents["last.pt"][-1] ^ 1])
    new = pack / "altered.tar"
    with tarfile.open(new, "w") as tar:
        for name, data in contents.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    old.unlink()
    manifest = json.loads((pack / "manifest.json").read_text())
    key = next(iter(manifest["runs"]))
    sha256 = packs.file_sha256(new)
    new.rename(pack / f"{sha256}.tar")
    manifest["runs"][key].update(archive=f"{sha256}.tar", sha256=sha256, size=(pack / f"{sha256}.tar").stat().st_size)
    (pack / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_flip_a_byte, r"Archive \w+\.tar from .* is damaged: its sha256 is not the manifest's"),
        (_truncate, r"\w+\.tar is \d[\d,]* bytes, but the pack's manifest says [\d,]+: .*truncated"),
        (_remove, r"Archive \w+\.tar is missing from the run pack .*\(HTTP 404\)"),
        (_alter_a_file_inside, r"File last\.pt of archive \w+\.tar differs from the manifest"),
    ],
    ids=["flipped byte", "truncated", "missing archive", "altered file"],
)
def test_a_damaged_pack_is_refused_and_leaves_no_run_folder(instructor, small_train, served, damage, message):
    damage(served.folder, _entry(instructor[2])[1])
    with pytest.raises(packs.PackError, match=message):
        train.load_or_train(_tiny_config(), small_train, progress=False)
    assert _nothing_unpacked(instructor)


def test_a_manifest_of_another_nclab_version_is_refused(instructor, small_train, served):
    manifest = json.loads((served.folder / "manifest.json").read_text())
    (served.folder / "manifest.json").write_text(json.dumps({**manifest, "nclab": "0.0.1"}))
    with pytest.raises(fetch.PackUnavailable, match=rf"made by nclab 0\.0\.1; this is nclab {__version__}"):
        train.load_or_train(_tiny_config(), small_train, progress=False)
    assert _nothing_unpacked(instructor)
    assert [path for path, _ in served.requests] == ["/pack/manifest.json"]


def test_an_interrupted_download_resumes_with_a_range_request(instructor, small_train, served, capsys):
    run, _, manifest = instructor
    entry = _entry(manifest)[1]
    block = fetch.BLOCK  # what a cut keeps: the whole blocks received
    assert entry["size"] > 5 * block
    served.cuts = [block + block // 2] * fetch.ATTEMPTS  # every connection of the first call is cut
    with pytest.raises(packs.PackError, match=rf"cut {fetch.ATTEMPTS} times .* at {3 * block:,} of .*rerun to resume"):
        train.load_or_train(_tiny_config(), small_train, progress=False)
    assert _nothing_unpacked(instructor)
    part = config.cache_dir() / "runs" / ".downloads" / f"{entry['archive']}.part"
    assert part.stat().st_size == 3 * block
    served.cuts = [2 * block + block // 2]  # the rerun: cut once more, then resumed within the same call
    loaded = train.load_or_train(_tiny_config(), small_train, progress=False)
    ranges = [header for path, header in served.requests if path.endswith(".tar")]
    assert ranges == [None, *(f"bytes={k * block}-" for k in (1, 2, 3, 5))]
    for (name, a), b in zip(run.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert not part.exists()


def test_a_local_run_is_never_overwritten_and_the_pack_not_asked(instructor, small_train, served, capsys):
    run, _, _ = instructor
    local = _student_run_dir(instructor)
    shutil.copytree(run.run_dir, local)
    (local / "mine.txt").write_text("a student's own run")
    train.load_or_train(_tiny_config(), small_train, progress=False)
    assert "Found checkpoint" in capsys.readouterr().out and (local / "mine.txt").read_text() == "a student's own run"
    assert served.requests == [] and fetch.fetch_run(local) is False


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    """A tar member ``name`` of type ``kind`` and its bytes (``forged`` for a file, none for the others)."""
    info, data = tarfile.TarInfo(name), b"forged" if kind == tarfile.REGTYPE else b""
    info.type, info.linkname, info.size = kind, linkname, len(data)
    return info, data


def _forged_pack(folder, members, listed):
    """``folder/forged.tar`` holding ``members``, and a manifest entry listing the first ``listed`` of them
    with their true sha256 and size: only the check of the members themselves can refuse them."""
    folder.mkdir(parents=True)
    with tarfile.open(folder / "forged.tar", "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    digest = {info.name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for info, data in members}
    return folder / "forged.tar", {"files": {info.name: digest[info.name] for info, _ in members[:listed]}}


NOT_INSIDE = r"holds '.*', which is not a plain file inside the run folder .*Nothing was unpacked"


@pytest.mark.parametrize(
    "members, listed, message",
    [
        ([_member("last.pt"), _member("../evil")], 2, NOT_INSIDE),
        ([_member("last.pt"), _member("/tmp/nclab-forged-evil")], 2, NOT_INSIDE),
        ([_member("last.pt", tarfile.SYMTYPE, "../../evil")], 1, NOT_INSIDE),
        ([_member("last.pt", tarfile.LNKTYPE, "/etc/passwd")], 1, NOT_INSIDE),
        ([_member("last.pt", tarfile.CHRTYPE)], 1, NOT_INSIDE),
        ([_member("last.pt"), _member("evil.py")], 1, r"holds \['evil.py', 'last.pt'\], but the manifest lists"),
    ],
    ids=["../ path", "absolute path", "symlink", "hardlink", "device", "not in the manifest"],
)
def test_an_archive_with_a_link_a_device_or_a_path_out_is_refused(tmp_path, members, listed, message):
    archive, entry = _forged_pack(tmp_path / "pack", members, listed)
    (tmp_path / "runs").mkdir()
    with pytest.raises(packs.PackError, match=message):
        fetch._unpack(archive, entry, tmp_path / "runs" / "cifar100-erm-forged")
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == ["pack", "pack/forged.tar", "runs"]  # nothing written, in the runs folder or beside it
    assert not Path("/tmp/nclab-forged-evil").exists()


def test_unpacking_never_replaces_a_run_folder_that_appeared_meanwhile(instructor, tmp_path, monkeypatch):
    _, pack, manifest = instructor
    key, entry = _entry(manifest)
    archive, runs = pack / entry["archive"], tmp_path / "runs"
    runs.mkdir(mode=0o750)
    runs.chmod(0o750)  # whatever the umask
    other = runs / f".{key}.unpacking-{os.getpid()}"  # another machine's, same PID, still unpacking
    other.mkdir()
    (other / "last.pt").write_bytes(b"theirs")
    (runs / key).mkdir()  # empty: os.rename would replace it
    assert fetch._unpack(archive, entry, runs / key) is False and list((runs / key).iterdir()) == []
    (runs / key).rmdir()
    rename = os.rename

    def a_run_appears_first(src, dst):  # the race: after the check, before the rename
        Path(dst).mkdir()
        (Path(dst) / "mine.txt").write_text("trained here meanwhile")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", a_run_appears_first)
    assert fetch._unpack(archive, entry, runs / key) is False
    assert [p.name for p in (runs / key).iterdir()] == ["mine.txt"]
    monkeypatch.undo()
    assert fetch._unpack(archive, entry, runs / "fresh") is True
    assert sorted(p.name for p in (runs / "fresh").iterdir()) == sorted(entry["files"])
    assert stat.S_IMODE((runs / "fresh").stat().st_mode) == 0o750  # the runs folder's, not mkdtemp's 0o700
    assert sorted(p.name for p in runs.iterdir()) == sorted([other.name, key, "fresh"])  # no temporary folder left
    assert (other / "last.pt").read_bytes() == b"theirs"


def test_a_second_process_waits_for_the_download_then_keeps_the_run_it_finds(instructor, served, capsys):
    run, _, manifest = instructor
    run_dir = _student_run_dir(instructor)
    lock = run_dir.parent / ".downloads" / f"{_entry(manifest)[1]['archive']}.lock"
    out = ""
    with ThreadPoolExecutor(1) as pool:
        with fetch._locked(lock, run_dir):  # the first process, downloading
            second = pool.submit(fetch.fetch_run, run_dir, False)
            for _ in range(200):
                out += capsys.readouterr().out
                if "waiting" in out:
                    break
                time.sleep(0.05)
            assert f"Another process is downloading run {run_dir.name}: waiting" in out and not second.done()
            shutil.copytree(run.run_dir, run_dir)  # the first one's run, in place
        assert second.result(timeout=30) is False
    out += capsys.readouterr().out
    assert "appeared meanwhile: kept it" in out and "Downloading run" not in out
    assert [path for path, _ in served.requests] == ["/pack/manifest.json"] and not lock.exists()


def test_a_run_the_pack_lacks_is_trained_with_a_note(instructor, small_train, served, capsys):
    other = train.load_or_train(_tiny_config(epochs=1, snapshot_epochs=()), small_train, progress=False)
    out = capsys.readouterr().out
    assert f"has no run {other.run_dir.name}" in out and "No checkpoint" in out and len(other.history) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_is_a_clear_error_and_trains_only_with_the_fallback(instructor, small_train, served, monkeypatch):
    monkeypatch.setenv("NCLAB_RUNS_URL", f"http://127.0.0.1:{_closed_port()}/pack")
    message = r"Cannot reach the run pack .*online\? Connect .*NCLAB_RUNS_URL='' .*NCLAB_RUNS_FALLBACK=train"
    with pytest.raises(fetch.PackUnavailable, match=message):
        train.load_or_train(_tiny_config(), small_train, progress=False)
    assert _nothing_unpacked(instructor)
    monkeypatch.setenv(fetch.FALLBACK, "train")
    trained = train.load_or_train(_tiny_config(), small_train, progress=False)
    assert trained.run_dir == _student_run_dir(instructor) and len(trained.history) == 2
    assert packs.read_run_info(trained.run_dir)["epochs_done"] == 2


# --- where the pack is named -----------------------------------------------------------------------------------


def test_the_pack_comes_from_the_environment_else_from_config_yml_for_its_profile(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_config.yml").write_text(
        "nclab:\n  runs:\n    url: https://example.org/runs-full\n    profile: full\n"
    )
    monkeypatch.chdir(tmp_path / "notebooks")  # a notebook's kernel runs in notebooks/, the config one folder up
    monkeypatch.delenv("NCLAB_RUNS_URL", raising=False)
    assert config.runs_url("full") == "https://example.org/runs-full"
    assert config.runs_url("smoke") == ""  # a book build's smoke runs never ask the network
    monkeypatch.setenv("NCLAB_RUNS_URL", "http://127.0.0.1:9/pack")
    assert config.runs_url("smoke") == "http://127.0.0.1:9/pack"
    monkeypatch.setenv("NCLAB_RUNS_URL", "")
    assert config.runs_url("full") == ""  # set and empty: no pack
