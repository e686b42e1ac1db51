"""Issue 19's hostile and unlucky inputs through the command line, in process: one line, exit 2, nothing lost.

Each row names the cause it checks (docs/cli.md, "Bad input"): an --overwrite that
would delete what is not a run, a value that passed validation and crashed
later, a file-system problem that was a traceback, a record that could lie. The
rows call `mnist_lib.cli.main` in this process (cheap); tests/test_signals.py
runs the cases that need real processes (signals, file-size limits, races).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from mnist_lib import Config, RunOptions, train_and_record
from mnist_lib.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    run, _, _ = train_and_record(
        Config(epochs=1, hidden=(16,), dropout=(0.0,)),
        RunOptions(max_train_samples=500, threads=2, device="cpu", progress=False),
        run_dir=tmp_path_factory.mktemp("truth") / "run",
    )
    return run


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def precious(d: Path) -> Path:
    folder = d / "precious"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years")
    return folder


def model_with(run: Path, dst: Path, tensors=None, **meta) -> Path:
    """A copy of run's model file with some metadata replaced, or its tensors edited."""
    with safetensors.safe_open(str(run / "model.safetensors"), framework="pt") as f:
        metadata = {**f.metadata(), **meta}
    weights = safetensors.torch.load_file(str(run / "model.safetensors"))
    dst.write_bytes(safetensors.torch.save(tensors(weights) if tensors else weights, metadata=metadata))
    return dst


def with_summary(run: Path, dst: Path, **fields) -> Path:
    shutil.copytree(run, dst)
    summary = json.loads((dst / "summary.json").read_text())
    (dst / "summary.json").write_text(json.dumps({**summary, **fields}))
    return dst


def run_file(d: Path, notebook: str, **parameters) -> Path:
    return write(d / "run.yaml", json.dumps({"notebook": notebook, "parameters": parameters}))


def nan_weight(t):
    t["net.0.weight"][0, 0] = float("nan")
    return t


PNG = "digit.png"
# name -> (argv from (folder, trained run), phrase the one line holds, what must still be there afterwards)
CASES = {
    # 1. --overwrite deletes only run records
    "overwrite-users-folder": (
        lambda d, r: ["train", "--run-dir", precious(d), "--overwrite"],
        "not a record of this library (it holds thesis.txt",
        "precious/thesis.txt",
    ),
    "overwrite-empty-run-dir": (lambda d, r: ["train", "--run-dir", "", "--overwrite"], "the run directory is empty", "keep.txt"),
    "overwrite-name-dotdot": (lambda d, r: ["train", "--name", "..", "--overwrite"], "run name '..' is a path", "keep.txt"),
    "overwrite-a-file": (
        lambda d, r: ["train", "--run-dir", write(d / "some_file.txt", "x"), "--overwrite"],
        "exists and is a file",
        "some_file.txt",
    ),
    "run-file-name-escapes": (
        lambda d, r: ["notebooks", run_file(d, "02_train.ipynb", run_name="../../precious", overwrite=True)],
        "run_name '../../precious' is a path",
        "keep.txt",
    ),
    "run-file-figures-escape": (
        lambda d, r: ["notebooks", run_file(d, "02_train.ipynb", figures_subdir="../../x")],
        "figures_subdir '../../x': figures_subdir '..' is a path",
        "keep.txt",
    ),
    # 5. garbage in: non-finite weights and statistics, NaN in records
    "nan-weight": (lambda d, r: ["predict", model_with(r, d / "m.safetensors", nan_weight), d / PNG], "hold NaN or infinity", None),
    "std-tiny": (lambda d, r: ["predict", model_with(r, d / "m.safetensors", std="1e-300"), d / PNG], "std 1e-300 must be", None),
    "mean-huge": (lambda d, r: ["predict", model_with(r, d / "m.safetensors", mean="1e300"), d / PNG], "mean 1e+300 must be", None),
    # 6. file-system trouble
    "data-dir-is-a-file": (lambda d, r: ["data", "--data-dir", write(d / "f.txt", "x"), "--no-download"], "exists and is a file", "f.txt"),
    "figures-dir-is-a-file": (
        lambda d, r: [
            "train",
            "--figures-dir",
            write(d / "f.txt", "x"),
            "--run-dir",
            d / "r",
            "--epochs",
            "1",
            "--max-train-samples",
            "200",
        ],
        "figures folder",
        "f.txt",
    ),
    "run-dir-symlink-loop": (lambda d, r: ["train", "--run-dir", loop(d) / "r"], "symbolic link loop", None),
    "notebooks-output-dir-is-a-file": (
        lambda d, r: ["notebooks", "notebooks/params/07_runs.yaml", "--output-dir", write(d / "f.txt", "x")],
        "output folder",
        "f.txt",
    ),
    # 7. unbounded reads, devices, threads, seeds, records of the wrong type, run-file parameters
    "config-dev-zero": (lambda d, r: ["train", "--config", "/dev/zero"], "larger than 4 MiB", None),
    "sweep-dev-urandom": (lambda d, r: ["sweep", "/dev/urandom"], "larger than 4 MiB", None),
    "notebooks-dev-zero": (lambda d, r: ["notebooks", "/dev/zero"], "larger than 4 MiB", None),
    "device-meta": (lambda d, r: ["train", "--device", "meta", "--run-dir", d / "r"], "unknown device 'meta'", None),
    "device-xpu": (lambda d, r: ["train", "--device", "xpu", "--run-dir", d / "r"], "unknown device 'xpu'", None),
    "evaluate-device-hpu": (lambda d, r: ["evaluate", with_summary(r, d / "r"), "--device", "hpu"], "unknown device 'hpu'", None),
    "threads-1000": (lambda d, r: ["train", "--threads", "1000", "--run-dir", d / "r"], "threads must be an integer in [1,", None),
    "split-seed-huge": (lambda d, r: ["data", "--split-seed", "99999999999999999999999"], "split_seed must be in [0, 2**32 - 1]", None),
    "split-seed-negative": (lambda d, r: ["data", "--split-seed", "-1"], "split_seed must be in [0, 2**32 - 1], got -1", None),
    "seeds-negative": (lambda d, r: ["train", "--seeds", "-1", "0", "--run-dir", d / "r"], "each seed must be in [0, 2**32 - 1]", None),
    "summary-test-acc-string": (
        lambda d, r: ["evaluate", with_summary(r, d / "r", test_acc="high")],
        'test_acc must be a number or null, got "high"',
        None,
    ),
    "summary-status-null": (lambda d, r: ["evaluate", with_summary(r, d / "r", status=None)], "status must be a string, got null", None),
    "summary-nan": (lambda d, r: ["evaluate", write_nan_summary(r, d / "r")], "best_val_acc is not a finite number", None),
    "run-file-device-tpu": (lambda d, r: ["notebooks", run_file(d, "02_train.ipynb", device="tpu")], "unknown device 'tpu'", None),
    "run-file-threads-negative": (
        lambda d, r: ["notebooks", run_file(d, "02_train.ipynb", threads=-4)],
        "threads must be an integer",
        None,
    ),
    "run-file-threads-text": (
        lambda d, r: ["notebooks", run_file(d, "02_train.ipynb", threads="2")],
        "parameter threads must be int",
        None,
    ),
    "run-file-seeds-huge": (lambda d, r: ["notebooks", run_file(d, "04_final_evaluation.ipynb", seeds=[2**40])], "each seed must be", None),
    "run-file-missing-config": (
        lambda d, r: ["notebooks", run_file(d, "04_final_evaluation.ipynb", config_file="configs/nope.json")],
        "config file",
        None,
    ),
}


