"""Top-level ATen ops per training step, counted with torch.profiler on the CPU: the GPU's launch budget, measured without a GPU.

    .venv/bin/python benchmarks/ops.py                  # one CSV row per case and population size, on stdout
    .venv/bin/python benchmarks/ops.py --members 1 64 --csv results/benchmarks/ops.csv

On a GPU each ATen op is at least one kernel launch, and for a network this small
launches, not arithmetic, set the pace; so the count is the step's cost there, and
it can be taken on any machine. What is counted is one step as train() runs it,
and as a CUDA graph replays it (graphs.GraphedEpochs._body): the batch gathered
from the resident training set, the engine's step (forward, loss, backward,
optimizer, max-norm, schedule) and the running loss and accuracy sums. An op is
top-level when no other ATen op encloses it (the ops an op calls inside itself
are not launches of their own); the backward's ops count, since autograd runs
them on this thread. The count is the mean over --steps profiled steps, after
--warmup steps that create the optimizer state.

Cases: the reference config; bf16; BatchNorm; augmentation (rotate, translate);
SGD with Nesterov momentum; AdamW with LayerNorm and GELU. Members are copies of
the case with seeds 0, 1, ... (the hyperparameters of `--seeds` runs).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys

import torch

from mnist_lib import MLP, Config
from mnist_lib.data.splits import Data
from mnist_lib.training.stacked import StackedMLP
from mnist_lib.training.train import PopulationStep

CASES = {
    "reference": {},
    "bf16": {"precision": "bf16"},
    "batchnorm": {"norm": "batch"},
    "augmentation": {"aug_rotate": 10.0, "aug_translate": 2.0},
    "sgd_nesterov": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adamw_layernorm_gelu": {"optimizer": "adamw", "norm": "layer", "activation": "gelu", "weight_decay": 0.01},
}
N_TRAIN = 1024  # random images: the count does not depend on the data


def ops_per_step(cfg: Config, members: int, steps: int = 3, warmup: int = 3) -> float:
    """Mean number of top-level ATen ops in one training step of `members` copies of cfg."""
    configs = [cfg.replace(seed=s) for s in range(members)]
    models = []
    for c in configs:
        torch.manual_seed(c.seed)
        models.append(MLP.from_config(c))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N_TRAIN, 784, generator=g), torch.randint(0, 10, (N_TRAIN,), generator=g)
    data = Data(x, y, None, None, 0.1307, 0.3081, "", None, None)
    step = PopulationStep(configs, StackedMLP(models), data, math.ceil(N_TRAIN / cfg.batch_size))
    x = x.to(step.dtype)
    loss_sum, correct = torch.zeros(members), torch.zeros(members, dtype=torch.long)
    perms = torch.stack([torch.randperm(N_TRAIN, generator=g) for _ in configs])
    batches = perms[:, : (warmup + steps) * cfg.batch_size].split(cfg.batch_size, dim=1)

    def body(idx: torch.Tensor) -> None:  # what GraphedEpochs captures
        batch_loss, batch_correct = step.on_rows(x, y, idx)
        loss_sum.add_(batch_loss)
        correct.add_(batch_correct)

    for idx in batches[:warmup]:
        body(idx)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for idx in batches[warmup:]:
            body(idx)
    return sum(1 for e in prof.events() if _top_level_aten(e)) / steps


def _top_level_aten(event) -> bool:
    if not event.name.startswith("aten::"):
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, nargs="+", default=[1, 64], help="population sizes (default: 1 64)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), help="which cases (default: all)")
    ap.add_argument("--csv", help="also write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the count does not depend on threads; one keeps it quick
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "members", "ops_per_step"])
    for case in args.cases:
        for members in args.members:
            writer.writerow([case, members, f"{ops_per_step(Config(**CASES[case]), members):g}"])
            print(buf.getvalue().splitlines()[-1], file=sys.stderr)
    sys.stdout.write(buf.getvalue())
    if args.csv:
        from mnist_lib.core.files import atomic_write

        atomic_write(args.csv, buf.getvalue())


if __name__ == "__main__":
    main()
