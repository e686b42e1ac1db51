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
    grid = plots.plot_misclassified(torch.zeros(5, 28, 28, dtype=torch.uint8), mistakes, ncols=4)
    assert [ax.get_title() for ax in grid.axes[:2]] == ["3→5 (0.90)", "1→7 (0.80)"]
    plots.save_figure(grid, tmp_path / "sub" / "grid.png", close=True)
    assert (tmp_path / "sub" / "grid.png").is_file()