def loop(d: Path) -> Path:
    (d / "loop").symlink_to(d / "loop")
    return d / "loop"


def write_nan_summary(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    text = (dst / "summary.json").read_text()
    summary = json.loads(text)
    (dst / "summary.json").write_text(json.dumps({**summary, "best_val_acc": float("nan")}))  # Python writes NaN; JSON has none
    return dst


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_exit_2_and_nothing_is_lost(case, trained, tmp_path, capsys, monkeypatch, mnist_dir):
    from PIL import Image

    argv, phrase, survivor = CASES[case]
    monkeypatch.chdir(tmp_path)  # an empty --run-dir would mean this folder
    monkeypatch.setattr("mnist_lib.records.claim.RUNS_DIR", tmp_path / "results" / "runs")
    (tmp_path / "results" / "runs").mkdir(parents=True)
    write(tmp_path / "keep.txt", "mine")
    Image.new("L", (28, 28), 255).save(tmp_path / PNG)
    args = [str(a) for a in argv(tmp_path, trained)]
    if args[0] == "notebooks" and "notebooks/params" in " ".join(args):
        args = [a if not a.startswith("notebooks/params") else str(Path(__file__).parents[1] / a) for a in args]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("mnist-lib: error: ") and "Traceback" not in err, err
    assert phrase in err, err
    if survivor:
        assert (tmp_path / survivor).is_file(), f"{case} deleted {survivor}"
    assert (tmp_path / "keep.txt").read_text() == "mine"
    statuses = [json.loads(p.read_text()).get("status") for p in tmp_path.rglob("summary.json") if p.parent.name != "r"]
    assert "completed" not in statuses and "running" not in statuses, f"{case} left a record that lies: {statuses}"


def test_the_trained_fixture_is_a_real_record(trained):
    assert json.loads((trained / "summary.json").read_text())["status"] == "completed"
    assert all(torch.isfinite(t).all() for t in safetensors.torch.load_file(str(trained / "model.safetensors")).values())
