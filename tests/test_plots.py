"""Figures draw the numbers they are given and are written as PNG files."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from mnist_lib.records import plots  # noqa: E402
from mnist_lib.training.evaluate import per_class_metrics  # noqa: E402

HISTORY = [
    {"epoch": 1, "train_loss": 0.5, "train_acc": 0.85, "val_loss": 0.3, "val_acc": 0.91, "lr": 1e-3, "seconds": 1.0},
    {"epoch": 2, "train_loss": 0.2, "train_acc": 0.94, "val_loss": 0.15, "val_acc": 0.95, "lr": 1e-3, "seconds": 1.0},
]


def test_curves_plot_the_history():
    for fig, metric in ((plots.plot_loss_curves(HISTORY), "loss"), (plots.plot_accuracy_curves(pd.DataFrame(HISTORY)), "acc")):
        lines = fig.axes[0].get_lines()
        assert [list(line.get_ydata()) for line in lines] == [
            [r[f"train_{metric}"] for r in HISTORY],
            [r[f"val_{metric}"] for r in HISTORY],
        ]
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["training", "validation"]


def test_confusion_heatmap_annotates_every_count(tmp_path):
    cm = torch.arange(100).reshape(10, 10)
    fig = plots.plot_confusion_matrix(cm)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [str(v) for v in cm.flatten().tolist()]
    path = plots.save_figure(fig, tmp_path / "cm.png", close=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_class_and_digit_grid(tmp_path):
    cm = torch.diag(torch.full((10,), 9)) + 1
    fig = plots.plot_per_class_accuracy(per_class_metrics(cm))
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [10 / 19] * 10)
    mistakes = pd.DataFrame({"index": [3, 1], "true": [3, 1], "pred": [5, 7], "confidence": [0.9, 0.8]})
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    grid = plots.plot_misclassified(images, mistakes, ncols=4)
    assert [t.get_text() for t in grid.axes[0].texts] == ["3→5 (0.90)", "1→7 (0.80)"]
    drawn = np.asarray(grid.axes[0].images[0].get_array())
    pad, cell = plots.GRID_PAD, 28 + plots.GRID_PAD
    assert drawn.shape == (pad + cell, pad + 2 * cell)  # two mistakes: one row of two tiles
    for col, index in enumerate((3, 1)):  # each tile is its image scaled to its own range, in the order of the mistakes
        x = images[index].double()
        expected = (x - x.min()) / (x.max() - x.min())
        np.testing.assert_allclose(drawn[pad : pad + 28, pad + col * cell : pad + col * cell + 28], expected.numpy(), atol=1e-6)
    assert drawn[:pad].max() == 0 and drawn[:, pad + 28 : pad + cell].max() == 0  # white (gray_r) padding between tiles
    plots.save_figure(grid, tmp_path / "sub" / "grid.png", close=True)
    assert (tmp_path / "sub" / "grid.png").is_file()
