"""Shared fixtures. Tests that need the real data read MNIST_DATA_DIR (MNIST) and
MNIST_DATA_ROOT (a folder holding mnist/ and fashion-mnist/) and fail, with the
message a user would get, when the data is not there; they never skip."""

from __future__ import annotations

import collections
import contextlib
import gzip
import hashlib
import os
import resource
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from mnist_lib import Config
from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import data_dir, ensure_files


def verified_dir(dataset: str):
    """A dataset's real data folder, verified; the user's clear message as a test failure if absent."""
    try:
        ensure_files(allow_download=False, progress=False, dataset=dataset)
        problem = None
    except UserError as e:
        problem = str(e)
    if problem:
        pytest.fail(problem, pytrace=False)
    return data_dir(dataset=dataset)


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST folder ($MNIST_DATA_DIR, else $MNIST_DATA_ROOT/mnist), verified."""
    return verified_dir("mnist")


@pytest.fixture(scope="session")
def fashion_dir():
    """The real Fashion-MNIST folder ($MNIST_DATA_ROOT/fashion-mnist), verified."""
    return verified_dir("fashion-mnist")


@pytest.fixture(scope="session")
def small_data(mnist_dir):
    """A quick real-data problem: 8,000 training examples, the full 6,000 validation split."""
    from mnist_lib import prepare_data

    return prepare_data(Config(), mnist_dir, max_train_samples=8000)


def skip_or_fail(reason: str) -> None:
    """A test that needs an optional part this machine lacks: skipped with the reason, or failed where MNIST_STRICT=1 (CI)."""
    if os.environ.get("MNIST_STRICT") == "1":
        pytest.fail(f"MNIST_STRICT=1: {reason}", pytrace=False)
    pytest.skip(reason)


def ctrl_c_in_epoch(monkeypatch, epoch: int) -> None:
    """Make training raise KeyboardInterrupt (what Ctrl-C raises) at the start of `epoch`'s pass."""
    import importlib

    train_mod = importlib.import_module("mnist_lib.training.train")  # the package exports a function of the same name
    real, calls = train_mod.population_epoch, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_mod, "population_epoch", interrupted)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: zero, zero, type 0x08, ndim, big-endian dims, payload."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx(path, arr: np.ndarray, compress: bool = False) -> str:
    """Write `arr` as an IDX file (gzipped if asked); return the MD5 of the uncompressed bytes."""
    raw = idx_bytes(arr)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return hashlib.md5(raw).hexdigest()


@pytest.fixture
def fake_dataset():
    """fake_dataset(folder, train_images, train_labels, test_images=None, test_labels=None, classes=None) -> name.

    Writes the four IDX files into `folder` and registers them, with their MD5s, as a
    dataset of their own (unregistered after the test): the registry as a user adding
    KMNIST would use it. The test files default to the training ones.
    """
    from mnist_lib.core import datasets

    names = []

    def make(folder, train_images, train_labels, test_images=None, test_labels=None, classes=None):
        test_images = train_images if test_images is None else test_images
        test_labels = train_labels if test_labels is None else test_labels
        arrays = dict(zip(datasets.STANDARD_FILE_NAMES, (train_images, train_labels, test_images, test_labels), strict=True))
        files = {n: datasets.IdxFile(0x0800 + a.ndim, a.shape, write_idx(folder / n, a)) for n, a in arrays.items()}
        name = f"fake-{len(datasets.DATASETS)}"
        classes = classes or tuple(f"class {c}" for c in range(10))
        datasets.register(
            datasets.DatasetSpec(name, name.title(), files, ("http://127.0.0.1:9/",), tuple(classes), **datasets.STANDARD_SPLITS)
        )
        names.append(name)
        return name

    yield make
    for name in names:
        datasets.unregister(name)


# --- property-based fuzzing (tests/test_fuzz.py) -------------------------------------------------
# "ci" (the default, part of make test): a fixed number of examples from a fixed seed, so a run is
# reproducible and bounded; HYPOTHESIS_PROFILE=deep for a long randomized hunt.

settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FUZZ_EXAMPLES: collections.Counter = collections.Counter()


def pytest_terminal_summary(terminalreporter):
    if FUZZ_EXAMPLES:
        tried = ", ".join(f"{name} {n}" for name, n in sorted(FUZZ_EXAMPLES.items()))
        terminalreporter.write_line(f"fuzz examples tried: {tried} ({sum(FUZZ_EXAMPLES.values())} in all)")


def _vm_data() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


@contextlib.contextmanager
def memory_cap(extra: int):
    """Let the code inside allocate at most `extra` more bytes (RLIMIT_DATA): a larger allocation fails with an error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = _vm_data() + extra
    resource.setrlimit(resource.RLIMIT_DATA, (min(cap, hard) if hard != resource.RLIM_INFINITY else cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def fake_data(n=10):
    """A Data with n blank training images and nothing else: what a training step needs to be built (mean, std)."""
    from mnist_lib.data.splits import Data

    return Data(torch.zeros(n, 784), torch.zeros(n, dtype=torch.long), None, None, 0.1307, 0.3081, "", None, None)


class OneMember:
    """The training engine's step for a population of one, read and written through a plain MLP.

    step = OneMember(model, cfg); step.gradients(x, y) fills model's .grad; step(x, y)
    takes an optimizer step and writes the new weights back into `model`. For tests
    that check one rule of the step (a regulariser, a loss) against plain autograd.
    """

    def __init__(self, model, cfg, **changes):
        from mnist_lib.training.stacked import StackedMLP
        from mnist_lib.training.train import PopulationStep

        self.model, self.cfg = model, cfg.replace(**changes)
        self.stacked = StackedMLP([model])
        self.step = PopulationStep([self.cfg], self.stacked, fake_data(), 10)

    def _write_back(self):
        """Copy the member's weights, gradients and buffers into the plain model (copies: nothing aliases the flat buffers)."""
        with torch.no_grad():
            views = zip(
                self.stacked.parameter_views(self.stacked.flat, 0),
                self.stacked.parameter_views(self.stacked.gather_grads(), 0),
                strict=True,
            )
            for p, (value, grad) in zip(self.model.parameters(), views, strict=True):
                p.copy_(value)
                p.grad = grad.clone()
            for k, buffer in enumerate(self.model.buffers()):  # BatchNorm's running statistics
                buffer.copy_(getattr(self.stacked, f"stacked_buffer{k}")[0])

    def gradients(self, x, y):
        loss, correct = self.step.gradients(x.unsqueeze(0), y.unsqueeze(0))
        self._write_back()
        return loss[0], correct[0]

    def __call__(self, x, y):
        loss, correct = self.step(x.unsqueeze(0), y.unsqueeze(0))
        self._write_back()
        return loss[0], correct[0]
