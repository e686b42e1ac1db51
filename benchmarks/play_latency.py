"""How long the drawing pad (notebook 06) takes to answer a stroke, on this CPU.

    .venv/bin/python benchmarks/play_latency.py --csv results/benchmarks/play_latency.csv

For each model: a digit drawn from code, then `--repeats` answers timed one by
one. An answer is what a stroke's end triggers in mnist_lib.widgets.DigitPad:
redraw the strokes with PIL, convert them with images.to_mnist, run the model
(eval mode, CPU), update the picture and the bar chart. The issue's goal: well
under 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import emit, machine

from mnist_lib.core.paths import RESULTS_DIR
from mnist_lib.training.device import set_threads
from mnist_lib.widgets import DigitPad, model_runs

MODELS = ("runs/reference", "configs/mlp_aug/seed_0", "configs/mlp_noaug_v2/seed_0", "configs/fashion_reference/seed_0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=50, help="timed answers per model (default: 50)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    runs = model_runs(RESULTS_DIR)
    rows = []
    for name in MODELS:
        pad = DigitPad(runs, name)
        pad.draw([(70, 60), (210, 60), (120, 240)])  # a seven
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pad.update()
            times.append(time.perf_counter() - t0)
        rows.append(
            {
                "model": name, "median_ms": round(1000 * statistics.median(times), 2), "max_ms": round(1000 * max(times), 2),
                "repeats": args.repeats, **machine(torch.device("cpu"), threads),
            }
        )  # fmt: skip
    emit(rows, None, args.csv)


if __name__ == "__main__":
    main()
