"""Run records: one directory per run, every file written atomically, every status true.

    results/runs/<name>/
        config.json         the Config, as JSON
        metrics.csv         epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds
        summary.json        status, accuracies, params, timings, versions, split hash
        model.safetensors   best-by-validation weights; metadata carries config, mean, std; summary.json its SHA-256
        *.png               the learning curves (unless written elsewhere)

The folder is claimed first (claim.py: a name that is a name, a lock held by the
writer, a replaced record kept until the new one stands). summary.json says
"running" until the run ends, and then what happened: "completed" only once the
weights and the figures are written; "failed" with the reason (an error, a full
disk, a figure that could not be written); "interrupted" (Ctrl-C or SIGTERM);
"diverged". A run that never had a finite validation epoch saves no weights;
`weights_epoch` says which epoch's weights model.safetensors holds (null: none).
summary.json never holds NaN (core.files.write_json writes null).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from ..core.config import Config
from ..core.errors import UserError
from ..core.files import atomic_write, read_json_object, user_path, write_csv, write_json
from ..training.model import MLP
from ..training.train import METRIC_COLUMNS
from .claim import Claim
from .seal import write_sealed

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, MODEL_FILE = "config.json", "metrics.csv", "summary.json", "model.safetensors"
STATUSES = ("running", "completed", "failed", "interrupted", "diverged")
MEAN_RANGE, STD_RANGE = (0.0, 1.0), (1e-3, 1.0)  # pixel statistics on the [0, 1] scale that a real dataset can have

__all__ = ["atomic_write", "write_json"]  # re-exported: callers that write run files import them from here


def write_metrics_csv(path: str | Path, rows: list[dict]) -> None:
    write_csv(path, [{k: r[k] for k in METRIC_COLUMNS} for r in rows], METRIC_COLUMNS)


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


def save_model(path: str | Path, model: torch.nn.Module, config: Config, mean: float, std: float) -> str:
    """Weights as safetensors; the metadata carries what is needed to rebuild and feed the model. Returns the file's digest."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": config.to_json(), "mean": repr(mean), "std": repr(std)}
    data = safetensors.torch.save(tensors, metadata=meta)
    atomic_write(path, data)
    return digest(data)


