"""Cost of batch augmentation: a training epoch with affine + elastic augmentation against one without, interleaved.

    .venv/bin/python benchmarks/augment_cost.py --rounds 5 --csv results/benchmarks/augment_cost.csv

Both epochs train the reference network with the reference config; the augmented
one adds rotation 12 deg, zoom 0.1, shear 10 deg, shift 2 px and elastic
distortion (alpha 2 px, sigma 4 px), applied by the training step to every batch.
The issue's budget: at most 1.5x the un-augmented epoch on the 2-core CPU.
"""

from __future__ import annotations

import argparse

import torch
from common import emit, interleave, library_epoch, machine, paired_ratio, summary

from mnist_lib import Config, prepare_data
from mnist_lib.training.device import set_threads

AUGMENTED = {
    "aug_rotate": 12.0,
    "aug_scale": 0.1,
    "aug_shear": 10.0,
    "aug_translate": 2.0,
    "aug_elastic_alpha": 2.0,
    "aug_elastic_sigma": 4.0,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up (default: 5)")
    ap.add_argument(
        "--precision",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="training arithmetic, each measured (default: fp32 bf16)",
    )
    ap.add_argument("--jsonl", help="also write the JSON lines to this file")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args()

    threads = set_threads(args.threads)
    cpu = torch.device("cpu")
    data = prepare_data(Config())
    fns = {}
    for p in args.precision:
        fns[f"plain_{p}"] = library_epoch(Config(), data, p, cpu)
        fns[f"augmented_{p}"] = library_epoch(Config(**AUGMENTED), data, p, cpu)
    times = interleave(fns, args.rounds, cpu)
    common = machine(cpu, threads)
    rows = [{"measure": name, **summary(ts), **common} for name, ts in times.items()]
    for p in args.precision:
        ratio = paired_ratio(times[f"augmented_{p}"], times[f"plain_{p}"])
        rows.append({"measure": f"augmented_over_plain_{p}", "ratio": round(ratio, 3), **AUGMENTED, **common})
    emit(rows, args.jsonl, args.csv)


if __name__ == "__main__":
    main()
