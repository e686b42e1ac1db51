"""Hostile and broken inputs through the real command line, end to end.

Each row is a file a user might really hand us, run as `python -m mnist_lib ...`
in its own process: the answer must be exit status 2, exactly one line on stderr,
no traceback, and no run directory left marked completed. The processes of all
rows start at once (module fixture) and each row is then checked on its own.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
from PIL import Image
from test_images import write_png

from mnist_lib.core.datasets import DATASETS
from mnist_lib.data.idx import find_file

pytestmark = pytest.mark.slow  # every bad input through a real CLI process: make test-fast leaves it out

FILES = DATASETS["mnist"].files  # MNIST's four IDX files


def tamper(model: Path, dst: Path, **config_changes) -> Path:
    with safetensors.safe_open(str(model), framework="pt") as f:
        meta = dict(f.metadata())
    meta["config"] = json.dumps({**json.loads(meta["config"]), **config_changes})
    dst.write_bytes(safetensors.torch.save(safetensors.torch.load_file(str(model)), metadata=meta))
    return dst


def gzip_bomb_data_dir(folder: Path, mnist_dir: Path) -> Path:
    """The real MNIST files, except train labels: a 60 kB gzip that inflates to 60 MB."""
    folder.mkdir()
    for name in FILES:
        src = find_file(mnist_dir, name)
        os.symlink(src, folder / src.name)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(60_000_000)))
    return folder


# name -> (how to build the argv from (folder, trained run, digit image, mnist_dir), a phrase the line must hold)
CASES = {
    "decompression-bomb": (lambda d, run, png, m: ["predict", run, write_png(d / "big.png", 20000, 20000)], "decompression bomb"),
    "tampered-model": (
        lambda d, run, png, m: ["predict", tamper(run / "model.safetensors", d / "t.safetensors", hidden=[200_000_000]), png],
        "its config needs F32 [200000000, 784]",
    ),  # fmt: skip
    "model-too-large": (
        lambda d, run, png, m: [
            "train",
            "--config",
            _write(d / "c.json", '{"hidden": [100000000], "dropout": [0.1]}'),
            "--run-dir",
            d / "r",
            "--device",
            "cpu",
        ],
        "training needs at least 5.0 TB on cpu",
    ),  # fmt: skip
    "population-too-large": (
        lambda d, run, png, m: [
            "train",
            "--hidden",
            "30000000",
            "--dropout",
            "0.1",
            "--seeds",
            "0",
            "1",
            "--population",
            "on",
            "--run-dir",
            d / "r",
            "--device",
            "cpu",
        ],
        "training 2 models side by side needs at least 3.0 TB on cpu",
    ),  # fmt: skip
    "graph-on-cpu": (
        lambda d, run, png, m: ["train", "--seeds", "0", "1", "--graph", "--device", "cpu", "--run-dir", d / "r"],
        "CUDA graphs need a CUDA device, not cpu",
    ),
    "population-without-seeds": (
        lambda d, run, png, m: ["train", "--population", "on", "--run-dir", d / "r"],
        "--population applies to several seeds",
    ),
    "model-not-safetensors": (
        lambda d, run, png, m: ["predict", _write(d / "m.safetensors", "PK\x03\x04 a zip"), png],
        "cannot read it as safetensors",
    ),
    "foreign-safetensors": (
        lambda d, run, png, m: ["predict", _write(d / "f.safetensors", safetensors.torch.save({"w": _zeros()})), png],
        "metadata lacks config",
    ),  # fmt: skip
    "text-as-image": (lambda d, run, png, m: ["predict", run, _write(d / "notes.png", "not an image")], "not a readable image"),
    "deep-json-config": (
        lambda d, run, png, m: ["train", "--config", _write(d / "deep.json", "[" * 100_000 + "]" * 100_000)],
        "nested too deeply",
    ),
    "huge-int-config": (
        lambda d, run, png, m: ["train", "--config", _write(d / "i.json", '{"epochs": ' + "7" * 5000 + "}")],
        "4300 digits",
    ),
    "latin1-config": (lambda d, run, png, m: ["train", "--config", _write(d / "l.json", b'{"precision": "\xe9"}')], "cannot read it"),
    "yaml-alias-sweep": (
        lambda d, run, png, m: ["sweep", _write(d / "a.yaml", "base: &b {epochs: 1}\ngrid: {lr: [0.001]}\nx: *b\n")],
        "aliases (*name) are not supported",
    ),  # fmt: skip
    "yaml-unsafe-tag": (
        lambda d, run, png, m: ["sweep", _write(d / "e.yaml", "grid: {lr: !!python/object/apply:os.system [true]}\n")],
        "cannot read YAML",
    ),  # fmt: skip
    "run-file-notebook-number": (
        lambda d, run, png, m: ["notebooks", _write(d / "r.yaml", "notebook: 5\n")],
        "expected the keys 'notebook'",
    ),
    "gzip-bomb-data": (
        lambda d, run, png, m: ["data", "--data-dir", gzip_bomb_data_dir(d / "data", m), "--no-download"],
        "more than the 60008 bytes",
    ),
    "evaluate-interrupted-run": (
        lambda d, run, png, m: ["evaluate", _with_status(run, d / "run", "interrupted")],
        "has status 'interrupted'",
    ),
}


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _zeros():
    import torch

    return torch.zeros(3)


def _with_status(run: Path, dst: Path, status: str) -> Path:
    shutil.copytree(run, dst)
    summary = json.loads((dst / "summary.json").read_text())
    (dst / "summary.json").write_text(json.dumps({**summary, "status": status}))
    return dst


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, mnist_dir):
    """Build every case's files, start all processes at once, and collect (folder, returncode, stderr) per case."""
    from mnist_lib import Config, RunOptions, train_and_record

    base = tmp_path_factory.mktemp("bad_input")
    run, _, _ = train_and_record(
        Config(epochs=1, hidden=(16,), dropout=(0.0,)),
        RunOptions(max_train_samples=500, threads=1, device="cpu", progress=False),
        run_dir=base / "trained",
    )
    png = base / "digit.png"
    Image.new("L", (40, 40), 255).save(png)
    procs = {}
    for name, (argv, _) in CASES.items():
        folder = base / name
        folder.mkdir()
        env = {**os.environ, "MNIST_DATA_DIR": str(mnist_dir), "MNIST_RESULTS_DIR": str(folder / "results")}
        cmd = [sys.executable, "-m", "mnist_lib", *map(str, argv(folder, run, png, mnist_dir))]
        procs[name] = (folder, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return {name: (folder, p.wait(timeout=300), p.communicate()[1]) for name, (folder, p) in procs.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_exit_2_one_line_and_nothing_marked_completed(outcomes, case):
    folder, code, err = outcomes[case]
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("mnist-lib: error: "), err
    assert "Traceback" not in err
    assert CASES[case][1] in err, err
    statuses = [json.loads(p.read_text()).get("status") for p in folder.rglob("summary.json")]
    assert "completed" not in statuses, f"{case} left a run marked completed"