def digest(data: bytes) -> str:
    """'sha256:<hex>' of a weights file's bytes: what summary.json's model_sha256 holds."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def recorded_digest(run_dir: Path, path: Path) -> str:
    """The digest of the weights the run record in `run_dir` saved (summary.json's model_sha256); a UserError if it names none."""
    if not (run_dir / SUMMARY_FILE).exists():
        raise UserError(
            f"{run_dir} holds {path.name} but no {SUMMARY_FILE}: not a run record; load the file {path} itself to use it anyway"
        )
    expected = read_summary(run_dir).get("model_sha256")
    if expected is None:
        raise UserError(
            f"run {run_dir}: its summary.json names no digest of its weights (a record from before records bound their weights, or "
            f"one with none saved); load the file {path} itself to use it anyway"
        )
    return expected


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[MLP, Config, float, float]:
    """(model in eval mode, config, mean, std) from a run directory or a .safetensors file.

    From a run directory, the weights must be the file its summary.json names by
    digest (model_sha256): weights copied in from another run are refused. The file
    is untrusted input: its metadata and its table of tensor names, shapes and dtypes
    are checked against each other (check_model_file) before any weight is read or
    any layer allocated; then it is read once, checked against the digest, and loaded.
    """
    path = user_path(run_dir, "run")
    folder = path if path.is_dir() else None
    if folder is not None:
        path = path / MODEL_FILE
    if not path.is_file():
        raise UserError(f"no model at {path}: not a run directory, or the run did not finish")
    expected = recorded_digest(folder, path) if folder is not None else None  # a bare file is taken as it is
    config, mean, std = check_model_file(path)
    try:
        data = path.read_bytes()  # once: the bytes whose digest is checked are the bytes loaded
        if expected is not None and digest(data) != expected:
            raise UserError(
                f"run {folder}: {path.name} is not the file this run saved (its SHA-256 differs from summary.json's model_sha256): "
                "the weights were replaced or damaged"
            )
        tensors = {k: v.to(device) for k, v in safetensors.torch.load(data).items()}
    except (OSError, safetensors.SafetensorError) as e:
        raise UserError(f"{path}: cannot read the weights ({e})") from None
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise UserError(
            f"{path}: tensor(s) {', '.join(bad[:3])} hold NaN or infinity; a diverged run or a damaged file, not a usable model"
        )
    with torch.device("meta"):  # layers without memory; the file's tensors become their weights
        model = MLP.from_config(config)
    model.load_state_dict(tensors, assign=True)
    return model.eval(), config, mean, std


def check_norm_stats(mean: float, std: float) -> str:
    """Why a pixel mean and std (on the [0, 1] scale) cannot be a dataset's, or "" if they can."""
    if not (math.isfinite(mean) and MEAN_RANGE[0] <= mean <= MEAN_RANGE[1]):
        return f"mean {mean} must be a finite number in [{MEAN_RANGE[0]}, {MEAN_RANGE[1]}] (pixels on the [0, 1] scale)"
    if not (math.isfinite(std) and STD_RANGE[0] <= std <= STD_RANGE[1]):
        return f"std {std} must be a finite number in [{STD_RANGE[0]}, {STD_RANGE[1]}] (pixels on the [0, 1] scale)"
    return ""


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
    problem = check_norm_stats(mean, std)
    if problem:
        raise refuse(f"metadata {problem}")
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
    """Writes a run's files as it goes: config at start, metrics each epoch, weights, figures and summary at the end.

    It owns the run folder's claim: once the first files are written the claim is
    `started` (a record it replaces is removed then), and `close` releases the lock.
    """

    def __init__(self, claim: Claim, config: Config, summary: dict[str, Any]) -> None:
        self.claim = claim
        self.dir = claim.path
        self.config = config
        self.rows: list[dict] = []
        self.summary = {"status": "running", **summary}
        write_sealed(self.dir / SUMMARY_FILE, self.summary)  # first: a folder holding anything has a summary saying what it is
        write_json(self.dir / CONFIG_FILE, config.to_dict())
        write_metrics_csv(self.dir / METRICS_FILE, [])
        claim.started()

    def on_epoch(self, row: dict) -> None:
        self.rows.append(row)
        write_metrics_csv(self.dir / METRICS_FILE, self.rows)

    def end(self, status: str, **fields: Any) -> dict[str, Any]:
        """Write the final summary: `status` and `fields` over what was there."""
        self.summary.update(fields, status=status)
        write_sealed(self.dir / SUMMARY_FILE, self.summary)
        return self.summary

    def fail(self, error: BaseException | str) -> None:
        """Mark the run failed with the reason, or interrupted (KeyboardInterrupt, SIGTERM); the history so far stays.

        Never raises: it is called while another error is on its way out. If even this
        small write fails (a disk still full), the status stays "running" and the
        caller's error says why.
        """
        interrupted = isinstance(error, KeyboardInterrupt)
        reason = error if isinstance(error, str) else (str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}")
        with contextlib.suppress(UserError, OSError):
            self.end("interrupted" if interrupted else "failed", **({} if interrupted else {"error": reason}))

    def save_model(self, model: torch.nn.Module, mean: float, std: float) -> bool:
        """Save the weights if every one is finite; whether they were saved."""
        if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()):
            return False
        self.summary["model_sha256"] = save_model(self.dir / MODEL_FILE, model, self.config, mean, std)  # binds the record to them
        return True

    def close(self) -> None:
        """Release the run folder's lock."""
        self.claim.release()


# summary.json fields that are read back, and the types they must have (None: may be null); others are kept as they are
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "best_val_acc": (int, float, type(None)),
    "final_val_acc": (int, float, type(None)),
    "test_acc": (int, float, type(None)),
    "test_loss": (int, float, type(None)),
    "best_epoch": (int, type(None)),
    "epochs_run": (int,),
    "weights_epoch": (int, type(None)),
    "train_seconds": (int, float),
    "params": (int, type(None)),
    "n_train": (int,),
    "n_val": (int,),
    "split_hash": (str,),
    "device": (str,),
    "threads": (int,),
    "norm_mean": (int, float),
    "norm_std": (int, float),
    "error": (str,),
    "model_sha256": (str,),
}


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """A run's summary.json, read as untrusted input: a JSON object whose known fields have their types, a known status."""
    run_dir = user_path(run_dir, "run directory")
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist" if not run_dir.exists() else f"{run_dir} is not a run directory")
    path = run_dir / SUMMARY_FILE
    summary = read_json_object(path, "run summary")
    for key, types in SUMMARY_TYPES.items():
        value = summary.get(key)
        if key in summary and (not isinstance(value, types) or isinstance(value, bool)):
            kind = "a number" if float in types else "an integer" if int in types else "a string"
            names = f"{kind} or null" if type(None) in types else kind
            raise UserError(f"run summary {path}: {key} must be {names}, got {json.dumps(value)[:60]}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"run summary {path}: {key} is not a finite number")
    if summary.get("status") not in STATUSES:
        raise UserError(f"run summary {path}: status must be one of {', '.join(STATUSES)}, got {json.dumps(summary.get('status'))[:60]}")
    return summary


def update_summary(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Add fields (e.g. test_acc) to a finished run's summary.json, atomically."""
    summary = read_summary(run_dir)
    summary.update(fields)
    write_sealed(Path(run_dir) / SUMMARY_FILE, summary)
    return summary
