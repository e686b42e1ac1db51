"""Run records: one directory per run, every file written atomically.

    results/runs/<name>/
        config.json         the Config, as JSON
        metrics.csv         epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds
        summary.json        status, accuracies, params, timings, versions, split hash
        model.safetensors   best-by-validation weights; metadata carries config, mean, std

summary.json says "running" until the run ends; the weights are written before
the final summary, so a record marked "completed" is always whole.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from ..core.config import Config
from ..core.errors import UserError
from ..core.files import read_json
from ..core.paths import RUNS_DIR
from ..training.model import MLP
from ..training.train import METRIC_COLUMNS

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, MODEL_FILE = "config.json", "metrics.csv", "summary.json", "model.safetensors"


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_metrics_csv(path: str | Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in METRIC_COLUMNS} for r in rows)
    atomic_write(path, buf.getvalue())


def environment(device: str, threads: int) -> dict[str, Any]:
    """Versions and hardware that a result depends on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "device": device,
        "threads": threads,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "platform": platform.platform(),
    }


def new_run_dir(run_dir: str | Path | None = None, name: str | None = None, overwrite: bool = False) -> Path:
    """Create the run directory (results/runs/<name> by default); refuse to reuse one unless `overwrite`."""
    if run_dir is None:
        name = name or time.strftime("%Y%m%d-%H%M%S")
        run_dir = RUNS_DIR / name
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise UserError(f"run directory {run_dir} already exists; choose another name or pass overwrite (--overwrite)")
        if run_dir.is_dir():
            shutil.rmtree(run_dir)
        else:
            run_dir.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def save_model(path: str | Path, model: torch.nn.Module, config: Config, mean: float, std: float) -> None:
    """Weights as safetensors; the metadata carries what is needed to rebuild and feed the model."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": config.to_json(), "mean": repr(mean), "std": repr(std)}
    atomic_write(path, safetensors.torch.save(tensors, metadata=meta))


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[MLP, Config, float, float]:
    """(model in eval mode, config, mean, std) from a run directory or a .safetensors file.

    The file is untrusted input: its metadata and its table of tensor names, shapes
    and dtypes are checked against each other (check_model_file) before any weight
    is read or any layer allocated.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise UserError(f"no model at {path}: not a run directory, or the run did not finish")
    config, mean, std = check_model_file(path)
    try:
        tensors = safetensors.torch.load_file(str(path), device=str(device))
    except (OSError, safetensors.SafetensorError) as e:
        raise UserError(f"{path}: cannot read the weights ({e})") from None
    with torch.device("meta"):  # layers without memory; the file's tensors become their weights
        model = MLP.from_config(config)
    model.load_state_dict(tensors, assign=True)
    return model.eval(), config, mean, std


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


def check_model_file(path: str | Path) -> tuple[Config, float, float]:
    """(config, mean, std) of a model file, after checking that its tensors are exactly the ones that config builds.

    Reads only the file's header. A tampered or foreign file (a config that would
    build other layers, a missing or extra tensor, another shape or dtype, a
    non-finite mean or std) is a UserError naming the file.
    """
    path = Path(path)

    def refuse(why: str) -> UserError:
        return UserError(f"{path}: not a model file of this project ({why})")

    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            slices = {name: f.get_slice(name) for name in f.keys()}  # noqa: SIM118 - a safe_open handle is not a mapping
            table = {name: (tuple(s.get_shape()), s.get_dtype()) for name, s in slices.items()}
    except (OSError, safetensors.SafetensorError) as e:
        raise refuse(f"cannot read it as safetensors: {e}") from None
    missing = [k for k in ("config", "mean", "std") if k not in meta]
    if missing:
        raise refuse(f"its metadata lacks {', '.join(missing)}")
    try:
        config = Config.from_json(meta["config"])
    except UserError as e:
        raise refuse(f"metadata config: {e}") from None
    try:
        mean, std = float(meta["mean"]), float(meta["std"])
    except ValueError:
        raise refuse(f"metadata mean {meta['mean'][:40]!r} and std {meta['std'][:40]!r} must be numbers") from None
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise refuse(f"metadata mean {mean} and std {std} must be finite, std > 0")
    # every layer has at least one tensor: a config with more layers than the file has tensors is refused
    # before it is built, so a tampered config cannot make even the meta-device model arbitrarily large
    if len(config.hidden) + 1 > len(table):
        raise refuse(f"its config has {len(config.hidden) + 1} layers but the file holds {len(table)} tensors")
    with torch.device("meta"):
        expected = {
            k: (tuple(v.shape), SAFETENSORS_DTYPES.get(v.dtype, str(v.dtype))) for k, v in MLP.from_config(config).state_dict().items()
        }
    if set(table) != set(expected):
        extra, absent = sorted(set(table) - set(expected)), sorted(set(expected) - set(table))
        raise refuse(f"tensors {extra[:4]} not in the config's model, {absent[:4]} missing")
    for name, (shape, dtype) in expected.items():
        if table[name] != (shape, dtype):
            raise refuse(f"tensor {name} is {table[name][1]} {list(table[name][0])}, its config needs {dtype} {list(shape)}")
    return config, mean, std


class RunRecorder:
    """Writes a run's files as it goes: config at start, metrics each epoch, weights and summary at the end."""

    def __init__(self, run_dir: Path, config: Config, summary: dict[str, Any]) -> None:
        self.dir = run_dir
        self.config = config
        self.rows: list[dict] = []
        self.summary = {"status": "running", **summary}
        write_json(run_dir / CONFIG_FILE, config.to_dict())
        write_metrics_csv(run_dir / METRICS_FILE, [])
        write_json(run_dir / SUMMARY_FILE, self.summary)

    def on_epoch(self, row: dict) -> None:
        self.rows.append(row)
        write_metrics_csv(self.dir / METRICS_FILE, self.rows)

    def fail(self, error: str) -> None:
        """Mark the run failed (an exception escaped training); the history so far stays."""
        self.summary.update(status="failed", error=error)
        write_json(self.dir / SUMMARY_FILE, self.summary)

    def finish(self, model: torch.nn.Module, mean: float, std: float, **summary: Any) -> dict[str, Any]:
        save_model(self.dir / MODEL_FILE, model, self.config, mean, std)
        self.summary.update(summary)
        write_json(self.dir / SUMMARY_FILE, self.summary)
        return self.summary


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    return read_json(run_dir / SUMMARY_FILE)


def update_summary(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Add fields (e.g. test_acc) to a finished run's summary.json, atomically."""
    summary = read_summary(run_dir)
    summary.update(fields)
    write_json(Path(run_dir) / SUMMARY_FILE, summary)
    return summary
