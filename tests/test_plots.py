import matplotlib.pyplot as plt
import numpy as np
import pytest

from nclab import data, plots

HISTORY = [{"epoch": e, "lr": 0.1 / e, "train_loss": 2.0 / e, "train_acc": 0.3 * e, "test_loss": 2.2 / e,
            "test_acc": 0.25 * e} for e in (1, 2, 3)]


def test_history_frame_has_one_row_per_run_epoch_and_split():
    frame = plots.history_frame({"A": HISTORY, "B": HISTORY[:2]})
    assert len(frame) == 2 * 3 + 2 * 2
    a_test = frame.query("run == 'A' and split == 'test'").sort_values("epoch")
    assert a_test["accuracy"].tolist() == [0.25, 0.5, 0.75]


def test_plot_history_draws_loss_accuracy_and_lr():
    fig = plots.plot_history({"A": HISTORY, "B": HISTORY}, title="t")
    loss, accuracy, lr = fig.axes[:3]
    assert loss.get_yscale() == "log" and lr.get_yscale() == "log"
    assert accuracy.get_ylim() == (0, 1)
    plotted = sorted(float(y) for line in accuracy.get_lines() for y in line.get_ydata() if len(line.get_xdata()) == 3)
    assert plotted[-1] == pytest.approx(0.9)                                                # train acc at epoch 3
    plt.close(fig)


def test_show_images_undoes_the_normalisation(small_train):
    loader = data.GpuLoader(small_train, 4, shuffle=False, augment=False, drop_last=True, device="cpu")
    x, y = next(iter(loader))
    fig = plots.show_images(x, y, small_train.classes, count=4, normalized=True)
    shown = fig.axes[0].get_images()[0].get_array()
    expected = small_train.images[0].permute(1, 2, 0).float().numpy() / 255
    assert np.allclose(shown, expected, atol=1e-3)
    assert fig.axes[0].get_title() == small_train.classes[int(y[0])]
    plt.close(fig)
    fig = plots.show_images(small_train, count=3)
    assert sum(bool(ax.get_images()) for ax in fig.axes) == 3
    plt.close(fig)
