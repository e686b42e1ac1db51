"""Population training: M models of one shape trained side by side, their weights stacked [M, out, in].

    configs = [cfg.replace(seed=s) for s in range(8)]         # any scalar may differ per member
    results = train_population(configs, data, device="cuda")  # a TrainResult per member, in order

Every layer is one batched matmul (`torch.baddbmm`) for all M members, so on a GPU,
where a step's cost is kernel launches rather than arithmetic, M models cost about
what one does. On the 2-core CPU the arithmetic dominates and it buys little
(benchmarks/population.py), so single runs stay the CPU's default.

What members must share (`SHARED_FIELDS`): the shapes (dataset, hidden widths,
batch size, epochs, validation split), the precision and the categorical choices
(activation, norm, optimizer, nesterov, lr schedule). Everything else is per
member: seed (initial weights and batch order, exactly as a single run draws them),
lr, weight decay, momentum, dropout rates, input dropout, label smoothing,
max-norm, the plateau schedule's factor and patience, and augmentation strengths.

Members are independent: each one's loss is its own mean cross-entropy, and the
population's loss is their sum, so each member's gradients are what it would get
alone. The optimizer (`StackedOptimizer`) is Adam, AdamW or SGD written out with a
learning rate, decay and momentum per member. A member whose loss or validation
loss stops being finite is recorded `diverged` and masked out; the others go on.

Dropout masks come from one draw for the whole population per layer, not from each
member's own stream: one random-number call instead of M. So a member trains on
different masks than the single run of its seed (same initial weights, same batch
order), and agrees with it in distribution, not to the digit (tests/test_population.py
checks both halves: the step exactly, given the same masks; the runs statistically).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.config import Config
from ..core.errors import UserError
from ..data.splits import Data
from .augment import Augment
from .engine import DTYPES
from .graphs import GraphedEpochs
from .model import ACTIVATIONS, MLP
from .setup import TrainResult, check_trainable, examples_per_epoch, make_scheduler, resolve_graph, select_device, set_threads

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
BN_MOMENTUM, NORM_EPS = 0.1, 1e-5  # torch.nn.BatchNorm1d's and LayerNorm's defaults, as the single MLP uses
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as make_optimizer uses


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


def _per_member(values: Sequence[float], device=None) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)


def keep_masks(shape: tuple[int, ...], p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverted-dropout multipliers for a [M, B, H] activation, member m dropping at rate p[m].

    One uniform draw for the whole population; member m's slice is model.keep_mask's
    mask for its own rate (the scale 1 / (1 - p) rounded to dtype, as there).
    """
    u = torch.rand(shape, device=p.device)
    kept = u.ge_(p.view(-1, 1, 1)).to(dtype)
    return kept.mul_((1.0 / (1.0 - p)).to(dtype).view(-1, 1, 1))


