"""Time one training epoch of mnist_lib against a torchvision-style pipeline, in one run.

    .venv/bin/python benchmarks/epoch_speed.py --threads 2 --repeats 3

mnist_lib: the whole split is one normalized tensor; batches are slices of a
random permutation; cheap dropout masks; fused Adam (mnist_lib.train.train_epoch).

torchvision-style (what the usual tutorial does, rebuilt without torchvision,
whose wheels do not import against the CPU torch here): a per-sample Dataset
that turns each uint8 image into a PIL image, then a float tensor (ToTensor),
then normalizes it (Normalize); a DataLoader with batch 128 and shuffling;
nn.Dropout; the default (non-fused) Adam; loss.item() every step.

Both train the same architecture on the same 54,000-example split. The two are
interleaved and each reports its median over --repeats epochs, because the
machines are noisy. Prints one JSON object per measurement, then the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mnist_lib import Config, prepare_data
from mnist_lib.data import read_split
from mnist_lib.model import MLP
from mnist_lib.runs import atomic_write, environment
from mnist_lib.train import make_optimizer, set_threads, train_epoch


class PilMnist(Dataset):
    """Per-sample pipeline: uint8 -> PIL -> ToTensor -> Normalize, as torchvision.datasets.MNIST does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels, self.mean, self.std = images.numpy(), labels.tolist(), mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)  # ToTensor
        return (x - self.mean) / self.std, self.labels[i]  # Normalize


def torchvision_style_model(cfg: Config) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for h, p in zip(cfg.hidden, cfg.dropout, strict=True):
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(p)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def time_torchvision_style(loader, model, opt) -> float:
    model.train()
    t0 = time.perf_counter()
    running = 0.0
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        running += loss.item()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per pipeline; the median is reported (default: 3)")
    ap.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    ap.add_argument("--out", help="also write the JSON lines to this file (atomically)")
    args = ap.parse_args()

    threads = set_threads(args.threads)
    cfg = Config(batch_size=args.batch_size)
    data = prepare_data(cfg)
    images, labels = read_split("train")
    loader = DataLoader(
        PilMnist(images[data.train_idx], labels[data.train_idx], data.mean, data.std), batch_size=cfg.batch_size, shuffle=True
    )

    torch.manual_seed(0)
    lib_model = MLP.from_config(cfg)
    lib_opt = make_optimizer(lib_model, cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    tv_model = torchvision_style_model(cfg)
    tv_opt = torch.optim.Adam(tv_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    train_epoch(lib_model, lib_opt, data, cfg.batch_size, gen)  # warm-up: allocator, kernels
    lib_times, tv_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        train_epoch(lib_model, lib_opt, data, cfg.batch_size, gen)
        lib_times.append(time.perf_counter() - t0)
        tv_times.append(time_torchvision_style(loader, tv_model, tv_opt))

    env = environment("cpu", threads)
    common = {
        "batch_size": cfg.batch_size,
        "n_train": len(data.y_train),
        "threads": threads,
        "cpu": env["cpu"],
        "torch": env["torch_version"],
    }
    lines = [
        json.dumps({"pipeline": name, "epoch_seconds": statistics.median(times), "min_seconds": min(times), "all": times, **common})
        for name, times in (("mnist_lib", lib_times), ("torchvision_style", tv_times))
    ]
    # each ratio pairs two epochs run back to back, so a slow phase of the machine hits both
    ratios = [tv / lib for lib, tv in zip(lib_times, tv_times, strict=True)]
    lines.append(
        json.dumps(
            {
                "speedup": round(statistics.median(ratios), 2),
                "speedups": [round(r, 2) for r in ratios],
                "date": time.strftime("%Y-%m-%d"),
                **common,
            }
        )
    )
    print("\n".join(lines))
    if args.out:
        atomic_write(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
