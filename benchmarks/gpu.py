"""The GPU: 25-epoch reference runs eager against CUDA graph, populations of 1, 8 and 64, and the DataLoader peer.

    PYTHONPATH=$PWD python3 benchmarks/gpu.py --csv results/benchmarks/gpu.csv            # about 3 minutes on an H100
    PYTHONPATH=$PWD python3 benchmarks/gpu.py --sweep --csv results/benchmarks/gpu.csv    # also sweeps/reference.yaml

All in one process, on the data already in GPU memory, validation every epoch:
- reference_eager / reference_graph: train() on the reference config, 25 epochs,
  with graph=False and graph=True, alternated for --repeats rounds;
- population_<M>: train_population() on M copies of the reference config (seeds
  0..M-1), with the graph; `seconds_per_model` is the wall time over M;
- dataloader_epoch: one epoch of the usual script (per-sample PIL Dataset,
  DataLoader with 4 workers and pinned memory, plain Adam, loss.item() per step),
  the peer; `dataloader_25_epochs_estimate` is 25 of them;
- with --sweep, `python -m mnist_lib sweep sweeps/reference.yaml` end to end in a
  scratch results folder (its 64 grid points as populations on CUDA).
Goals on one H100 or H200: the reference with graphs <= 2.5 s, a 64-member
population <= 0.3 s per model, the reference sweep < 2 minutes.

Each row is printed and written (--csv, --jsonl) as soon as it is measured, so a
crash or a timeout late in the run keeps the rows before it. make gpu-check runs
this after tests/test_gpu.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from common import machine, save
from epoch_speed import torchvision_style_epoch

from mnist_lib import Config, UserError, prepare_data, train
from mnist_lib.core.paths import REPO_ROOT
from mnist_lib.training.device import select_device
from mnist_lib.training.train import train_population


def timed(fn) -> tuple[float, object]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="rounds of reference eager/graph, alternated (default: 2)")
    ap.add_argument("--members", type=int, nargs="+", default=[1, 8, 64], help="population sizes (default: 1 8 64)")
    ap.add_argument("--epochs", type=int, default=Config.epochs, help="epochs per run (default: the reference's 25)")
    ap.add_argument("--sweep", action="store_true", help="also time sweeps/reference.yaml through `mnist_lib sweep`")
    ap.add_argument("--jsonl", help="also write the JSON lines to this file")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args()

    device = select_device("cuda")
    cfg = Config(epochs=args.epochs)
    data = prepare_data(cfg).to(device)
    common = {**machine(device, torch.get_num_threads()), "epochs": cfg.epochs}
    rows = []

    def add(row: dict) -> None:
        rows.append({**row, **common})
        print(json.dumps(rows[-1]), flush=True)
        save(rows, args.jsonl, args.csv)

    train(cfg.replace(epochs=1), data, device=device, progress=False, graph=True)  # CUDA context, cuBLAS, allocator
    for r in range(args.repeats):
        for graph in (False, True):
            seconds, result = timed(lambda g=graph: train(cfg, data, device=device, progress=False, graph=g))
            name = "reference_graph" if graph else "reference_eager"
            add({"measure": name, "round": r, "seconds": round(seconds, 3), "best_val_acc": result.best_val_acc})
    for m in args.members:
        configs = [cfg.replace(seed=s) for s in range(m)]
        seconds, results = timed(lambda c=configs: train_population(c, data, device=device, progress=False))
        accs = [res.best_val_acc for res in results]
        add(
            {
                "measure": f"population_{m}", "members": m, "seconds": round(seconds, 3), "seconds_per_model": round(seconds / m, 4),
                "best_val_acc_mean": sum(accs) / m, "completed": sum(res.status == "completed" for res in results),
            }
        )  # fmt: skip
    epoch = torchvision_style_epoch(cfg, data.to("cpu"), device="cuda", workers=4)
    epoch()  # workers start, pages warm
    seconds, _ = timed(epoch)
    add({"measure": "dataloader_epoch", "seconds": round(seconds, 3), "dataloader_25_epochs_estimate": round(25 * seconds, 1)})
    if args.sweep:
        with tempfile.TemporaryDirectory() as scratch:
            env = {**os.environ, "MNIST_RESULTS_DIR": scratch}
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "mnist_lib", "sweep", "sweeps/reference.yaml"], cwd=REPO_ROOT, env=env)
            add({"measure": "reference_sweep", "seconds": round(time.perf_counter() - t0, 1), "returncode": proc.returncode})


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # e.g. no CUDA GPU here: one line, exit status 2
        sys.exit(print(f"gpu.py: {e}", file=sys.stderr) or 2)
