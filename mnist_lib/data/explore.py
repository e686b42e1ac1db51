"""Summaries of a dataset for exploration: class counts per split, pixel statistics, mean images.

counts = class_counts({"train": y_train, "validation": y_val})   # DataFrame, one column per split
pixel_stats(images)                                              # {'mean', 'std', 'zero_fraction'}
mean_images(images, labels)                                      # 10 x 28 x 28 float tensor
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ..core.config import N_CLASSES


def class_counts(labels_by_split: dict[str, torch.Tensor], classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Examples per class (a row per class, named if `classes` are given, plus a 'total' row), one column per split."""
    n = len(classes) if classes is not None else N_CLASSES
    df = pd.DataFrame({name: torch.bincount(y, minlength=n).numpy() for name, y in labels_by_split.items()})
    if classes is not None:
        df.index = list(classes)
    df.index.name = "class"
    df.loc["total"] = df.sum()
    return df


def class_fractions(counts: pd.DataFrame) -> pd.DataFrame:
    """Each split's class counts as fractions of that split (the 'total' row dropped)."""
    per_class = counts.drop(index="total")
    return per_class / per_class.sum()


def pixel_stats(images: torch.Tensor) -> dict[str, float]:
    """Mean and standard deviation of all pixels scaled to [0, 1], and the fraction that are 0."""
    x = images.float().div(255.0)
    return {"mean": x.mean().item(), "std": x.std().item(), "zero_fraction": (images == 0).float().mean().item()}


def mean_images(images: torch.Tensor, labels: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """The average image of each class (n_classes x 28 x 28, values in [0, 255])."""
    x = images.float()
    return torch.stack([x[labels == c].mean(0) for c in range(n_classes)])


def samples_per_class(labels: torch.Tensor, n: int, seed: int = 0, n_classes: int = N_CLASSES) -> torch.Tensor:
    """Indices of `n` random examples of each class, class by class (n_classes * n indices)."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(n_classes):
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(picks)
