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
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..core.config import Config
from ..core.errors import UserError
from ..data.splits import Data
from .augment import Augment
from .backprop import ReluTrainStep, supports
from .engine import TrainStep
from .evaluate import evaluate
from .model import MLP

ENGINES = ("auto", "autograd", "manual")
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; otherwise the named device, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but torch sees no CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device mps requested but it is not available")
    return dev


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op CPU threads (None keeps torch's default); return the count in use."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@dataclass
class TrainResult:
    """What a run produced. `model` holds the best-by-validation weights."""

    model: MLP
    history: list[dict] = field(default_factory=list)
    status: str = "completed"  # completed | diverged | interrupted
    best_epoch: int = 0
    best_val_acc: float = float("nan")
    final_val_acc: float = float("nan")
    train_seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1


def make_optimizer(model: torch.nn.Module, config: Config, device: torch.device) -> torch.optim.Optimizer:
    """config.optimizer over the model's parameters.

    Weight decay: Adam and SGD add weight_decay * w to the gradient (an L2 penalty,
    which Adam then rescales per parameter); AdamW subtracts lr * weight_decay * w
    from the weights, decoupled from the gradient (Loshchilov and Hutter 2019).
    """
    # fused: the whole update is one kernel per step (CPU and CUDA) for all three
    fused = True if device.type in ("cpu", "cuda") else None
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd, fused=fused)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=wd, fused=fused)


def make_scheduler(opt: torch.optim.Optimizer, config: Config, steps_per_epoch: int):
    """(ReduceLROnPlateau stepped per epoch, or None; a per-step scheduler, or None) for config.lr_schedule."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return None, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if config.lr_schedule == "onecycle":  # warm up from lr/25 to lr over 30 % of the steps, then anneal
        # momentum runs opposite to the lr: Adam's beta1 between torch's 0.85 and 0.95, SGD's momentum
        # between 0.85/0.95 of config.momentum and config.momentum (plain SGD, momentum 0, has none to cycle)
        cycle = {}
        if config.optimizer == "sgd":
            cycle = {"cycle_momentum": config.momentum > 0, "max_momentum": config.momentum, "base_momentum": config.momentum * 0.85 / 0.95}
        return None, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, **cycle)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=config.lr_factor, patience=config.lr_patience), None


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
) -> TrainResult:
    """Train an MLP per `config` on `data`; call `on_epoch(row)` after each epoch."""
    dev = device if isinstance(device, torch.device) else select_device(device)
    n_threads = set_threads(threads)
    torch.manual_seed(config.seed)  # weight init and dropout masks
    shuffle_gen = torch.Generator(device=dev).manual_seed(config.seed)

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
            result.history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
                result.status = "diverged"
                break
            if not row["val_acc"] <= result.best_val_acc:  # also true while best is nan
                result.best_val_acc, result.best_epoch = row["val_acc"], epoch
                best_state = copy.deepcopy(model.state_dict())
            if plateau is not None:
                plateau.step(row["val_loss"])
            bar.set_postfix(train_loss=f"{row['train_loss']:.4f}", val_acc=f"{row['val_acc']:.4f}", lr=f"{lr:.1e}")
    except KeyboardInterrupt:
        result.status = "interrupted"
    finally:
        bar.close()
    result.train_seconds = time.perf_counter() - start
    if result.history:
        result.final_val_acc = result.history[-1]["val_acc"]
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def examples_per_epoch(n: int, batch_size: int, min_batch: int) -> int:
    """How many of n examples an epoch trains on: all, less a last batch smaller than min_batch (BatchNorm: 2)."""
    last = n % batch_size
    return n - last if 0 < last < min_batch else n


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
