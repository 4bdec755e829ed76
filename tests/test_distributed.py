"""DistributedDataParallel under torchrun, on the CPU with gloo: the same weights as one process with the same
global batch, an interrupted run that resumes, sharded loaders, and ``nclab train`` executing a notebook
on two ranks.

Each run is a subprocess (``tests/distributed_run.py``, one thread per process, as torchrun sets it):
ResNet-18 of width 8, 256 stand-in images, 3 epochs of 8 batches of 32 with augmentation, BatchNorm in
eval mode (PyTorch's SyncBatchNorm is GPU-only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from nclab import distributed
from nclab.data import GpuLoader, load

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "distributed_run.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")

# One process and two differ by float rounding only (the two processes sum the gradients of their shards,
# the one process takes the gradient of the whole batch), but the entropy regulariser's nearest neighbours
# turn rounding into small jumps, which grow over 24 SGD steps. Measured (weights of magnitude up to ~1):
# weights 1.7e-3 apart at most; training loss 2e-7 relative in epoch 1, 2.4e-4 after; the entropy term's
# epoch means 9e-5 relative in epoch 1, 4.2e-3 after. Without the gathered batch (each process's loss on
# its own 16 images) the losses differ by 1.5e-2 in epoch 1 and ≥ 1.9e-3 after, the entropy by ≥ 3e-2.
WEIGHT_TOLERANCE = 1e-2


def _environment(tmp: Path, **extra) -> dict:
    return {
        **os.environ,
        "NCLAB_DATA": str(tmp / "data"),
        "NCLAB_CACHE": str(tmp / "cache"),
        "OMP_NUM_THREADS": "1",
    } | extra


def _launch(tmp: Path, processes: int, name: str, runs: str, check: bool = True, **extra):
    """Run distributed_run.py in ``processes`` processes (1: plain python, no torchrun); → (result, saved)."""
    out = tmp / f"{name}.pt"
    if processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        command = [str(TORCHRUN), "--nproc-per-node", str(processes), "--master-port", str(_free_port()), str(SCRIPT)]
    result = subprocess.run(
        [*command, str(tmp / runs), str(out)],
        env=_environment(tmp, **extra),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[:4000] + result.stderr[-3000:]
    return result, (torch.load(out, weights_only=True) if out.exists() else None)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process run, the two-process run, and a two-process run crashed at epoch 2 then resumed."""
    tmp = tmp_path_factory.mktemp("ddp")
    load("cifar100", "train", size=256, standin=True, root=tmp / "data")  # written once, before the processes
    one = _launch(tmp, 1, "one", "runs-one")[1]
    two = _launch(tmp, 2, "two", "runs-two")[1]
    crashed, nothing = _launch(tmp, 2, "resumed", "runs-resumed", check=False, NCLAB_TEST_CRASH="2")
    checkpoint = torch.load(next((tmp / "runs-resumed").glob("*/last.pt")), weights_only=True)
    resumed_result, resumed = _launch(tmp, 2, "resumed", "runs-resumed")
    return {
        "one": one,
        "two": two,
        "crashed": crashed,
        "nothing": nothing,
        "epoch_at_crash": checkpoint["epoch"],
        "resumed_result": resumed_result,
        "resumed": resumed,
        "tmp": tmp,
    }


def test_two_processes_learn_what_one_process_learns_with_the_same_global_batch(runs):
    one, two = runs["one"], runs["two"]
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert _max_difference(one["model"], two["model"]) < WEIGHT_TOLERANCE
    first_one, first_two = one["history"][0], two["history"][0]
    assert first_one["train_loss"] == pytest.approx(first_two["train_loss"], rel=1e-5)  # the loss of the whole batch
    assert first_one["entropy"] == pytest.approx(first_two["entropy"], rel=1e-3)
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["entropy"] == pytest.approx(b["entropy"], rel=1e-2)
        assert abs(a["train_acc"] - b["train_acc"]) <= 2 / 256  # (equal when measured)


def test_an_interrupted_two_process_run_resumes_to_the_uninterrupted_weights(runs):
    assert runs["crashed"].returncode != 0 and runs["nothing"] is None
    assert "crashing at epoch 2" in runs["crashed"].stdout + runs["crashed"].stderr
    assert runs["epoch_at_crash"] == 1  # rank 0 wrote epoch 1; the crash came in the first step of epoch 2
    assert "resuming" in runs["resumed_result"].stdout
    assert [r["epoch"] for r in runs["resumed"]["history"]] == [1, 2, 3]
    assert _max_difference(runs["resumed"]["model"], runs["two"]["model"]) == 0
    for a, b in zip(runs["resumed"]["history"], runs["two"]["history"], strict=True):
        assert (a["train_loss"], a["train_acc"]) == (b["train_loss"], b["train_acc"])


def test_only_rank_0_writes_and_prints(runs):
    folder = next((runs["tmp"] / "runs-two").iterdir())
    assert sorted(path.name for path in folder.iterdir()) == ["epoch_0001.pt", "epoch_0003.pt", "last.pt", "run.json"]
    assert runs["resumed_result"].stdout.count("resuming") == 1  # one message, not one per rank


