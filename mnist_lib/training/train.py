"""The training loop: in-memory batches, fused optimizers, lr schedules, best-by-validation weights.

    data = prepare_data(cfg)
    result = train(cfg, data, device="auto", threads=2)
    result.history[-1]   # {'epoch': 25, 'train_loss': ..., 'val_acc': ..., 'lr': ..., 'seconds': ...}

The whole split lives on the device as one tensor; each epoch draws a random
permutation on that device and slices it into batches, so no DataLoader, no
per-sample work and no host round trip per step (the loss and accuracy sums stay
on the device until the epoch ends). Each step is build_step's: autograd's
(engine.TrainStep), or the hand-written backprop.ReluTrainStep for relu without
norm; then the fused optimizer. The same seed, machine and thread count give
identical metrics.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..core.config import Config
from ..data.splits import Data
from .augment import Augment
from .backprop import ReluTrainStep, supports
from .engine import TrainStep
from .evaluate import evaluate
from .model import MLP
from .population import train_population
from .setup import (
    TrainResult,
    check_trainable,
    examples_per_epoch,
    make_optimizer,
    make_scheduler,
    resolve_graph,
    select_device,
    set_threads,
)

ENGINES = ("auto", "autograd", "manual")
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def build_step(model: MLP, config: Config, data: Data, device: torch.device, engine: str = "auto") -> tuple[TrainStep, object | None]:
    """The training step `config` asks for (optimizer, schedule, augmentation, regularisers), and the
    ReduceLROnPlateau to step per epoch (None for per-step schedules).

    engine: "auto" (the hand-written ReLU step for relu without norm, else autograd),
    "autograd" (always), or "manual" (the hand-written step; an error outside its family).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    opt = make_optimizer(model, config, device)
    plateau, per_step = make_scheduler(opt, config, math.ceil(len(data.y_train) / config.batch_size))
    augment = Augment.from_config(config, background=-data.mean / data.std)  # None unless a strength is set
    options = {"label_smoothing": config.label_smoothing, "max_norm": config.max_norm, "scheduler": per_step, "augment": augment}
    # the hand-written ReLU step where it applies (faster on the CPU, same gradients), autograd for everything else;
    # "manual" asks for the hand-written step, which refuses a model outside its family
    hand_written = engine == "manual" or (engine == "auto" and supports(model))
    step_class = ReluTrainStep if hand_written else TrainStep
    return step_class(model, opt, config.precision, **options), plateau


def train(
    config: Config,
    data: Data,
    *,
    device: str | torch.device = "auto",
    threads: int | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    engine: str = "auto",
    graph: bool | None = None,
) -> TrainResult:
    """Train an MLP per `config` on `data`; call `on_epoch(row)` after each epoch.

    graph: capture the step once as a CUDA graph and replay it per batch (graphs.py,
    through a population of one). None means on CUDA with engine "auto", off
    elsewhere; False is the eager step, for debugging. The graph draws its dropout
    masks from the CUDA generator, so it matches the eager step in distribution.
    """
    dev = device if isinstance(device, torch.device) else select_device(device)
    if resolve_graph(graph, dev, engine):
        callback = None if on_epoch is None else (lambda _member, row: on_epoch(row))
        return train_population([config], data, device=dev, threads=threads, progress=progress, on_epoch=callback, graph=True)[0]
    n_threads = set_threads(threads)
    torch.manual_seed(config.seed)  # weight init and dropout masks
    shuffle_gen = torch.Generator(device=dev).manual_seed(config.seed)

    check_trainable(config, len(data.y_train))
    data = data.to(dev)
    model = MLP.from_config(config).to(dev)
    step, plateau = build_step(model, config, data, dev, engine)
    x_train = data.x_train.to(step.dtype)  # once, not per batch
    result = TrainResult(model=model, device=str(dev), threads=n_threads)
    best_state = None
    n = len(data.y_train)
    n = examples_per_epoch(n, config.batch_size, step.min_batch)  # train_epoch may skip a last batch of one
    start = time.perf_counter()

    bar = tqdm(range(1, config.epochs + 1), desc="epochs", unit="ep", disable=not progress)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            lr = step.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = train_epoch(step, x_train, data.y_train, config.batch_size, shuffle_gen)
            val = evaluate(model, data.x_val, data.y_val)  # fp32, also after bf16 training
            row = {
                "epoch": epoch,
                "train_loss": train_loss / n,
                "train_acc": train_acc / n,
                "val_loss": val["loss"],
                "val_acc": val["acc"],
                "lr": lr,
                "seconds": time.perf_counter() - t0,
            }
            if on_epoch is not None:
                on_epoch(row)
            if result.add_epoch(row):
                best_state = copy.deepcopy(model.state_dict())
            if result.status == "diverged":
                break
            if plateau is not None:
                plateau.step(row["val_loss"])
            bar.set_postfix(train_loss=f"{row['train_loss']:.4f}", val_acc=f"{row['val_acc']:.4f}", lr=f"{lr:.1e}")
    except KeyboardInterrupt:
        result.status = "interrupted"
    finally:
        bar.close()
    result.finish(time.perf_counter() - start, best_state)
    return result


def train_epoch(step: TrainStep, x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator) -> tuple[float, float]:
    """One pass over a fresh permutation of (x, y); returns the summed loss and the correct count.

    The running sums stay on the device: one host sync per epoch, none per step.
    Under BatchNorm a last batch of a single example is skipped (its batch statistics
    are undefined), so at most one example per epoch goes unseen and the sums leave it out.
    """
    perm = torch.randperm(len(y), device=x.device, generator=gen)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for idx in perm[: examples_per_epoch(len(y), batch_size, step.min_batch)].split(batch_size):
        batch_loss, batch_correct = step(x.index_select(0, idx), y.index_select(0, idx))
        loss_sum += batch_loss
        correct += batch_correct
    return loss_sum.item(), float(correct.item())
