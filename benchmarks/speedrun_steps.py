"""How the speedrun recipes came to be: one change per step, each measured on the validation split, seed by seed.

    .venv/bin/python benchmarks/speedrun_steps.py --seeds 0 1 2 --csv results/records/steps.csv

Each step is the previous one with one change (STEPS), from the reference
config (with the cosine schedule, since a speedrun chooses nothing during the
run) to configs/speedrun/cpu_98.json and then cpu_99.json. Every step trains on
the 54,000 training images and is measured on the 6,000 validation images, as a
recipe is developed: the test set is not read. The steps run interleaved (seed 0
of every step, then seed 1, ...), since this machine's speed drifts, each after
an untimed warm-up epoch, timed as a speedrun is (train + evaluation). Rows: one
per step, with the mean ± std of validation accuracy and of seconds, and Welch's
p-value of its accuracy against the previous step's.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import save

from mnist_lib import Config
from mnist_lib.core.paths import REPO_ROOT
from mnist_lib.data.splits import prepare_data
from mnist_lib.records.runs import environment
from mnist_lib.records.stats import welch
from mnist_lib.training.device import select_device, set_threads
from mnist_lib.training.train import train_population
from mnist_lib.workflows.speedrun import timed_runs

AUGMENT = {"aug_rotate": 12.0, "aug_scale": 0.1, "aug_shear": 10.0, "aug_translate": 2.0, "aug_elastic_alpha": 2.0}
STEPS = [  # (the change, the fields it sets): each step is the previous one plus its change
    ("the reference, cosine schedule (25 epochs, batch 128, Adam 5e-4, dropout 0.4/0.3/0.3)", {"lr_schedule": "cosine"}),
    ("6 epochs, one-cycle to lr 2e-3", {"epochs": 6, "lr_schedule": "onecycle", "lr": 2e-3}),
    ("batch 512, lr 6e-3", {"batch_size": 512, "lr": 6e-3}),
    ("bf16 matmuls", {"precision": "bf16"}),
    ("dropout 0.1 on every layer", {"dropout": (0.1, 0.1, 0.1)}),
    ("label smoothing 0.1: configs/speedrun/cpu_98.json", {"label_smoothing": 0.1}),
    ("mlp_aug's augmentation and 32 epochs: configs/speedrun/cpu_99.json", {**AUGMENT, "epochs": 32}),
]


def step_configs() -> list[tuple[str, Config]]:
    """The steps as (change, config), each built on the one before."""
    config, out = Config(), []
    for change, fields in STEPS:
        config = config.replace(**fields)
        out.append((change, config))
    return out


def check_against_recipes(steps: list[tuple[str, Config]]) -> None:
    """The steps named after a recipe file must be that recipe."""
    for change, config in steps:
        for name in ("cpu_98", "cpu_99"):
            if f"{name}.json" in change and Config.load(REPO_ROOT / "configs" / "speedrun" / f"{name}.json") != config:
                raise SystemExit(f"step {change!r} is not configs/speedrun/{name}.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds, one interleaved round each (default: 0 1 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--device", default="cpu", help="device (default: cpu)")
    ap.add_argument("--first", type=int, default=0, help="skip the steps before this one (a quick look at the later steps)")
    ap.add_argument("--csv", help="write the rows here")
    args = ap.parse_args()
    steps = step_configs()
    check_against_recipes(steps)
    dev, threads = select_device(args.device), set_threads(args.threads)
    data = prepare_data(Config()).to(dev)
    run = dict(device=dev, threads=threads, progress=False, graph=None)
    for _, config in steps[args.first :]:  # untimed warm-up epoch of each
        train_population([config.replace(epochs=1)], data, **run)
    results: dict[int, list[dict]] = {i: [] for i in range(args.first, len(steps))}
    for seed in args.seeds:
        for i in results:
            results[i] += timed_runs(steps[i][1].replace(seed=seed), [seed], data, data.x_val, data.y_val, dev, run)
            print(f"seed {seed} step {i}: val {100 * results[i][-1]['acc']:.2f} % in {results[i][-1]['seconds']:.2f} s", flush=True)
    env = environment(str(dev), threads)
    rows, previous = [], None
    for i, seed_rows in results.items():
        accs = [100 * r["acc"] for r in seed_rows]
        secs = [r["seconds"] for r in seed_rows]
        change, config = steps[i]
        rows.append({
            "step": i, "change": change, "n": len(accs),
            "val_acc_mean": statistics.mean(accs), "val_acc_std": statistics.stdev(accs) if len(accs) > 1 else float("nan"),
            "seconds_mean": statistics.mean(secs), "seconds_std": statistics.stdev(secs) if len(secs) > 1 else float("nan"),
            "p_vs_previous": welch(accs, previous).p if previous else float("nan"),
            "epochs": config.epochs, "batch_size": config.batch_size, "precision": config.precision,
            "date": time.strftime("%Y-%m-%d"), "hardware": env["gpu"] or env["cpu"], "threads": threads, "torch_version": env["torch_version"],
        })  # fmt: skip
        previous = accs
        print(f"step {i}: {rows[-1]['val_acc_mean']:.2f} ± {rows[-1]['val_acc_std']:.2f} % in {rows[-1]['seconds_mean']:.2f} s  ({change})")
    save(rows, csv_path=args.csv)


if __name__ == "__main__":
    main()