def test_the_shards_of_a_batch_are_the_single_process_batch():
    data = load("cifar100", "train", size=200, standin=True)
    whole = GpuLoader(data, 40, shuffle=True, augment=True, drop_last=True, seed=3)
    shards = [
        GpuLoader(data, 40, shuffle=True, augment=True, drop_last=True, seed=3, rank=r, world_size=4) for r in range(4)
    ]
    for loader in (whole, *shards):
        loader.set_epoch(5)
    for (x, y, extras), *parts in zip(whole, *shards, strict=True):
        assert [len(part[1]) for part in parts] == [10] * 4
        assert torch.equal(x, torch.cat([part[0] for part in parts]))
        assert torch.equal(y, torch.cat([part[1] for part in parts]))
        assert torch.equal(extras["index"], torch.cat([part[2]["index"] for part in parts]))


def test_a_loader_that_cannot_be_sharded_says_why():
    data = load("cifar100", "train", size=200, standin=True)
    with pytest.raises(ValueError, match="multiple of world_size"):
        GpuLoader(data, 30, shuffle=True, augment=False, drop_last=True, rank=0, world_size=4)
    with pytest.raises(ValueError, match="drop_last=True"):
        GpuLoader(data, 40, shuffle=False, augment=False, drop_last=False, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank must lie"):
        GpuLoader(data, 40, shuffle=False, augment=False, drop_last=True, rank=4, world_size=4)


def test_max_batches_limits_every_pass():
    data = load("cifar100", "train", size=200, standin=True)
    loader = GpuLoader(data, 16, shuffle=True, augment=False, drop_last=True, max_batches=3)
    assert len(loader) == 3 and len(list(loader)) == 3
    with pytest.raises(ValueError, match="max_batches"):
        GpuLoader(data, 16, shuffle=True, augment=False, drop_last=True, max_batches=0)


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched() and not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    tensor = torch.arange(6.0, requires_grad=True)
    assert distributed.gather(tensor) is tensor
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu")


def test_world_size_without_torchrun_says_what_to_do(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="start the processes with torchrun"):
        distributed.setup(torch.device("cpu"))


def _tiny_notebook(folder: Path) -> None:
    code = """
import json, os
from nclab import distributed, train
from nclab.data import load

train_set = load("cifar100", "train", size=128, standin=True)
config = train.TrainConfig(width=8, epochs=2, batch_size=32, lr=0.02, augment=False)
run = train.load_or_train(config, train_set, device="cpu", progress=False)
with open(f"rank{distributed.rank()}.json", "w") as f:
    json.dump({"world_size": distributed.world_size(), "epochs": len(run.history), "dir": str(run.run_dir)}, f)
"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbformat.write(notebook, folder / "99_tiny.ipynb")


def test_nclab_train_under_torchrun_trains_a_notebook_on_two_ranks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _tiny_notebook(folder)
    load("cifar100", "train", size=128, standin=True, root=tmp_path / "data")
    command = [str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "nclab", "train"]
    result = subprocess.run(
        [*command, "--notebooks", str(folder), "--notebook", "99", "--profile", "smoke"],
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[:4000] + result.stderr[-3000:]
    reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]  # both kernels trained together
    assert reports[0] == reports[1] and reports[0]["epochs"] == 2
    assert torch.load(Path(reports[0]["dir"]) / "last.pt", weights_only=True)["epoch"] == 2
    assert result.stdout.count("every run is in") == 1  # rank 0 alone reports


def test_setup_takes_the_gpu_of_its_rank_and_leaves_a_plain_cuda_alone(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert distributed.setup(torch.device("cuda")) == torch.device("cuda")  # one GPU, no torchrun (Colab)
    assert chosen == []
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process torchrun started for the second GPU
    assert distributed.setup(torch.device("cuda")) == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]


def test_downloads_into_one_folder_take_turns_and_a_read_only_folder_needs_no_lock(tmp_path):
    import threading

    from nclab.data import download_lock

    order, holding = [], threading.Event()

    def second():
        holding.wait()
        with download_lock(tmp_path):  # waits for the first to finish
            order.append("second")

    other = threading.Thread(target=second)
    other.start()
    with download_lock(tmp_path):
        holding.set()
        other.join(0.5)  # still blocked on the lock
        order.append("first")
    other.join(10)
    assert order == ["first", "second"]

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.geteuid() != 0:  # root writes anywhere: the lock is then simply taken
            with download_lock(read_only):
                pass
            assert not (read_only / ".nclab-download.lock").exists()
        with download_lock(read_only / "missing" / "deeper"):  # cannot be created: nobody waits, no error
            pass
    finally:
        read_only.chmod(0o755)


def test_a_stale_temporary_checkpoint_is_removed_and_a_live_writers_is_kept(tmp_path):
    from nclab.train.loop import _writer_alive

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not _writer_alive(tmp_path / f"last.pt.{int(dead.stdout)}.tmp")  # that process has ended
    assert _writer_alive(tmp_path / f"last.pt.{os.getpid()}.tmp")  # another job, still writing
    assert not _writer_alive(tmp_path / "last.pt.tmp")  # an older nclab's name


def test_the_rng_state_of_a_cpu_run_holds_no_gpu_state():
    from nclab import checkpoints

    state = checkpoints.rng_state(torch.device("cpu"))
    assert state["cuda"] == []
    checkpoints.set_rng_state(state, torch.device("cpu"))
