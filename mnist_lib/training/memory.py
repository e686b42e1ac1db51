"""Will a model fit? An up-front memory estimate, and the allocator's out-of-memory errors told apart.

    check_fits(Config(hidden=[100_000_000], dropout=[0.1]), torch.device("cpu"))
    # UserError: training needs at least 5.0 TB on cpu (79,500,000,010 parameters: ...) but 24.6 GB is available; ...

The estimate counts what training holds for certain: the weights, their
gradients, the optimizer's state (Adam and AdamW: two moment buffers; SGD: a
momentum buffer if momentum is on) and the best-epoch copy (3 to 5 x 4 bytes per
parameter, plus a bf16 copy of the weights under bf16), and the widest
activations of a training and an evaluation batch. It is a lower bound, so a
refusal is certain; a run that passes it can still run out, which train_and_record
catches with `is_out_of_memory` and reports the same way.
"""

from __future__ import annotations

import os

import torch

from ..core import datasets
from ..core.config import Config
from ..core.errors import UserError
from .evaluate import EVAL_BATCH
from .model import MLP, count_params

FP32_COPIES = 3  # weights, gradients, the best-epoch state_dict; plus the optimizer's state:
OPTIMIZER_STATE = {"adam": 2, "adamw": 2, "sgd": 1}  # exp_avg and exp_avg_sq; SGD's momentum buffer (none at momentum 0)
ACTIVATION_COPIES = 3  # per hidden unit of a training batch: activation, its gradient, the dropout product


def training_bytes(config: Config) -> tuple[int, int]:
    """(parameters, bytes) that training `config` holds at least, without allocating the model."""
    with torch.device("meta"):  # shapes only: no memory, whatever the widths
        params = count_params(MLP.from_config(config))
    state = OPTIMIZER_STATE[config.optimizer] if config.optimizer != "sgd" or config.momentum > 0 else 0
    per_param = 4 * (FP32_COPIES + state) + (2 if config.precision == "bf16" else 0)
    widest = max(config.hidden, default=0)
    batch = min(config.batch_size, datasets.DATASETS[config.dataset].n_train - config.val_size)  # no batch exceeds the training split
    activations = 4 * widest * (ACTIVATION_COPIES * batch + EVAL_BATCH)
    return params, params * per_param + activations


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: MemAvailable for the CPU, the driver's free count for CUDA; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None  # mps: unified memory, no reliable free count


def human(n: float) -> str:
    """Bytes in decimal units: '627.0 GB'."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")


def check_fits(config: Config, device: torch.device, models: int = 1) -> None:
    """Refuse, with one line, a config whose training (of `models` copies side by side) cannot fit in the device's free memory."""
    available = available_bytes(device)
    if available is None:
        return
    params, needed = training_bytes(config)
    params, needed = params * models, needed * models
    if needed > available:
        what = f"training {models} models side by side" if models > 1 else "training"
        raise UserError(
            f"{what} needs at least {human(needed)} on {device} ({params:,} parameters: weights, gradients, Adam state, "
            f"best-epoch copy and activations) but {human(available)} is available; choose smaller hidden widths or batch_size"
        )


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception is an allocator's out-of-memory error (CUDA, MPS or the CPU's DefaultCPUAllocator)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
