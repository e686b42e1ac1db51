"""Seeded, stratified train/validation split of a dataset's training file (MNIST's 60k by default), normalized.

    data = prepare_data(Config())        # 54,000 train / 6,000 val, on the CPU
    data.x_train.shape                   # (54000, 784), float32, standardized
    prepare_data(Config(dataset="fashion-mnist"))   # the same split rule on Fashion-MNIST

Mean and std come from the training split only, of the config's own dataset. The test set is not read here:
`load_test` is the one explicit entry point for the final evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..core import datasets
from ..core.config import N_CLASSES, Config
from ..core.errors import UserError
from .idx import read_split


def stratified_split(labels: torch.Tensor, val_size: int, seed: int, n_classes: int = N_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train_idx, val_idx), each class split in proportion to its frequency.

    Per-class validation counts use largest-remainder rounding so they add up
    to exactly `val_size`. The same labels and seed always give the same split.
    """
    n = len(labels)
    if not 0 < val_size < n:
        raise UserError(f"val_size must be between 1 and {n - 1}, got {val_size}")
    g = torch.Generator().manual_seed(seed)
    counts = torch.bincount(labels, minlength=n_classes)
    exact = counts.double() * val_size / n
    per_class = exact.floor().long()
    short = val_size - int(per_class.sum())
    if short:  # largest remainders first, ties to the lower class index
        order = torch.argsort(exact - per_class, descending=True, stable=True)
        per_class[order[:short]] += 1
    train_parts, val_parts = [], []
    for c in range(n_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_parts.append(idx[: per_class[c]])
        train_parts.append(idx[per_class[c] :])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def split_hash(val_idx: torch.Tensor) -> str:
    """Short fingerprint of the validation indices: equal hashes, same split."""
    return hashlib.sha256(val_idx.sort().values.to(torch.int64).numpy().tobytes()).hexdigest()[:12]


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 N x 28 x 28 images -> float32 N x 784, scaled to [0, 1] then standardized."""
    return images.flatten(1).float().div_(255.0).sub_(mean).div_(std)


@dataclass
class Data:
    """Tensors ready for training, plus what a run record needs to reproduce them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    mean: float  # pixel mean of the training split, on the [0, 1] scale
    std: float  # pixel std of the training split, on the [0, 1] scale
    split_hash: str
    train_idx: torch.Tensor  # indices into the training file
    val_idx: torch.Tensor
    dataset: str = "mnist"  # the registered dataset (datasets.py) these come from

    def to(self, device: torch.device | str) -> Data:
        """A copy with all tensors on `device` (moved once, before training)."""
        tensors = ("x_train", "y_train", "x_val", "y_val")
        return Data(**{k: v.to(device) if k in tensors else v for k, v in vars(self).items()})


def prepare_data(config: Config, data_dir=None, max_train_samples: int | None = None, validation: bool = True) -> Data:
    """Split, subsample (optional) and normalize the training file per `config`.

    `max_train_samples` keeps a stratified-random subset of the training split
    (for quick runs); the validation split stays whole so metrics compare.
    `validation=False` trains on the whole training file (60k for MNIST), with an
    empty validation split: a speedrun record's data, where nothing is chosen.
    """
    images, labels = read_split("train", data_dir, config.dataset)
    n_classes = datasets.DATASETS[config.dataset].n_classes
    if validation:
        train_idx, val_idx = stratified_split(labels, config.val_size, config.split_seed, n_classes)
    else:
        train_idx, val_idx = torch.arange(len(labels)), torch.zeros(0, dtype=torch.long)
    if max_train_samples is not None:
        if max_train_samples < 1:
            raise UserError(f"max_train_samples must be >= 1, got {max_train_samples}")
        if max_train_samples < len(train_idx):
            keep, _ = stratified_split(labels[train_idx], len(train_idx) - max_train_samples, config.split_seed, n_classes)
            train_idx = train_idx[keep]
    train_pixels = images[train_idx].float().div_(255.0)
    mean, std = train_pixels.mean().item(), train_pixels.std().item()
    del train_pixels
    return Data(
        x_train=normalize(images[train_idx], mean, std),
        y_train=labels[train_idx],
        x_val=normalize(images[val_idx], mean, std),
        y_val=labels[val_idx],
        mean=mean,
        std=std,
        split_hash=split_hash(val_idx),
        train_idx=train_idx,
        val_idx=val_idx,
        dataset=config.dataset,
    )


def load_test(mean: float, std: float, data_dir=None, dataset: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's test file (10k for MNIST), normalized with the training split's statistics.

    Call this only for a final evaluation; training and tuning never do.
    """
    images, labels = read_split("test", data_dir, dataset)
    return normalize(images, mean, std), labels
