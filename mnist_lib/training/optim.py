"""Adam, AdamW and SGD over a population's parameters, with lr, weight decay, momentum and betas per member.

    opt = FlatOptimizer(stacked, "adam", lr=[5e-4] * M, weight_decay=[5e-5] * M)   # stacked: a StackedMLP
    opt.step()              # every parameter of every member: one fused kernel, or a few whole-buffer ops
    opt.lr                  # [M] on the device: a schedule writes it in place (and momentum, beta1)

The formulas are torch.optim's: Adam and SGD add weight_decay * w to the gradient,
AdamW multiplies w by 1 - lr * weight_decay. The state (Adam's moments, SGD's
momentum) lives in [M, P] buffers beside the parameters' `stacked.flat`, member m
in row m, so a per-member hyperparameter is an [M, 1] column that broadcasts over
its row.

Two ways to the same update:
- `fused`: when every member has the same hyperparameters (a single run, seeds side
  by side) and nothing cycles beta1 or momentum per step, torch's own fused kernel
  (`torch._fused_adam_`, `_fused_adamw_`, `_fused_sgd_`: what torch.optim's
  fused=True runs): one op, one pass over memory, over the leaves of a single
  run, or over the whole buffers of a population (after the gradients are gathered);
- otherwise the update written out with [M, 1] columns over the whole buffers,
  after one foreach copy gathers the gradients into `stacked.flat_grad`: about 20
  ops, whatever the number of layers.
The caller (train.PopulationStep) decides which, on the host, whenever the
members' hyperparameters change; tests/test_population.py checks both against torch.optim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults
KINDS = ("adam", "adamw", "sgd")


def per_member(values: Sequence[float], device=None) -> torch.Tensor:
    """[M] float32 tensor of one value per member."""
    return torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)


class FlatOptimizer:
    """config.optimizer over a StackedMLP's parameters; lr, weight_decay, momentum and beta1 are [M] device tensors."""

    def __init__(self, model, kind: str, lr, weight_decay, momentum=None, nesterov: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"optimizer must be one of {', '.join(KINDS)}, got {kind!r}")
        self.model, self.flat, self.kind, self.nesterov = model, model.flat, kind, nesterov
        device = self.flat.device
        self.lr = per_member(lr, device)
        self.lr0 = self.lr[0]  # a view made once: the fused kernel's lr, moved by whatever writes self.lr
        self.weight_decay = per_member(weight_decay, device)
        self.momentum = per_member(momentum if momentum is not None else [0.0] * len(self.lr), device)
        self.beta1 = torch.full_like(self.lr, ADAM_BETAS[0])  # one-cycle cycles it; otherwise torch's default
        # float32, as torch.optim's fused kernels count steps; a device tensor, so a captured step advances it
        self.steps = torch.zeros((), dtype=torch.float32, device=device)
        if kind == "sgd":
            self.buf = torch.zeros_like(self.flat)  # momentum * 0 + g is g: torch's first-step clone, nothing to special-case
            self.whole_state = [self.buf]
        else:
            self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
            self.whole_state = [self.exp_avg, self.exp_avg_sq]
        self.state = [model.leaf_views(s) for s in self.whole_state]  # the same memory, shaped as the leaves
        # host copies of the hyperparameters the fused kernel takes as numbers: see use_fused
        self.fused: tuple[float, float, float] | None = None

    def state_ready(self) -> bool:
        """Whether every state buffer exists, shaped and placed as the parameters: a CUDA-graph capture may create none."""
        return (
            all(s.shape == self.flat.shape and s.device == self.flat.device for s in self.whole_state)
            and self.steps.device == self.flat.device
        )

    def use_fused(self, lr: Sequence[float], weight_decay: Sequence[float], momentum: Sequence[float], cycles: bool) -> None:
        """Take torch's fused kernel when every member has the same lr, decay and momentum and nothing cycles per step.

        `lr` etc. are the members' current base values, as the host knows them (a
        masked member has lr 0); the lr itself stays a device tensor (self.lr[0]), so a
        per-step schedule still moves it.
        """
        same = len(set(lr)) == 1 and len(set(weight_decay)) == 1 and len(set(momentum)) == 1
        self.fused = (float(weight_decay[0]), float(momentum[0]), ADAM_BETAS[0]) if same and not cycles else None

    @torch.no_grad()
    def step(self) -> None:
        if self.fused is not None:
            self._fused_step(*self.fused)
        elif self.kind == "sgd":
            self._sgd_step(self.model.gather_grads())
        else:
            self._adam_step(self.model.gather_grads())

    def _fused_step(self, weight_decay: float, momentum: float, beta1: float) -> None:
        # the kernels walk each tensor as contiguous memory: one member's leaves are (slices of its row), a
        # population's are not (the other members' rows lie between), so a population passes the whole buffers
        if self.model.batched:
            params, grads, state = [self.flat], [self.model.gather_grads()], [[s] for s in self.whole_state]
        else:
            params, grads, state = self.model.leaves, [p.grad for p in self.model.leaves], self.state
        if self.kind == "sgd":
            torch._fused_sgd_(
                params, grads, state[0] if momentum else [], weight_decay=weight_decay, momentum=momentum, lr=self.lr0,
                dampening=0.0, nesterov=self.nesterov, maximize=False, is_first_step=False,
            )  # fmt: skip
            return
        self.steps += 1
        fused = torch._fused_adamw_ if self.kind == "adamw" else torch._fused_adam_
        fused(
            params, grads, *state, [], [self.steps] * len(params), lr=self.lr0, beta1=beta1, beta2=ADAM_BETAS[1],
            weight_decay=weight_decay, eps=ADAM_EPS, amsgrad=False, maximize=False,
        )  # fmt: skip

    def _sgd_step(self, grad: torch.Tensor) -> None:
        lr, wd, mom = self.lr.view(-1, 1), self.weight_decay.view(-1, 1), self.momentum.view(-1, 1)
        g = torch.addcmul(grad, self.flat, wd)
        self.buf.mul_(mom).add_(g)
        update = g.addcmul_(self.buf, mom) if self.nesterov else self.buf
        self.flat.addcmul_(update, lr, value=-1.0)

    def _adam_step(self, grad: torch.Tensor) -> None:
        self.steps += 1
        lr, wd, beta1 = self.lr.view(-1, 1), self.weight_decay.view(-1, 1), self.beta1.view(-1, 1)
        beta2 = ADAM_BETAS[1]
        if self.kind == "adamw":
            self.flat.mul_(1 - lr * wd)
            g = grad
        else:
            g = torch.addcmul(grad, self.flat, wd)
        self.exp_avg.lerp_(g, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        # bias corrections in double, as torch computes them: 1 - 0.999**t in float32 loses 4 digits in the first steps
        t = self.steps.double()
        step_size = (lr.double() / (1 - beta1.double() ** t)).float()
        bias2_sqrt = torch.sqrt(1 - beta2**t).float()
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt).add_(ADAM_EPS)
        self.flat.sub_(self.exp_avg / denom * step_size)

    def zero_grad(self) -> None:
        """Drop the gradients: the next backward writes fresh ones."""
        self.model.zero_grad()
