"""Population training on this machine: M models side by side (stacked weights) against M single runs, per model.

    .venv/bin/python benchmarks/population.py --rounds 3 --csv results/benchmarks/population_cpu.csv

Each round times one epoch of the reference network for a single model (train()'s
step: a population of one) and for populations of each size in --members, interleaved. `per_model_vs_single` is the population's epoch
time divided by M, over the single model's epoch time (paired by round): below 1
means the population is the faster way to train M models here. train --seeds and
sweeps use populations on the CPU only if this says so (mnist_lib.workflows.experiment).
"""

from __future__ import annotations

import argparse

from common import emit, interleave, library_epoch, machine, paired_ratio, summary

from mnist_lib import Config, prepare_data
from mnist_lib.training.device import select_device, set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after a warm-up (default: 3)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--members", type=int, nargs="+", default=[2, 4, 8], help="population sizes (default: 2 4 8)")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"], help="each measured (default: both)")
    ap.add_argument("--train-samples", type=int, default=12_000, help="training examples per epoch (default: 12000, to keep rounds short)")
    ap.add_argument("--jsonl", help="also write the JSON lines to this file")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args()

    threads = set_threads(args.threads)
    device = select_device(args.device)
    cfg = Config()
    data = prepare_data(cfg, max_train_samples=args.train_samples).to(device)
    fns = {}
    for p in args.precision:
        fns[f"single/{p}"] = library_epoch(cfg, data, p, device)
        for m in args.members:
            fns[f"population{m}/{p}"] = library_epoch(cfg, data, p, device, members=m)
    times = interleave(fns, args.rounds, device)
    common = {**machine(device, threads), "n_train": len(data.y_train), "batch_size": cfg.batch_size}
    rows = [{"measure": name, **summary(ts), **common} for name, ts in times.items()]
    for p in args.precision:
        for m in args.members:
            per_model = [t / m for t in times[f"population{m}/{p}"]]
            ratio = paired_ratio(per_model, times[f"single/{p}"])
            rows.append({"measure": "per_model_vs_single", "precision": p, "members": m, "ratio": round(ratio, 3), **common})
    emit(rows, args.jsonl, args.csv)


if __name__ == "__main__":
    main()