class StackedMLP(torch.nn.Module):
    """M MLPs of one shape as one module: x [M, B, 784] -> logits [M, B, n_classes].

    Built from the members' own MLPs (`from_members`), so each starts from exactly
    the weights its single run would; `member(m)` gives member m back as an MLP.
    """

    def __init__(self, members: Sequence[MLP]) -> None:
        super().__init__()
        first = members[0]
        self.norm = first.norm
        self.act = ACTIVATIONS[first.activation]()
        self.n_members = len(members)
        linears = [m.linears() for m in members]
        norms = [m.norm_layers() for m in members]

        def stack(tensors):
            return torch.nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())

        self.weights = torch.nn.ParameterList([stack([ls[i].weight for ls in linears]) for i in range(len(linears[0]))])
        # biases [M, 1, out], broadcast over the batch; a BatchNorm layer's Linear has none
        self.biases = torch.nn.ParameterList(
            [stack([ls[i].bias.unsqueeze(0) for ls in linears]) if linears[0][i].bias is not None else None for i in range(len(linears[0]))]
        )
        self.norm_weights = torch.nn.ParameterList([stack([ns[i].weight.unsqueeze(0) for ns in norms]) for i in range(len(norms[0]))])
        self.norm_biases = torch.nn.ParameterList([stack([ns[i].bias.unsqueeze(0) for ns in norms]) for i in range(len(norms[0]))])
        for i in range(len(norms[0]) if self.norm == "batch" else 0):
            self.register_buffer(f"running_mean{i}", torch.stack([ns[i].running_mean for ns in norms]).clone())
            self.register_buffer(f"running_var{i}", torch.stack([ns[i].running_var for ns in norms]).clone())
        self.register_buffer("rates", torch.stack([_per_member(m.dropout_rates()) for m in members], 1))  # [layers, M]
        self.register_buffer("input_rates", _per_member([m.input_dropout for m in members]))
        # which layers draw masks at all, decided here on the host: the forward must not sync (CUDA-graph capture)
        self.drops = [any(m.dropout_rates()[i] > 0 for m in members) for i in range(len(members[0].dropout_rates()))]
        self.drops_input = any(m.input_dropout > 0 for m in members)
        self.__dict__["template"] = copy.deepcopy(first).cpu()  # the shape member() fills; kept out of parameters()

    @classmethod
    def from_members(cls, members: Sequence[MLP]) -> StackedMLP:
        return cls(members)

    def _norm(self, i: int, z: torch.Tensor) -> torch.Tensor:
        w, b = self.norm_weights[i], self.norm_biases[i]
        if self.norm == "layer":
            return F.layer_norm(z, z.shape[-1:], eps=NORM_EPS) * w + b
        mean_buf, var_buf = getattr(self, f"running_mean{i}"), getattr(self, f"running_var{i}")
        if self.training:  # batch statistics per member and unit; running statistics as BatchNorm1d keeps them
            var, mean = torch.var_mean(z.float(), dim=1, correction=0)
            with torch.no_grad():
                n = z.shape[1]
                mean_buf.lerp_(mean, BN_MOMENTUM)
                var_buf.lerp_(var * n / (n - 1), BN_MOMENTUM)
        else:
            mean, var = mean_buf, var_buf
        return ((z - mean.unsqueeze(1).to(z.dtype)) * torch.rsqrt(var.unsqueeze(1) + NORM_EPS).to(z.dtype)) * w + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(2)
        if self.training and self.drops_input:
            h = h * keep_masks(h.shape, self.input_rates, h.dtype)
        n_hidden = len(self.weights) - 1
        for i in range(n_hidden):
            w, b = self.weights[i], self.biases[i]
            z = torch.bmm(h, w.transpose(1, 2).to(h.dtype)) if b is None else torch.baddbmm(b.to(h.dtype), h, w.transpose(1, 2).to(h.dtype))
            if self.norm != "none":
                z = self._norm(i, z)
            h = self.act(z)
            if self.training and self.drops[i]:
                h = h * keep_masks(h.shape, self.rates[i], h.dtype)
        w, b = self.weights[-1], self.biases[-1]
        return torch.baddbmm(b.to(h.dtype), h, w.transpose(1, 2).to(h.dtype))

    @torch.no_grad()
    def copy_members(self, source: StackedMLP, members: Sequence[int]) -> None:
        """Overwrite these members' weights and norm statistics with `source`'s: one indexed copy per tensor, on the device."""
        index = torch.tensor(list(members), dtype=torch.long, device=self.weights[0].device)
        targets = [*self.parameters(), *(b for n, b in self.named_buffers() if n.startswith("running_"))]
        sources = [*source.parameters(), *(b for n, b in source.named_buffers() if n.startswith("running_"))]
        for target, src in zip(targets, sources, strict=True):
            target.index_copy_(0, index, src.index_select(0, index))

    def member(self, m: int) -> MLP:
        """Member m as a standalone MLP (a copy), with its weights and norm buffers."""
        model = copy.deepcopy(self.template)
        norms = model.norm_layers()
        with torch.no_grad():
            for i, lin in enumerate(model.linears()):
                lin.weight.copy_(self.weights[i][m])
                if lin.bias is not None:
                    lin.bias.copy_(self.biases[i][m, 0])
            for i, norm in enumerate(norms):
                norm.weight.copy_(self.norm_weights[i][m, 0])
                norm.bias.copy_(self.norm_biases[i][m, 0])
                if self.norm == "batch":
                    norm.running_mean.copy_(getattr(self, f"running_mean{i}")[m])
                    norm.running_var.copy_(getattr(self, f"running_var{i}")[m])
        return model.to(self.weights[0].device)


