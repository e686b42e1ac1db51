"""Shared by the benchmark scripts: interleaved timing, the machine, and writing JSON lines + CSV.

Not run on its own. The machines here drift by up to 2x in speed over minutes, so
every script times its candidates round by round (A, B, C, A, B, C, ...) and
reports medians and per-round ratios, never two separate blocks of runs.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable

import torch

from mnist_lib import MLP, Config
from mnist_lib.core.files import atomic_write, write_csv
from mnist_lib.records.runs import environment
from mnist_lib.training.device import DTYPES, set_threads, sync
from mnist_lib.training.stacked import StackedMLP
from mnist_lib.training.train import PopulationStep, population_epoch


def interleave(fns: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Call each fn once to warm up, then `rounds` times in turn; seconds per call, per fn."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def library_epoch(cfg: Config, data, precision: str, device: torch.device, threads: int | None = None, members: int = 1):
    """A function training one mnist_lib epoch: the step train() runs, for `members` copies of `cfg` (seeds 0, 1, ...)
    side by side (1: a single run); sets `threads` on each call if given."""
    configs = [cfg.replace(precision=precision, seed=s) for s in range(members)]
    models = []
    for c in configs:
        torch.manual_seed(c.seed)
        models.append(MLP.from_config(c))
    step = PopulationStep(configs, StackedMLP(models, device=device), data, math.ceil(len(data.y_train) / cfg.batch_size))
    x = data.x_train.to(device, DTYPES[precision])
    y = data.y_train.to(device)
    gens = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]

    def run():
        if threads is not None:
            set_threads(threads)
        return population_epoch(step, x, y, cfg.batch_size, gens)

    return run


def summary(times: list[float]) -> dict:
    """Median, fastest and every round, in seconds (rounded to 0.1 ms)."""
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "all_s": [round(t, 4) for t in times]}


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den: each pair ran back to back, so a slow phase hits both."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def machine(device: torch.device, threads: int) -> dict:
    env = environment(str(device), threads)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": env["gpu"] or env["cpu"],
        "cpu_count": env["cpu_count"],
        "threads": threads,
        "torch": env["torch_version"],
    }


def emit(rows: list[dict], jsonl: str | None = None, csv_path: str | None = None) -> None:
    """Print one JSON object per row; also write them as JSON lines and/or CSV (atomically)."""
    print("\n".join(json.dumps(r) for r in rows))
    save(rows, jsonl, csv_path)


def save(rows: list[dict], jsonl: str | None = None, csv_path: str | None = None) -> None:
    """Write the rows as JSON lines and/or CSV (atomically): called after each row, a crash keeps the rows before it."""
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    if jsonl:
        atomic_write(jsonl, text)
    if csv_path:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        write_csv(csv_path, [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows], columns)
