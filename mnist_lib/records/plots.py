"""Figures: learning curves, confusion matrix, per-class accuracy, digits, sweeps, config comparisons.

Each function returns a matplotlib Figure; `save_figure` writes it as a PNG
atomically (figures/ by default for the committed ones, the run directory for
the CLI's). From a notebook, the returned figure displays inline as usual.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from ..data.explore import class_fractions
from .runs import atomic_write

DPI = 110


def _history_frame(history) -> pd.DataFrame:
    return history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))


def _curve(history, metric: str, ylabel: str, title: str, ax=None):
    df = _history_frame(history)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(df["epoch"], df[f"train_{metric}"], marker="o", ms=3, label="training")
    ax.plot(df["epoch"], df[f"val_{metric}"], marker="o", ms=3, label="validation")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.figure.tight_layout()
    return ax.figure


def plot_loss_curves(history, ax=None):
    """Training vs validation cross-entropy per epoch (history: rows of metrics.csv)."""
    return _curve(history, "loss", "cross-entropy loss", "Training vs validation loss", ax)


def plot_accuracy_curves(history, ax=None):
    """Training vs validation accuracy per epoch."""
    return _curve(history, "acc", "accuracy", "Training vs validation accuracy", ax)


def class_names(classes: Sequence[str] | None, n: int) -> list[str]:
    """The dataset's class names, or the labels 0..n-1 as text (MNIST's names are its digits)."""
    return list(classes) if classes is not None else [str(c) for c in range(n)]


def _rotate_long_names(ax, names: Sequence[str]) -> None:
    if max(map(len, names)) > 2:  # Fashion-MNIST's "Ankle boot" would overlap its neighbours
        ax.tick_params(axis="x", labelrotation=45)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")


def plot_confusion_matrix(confusion: torch.Tensor, title: str = "Confusion matrix", classes: Sequence[str] | None = None):
    """Seaborn heatmap of counts [true, predicted], labelled with the class names; the diagonal is dimmed so errors stand out."""
    cm = confusion.cpu().numpy()
    names = class_names(classes, len(cm))
    fig, ax = plt.subplots(figsize=(6.5, 5.5) if classes is None else (8, 7))
    off_diag = cm.copy()
    off_diag[range(len(cm)), range(len(cm))] = 0
    sns.heatmap(
        off_diag, annot=cm, fmt="d", cmap="Reds", cbar_kws={"label": "errors"}, ax=ax, linewidths=0.5, linecolor="white",
        xticklabels=names, yticklabels=names,
    )  # fmt: skip
    ax.set(xlabel="predicted", ylabel="true", title=title)
    _rotate_long_names(ax, names)
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(per_class: pd.DataFrame, title: str = "Per-class accuracy (recall)", classes: Sequence[str] | None = None):
    """Bar chart of each class's recall, i.e. the accuracy on that class, labelled with the class names."""
    names = class_names(classes, len(per_class))
    fig, ax = plt.subplots(figsize=(6, 3.6) if classes is None else (7, 4.2))
    sns.barplot(x=names, y=per_class["recall"].to_numpy(), ax=ax, color="tab:blue")
    low = max(0.0, float(per_class["recall"].min()) - 0.02)
    ax.set(xlabel="class", ylabel="accuracy", title=title, ylim=(low, 1.0))
    _rotate_long_names(ax, names)
    for i, v in enumerate(per_class["recall"]):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    return fig


GRID_PAD = 12  # pixels between tiles in a digit grid: room for two 8-point caption lines above each
GRID_TILE_INCHES = 1.3  # width of one tile and its padding on the page
GRID_CAPTION_CHARS = 18  # captions wrap at spaces to lines of about this many characters (8 points in 1.3 inches)


