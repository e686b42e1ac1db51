"""What the training loop sets up: device and threads, optimizer and lr schedule, the result, the epoch's size.

    dev = select_device("auto"); set_threads(2)
    plateau, per_step = make_scheduler(opt, cfg, steps_per_epoch)   # torch's schedulers, as train.py tables them

Used by train.py, the one training loop; DTYPES and bf16_supported also by benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.config import Config, check_threads
from ..core.errors import UserError
from .model import MLP

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # Config.precision -> the dtype the forward runs in
DEVICE_TYPES = ("cpu", "cuda", "mps")  # what the training code supports; torch knows more (meta, xpu, hpu, ...)


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; otherwise the named device, checked: a type this code trains on, present here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES or (dev.type != "cuda" and dev.index not in (None, 0)):
        raise UserError(f"unknown device {str(name)[:40]!r}; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device cuda requested but torch sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name} requested but torch sees {torch.cuda.device_count()} CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device mps requested but it is not available")
    return dev


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op CPU threads (None keeps torch's default); return the count in use."""
    if threads is not None:
        torch.set_num_threads(check_threads(threads))
    return torch.get_num_threads()


@dataclass
class TrainResult:
    """What a run produced. `model` holds the best-by-validation weights."""

    model: MLP
    history: list[dict] = field(default_factory=list)
    status: str = "completed"  # completed | diverged | interrupted
    best_epoch: int = 0
    best_val_acc: float = float("nan")
    final_val_acc: float = float("nan")
    train_seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1

    def add_epoch(self, row: dict) -> bool:
        """Record an epoch's metrics row; whether it is the best epoch so far by validation accuracy.

        A row whose training or validation loss is not finite marks the run diverged
        (and is never the best); the caller stops training it.
        """
        self.history.append(row)
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
            self.status = "diverged"
            return False
        if not row["val_acc"] <= self.best_val_acc:  # also true while best is nan
            self.best_val_acc, self.best_epoch = row["val_acc"], row["epoch"]
            return True
        return False

    def finish(self, seconds: float) -> None:
        """Close the run: its time and its last validation accuracy (`model` already holds the best epoch's weights)."""
        self.train_seconds = seconds
        if self.history:
            self.final_val_acc = self.history[-1]["val_acc"]


def make_scheduler(opt: torch.optim.Optimizer, config: Config, steps_per_epoch: int):
    """(ReduceLROnPlateau stepped per epoch, or None; a per-step scheduler, or None) for config.lr_schedule."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return None, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if config.lr_schedule == "onecycle":  # warm up from lr/25 to lr over 30 % of the steps, then anneal
        # momentum runs opposite to the lr: Adam's beta1 between torch's 0.85 and 0.95, SGD's momentum
        # between 0.85/0.95 of config.momentum and config.momentum (plain SGD, momentum 0, has none to cycle)
        cycle = {}
        if config.optimizer == "sgd":
            cycle = {"cycle_momentum": config.momentum > 0, "max_momentum": config.momentum, "base_momentum": config.momentum * 0.85 / 0.95}
        return None, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, **cycle)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=config.lr_factor, patience=config.lr_patience), None


def min_batch(config: Config) -> int:
    """The smallest batch `config` can train on: BatchNorm's statistics need 2 examples, everything else 1."""
    return 2 if config.norm == "batch" else 1


def check_trainable(config: Config, n_train: int) -> None:
    """A UserError if an epoch of `config` on n_train examples would train on none (BatchNorm skips a last batch of one)."""
    if examples_per_epoch(n_train, config.batch_size, min_batch(config)) == 0:
        raise UserError(f"norm batch needs at least 2 training examples per epoch (batch statistics of one are undefined); got {n_train}")


def examples_per_epoch(n: int, batch_size: int, min_batch: int) -> int:
    """How many of n examples an epoch trains on: all, less a last batch smaller than min_batch (BatchNorm: 2)."""
    last = n % batch_size
    return n - last if 0 < last < min_batch else n


def resolve_graph(graph: bool | None, device: torch.device) -> bool:
    """Whether to replay the step as a CUDA graph: None means on CUDA; True elsewhere is refused."""
    if graph is None:
        return device.type == "cuda"
    if graph and device.type != "cuda":
        raise UserError(f"CUDA graphs need a CUDA device, not {device}; leave the graph off (--no-graph)")
    return graph


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bfloat16 matmuls run natively (CPU: AVX-512-BF16 or AMX; CUDA: Ampere or newer)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def gather_batch(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows idx [M, B] of the resident training set: (x [M, B, ...], y [M, B]).

    index_select on the flattened indices rather than x[idx]: advanced indexing's
    general kernel costs about 4 % of a reference step more (2-vCPU Intel Xeon, 2026-11-30).
    """
    flat = idx.reshape(-1)  # a view where the rows are contiguous (one member), else a copy of M x B indices
    return x.index_select(0, flat).view(*idx.shape, *x.shape[1:]), y.index_select(0, flat).view(idx.shape)
