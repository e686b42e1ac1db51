"""Sweep throughput: trials one after another with 2 threads vs 2 worker processes with 1 thread each.

    .venv/bin/python benchmarks/sweep_throughput.py --trials 4 --epochs 3 --out results/benchmarks/sweep_throughput.jsonl

(a) sequential: one process, torch threads = 2, the trials run one after another.
(b) parallel: 2 spawned worker processes (as the sweep runner starts them), 1 torch
    thread each, the trials split between them.
Both train the reference architecture on the full training split, with different
seeds, and include the per-process start-up (imports, data). Then (c) the papermill
overhead: one trial run as an execution of notebooks/02_train.ipynb against the same
trial called through the library, both with 1 thread; the difference is the cost
of the kernel and the notebook. Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def run_trials(seeds: list[int], epochs: int, threads: int) -> float:
    """Train one reference-architecture trial per seed in this process; returns wall seconds."""
    start = time.perf_counter()
    from mnist_lib import Config, prepare_data, train

    data = prepare_data(Config())
    for seed in seeds:
        train(Config(epochs=epochs, seed=seed), data, device="cpu", threads=threads, progress=False)
    return time.perf_counter() - start


def papermill_trial(epochs: int, out_dir: Path) -> float:
    import papermill

    from mnist_lib.core.paths import NOTEBOOKS_DIR
    from mnist_lib.workflows.batch import KERNEL, use_project_kernel

    use_project_kernel()
    os.environ["MNIST_RESULTS_DIR"] = str(out_dir)
    start = time.perf_counter()
    params = {"epochs": epochs, "threads": 1, "device": "cpu", "run_name": "bench", "overwrite": True}
    papermill.execute_notebook(
        str(NOTEBOOKS_DIR / "02_train.ipynb"), str(out_dir / "bench.ipynb"), parameters=params, kernel_name=KERNEL, progress_bar=False
    )
    return time.perf_counter() - start


def library_trial(epochs: int, out_dir: Path) -> tuple[float, float]:
    """(wall seconds, training seconds) of one trial through the library."""
    from mnist_lib import Config, RunOptions, train_and_record

    start = time.perf_counter()
    _, result, _ = train_and_record(
        Config(epochs=epochs), RunOptions(threads=1, device="cpu", progress=False), run_dir=out_dir / "lib", overwrite=True
    )
    return time.perf_counter() - start, result.train_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4, help="trials per arrangement, an even number (default: 4)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per trial (default: 3)")
    ap.add_argument("--out", help="also write the JSON lines to this file (atomically)")
    args = ap.parse_args()
    seeds = list(range(args.trials))

    ctx = mp.get_context("spawn")
    start = time.perf_counter()
    with ctx.Pool(1) as pool:  # a fresh process, like the parallel arm, so both pay the same start-up
        pool.apply(run_trials, (seeds, args.epochs, 2))
    sequential = time.perf_counter() - start

    start = time.perf_counter()
    with ctx.Pool(2) as pool:
        pool.starmap(run_trials, [(seeds[0::2], args.epochs, 1), (seeds[1::2], args.epochs, 1)])
    parallel = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp, ctx.Pool(1) as pool:
        lib, lib_train = pool.apply(library_trial, (args.epochs, Path(tmp)))
        pm = pool.apply(papermill_trial, (args.epochs, Path(tmp)))
    from mnist_lib.records.runs import atomic_write, environment

    env = environment("cpu", 2)
    common = {"trials": args.trials, "epochs": args.epochs, "cpu": env["cpu"], "cpu_count": env["cpu_count"], "torch": env["torch_version"]}
    lines = [
        {
            "arrangement": "sequential, 1 process x 2 threads",
            "seconds": sequential,
            "trials_per_hour": 3600 * args.trials / sequential,
            **common,
        },
        {
            "arrangement": "parallel, 2 processes x 1 thread",
            "seconds": parallel,
            "trials_per_hour": 3600 * args.trials / parallel,
            **common,
        },
        {"speedup_parallel_over_sequential": round(sequential / parallel, 2), "date": time.strftime("%Y-%m-%d"), **common},
        {
            "papermill_trial_seconds": pm,
            "library_trial_seconds": lib,
            "papermill_overhead_seconds": pm - lib,
            # a 25-epoch library trial: the same start-up plus 25 epochs at the measured pace
            "overhead_vs_25_epoch_trial": (pm - lib) / (lib - lib_train + 25 * lib_train / args.epochs),
            **common,
        },
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    print(text)
    if args.out:
        atomic_write(args.out, text + "\n")


if __name__ == "__main__":
    main()