class StackedOptimizer:
    """Adam, AdamW or SGD over stacked parameters, with lr, weight decay and momentum per member.

    The formulas are torch.optim's (single-tensor versions): Adam and SGD add
    weight_decay * w to the gradient, AdamW multiplies w by 1 - lr * weight_decay.
    `lr`, `weight_decay` and `momentum` are [M] tensors on the device; a schedule
    writes `lr` (and `momentum`, or Adam's `beta1`) in place.
    """

    def __init__(self, params: Sequence[torch.Tensor], kind: str, lr, weight_decay, momentum=None, nesterov: bool = False) -> None:
        self.params, self.kind, self.nesterov = list(params), kind, nesterov
        device = self.params[0].device
        self.lr = _per_member(lr, device)
        self.weight_decay = _per_member(weight_decay, device)
        self.momentum = _per_member(momentum if momentum is not None else [0.0] * len(self.lr), device)
        self.beta1 = torch.full_like(self.lr, ADAM_BETAS[0])  # one-cycle cycles it; otherwise torch's default
        # a device tensor, so a captured step reads and advances it; float64, as torch computes the bias
        # corrections in double: 1 - 0.999**t in float32 loses 4 digits in the first steps
        self.steps = torch.zeros((), dtype=torch.float64, device=device)
        self.state = [{} for _ in self.params]

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta2 = ADAM_BETAS[1]
        bias2_sqrt = torch.sqrt(1 - beta2**self.steps)
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)  # [M] -> broadcast over member m's slice
            lr, wd = self.lr.view(shape), self.weight_decay.view(shape)
            g = p.grad
            if self.kind == "sgd":
                g = g.add(p * wd)
                mom = self.momentum.view(shape)
                buf = state.get("buf")
                buf = state["buf"] = g.clone() if buf is None else buf.mul_(mom).add_(g)
                update = g.add(buf * mom) if self.nesterov else buf
                p.sub_(update * lr)
                continue
            if self.kind == "adamw":
                p.mul_(1 - lr * wd)
            else:
                g = g.add(p * wd)
            if not state:
                state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
            m, v = state["m"], state["v"]
            beta1 = self.beta1.view(shape)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            bias1 = 1 - beta1.double() ** self.steps
            denom = (v.sqrt() / bias2_sqrt.float()).add_(ADAM_EPS)
            p.sub_(m / denom * (lr.double() / bias1).float())

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


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
        device = model.weights[0].device
        self.optimizer = StackedOptimizer(
            model.parameters(),
            first.optimizer,
            [c.lr for c in configs],
            [c.weight_decay for c in configs],
            [c.momentum for c in configs],
            first.nesterov,
        )
        self.label_smoothing = _per_member([c.label_smoothing for c in configs], device)
        self.max_norm = _per_member([c.max_norm for c in configs], device)
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
        self.plateaus = [_plateau(c) for c in configs] if first.lr_schedule == "plateau" else []
        self.t = torch.zeros(1, dtype=torch.long, device=device)
        self.any_max_norm = any(c.max_norm > 0 for c in configs)
        self.augments = [Augment.from_config(c, background=-data.mean / data.std) for c in configs]
        self.active = torch.ones(len(configs), dtype=torch.bool, device=device)
        self.min_batch = 2 if first.norm == "batch" else 1
        self.apply_schedule()

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
        self.model.train()
        if any(a is not None for a in self.augments):
            x = torch.stack([a(xm) if a is not None else xm for a, xm in zip(self.augments, x, strict=True)])
        # no weight-cast cache: under CUDA-graph capture each replay must cast the current weights
        autocast = torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32, cache_enabled=False)
        with autocast:
            logits = self.model(x)
        log_probs = torch.log_softmax(logits.float(), -1)
        nll = -log_probs.gather(2, y.unsqueeze(2)).squeeze(2).mean(1)  # [M]
        eps = self.label_smoothing
        loss = (1 - eps) * nll - eps * log_probs.mean(2).mean(1)  # F.cross_entropy's label smoothing, per member
        self.optimizer.zero_grad()
        torch.where(self.active, loss, 0.0).sum().backward()
        with torch.no_grad():
            return loss.detach() * y.shape[1], (logits.argmax(2) == y).sum(1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, correct = self.gradients(x, y)
        self.optimizer.step()
        if self.any_max_norm:
            self._renorm()
        self.t += 1
        self.apply_schedule()
        return loss_sum, correct

    @torch.no_grad()
    def _renorm(self) -> None:
        """Max-norm per member, as Tensor.renorm_: rows of norm above c scaled to c / (norm + 1e-7); c = 0 means none."""
        c = self.max_norm.view(-1, 1, 1)
        for w in self.model.weights[:-1]:
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
        self.base_lr.copy_(_per_member([p.optimizer.param_groups[0]["lr"] for p in self.plateaus], self.base_lr.device))
        self.apply_schedule()

    def mask(self, m: int) -> None:
        """Stop training member m: lr 0 and gradients ignored from now on."""
        self.active[m] = False
        self.apply_schedule()


@torch.no_grad()
def evaluate_members(model: StackedMLP, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> tuple[list[float], list[float]]:
    """Each member's (mean loss, accuracy) on the shared (x, y), fp32, eval mode: the same numbers as evaluate() per member."""
    model.eval()
    loss = torch.zeros(model.n_members, device=x.device)
    correct = torch.zeros(model.n_members, dtype=torch.long, device=x.device)
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        logits = model(xb.float().flatten(1).expand(model.n_members, -1, -1)).float()
        target = yb.expand(model.n_members, -1)
        loss += F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(1)
        correct += (logits.argmax(2) == target).sum(1)
    model.train()
    return (loss / len(y)).tolist(), [c / len(y) for c in correct.tolist()]


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
    """
    check_compatible(configs)
    first = configs[0]
    check_trainable(first, len(data.y_train))
    dev = device if isinstance(device, torch.device) else select_device(device)
    n_threads = set_threads(threads)
    data = data.to(dev)
    members = []
    gens = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)  # weight init, as train() does
        members.append(MLP.from_config(cfg))
        gens.append(torch.Generator(device=dev).manual_seed(cfg.seed))  # batch order, as train() does
    model = StackedMLP.from_members(members).to(dev)
    torch.manual_seed(first.seed)  # the shared dropout stream
    n = len(data.y_train)
    steps = math.ceil(n / first.batch_size)
    step = PopulationStep(configs, model, data, steps)
    x_train = data.x_train.to(step.dtype)
    n_used = examples_per_epoch(n, first.batch_size, step.min_batch)
    runner = GraphedEpochs(step, x_train, data.y_train, first.batch_size) if resolve_graph(graph, dev) else None
    results = [TrainResult(model=members[m], device=str(dev), threads=n_threads) for m in range(len(configs))]
    best = copy.deepcopy(model)  # each member's best-by-validation weights, kept stacked on the device
    start = time.perf_counter()
    bar = tqdm(range(1, first.epochs + 1), desc=f"epochs ({len(configs)} models)", unit="ep", disable=not progress)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            lrs = step.optimizer.lr.tolist()
            loss_sum, correct = population_epoch(step, x_train, data.y_train, first.batch_size, gens, runner)
            val_loss, val_acc = evaluate_members(model, data.x_val, data.y_val)
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
                best.copy_members(model, improved)
            step.end_epoch(val_loss)
            if all(r.status != "completed" for r in results):
                break
            done = [r.history[-1]["val_acc"] for r in results if r.status == "completed"]
            bar.set_postfix(best_val_acc=f"{max(done):.4f}")
    except KeyboardInterrupt:
        for r in results:
            if r.status == "completed":
                r.status = "interrupted"
    finally:
        bar.close()
    total = time.perf_counter() - start
    for m, result in enumerate(results):
        result.model = (best if result.best_epoch else model).member(m)  # best_epoch 0: never a best (diverged at once)
        result.finish(total, None)
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
        batch_loss, batch_correct = step(x[idx], y[idx])
        loss_sum += batch_loss
        correct += batch_correct
    return loss_sum.tolist(), [float(c) for c in correct.tolist()]
