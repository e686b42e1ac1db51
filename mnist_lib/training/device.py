"""Where a run trains: the device, its CPU threads, the precision's dtype, whether a CUDA graph replays the step.

    dev = select_device("auto")          # cuda, then mps, then cpu; a named device is checked
    set_threads(2)                       # torch's intra-op threads, checked
    resolve_graph(None, dev)             # True on CUDA: train.py replays its step as a graph (graphs.py)

Used by train.py and workflows/experiment.py; DTYPES and bf16_supported also by benchmarks.
"""

from __future__ import annotations

import torch

from ..core.config import check_threads
from ..core.errors import UserError

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


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a clock read after it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op CPU threads (None keeps torch's default); return the count in use."""
    if threads is not None:
        torch.set_num_threads(check_threads(threads))
    return torch.get_num_threads()


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
