"""Epoch time of mnist_lib against batch size (64-1024) and torch threads (1, 2), fp32 and bf16, with a plot.

    .venv/bin/python benchmarks/epoch_speed.py --rounds 3 --csv results/benchmarks/epoch_speed.csv \
        --figure figures/performance/epoch_time.png

Also home of the torchvision-style pipeline that benchmarks/roofline.py compares
against: what the usual tutorial does, rebuilt without torchvision (whose wheels do
not import against the CPU torch here): a per-sample Dataset that turns each uint8
image into a PIL image, then a float tensor (ToTensor), then normalizes it
(Normalize); a DataLoader with shuffling; nn.Dropout; the default (non-fused) Adam;
loss.item() every step. Same architecture, same 54,000-example split.

All (batch size, threads, precision) settings are interleaved round by round;
each row reports the median and fastest round.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from common import emit, interleave, library_epoch, machine, summary
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mnist_lib import Config, prepare_data
from mnist_lib.data.idx import read_split
from mnist_lib.training.device import bf16_supported

BATCH_SIZES = (64, 128, 256, 512, 1024)
THREADS = (1, 2)


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


def torchvision_style_epoch(cfg: Config, data, device: str = "cpu", workers: int = 0):
    """A function training one torchvision-style epoch on the training split of `data`.

    On a GPU the usual script adds loader workers and pinned memory, and moves each batch over.
    """
    images, labels = read_split("train")
    dataset = PilMnist(images[data.train_idx], labels[data.train_idx], data.mean, data.std)
    pin = torch.device(device).type == "cuda"
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers, pin_memory=pin, persistent_workers=workers > 0
    )
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for h, p in zip(cfg.hidden, cfg.dropout, strict=True):
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(p)]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def run() -> float:
        model.train()
        running = 0.0
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item()
        return running

    return run


def plot(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    precisions = sorted({r["precision"] for r in rows}, reverse=True)  # fp32 first
    for prec in precisions:
        for threads in THREADS:
            pts = sorted((r["batch_size"], r["median_s"]) for r in rows if r["precision"] == prec and r["threads"] == threads)
            left.plot(*zip(*pts, strict=True), marker="o", label=f"{prec}, {threads} thread{'s' * (threads > 1)}")
    left.set(xscale="log", xlabel="batch size", ylabel="seconds per epoch (median)", title="Epoch time vs batch size")
    left.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    left.legend()
    width = 0.8 / len(precisions)
    for i, prec in enumerate(precisions):
        vals = [
            next(r["median_s"] for r in rows if r["precision"] == prec and r["threads"] == t and r["batch_size"] == 128) for t in THREADS
        ]
        right.bar(np.arange(len(THREADS)) + i * width, vals, width, label=prec)
    right.set_xticks(np.arange(len(THREADS)) + width * (len(precisions) - 1) / 2, [f"{t} thread{'s' * (t > 1)}" for t in THREADS])
    right.set(ylabel="seconds per epoch (median)", title="Epoch time vs threads (batch 128)")
    right.legend()
    m = rows[0]
    fig.suptitle(f"mnist_lib training epoch, 784-512-256-128-10, 54k examples ({m['device']}, {m['date']})", fontsize=10)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per setting after a warm-up (default: 3)")
    ap.add_argument("--jsonl", help="also write the JSON lines to this file")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    ap.add_argument("--figure", help="save the plot (PNG) here")
    args = ap.parse_args()

    data = prepare_data(Config())
    precisions = ["fp32"] + (["bf16"] if bf16_supported("cpu") else [])
    settings = [(b, t, p) for p in precisions for t in THREADS for b in BATCH_SIZES]
    times = interleave(
        {(b, t, p): library_epoch(Config(batch_size=b), data, p, torch.device("cpu"), t) for b, t, p in settings},
        args.rounds,
        torch.device("cpu"),
    )
    rows = []
    for (batch, threads, prec), ts in times.items():
        row = {**machine(torch.device("cpu"), threads), "batch_size": batch, "precision": prec}
        rows.append({**row, **summary(ts)})
    emit(rows, args.jsonl, args.csv)
    if args.figure:
        from mnist_lib.records.plots import save_figure

        save_figure(plot(rows), args.figure, close=True)


if __name__ == "__main__":
    main()
