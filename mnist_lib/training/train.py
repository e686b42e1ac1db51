"""The training engine: any number of MLPs, one step and one loop, on every device.

    data = prepare_data(cfg)
    result = train(cfg, data, device="auto", threads=2)        # one run: a population of one
    result.history[-1]   # {'epoch': 25, 'train_loss': ..., 'val_acc': ..., 'lr': ..., 'seconds': ...}
    results = train_population([cfg.replace(seed=s) for s in range(8)], data)   # a TrainResult per member

A population is M models of one architecture trained side by side
(stacked.StackedMLP): every layer is one batched matmul for all members, and
every parameter of every member lives in one flat buffer, which the optimizer
updates in a few whole-buffer ops (optim.FlatOptimizer). A single run is a
population of one, so one config runs the same code on the CPU, on CUDA, in a
population and under a CUDA graph (graphs.py); the graph is a replay of this
very step, and `graph=False` runs it eagerly, nothing else changed.

The whole split lives on the device as one tensor; each epoch draws a random
permutation per member on that device and slices it into batches, so no
DataLoader, no per-sample work and no host round trip per step (the loss and
accuracy sums stay on the device until the epoch ends). The same seed, machine
and thread count give identical metrics.

What members must share (`SHARED_FIELDS`): the shapes (dataset, hidden widths,
batch size, epochs, validation split), the precision and the categorical choices
(activation, norm, optimizer, nesterov, lr schedule). Everything else is per
member: seed (initial weights and batch order), lr, weight decay, momentum,
dropout rates, input dropout, label smoothing, max-norm, the plateau schedule's
factor and patience, and augmentation strengths.

Members are independent: each one's loss is its own mean cross-entropy, and the
population's loss is their sum, so each member's gradients are what it would get
alone. A member whose loss or validation loss stops being finite is recorded
`diverged` and masked out; the others go on.

Dropout masks come from one draw for the whole population per layer, seeded by
the first member's seed: one random-number call instead of M. So a member of a
population trains on other masks than its single run (same initial weights, same
batch order), and agrees with it in distribution, not to the digit
(tests/test_population.py checks both halves: the step exactly, given the same
masks; the runs statistically).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.config import Config
from ..core.errors import UserError
from ..data.splits import Data
from .augment import Augment, StackedAugment
from .device import DTYPES, resolve_graph, select_device, set_threads
from .evaluate import evaluate_members
from .model import MLP
from .optim import ADAM_BETAS, FlatOptimizer, per_member
from .stacked import StackedMLP

if TYPE_CHECKING:
    from .graphs import GraphedEpochs

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")

# Config fields every member of one population must share; the rest may differ per member
SHARED_FIELDS = (
    "dataset",
    "hidden",
    "batch_size",
    "epochs",
    "val_size",
    "split_seed",
    "precision",
    "activation",
    "norm",
    "optimizer",
    "nesterov",
    "lr_schedule",
)


@dataclass
class TrainResult:
    """What a run produced. `model` holds the best-by-validation weights, or the final ones where there was no validation split."""

    model: MLP
    history: list[dict] = field(default_factory=list)
    status: str = "completed"  # completed | diverged | interrupted
    best_epoch: int = 0
    best_val_acc: float = float("nan")
    final_val_acc: float = float("nan")
    train_seconds: float = 0.0
    device: str = "cpu"
    threads: int = 1
    validated: bool = True  # False: trained with no validation split (a speedrun record); nothing is chosen

    def add_epoch(self, row: dict) -> bool:
        """Record an epoch's metrics row; whether it is the best epoch so far by validation accuracy.

        A row whose training or validation loss is not finite marks the run diverged
        (and is never the best); the caller stops training it. Without validation
        the last epoch is the run's: `best_epoch` follows it and no weights are kept aside.
        """
        self.history.append(row)
        if not (math.isfinite(row["train_loss"]) and (math.isfinite(row["val_loss"]) or not self.validated)):
            self.status = "diverged"
            return False
        if not self.validated:
            self.best_epoch = row["epoch"]
            return False
        if not row["val_acc"] <= self.best_val_acc:  # also true while best is nan
            self.best_val_acc, self.best_epoch = row["val_acc"], row["epoch"]
            return True
        return False

    def finish(self, seconds: float) -> None:
        """Close the run: its time and its last validation accuracy (`model` already holds the best epoch's weights)."""
        self.train_seconds = seconds
        if self.history:
            self.final_val_acc = self.history[-1]["val_acc"]


def min_batch(config: Config) -> int:
    """The smallest batch `config` can train on: BatchNorm's statistics need 2 examples, everything else 1."""
    return 2 if config.norm == "batch" else 1


def check_trainable(config: Config, n_train: int) -> None:
    """A UserError if an epoch of `config` on n_train examples would train on none (BatchNorm skips a last batch of one)."""
    if examples_per_epoch(n_train, config.batch_size, min_batch(config)) == 0:
        raise UserError(f"norm batch needs at least 2 training examples per epoch (batch statistics of one are undefined); got {n_train}")


def examples_per_epoch(n: int, batch_size: int, min_batch: int) -> int:
    """How many of n examples an epoch trains on: all, less a last batch smaller than min_batch (BatchNorm: 2)."""
    last = n % batch_size
    return n - last if 0 < last < min_batch else n


def gather_batch(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows idx [M, B] of the resident training set: (x [M, B, ...], y [M, B]).

    index_select on the flattened indices rather than x[idx]: advanced indexing's
    general kernel costs about 4 % of a reference step more (2-vCPU Intel Xeon, 2026-11-30).
    """
    flat = idx.reshape(-1)  # a view where the rows are contiguous (one member), else a copy of M x B indices
    return x.index_select(0, flat).view(*idx.shape, *x.shape[1:]), y.index_select(0, flat).view(idx.shape)


def population_key(config: Config) -> tuple:
    """What a config must share with the others of its population: configs with equal keys can train together."""
    return tuple(getattr(config, name) for name in SHARED_FIELDS)


def check_compatible(configs: Sequence[Config]) -> None:
    """A UserError naming the first shared field on which `configs` differ."""
    if not configs:
        raise UserError("a population needs at least one config")
    for name in SHARED_FIELDS:
        values = {repr(getattr(c, name)) for c in configs}
        if len(values) > 1:
            raise UserError(f"configs of one population must share {name}; got {', '.join(sorted(values))}")


def group_configs(configs: Sequence[Config]) -> list[list[int]]:
    """Indices of `configs` grouped into populations (equal population_key), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(population_key(cfg), []).append(i)
    return list(groups.values())


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


def schedule_table(config: Config, steps_per_epoch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(lr factor, momentum factor) for every step of a per-step schedule, from torch's own scheduler; None for plateau.

    Run once at lr 1 (and, for SGD, momentum 0.5, scaled back by 2): cosine and one-cycle
    scale with the base lr and momentum, so member m's lr at step t is its lr times
    lr_factor[t] (and its momentum times momentum_factor[t]), to the last bit or two
    of what its single run's scheduler gives. For Adam the momentum column is beta1 itself.
    """
    if config.lr_schedule == "plateau":
        return None
    sgd = config.optimizer == "sgd"
    stand_in = config.replace(lr=1.0, momentum=0.5 if sgd else 0.0, nesterov=False, weight_decay=0.0)
    dummy = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([dummy], lr=1.0, momentum=0.5) if sgd else torch.optim.Adam([dummy], lr=1.0)
    _, scheduler = make_scheduler(opt, stand_in, steps_per_epoch)
    opt.step()  # nothing to update (no gradient); tells the scheduler the optimizer has stepped
    lrs, moms = [], []
    for _ in range(config.epochs * steps_per_epoch + 1):
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        moms.append(group["momentum"] * 2 if sgd else group["betas"][0])
        if len(lrs) < config.epochs * steps_per_epoch + 1:
            scheduler.step()
    return torch.tensor(lrs, dtype=torch.float64), torch.tensor(moms, dtype=torch.float64)


def _plateau(config: Config) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """config's ReduceLROnPlateau (its lr, factor and patience) on a stand-in optimizer: the member's lr, epoch by epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    return make_scheduler(opt, config, 1)[0]


class PopulationStep:
    """One optimizer step of every active member on its own batch: x [M, B, 784], y [M, B]."""

    def __init__(self, configs: Sequence[Config], model: StackedMLP, data: Data, steps_per_epoch: int) -> None:
        first = configs[0]
        self.model, self.dtype = model, DTYPES[first.precision]
        device = model.flat.device
        self.configs = list(configs)
        self.optimizer = FlatOptimizer(
            model,
            first.optimizer,
            [c.lr for c in configs],
            [c.weight_decay for c in configs],
            [c.momentum for c in configs],
            first.nesterov,
        )
        self.label_smoothing = per_member([c.label_smoothing for c in configs], device)
        self.max_norm = per_member([c.max_norm for c in configs], device)
        self.base_lr = self.optimizer.lr.clone()  # plateau: lowered in place at epoch ends
        self.base_momentum = self.optimizer.momentum.clone()
        self.sgd = first.optimizer == "sgd"
        # factors per step on the device, indexed by a device step counter: no host work per step, and a
        # captured step (CUDA graph) advances its own schedule. Plateau and constant schedules: factor 1
        total = first.epochs * steps_per_epoch + 1
        table = schedule_table(first, steps_per_epoch)
        lr_factor = table[0] if table is not None else torch.ones(total)
        # momentum cycles under one-cycle only; otherwise SGD keeps its own (factor 1) and Adam torch's beta1
        momentum = table[1] if first.lr_schedule == "onecycle" else torch.full((total,), 1.0 if self.sgd else ADAM_BETAS[0])
        self.lr_table, self.momentum_table = lr_factor.to(device, torch.float32), momentum.to(device, torch.float32)
        self.per_step = table is not None  # plateau: the lr moves only at epoch ends, so a step spends no op on it
        self.smooths = any(c.label_smoothing > 0 for c in configs)
        self.plateaus = [_plateau(c) for c in configs] if first.lr_schedule == "plateau" else []
        self.t = torch.zeros(1, dtype=torch.long, device=device)
        self.any_max_norm = any(c.max_norm > 0 for c in configs)
        augments = [Augment.from_config(c, background=-data.mean / data.std) for c in configs]
        self.augment = StackedAugment(augments, device) if any(a is not None for a in augments) else None
        # bf16: one autocast context, entered per step; no weight-cast cache, since under CUDA-graph capture each
        # replay must cast the current weights
        bf16 = self.dtype != torch.float32
        self.autocast = torch.autocast(device.type, dtype=self.dtype, cache_enabled=False) if bf16 else None
        self.active = torch.ones(len(configs), dtype=torch.bool, device=device)
        self.min_batch = min_batch(first)
        # the members' lr and activity as the host knows them: they decide the optimizer's fused path
        self.host_lr, self.host_active = [c.lr for c in configs], [True] * len(configs)
        self.apply_schedule()
        self._choose_update()

    def _choose_update(self) -> None:
        """torch's fused update while the members' hyperparameters agree, the per-member one once they differ."""
        configs = self.configs
        cycles = configs[0].lr_schedule == "onecycle"  # beta1 or momentum moves every step: the fused kernel takes numbers
        lrs = [lr if active else 0.0 for lr, active in zip(self.host_lr, self.host_active, strict=True)]
        self.optimizer.use_fused(lrs, [c.weight_decay for c in configs], [c.momentum for c in configs], cycles)
        # what a captured step depends on besides device tensors: a change means capturing again (graphs.py)
        self.mode = (self.optimizer.fused, all(self.host_active))

    def apply_schedule(self) -> None:
        """Set each member's lr (and momentum, or Adam's beta1) for step t, on the device; lr 0 for masked members."""
        factor = self.lr_table.index_select(0, self.t)
        torch.mul(self.base_lr * factor, self.active, out=self.optimizer.lr)
        momentum = self.momentum_table.index_select(0, self.t)
        if self.sgd:
            torch.mul(self.base_momentum, momentum, out=self.optimizer.momentum)
        else:
            self.optimizer.beta1.copy_(momentum.expand_as(self.optimizer.beta1))

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward; returns each member's (summed loss, correct count), [M] tensors."""
        if not self.model.training:
            self.model.train()
        if self.augment is not None:
            x = self.augment(x)
        if self.autocast is None:
            logits = self.model.logits(x)  # [M * B, classes]
        else:
            with self.autocast:
                logits = self.model.logits(x)
            logits = logits.float()
        target = y.view(-1)
        if self.smooths:  # F.cross_entropy's label smoothing, with each member's own eps
            log_probs = torch.log_softmax(logits, -1).view(*y.shape, -1)
            nll = -log_probs.gather(2, y.unsqueeze(2)).squeeze(2).mean(1)  # [M]
            eps = self.label_smoothing
            loss = (1 - eps) * nll - eps * log_probs.mean(2).mean(1)
        else:
            loss = F.cross_entropy(logits, target, reduction="none").view(y.shape).mean(1)  # [M]: each member's mean
        self.optimizer.zero_grad()
        (loss if self.mode[1] else torch.where(self.active, loss, 0.0)).sum().backward()  # a masked member learns nothing
        with torch.no_grad():
            return loss.detach() * y.shape[1], (logits.argmax(1) == target).view(y.shape).sum(1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, correct = self.gradients(x, y)
        self.optimizer.step()
        if self.any_max_norm:
            self._renorm()
        if self.per_step:
            self.t += 1
            self.apply_schedule()
        return loss_sum, correct

    def on_rows(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on the rows idx [M, B] of the resident training set (x, y): what the loop and a CUDA graph run per batch."""
        return self(*gather_batch(x, y, idx))

    @torch.no_grad()
    def _renorm(self) -> None:
        """Max-norm per member, as Tensor.renorm_: rows of norm above c scaled to c / (norm + 1e-7); c = 0 means none."""
        c = self.max_norm.view(-1, 1, 1)
        for w in self.model.linear_weights()[:-1]:
            norms = w.norm(dim=2, keepdim=True)
            scale = torch.where((c > 0) & (norms > c), c / (norms + 1e-7), 1.0)
            w.mul_(scale)

    def end_epoch(self, val_losses: Sequence[float]) -> None:
        """Step each member's plateau schedule on its validation loss, then refresh the optimizer's lr."""
        if not self.plateaus:
            return
        for plateau, loss in zip(self.plateaus, val_losses, strict=True):
            if math.isfinite(loss):
                plateau.step(loss)
        self.host_lr = [p.optimizer.param_groups[0]["lr"] for p in self.plateaus]
        self.base_lr.copy_(per_member(self.host_lr, self.base_lr.device))
        self.apply_schedule()
        self._choose_update()

    def mask(self, m: int) -> None:
        """Stop training member m: lr 0 and gradients ignored from now on."""
        self.active[m] = False
        self.host_active[m] = False
        self.apply_schedule()
        self._choose_update()


def train_population(
    configs: Sequence[Config],
    data: Data,
    *,
    device: str | torch.device = "auto",
    threads: int | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
    graph: bool | None = None,
) -> list[TrainResult]:
    """Train every config at once; a TrainResult per member, in order, each as train() would return it.

    on_epoch(m, row) is called after each epoch for every member m still training.
    graph: replay the step as a CUDA graph (graphs.py); None means on CUDA, off elsewhere.

    Each member's initial weights and batch order come from its own seed, exactly as
    in its single run; its dropout masks come from the population's shared stream.
    `train_seconds` and each epoch's `seconds` are the population's wall time, shared.

    Data with an empty validation split (prepare_data(validation=False)) trains
    with no evaluation between epochs and keeps the final weights: nothing is
    chosen during the run. The plateau schedule, which steps on the validation
    loss, is refused then.
    """
    check_compatible(configs)
    first = configs[0]
    check_trainable(first, len(data.y_train))
    validated = len(data.y_val) > 0
    if not validated and first.lr_schedule == "plateau":
        raise UserError("lr_schedule plateau steps on the validation loss, and this data has no validation split; use cosine or onecycle")
    dev = device if isinstance(device, torch.device) else select_device(device)
    n_threads = set_threads(threads)
    data = data.to(dev)
    members = []
    gens = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)  # weight init, as train() does
        members.append(MLP.from_config(cfg))
        gens.append(torch.Generator(device=dev).manual_seed(cfg.seed))  # batch order, as train() does
    model = StackedMLP(members, device=dev)
    torch.manual_seed(first.seed)  # the shared dropout stream
    n = len(data.y_train)
    steps = math.ceil(n / first.batch_size)
    step = PopulationStep(configs, model, data, steps)
    x_train = data.x_train.to(step.dtype)
    n_used = examples_per_epoch(n, first.batch_size, step.min_batch)
    runner = None
    if resolve_graph(graph, dev):  # CUDA only: the graph wraps this very step
        from .graphs import GraphedEpochs

        runner = GraphedEpochs(step, x_train, data.y_train, first.batch_size)
    results = [TrainResult(model=members[m], device=str(dev), threads=n_threads, validated=validated) for m in range(len(configs))]
    # each member's best-by-validation weights, on the device (none kept without validation: the final weights are the run's)
    best = {name: tensor.clone() for name, tensor in model.state().items()} if validated else None
    no_val = [math.nan] * len(configs)
    start = time.perf_counter()
    bar = tqdm(range(1, first.epochs + 1), desc=f"epochs ({len(configs)} models)", unit="ep", disable=not progress)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            lrs = step.optimizer.lr.tolist()
            loss_sum, correct = population_epoch(step, x_train, data.y_train, first.batch_size, gens, runner)
            val_loss, val_acc = evaluate_members(model, data.x_val, data.y_val) if validated else (no_val, no_val)
            seconds = time.perf_counter() - t0
            improved = []
            for m, result in enumerate(results):
                if result.status != "completed":
                    continue
                row = {
                    "epoch": epoch,
                    "train_loss": loss_sum[m] / n_used,
                    "train_acc": correct[m] / n_used,
                    "val_loss": val_loss[m],
                    "val_acc": val_acc[m],
                    "lr": lrs[m],
                    "seconds": seconds,
                }
                if on_epoch is not None:
                    on_epoch(m, row)
                if result.add_epoch(row):
                    improved.append(m)
                if result.status == "diverged":
                    step.mask(m)
            if improved:
                model.copy_members(model.state(), best, improved)
            step.end_epoch(val_loss)
            if all(r.status != "completed" for r in results):
                break
            metric = "val_acc" if validated else "train_acc"
            done = [r.history[-1][metric] for r in results if r.status == "completed"]
            bar.set_postfix({f"best_{metric}": f"{max(done):.4f}"})
    except KeyboardInterrupt:
        for r in results:
            if r.status == "completed":
                r.status = "interrupted"
    finally:
        bar.close()
    total = time.perf_counter() - start
    for m, result in enumerate(results):
        result.model = model.member(m, best if best is not None and result.best_epoch else None)  # best_epoch 0: diverged at once
        result.finish(total)
    return results


def population_epoch(
    step: PopulationStep,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    gens: Sequence[torch.Generator],
    runner: GraphedEpochs | None = None,
) -> tuple[list[float], list[float]]:
    """One pass per member over its own permutation (drawn from its generator, as train_epoch draws it).

    Returns each member's summed loss and correct count; one host sync per epoch.
    With a runner, full batches are CUDA-graph replays (graphs.py).
    """
    perms = torch.stack([torch.randperm(len(y), device=x.device, generator=g) for g in gens])
    perms = perms[:, : examples_per_epoch(len(y), batch_size, step.min_batch)]
    if runner is not None:
        loss_sum, correct = runner.epoch(perms)
        return loss_sum.tolist(), [float(c) for c in correct.tolist()]
    loss_sum = torch.zeros(len(gens), device=x.device)
    correct = torch.zeros(len(gens), dtype=torch.long, device=x.device)
    for idx in perms.split(batch_size, dim=1):
        batch_loss, batch_correct = step.on_rows(x, y, idx)
        loss_sum += batch_loss
        correct += batch_correct
    return loss_sum.tolist(), [float(c) for c in correct.tolist()]


def train(
    config: Config,
    data: Data,
    *,
    device: str | torch.device = "auto",
    threads: int | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    graph: bool | None = None,
) -> TrainResult:
    """Train an MLP per `config` on `data`: a population of one. Calls `on_epoch(row)` after each epoch.

    graph: replay the step as a CUDA graph; None means on CUDA, off elsewhere;
    False runs the same step eagerly (for debugging a graph).
    """
    callback = None if on_epoch is None else (lambda _member, row: on_epoch(row))
    return train_population([config], data, device=device, threads=threads, progress=progress, on_epoch=callback, graph=graph)[0]