def plot_digit_grid(images: torch.Tensor, titles: Sequence[str], ncols: int = 8, title: str | None = None, signed: bool = False):
    """Grid of 28x28 images (uint8 or float), each scaled to its own range and captioned above.

    The tiles are laid out by torchvision.utils.make_grid and drawn as one image;
    the captions go into the padding above each tile. `signed`: weights, drawn
    blue (negative) to red (positive) with 0 white, each tile scaled by its largest |value|.
    """
    from torchvision.utils import make_grid  # here, not at the top: importing torchvision costs ~2 s per process

    n = len(images)
    ncols = max(1, min(ncols, n))
    tiles = images.reshape(-1, 1, 28, 28).detach().cpu().float()
    if signed:  # 0 maps to 0.5: white in RdBu_r, as is the padding
        tiles = 0.5 + tiles / (2 * tiles.flatten(1).abs().amax(1).clamp_min(1e-12)).view(-1, 1, 1, 1)
    pad = 0.5 if signed else 0.0  # 0 is white in gray_r
    # scale_each: each tile to its own min..max, as imshow does per axes
    grid = (
        make_grid(tiles, nrow=ncols, padding=GRID_PAD, normalize=not signed, scale_each=True, pad_value=pad)[0]
        if n
        else torch.full((GRID_PAD, GRID_PAD), pad)
    )
    inches_per_pixel = GRID_TILE_INCHES / (28 + GRID_PAD)
    width, image_height = grid.shape[1] * inches_per_pixel, grid.shape[0] * inches_per_pixel
    title_height = 0.45 if title else 0.0
    fig = plt.figure(figsize=(width, image_height + title_height))
    ax = fig.add_axes((0.0, 0.0, 1.0, image_height / (image_height + title_height)))  # the image fills the page below the title
    ax.imshow(grid.numpy(), cmap="RdBu_r" if signed else "gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.axis("off")
    cell = 28 + GRID_PAD
    for i, caption in enumerate(titles[:n]):
        if caption:
            row, col = divmod(i, ncols)
            text = textwrap.fill(caption, GRID_CAPTION_CHARS, break_long_words=False, break_on_hyphens=False)
            ax.text(col * cell + GRID_PAD + 14, row * cell + GRID_PAD - 1, text, ha="center", va="bottom", fontsize=8, linespacing=1.0)
    if title:
        fig.suptitle(title, y=1.0 - 0.1 / (image_height + title_height), va="top")
    return fig


def plot_misclassified(images: torch.Tensor, mistakes: pd.DataFrame, n: int = 32, ncols: int = 8, classes: Sequence[str] | None = None):
    """The `n` most confident mistakes: `images` is the split's raw images, `mistakes` from evaluate.misclassified."""
    top = mistakes.head(n)
    names = class_names(classes, 1 + int(max(top["true"].max(), top["pred"].max())) if len(top) else 0)
    titles = [f"{names[t]}→{names[p]} ({c:.2f})" for t, p, c in zip(top["true"], top["pred"], top["confidence"], strict=True)]
    return plot_digit_grid(images[torch.tensor(top["index"].to_numpy())], titles, ncols, "Misclassified: true→predicted (confidence)")


def save_figure(fig, path: str | Path, close: bool = False) -> Path:
    """Write `fig` as a PNG at `path`, atomically; close it if asked (scripts, not notebooks)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    atomic_write(path, buf.getvalue())
    if close:
        plt.close(fig)
    return Path(path)


def plot_class_counts(counts: pd.DataFrame, title: str = "Class balance per split", classes: Sequence[str] | None = None):
    """Grouped bars of each split's class fractions, so splits of different sizes compare."""
    frac = class_fractions(counts)
    frac.index = class_names(classes, len(frac))
    frac = frac.rename_axis("class").reset_index().melt(id_vars="class", var_name="split", value_name="fraction")
    fig, ax = plt.subplots(figsize=(7, 3.6) if classes is None else (8, 4.2))
    sns.barplot(data=frac, x="class", y="fraction", hue="split", ax=ax)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title="split")
    ax.set(xlabel="class", ylabel="fraction of split", title=title)
    _rotate_long_names(ax, list(frac["class"]))
    fig.tight_layout()
    return fig


def plot_mean_images(means: torch.Tensor, title: str = "Mean image of each class", classes: Sequence[str] | None = None):
    """The class-mean images in one row, captioned with the class names."""
    return plot_digit_grid(means, class_names(classes, len(means)), ncols=len(means), title=title)


