"""One small training run through ``nclab.train.load_or_train``, for tests/test_distributed.py.

    python tests/distributed_run.py RUNS OUT                              # one process
    torchrun --nproc-per-node 2 tests/distributed_run.py RUNS OUT         # two processes, gloo on the CPU

ResNet-18 of width 8 on 256 stand-in images (``$NCLAB_DATA``, written beforehand by the test), 3 epochs of
8 global batches of 32 with augmentation, cross-entropy + 0.05 × the entropy regulariser of notebook 05 (a
loss that couples the samples of a batch), BatchNorm kept in eval mode (PyTorch has no SyncBatchNorm on the
CPU: with BatchNorm in train mode each process would normalise its shard with its own statistics). Rank 0
writes the final weights and the history to OUT (a ``torch.save`` file). ``NCLAB_TEST_CRASH=E`` makes rank
1 (or the only process) fail at the first step of epoch E: an interrupted run.
"""

from __future__ import annotations

import os
import sys
import types

import torch
import torch.nn as nn

from nclab import distributed, methods, train
from nclab.data import load
from nclab.methods.control import ControlLoss


class CrashAt(methods.Hook):
    """Raises at the first step of epoch ``$NCLAB_TEST_CRASH`` on the last rank (nothing when unset)."""

    def __init__(self):
        self.epoch = 1  # the epoch under way (not checkpointed: only the first, crashing run uses it)

    def after_step(self, out, y) -> None:
        crash = os.environ.get("NCLAB_TEST_CRASH")
        if crash and self.epoch == int(crash) and distributed.rank() == distributed.world_size() - 1:
            raise SystemExit(f"rank {distributed.rank()}: crashing at epoch {self.epoch}, as asked")

    def end_epoch(self, epoch, model, train_loader):
        self.epoch = epoch + 1


def frozen_batchnorm_model(config, train_set) -> nn.Module:
    model = methods.standard_model(config, train_set)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # train() leaves it in eval mode: running statistics only
            module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)
    return model


def training(config, train_set):
    """Cross-entropy plus the entropy regulariser of notebook 05, whose nearest-neighbour distances couple the
    samples of a batch: two processes learn what one does only if the loss sees the whole batch."""
    return ControlLoss(alpha=0.05, label_smoothing=0.0), [CrashAt()]


METHOD = methods.Method("frozen-bn", build_model=frozen_batchnorm_model, training=training)


def main(runs: str, out: str) -> None:
    train_set = load("cifar100", "train", size=256, standin=True)
    config = train.TrainConfig(
        method=METHOD, width=8, epochs=3, batch_size=32, lr=0.02, augment=True, snapshot_epochs=(1, 3)
    )
    run = train.load_or_train(config, train_set, device="cpu", root=runs, progress=False)
    if distributed.is_main():
        torch.save({"model": run.model.state_dict(), "history": run.history, "ranks": distributed.world_size()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
