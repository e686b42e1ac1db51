"""Models too large for memory: refused up front with one line, and a real allocator failure reported the same way."""

import json
import resource
import subprocess
import sys

import pytest
import torch

from mnist_lib import Config
from mnist_lib.core.errors import UserError
from mnist_lib.training.memory import check_fits, human, is_out_of_memory, training_bytes


def test_estimate_counts_parameters_and_their_copies():
    cfg = Config(hidden=(300, 100), dropout=(0.1, 0.1), batch_size=50)
    params = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10  # written out, independently of MLP
    n, needed = training_bytes(cfg)
    assert n == params
    activations = 4 * 300 * (3 * 50 + 8192)
    assert needed == 20 * params + activations
    assert training_bytes(cfg.replace(precision="bf16"))[1] == needed + 2 * params
    assert training_bytes(cfg.replace(optimizer="adamw"))[1] == needed  # two moment buffers, as Adam
    assert training_bytes(cfg.replace(optimizer="sgd", lr=0.1))[1] == needed - 8 * params  # no state at momentum 0
    assert training_bytes(cfg.replace(optimizer="sgd", lr=0.1, momentum=0.9))[1] == needed - 4 * params  # one momentum buffer


def test_estimate_of_a_huge_model_allocates_nothing():
    n, needed = training_bytes(Config(hidden=(100_000_000,), dropout=(0.1,)))
    assert n == 785 * 100_000_000 + 10 * 100_000_000 + 10
    assert needed > 1e12


def test_a_model_too_large_is_refused_with_both_numbers():
    with pytest.raises(UserError, match=r"needs at least 5\.0 TB on cpu \(79,500,000,010 parameters.*but [\d.]+ [kMGT]?B is available"):
        check_fits(Config(hidden=(100_000_000,), dropout=(0.1,)), torch.device("cpu"))
    check_fits(Config(), torch.device("cpu"))  # the reference (9 MB) fits anywhere


def test_human_units():
    assert [human(x) for x in (512, 1500, 2.5e9, 627e9, 3e15)] == ["512 B", "1.5 kB", "2.5 GB", "627.0 GB", "3.0 PB"]


@pytest.mark.parametrize(
    "error, oom",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 313600000000 bytes."), True),
        (RuntimeError("MPS backend out of memory"), True),
        (MemoryError(), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_errors_are_told_apart(error, oom):
    assert is_out_of_memory(error) == oom


@pytest.mark.slow  # a real CLI process
def test_a_real_allocation_failure_is_one_line_and_a_failed_record(tmp_path, mnist_dir):
    """Cap the process's data segment (RLIMIT_DATA) below what a 60000-unit layer needs, so the real allocator fails."""
    cap = 1500 * 2**20  # imports and data take ~400 MB; the model's weights, gradients and Adam state ~3 GB

    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

    argv = ["train", "--hidden", "60000", "--dropout", "0", "--epochs", "1", "--max-train-samples", "1000",
            "--run-dir", str(tmp_path / "r"), "--quiet", "--threads", "2", "--device", "cpu"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "mnist_lib", *argv], capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "out of memory on cpu while training" in proc.stderr and "marked failed" in proc.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "failed" and not (tmp_path / "r" / "model.safetensors").exists()