def plot_pixel_histogram(images: torch.Tensor, title: str = "Pixel intensities"):
    """Histogram of raw pixel values (log scale: most pixels are background)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(images.flatten().numpy(), bins=64, range=(0, 255), color="tab:blue", log=True)
    ax.set(xlabel="pixel value (0 = background)", ylabel="pixels (log scale)", title=title)
    fig.tight_layout()
    return fig


def save_figure_in(fig, directory: str | Path | None, name: str):
    """Save `fig` as directory/name when a directory is given (notebooks: "" means display only); return `fig`."""
    if directory is not None:
        save_figure(fig, Path(directory) / name)
    return fig


def plot_sweep_params(trials: pd.DataFrame, params: Sequence[str]):
    """Validation accuracy of each completed trial against each searched parameter, by stage."""
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], params, strict=True):
        numeric = pd.api.types.is_numeric_dtype(trials[name])
        sns.stripplot(data=trials, x=name, y="best_val_acc", hue="stage", ax=ax, native_scale=numeric, dodge=False)
        if numeric and (trials[name] > 0).all():
            ax.set_xscale("log")
        ax.tick_params(axis="x", labelrotation=30)
        ax.set(ylabel="best validation accuracy")
    fig.suptitle("Validation accuracy vs each parameter")
    fig.tight_layout()
    return fig


def plot_sweep_progress(trials: pd.DataFrame):
    """Best validation accuracy so far against trials finished, in the order they were run."""
    done = trials[trials["status"] == "completed"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(range(1, len(done) + 1), done["best_val_acc"], "o", ms=3, alpha=0.5, label="trial")
    ax.step(range(1, len(done) + 1), done["best_val_acc"].cummax(), where="post", label="best so far")
    ax.set(xlabel="trial (grid, then refinement)", ylabel="validation accuracy", title="Sweep progress")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_sweep_heatmap(trials: pd.DataFrame, row: str, col: str):
    """Grid of a two-parameter sweep: validation accuracy per cell."""
    table = trials.pivot_table(index=row, columns=col, values="best_val_acc", aggfunc="max")
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    sns.heatmap(table, annot=True, fmt=".4f", cmap="viridis", ax=ax)
    ax.set(title="Grid: best validation accuracy")
    fig.tight_layout()
    return fig


def plot_compared_curves(histories: dict[str, dict[int, pd.DataFrame]]):
    """Validation accuracy and loss per epoch of several configs (or single runs): mean over seeds, min-max band."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    for label, runs in histories.items():
        frame = pd.concat(runs.values()).groupby("epoch")
        for ax, metric in zip(axes, ("val_acc", "val_loss"), strict=True):
            mean = frame[metric].mean()
            line = ax.plot(mean.index, mean, label=f"{label} ({len(runs)} seeds)" if len(runs) > 1 else label)[0]
            ax.fill_between(mean.index, frame[metric].min(), frame[metric].max(), color=line.get_color(), alpha=0.2)
    bests = [pd.concat(runs.values())["val_acc"].max() for runs in histories.values()]  # each config's best, e.g. MNIST's and Fashion's
    axes[0].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy", ylim=(min(bests) - 0.025, max(bests) + 0.002))
    axes[1].set(xlabel="epoch", ylabel="cross-entropy loss", title="Validation loss", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_augmented_samples(versions: torch.Tensor, title: str = "Augmentation: each original, then random draws"):
    """Rows of digits from augment.augmented_versions (k, 1 + n, 28, 28): the original, then n augmented copies."""
    k, m = versions.shape[:2]
    titles = (["original"] + [f"draw {i}" for i in range(1, m)]) + [""] * (m * (k - 1))
    return plot_digit_grid(versions.reshape(k * m, 28, 28), titles, ncols=m, title=title)


def plot_speedrun(rows: pd.DataFrame, target: float, time_limit: float | None = None, title: str = "Speedrun: one point per seed"):
    """A speedrun's seeds (workflows/speedrun.py's summary.csv): accuracy against the target, seconds against the limit."""
    fig, (acc_ax, time_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, column, line, label, scale in (
        (acc_ax, "acc", target, "target", 100.0),
        (time_ax, "seconds", time_limit, "time limit", 1.0),
    ):
        values = rows[column] * scale
        ax.plot(range(len(values)), values, "o", color="tab:blue", label="seed")
        ax.axhline(values.mean(), color="tab:blue", lw=1, ls="--", label=f"mean {values.mean():.2f}")
        if line:
            ax.axhline(line * scale, color="tab:red", lw=1.2, label=f"{label} {line * scale:g}")
        ax.set_xticks(range(len(values)), [str(s) for s in rows["seed"]])
        ax.set(xlabel="seed", ylabel="accuracy (%)" if column == "acc" else "seconds (train + test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_embedding(
    points: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], title: str = "Last hidden layer: two principal components"
):
    """A 2-D embedding (inspection.pca_2d) of validation images, one colour per class."""
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    palette = sns.color_palette("tab10", len(classes))
    for c, name in enumerate(classes):
        pts = points[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.5, color=palette[c % len(palette)], label=name, rasterized=True)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.legend(markerscale=4, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def plot_reliability(diagrams: dict[str, list[dict]], title: str = "Reliability diagram (test set)"):
    """Accuracy against confidence per bin (inspection.reliability), one line per label; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    for label, rows in diagrams.items():
        used = [r for r in rows if r["count"]]
        ax.plot([r["confidence"] for r in used], [r["accuracy"] for r in used], marker="o", ms=4, label=label)
    ax.set(xlabel="confidence (mean of the bin)", ylabel="accuracy", title=title, xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_robustness(curves: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]], units: dict[str, str]):
    """Accuracy against perturbation strength: one panel per perturbation or attack (keys of `units`, the x-axis labels), one
    line per run; curves[run][kind] = (levels, accuracies)."""
    kinds = list(units)
    ncols = 3
    nrows = -(-len(kinds) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.2 * nrows), squeeze=False)
    for ax, kind in zip(axes.flat, kinds, strict=False):
        for run, by_kind in curves.items():
            levels, accs = by_kind[kind]
            ax.plot(levels, [100 * a for a in accs], marker="o", ms=3, label=run)
        ax.set(xlabel=units[kind], ylabel="accuracy (%)", title=kind, ylim=(0, 101))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(kinds) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
