"""fp32 vs bf16 training: full runs over several seeds, validation accuracy and wall time side by side.

    .venv/bin/python benchmarks/precision.py --seeds 0 1 2 --csv results/benchmarks/precision.csv

Each seed trains the configuration (the reference by default, 25 epochs) once in
fp32 and once in bf16, alternating, on the same split and thread count. Rows: one
per run (best validation accuracy, wall time, median epoch time), then one summary
per precision (mean and sample std over seeds). Validation only; no test set.
"""

from __future__ import annotations

import argparse
import statistics

from common import emit, machine

from mnist_lib import Config, prepare_data, train
from mnist_lib.training.device import bf16_supported, select_device


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    ap.add_argument("--config", help="config JSON (default: the reference)")
    ap.add_argument("--epochs", type=int, help="override the config's epochs")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--jsonl", help="also write the JSON lines to this file")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args()

    device = select_device(args.device)
    cfg = Config.load(args.config) if args.config else Config()
    if args.epochs:
        cfg = cfg.replace(epochs=args.epochs)
    if not bf16_supported(device):
        raise SystemExit(f"{device}: no native bf16 matmul here; nothing to compare")
    data = prepare_data(cfg)
    common = {**machine(device, args.threads), "epochs": cfg.epochs, "batch_size": cfg.batch_size, "hidden": list(cfg.hidden)}
    rows = []
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):
            result = train(cfg.replace(seed=seed, precision=precision), data, device=device, threads=args.threads, progress=False)
            epoch_s = statistics.median(r["seconds"] for r in result.history)
            row = {
                "measure": "run",
                "precision": precision,
                "seed": seed,
                "best_val_acc": result.best_val_acc,
                "wall_s": round(result.train_seconds, 2),
                "epoch_median_s": round(epoch_s, 3),
            }
            print(row, flush=True)
            rows.append({**row, **common})
    for precision in ("fp32", "bf16"):
        runs = [r for r in rows if r["measure"] == "run" and r["precision"] == precision]
        acc, acc_sd = mean_std([r["best_val_acc"] for r in runs])
        wall, wall_sd = mean_std([r["wall_s"] for r in runs])
        rows.append(
            {
                "measure": "summary",
                "precision": precision,
                "seeds": len(runs),
                "val_acc_mean": round(acc, 5),
                "val_acc_std": round(acc_sd, 5),
                "wall_s_mean": round(wall, 2),
                "wall_s_std": round(wall_sd, 2),
                "epoch_median_s": round(statistics.median(r["epoch_median_s"] for r in runs), 3),
                **common,
            }
        )
    emit(rows, args.jsonl, args.csv)


if __name__ == "__main__":
    main()
