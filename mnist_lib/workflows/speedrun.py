"""Time to accuracy: a fixed recipe trained on all 60,000 training images, timed, and read on the test set once per seed.

    python -m mnist_lib speedrun configs/speedrun/cpu_98.json --target 0.98 --time-limit 10 --threads 2   # seeds 0-9
    python -m mnist_lib speedrun configs/speedrun/cpu_98.json --develop --seeds 0 1 2   # develop: 54k train, 6k validation

    record = speedrun(Config.load("configs/speedrun/cpu_98.json"), range(10), 0.98, RunOptions(threads=2),
                      recipe="configs/speedrun/cpu_98.json", time_limit=10)
    record.summary["p_value"], record.summary["seconds_mean"]

A recipe is a Config file (configs/speedrun/): any MLP the Config expresses,
augmentation included. It is developed on the validation split (`develop`: train
54,000, validate 6,000; nothing goes into the index). A record run then trains
the fixed recipe on the whole training file, keeps the final weights (nothing is
chosen during the run, so plateau schedules are refused), and evaluates the test
set once per seed.

The clock starts when imports are done and the data (training and test) is in
memory on the device, and stops after the test evaluation; loading is reported
apart, and one untimed warm-up epoch comes first (kernel selection, first
allocations). On the CPU the seeds train one after another, each timed alone; on
CUDA they train side by side as one population, whose wall time each member
reports (the population size is recorded). A record is met when a one-sided
t-test says the mean test accuracy is above the target (p < 0.01) and the mean
time is within the time limit. Each record is a folder under results/records/
(summary.json, summary.csv with one row per seed) and one row of
results/records/records.csv.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core import datasets
from ..core.config import Config, RunOptions, check_seeds
from ..core.errors import UserError
from ..core.files import describe_os_error, write_csv
from ..core.paths import RECORDS_DIR, repo_relative
from ..data.splits import load_test, prepare_data
from ..records import stats
from ..records.claim import claim_run_dir
from ..records.runs import environment
from ..records.seal import write_sealed
from ..training.device import select_device, set_threads, sync
from ..training.evaluate import evaluate, evaluate_members
from ..training.stacked import StackedMLP
from ..training.train import train, train_population

P_REQUIRED = 0.01  # a record's one-sided p-value must be below this
MIN_SEEDS = {"cpu": 10, "cuda": 25}  # a record's evidence: at least this many seeds (docs/speedrun.md); another device: CUDA's
SEED_COLUMNS = ("seed", "status", "acc", "seconds", "epochs")
INDEX_FILE = "records.csv"  # beside the record folders: one row per record
INDEX_COLUMNS = (
    "date", "hardware", "device", "threads", "torch_version", "recipe", "target", "time_limit", "n", "population",
    "seconds_mean", "seconds_std", "acc_mean", "acc_std", "acc_min", "p_value", "met", "rules_broken", "load_seconds", "folder",
)  # fmt: skip


@dataclass
class Speedrun:
    """A finished speedrun: its folder, one row per seed, and the summary (statistics, hardware, versions)."""

    folder: Path
    rows: list[dict]
    summary: dict

    def line(self) -> str:
        """One line for the terminal."""
        s = self.summary
        what = "validation" if s["develop"] else "test"
        verdict = "" if s["develop"] else f"; target {100 * s['target']:.2f} % {'met' if s['met'] else 'NOT met'}"
        if not s["develop"] and s.get("rules_broken"):
            verdict += f" (not a record: {s['rules_broken']})"
        return (
            f"{s['n']} seeds: {what} acc {100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f} % (min {100 * s['acc_min']:.2f} %, "
            f"one-sided p {s['p_value']:.2g}), {s['seconds_mean']:.2f} ± {s['seconds_std']:.2f} s on {s['hardware']}{verdict}"
        )


def check_recipe(config: Config) -> None:
    """A UserError if the recipe would choose something during the run."""
    if config.lr_schedule == "plateau":
        raise UserError(
            "a speedrun recipe chooses nothing during the run, and plateau steps on the validation loss; use lr_schedule cosine or onecycle"
        )


def speedrun(
    config: Config,
    seeds: Sequence[int],
    target: float,
    options: RunOptions,
    *,
    recipe: str | Path,
    time_limit: float | None = None,
    develop: bool = False,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    population: bool | None = None,
    warmup: bool = True,
) -> Speedrun:
    """Train `config` once per seed, timed, and measure each model once (test set; validation with `develop`).

    population: train the seeds side by side (None: on CUDA). out_dir: the record's
    folder (default results/records/<recipe name>[-develop]); an existing one is
    replaced only with `overwrite`, and only if it is a record.
    """
    check_recipe(config)
    seeds = check_seeds(list(seeds))
    if not 0 < target < 1:
        raise UserError(f"target must be an accuracy in (0, 1), got {target}")
    if time_limit is not None and not time_limit > 0:
        raise UserError(f"time_limit must be > 0 seconds, got {time_limit}")
    dev = select_device(options.device)
    n_threads = set_threads(options.threads)
    together = dev.type == "cuda" if population is None else population
    folder = Path(out_dir) if out_dir is not None else RECORDS_DIR / f"{Path(recipe).stem}{'-develop' if develop else ''}"
    if not develop and (folder.parent / INDEX_FILE).exists():
        read_index(folder.parent / INDEX_FILE)  # an index it could not add its row to is refused now, not after the training
    summary = {
        "status": "running",
        "seeds_requested": seeds,
        "recipe": repo_relative(recipe),
        "config": config.to_dict(),
        "target": target,
        "time_limit": time_limit,
        "develop": develop,
        "metric": "val_acc" if develop else "test_acc",
        "population": len(seeds) if together else 1,
        "warmup": warmup,
        "max_train_samples": options.max_train_samples,
        **environment(str(dev), n_threads),
        "date": time.strftime("%Y-%m-%d"),
    }
    summary["hardware"] = summary["gpu"] or summary["cpu"]
    rows: list[dict] = []
    start = time.perf_counter()  # the data is read before the folder is claimed: missing data leaves no record behind
    data = prepare_data(config, options.data_dir, options.max_train_samples, validation=develop).to(dev)
    if develop:
        x_eval, y_eval = data.x_val, data.y_val
    else:
        x_test, y_test = load_test(data.mean, data.std, options.data_dir, config.dataset)
        x_eval, y_eval = x_test.to(dev), y_test.to(dev)
    summary["load_seconds"] = time.perf_counter() - start
    summary["n_train"] = len(data.y_train)
    with claim_run_dir(folder, overwrite=overwrite, what="record folder") as claim:
        write_sealed(claim.path / "summary.json", summary)
        claim.started()
        try:
            run = dict(device=dev, threads=n_threads, progress=False, graph=options.graph)
            if warmup:  # untimed: the first epoch pays for kernel selection and first allocations
                train_population([config.replace(epochs=1, seed=s) for s in seeds[: len(seeds) if together else 1]], data, **run)
            groups = [seeds] if together else [[s] for s in seeds]
            for group in tqdm(groups, desc="seeds", unit="run", disable=not options.progress or len(groups) == 1):
                rows += timed_runs(config, group, data, x_eval, y_eval, dev, run)
                write_csv(claim.path / "summary.csv", rows, SEED_COLUMNS)
            rules = dict(device_type=dev.type, n_train=len(data.y_train), full_train=datasets.DATASETS[config.dataset].n_train)
            summary.update(aggregate(rows, target, time_limit, develop, **rules), status="completed")
        except BaseException as e:
            summary.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=str(e) or type(e).__name__)
            write_sealed(claim.path / "summary.json", summary)
            raise
        write_sealed(claim.path / "summary.json", summary)
    if not develop:
        add_to_index(summary, claim.path)
    return Speedrun(claim.path, rows, summary)


def timed_runs(config: Config, seeds: list[int], data, x_eval, y_eval, dev: torch.device, run: dict) -> list[dict]:
    """Train the seeds (one, or a population) and measure each once on (x_eval, y_eval); the clock covers both.

    One row per seed: seed, status, acc, seconds, epochs. `run`: train()'s keyword arguments (device, threads, ...).
    """
    configs = [config.replace(seed=s) for s in seeds]
    sync(dev)
    start = time.perf_counter()
    if len(configs) == 1:
        results = [train(configs[0], data, **run)]
        accs = [evaluate(results[0].model, x_eval, y_eval)["acc"]]  # a host sync: the clock stops after the work
    else:
        results = train_population(configs, data, **run)
        _, accs = evaluate_members(StackedMLP([r.model for r in results], device=dev), x_eval, y_eval)
    seconds = time.perf_counter() - start
    return [
        {"seed": s, "status": r.status, "acc": acc, "seconds": seconds, "epochs": len(r.history)}
        for s, r, acc in zip(seeds, results, accs, strict=True)
    ]


def aggregate(
    rows: list[dict], target: float, time_limit: float | None, develop: bool, *, device_type: str, n_train: int, full_train: int
) -> dict:
    """The statistics of a speedrun: n, time and accuracy mean ± std, minimum accuracy, one-sided p, the record rules it breaks,
    and met or not.

    The rules (docs/speedrun.md), checked here and nowhere else: a record trains on the whole
    training file (`n_train` of `full_train` images) and has at least MIN_SEEDS seeds for its
    device. A run that breaks one is never met, whatever else holds; `rules_broken` says why.
    """
    accs = [r["acc"] for r in rows]
    times = [r["seconds"] for r in rows]
    n = len(rows)

    def std(x):
        return float(torch.tensor(x, dtype=torch.float64).std()) if n > 1 else math.nan

    needed = MIN_SEEDS.get(device_type, MIN_SEEDS["cuda"])
    broken = [f"trained on {n_train} of the {full_train} training images"] if n_train != full_train else []
    broken += [f"{n} seeds, fewer than the {needed} a record on {device_type} needs"] if n < needed else []
    p = stats.at_least(accs, target)
    fast_enough = time_limit is None or sum(times) / n <= time_limit
    return {
        "n": n,
        "acc_mean": sum(accs) / n,
        "acc_std": std(accs),
        "acc_min": min(accs),
        "seconds_mean": sum(times) / n,
        "seconds_std": std(times),
        "p_value": p,
        "rules_broken": "; ".join(broken),
        "met": (not develop) and not broken and p < P_REQUIRED and fast_enough and all(r["status"] == "completed" for r in rows),
    }


def add_to_index(summary: dict, folder: Path) -> None:
    """Add (or, for the same folder, replace) the record's row in records.csv beside its folder; locked, atomic."""
    index = folder.parent / INDEX_FILE
    row = {k: summary.get(k) for k in INDEX_COLUMNS}
    row.update(folder=folder.name, n=summary["n"], population=summary["population"])
    with _locked(folder.parent / ".records.lock"):
        rows = read_index(index) if index.exists() else []
        rows = [r for r in rows if r["folder"] != folder.name] + [{k: _cell(v) for k, v in row.items()}]
        write_csv(index, rows, INDEX_COLUMNS)


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return "" if value is None else str(value)


def read_index(path: str | Path) -> list[dict]:
    """The rows of a records.csv; a UserError if it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != INDEX_COLUMNS:
                raise UserError(f"{path}: not a records index (its columns are not {', '.join(INDEX_COLUMNS)})")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read the records index ({describe_os_error(e) if isinstance(e, OSError) else e})") from None


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` for the block: two record runs finishing at once both land in the index."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(describe_os_error(e, path, "cannot lock the records index")) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
