"""Summaries of the data for exploration: class counts per split, pixel statistics, mean digits.

counts = class_counts({"train": y_train, "validation": y_val})   # DataFrame, one column per split
pixel_stats(images)                                              # {'mean', 'std', 'zero_fraction'}
mean_images(images, labels)                                      # 10 x 28 x 28 float tensor
"""

from __future__ import annotations

import pandas as pd
import torch

from .config import N_CLASSES


def class_counts(labels_by_split: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Examples per class (rows 0-9, plus a 'total' row), one column per split."""
    df = pd.DataFrame({name: torch.bincount(y, minlength=N_CLASSES).numpy() for name, y in labels_by_split.items()})
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


def mean_images(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The average image of each class (10 x 28 x 28, values in [0, 255])."""
    x = images.float()
    return torch.stack([x[labels == c].mean(0) for c in range(N_CLASSES)])


def samples_per_class(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of `n` random examples of each class, class by class (10 * n indices)."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(N_CLASSES):
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return torch.cat(picks)
