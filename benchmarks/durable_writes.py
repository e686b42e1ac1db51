"""Cost of durable writes: a 25-epoch reference run with every atomic write synced (fsync of the file and its folder),
against the same run with fsync made a no-op, interleaved; and the seconds spent inside fsync, counted directly.

    .venv/bin/python benchmarks/durable_writes.py --rounds 1 --csv results/benchmarks/durable_writes.csv

A run writes summary.json, config.json and metrics.csv at its start, metrics.csv after
every epoch, and the weights, figures and summary at its end (records/runs.py): each
write is two fsyncs (core/files.atomic_write). The run records go to a scratch folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from common import emit, machine, save

from mnist_lib import Config, RunOptions
from mnist_lib.workflows.experiment import train_and_record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the two arms, interleaved (default: 1)")
    ap.add_argument("--epochs", type=int, default=25, help="epochs per run (default: 25, the reference)")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args()

    real_fsync = os.fsync
    spent = {"calls": 0, "seconds": 0.0}

    def timed_fsync(fd):
        t0 = time.perf_counter()
        real_fsync(fd)
        spent["calls"] += 1
        spent["seconds"] += time.perf_counter() - t0

    options = RunOptions(threads=args.threads, device="cpu", progress=False)
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1] / "results") as scratch:  # the disk results use
        for r in range(args.rounds):
            for arm, fsync in (("fsync", timed_fsync), ("no fsync", lambda fd: None)):
                spent.update(calls=0, seconds=0.0)
                os.fsync = fsync
                try:
                    t0 = time.perf_counter()
                    _, result, _ = train_and_record(Config(epochs=args.epochs), options, run_dir=Path(scratch) / f"{arm}-{r}")
                    wall = time.perf_counter() - t0
                finally:
                    os.fsync = real_fsync
                rows.append({**machine(torch.device("cpu"), args.threads), "arm": arm, "round": r, "epochs": args.epochs,
                             "wall_s": round(wall, 3), "train_s": round(result.train_seconds, 3),
                             "fsync_calls": spent["calls"], "fsync_s": round(spent["seconds"], 4)})  # fmt: skip
                emit(rows[-1:])
    save(rows, csv_path=args.csv)


if __name__ == "__main__":
    main()
