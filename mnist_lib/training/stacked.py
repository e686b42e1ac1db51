"""M MLPs of one architecture as one module, built from the MLP's own layer list, every parameter a view into one flat buffer.

    stacked = StackedMLP(members)      # members: MLPs with the same widths, activation and norm
    logits = stacked(x)                # x [M, B, 784] -> [M, B, n_classes]
    stacked.flat                       # [M, P]: member m's parameters are row m; stacked.leaves are views into it
    stacked.member(m)                  # member m back as an MLP: the form saved and loaded

The forward walks the first member's `net` (model.py's Linear -> [norm] -> activation ->
Dropout list), so whatever MLP builds trains here with nothing written twice:
- nn.Linear: one batched matmul for all members (`torch.baddbmm`; `torch.addmm` for
  a population of one, which has no member dimension);
- Dropout: model.keep_mask, one uniform draw for the whole population, member m
  dropping at its own rate;
- a module without parameters or buffers (every activation): called on the [M, B, H]
  tensor as it is, since an activation acts elementwise;
- any other module (every norm): torch.func.vmap over the members of
  torch.func.functional_call with member m's parameters and buffers, so a norm
  added to model.NORM_LAYERS trains here as it does alone, BatchNorm's running
  statistics included.

Why a flat buffer. Each weight and bias is a leaf tensor that is a view into
`flat`, so the optimizer (optim.py) updates every parameter of every member in
one fused kernel over the list of leaves, or, when the members' hyperparameters
differ, in a few whole-buffer ops over `flat` and `flat_grad` (the gradients
gathered there by one foreach copy), whatever the number of layers. Autograd
puts each gradient in a fresh tensor, as it does for any model: accumulating
into views of `flat_grad` set beforehand would cost a zero_() and an extra
read-modify-write pass per step, 3 % of a step on a 2-vCPU Intel Xeon (measured
against the old hand-written step; docs/performance.md).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from .model import MLP, Dropout, keep_mask

CPU = torch.device("cpu")


class StackedMLP(nn.Module):
    """M MLPs of one architecture as one module: x [M, B, 784] -> logits [M, B, n_classes].

    Built from the members themselves, so each starts from exactly its own weights;
    `member(m)` gives member m back as an MLP. Members may differ in their dropout
    rates and input dropout; their widths, activation and norm must agree.
    """

    def __init__(self, members: Sequence[MLP], device: torch.device | str = CPU) -> None:
        super().__init__()
        if not members:
            raise ValueError("a population needs at least one member")
        device = torch.device(device)
        # the layer list walked by forward: a member with input dropout if any has one (the others drop at rate 0)
        template = next((m for m in members if m.input_dropout > 0), members[0])
        shapes = [tuple(p.shape) for p in template.parameters()]
        for m in members:
            if [tuple(p.shape) for p in m.parameters()] != shapes or (m.activation, m.norm) != (template.activation, template.norm):
                raise ValueError("members of a population must share their widths, activation and norm")
        self.n_members = len(members)
        self.batched = self.n_members > 1  # one member: 2-D layers, no member dimension (see _bind)
        rates = [[m.input_dropout, *m.dropout_rates()] if template.input_dropout > 0 else m.dropout_rates() for m in members]
        self._plan(template, torch.tensor(rates, dtype=torch.float32).T.contiguous())
        rows = [torch.cat([self._stacked_layout(k, p).reshape(-1) for k, p in enumerate(m.parameters())]) for m in members]
        self.register_buffer("flat", torch.stack(rows).detach().to(device))
        self.register_buffer("flat_grad", torch.zeros_like(self.flat))
        for k, buffers in enumerate(zip(*(m.buffers() for m in members), strict=True)):
            self.register_buffer(f"stacked_buffer{k}", torch.stack([b.detach().to(device) for b in buffers]))
        # each member's skeleton on the meta device (no storage): member(m) fills a copy of it
        self.__dict__["skeletons"] = [copy.deepcopy(m).to("meta") for m in members]
        self._bind()

    def _stacked_layout(self, k: int, p: torch.Tensor) -> torch.Tensor:
        """Parameter k as the flat buffer holds it: a Linear's weight transposed to [in, out], baddbmm's operand; the rest as is."""
        return p.t() if k in self.linear_slots and p.dim() == 2 else p

    def parameter_views(self, tensor: torch.Tensor, m: int) -> list[torch.Tensor]:
        """Member m's row of `tensor` (flat or flat_grad) as views shaped like its MLP's parameters, in parameters() order."""
        views = []
        for k, (offset, shape) in enumerate(self.spans):
            rows = tensor[m, offset : offset + int(torch.Size(shape).numel())]
            views.append(rows.view(shape[::-1]).t() if k in self.linear_slots and len(shape) == 2 else rows.view(shape))
        return views

    def _plan(self, template: MLP, rates: torch.Tensor) -> None:
        """The layer list, from the template's net: (kind, module, parameter slots, buffer slots, dropout index) per layer."""
        self.layers = []
        offset, n_buffers, n_dropouts = 0, 0, 0
        self.spans: list[tuple[int, tuple[int, ...]]] = []  # (offset into a flat row, shape) per parameter, in parameters() order
        self.linear_slots: set[int] = set()  # the spans that are a Linear's weight or bias: their leaves take baddbmm's layout
        for module in template.net:
            names = [n for n, _ in module.named_parameters()]
            params = []
            for _, p in module.named_parameters():
                params.append(len(self.spans))
                if isinstance(module, nn.Linear):
                    self.linear_slots.add(len(self.spans))
                self.spans.append((offset, tuple(p.shape)))
                offset += p.numel()
            buffer_names = [n for n, _ in module.named_buffers()]
            buffers = list(range(n_buffers, n_buffers + len(buffer_names)))
            n_buffers += len(buffer_names)
            if isinstance(module, nn.Linear):
                kind = "linear"
            elif isinstance(module, Dropout):
                kind, params = "dropout", [n_dropouts]
                n_dropouts += 1
            elif not names and not buffer_names:
                kind = "elementwise"
            else:
                kind = "vmapped"
            skeleton = copy.deepcopy(module).to("meta") if kind == "vmapped" else module
            self.layers.append((kind, skeleton, params, buffers, names, buffer_names))
        self.register_buffer("rates", rates)  # [dropout layers, M]
        # which layers draw masks at all, decided on the host: the forward must not sync (CUDA-graph capture)
        self.drops = [bool((r > 0).any()) for r in rates]

    def _bind(self) -> None:
        """Make each parameter a leaf view into `flat`, and the matching views into `flat_grad` (again after .to()).

        A Linear's weight [out, in] is held transposed, so its leaf is [M, in, out], and
        its bias is [M, 1, out]: the operands torch.baddbmm takes as they are. The step
        then spends no op, forward or backward, on reshaping them.

        A population of one drops the member dimension: its leaves are [in, out] and
        [out], and its layers run torch.addmm, which on the CPU is 15-30 % faster than
        baddbmm with one batch (measured per GEMM in the step, 2-vCPU Intel Xeon, torch 2.13).
        """
        self.leaves = [leaf.requires_grad_() for leaf in self.leaf_views(self.flat)]
        self.grad_views = self.leaf_views(self.flat_grad)
        # views made once (a view per step would be an op per step): each dropout layer's rates, [M, 1, 1] or
        # [1, 1], and each stacked buffer as the layers take it, [M, ...] or, for one member, its own [...]
        self.rate_views = [r.view(-1, 1, 1) if self.batched else r.view(1, 1) for r in self.rates]
        self.buffer_views = [b if self.batched else b[0] for n, b in self.named_buffers() if n.startswith("stacked_buffer")]
        self.scales: dict[torch.dtype, list[torch.Tensor]] = {}  # per dtype, filled on first use

    def leaf_views(self, buffer: torch.Tensor) -> list[torch.Tensor]:
        """Views into an [M, P] buffer shaped as the leaves are (for parameters, gradients and optimizer state alike)."""
        lead = (self.n_members,) if self.batched else ()
        views = []
        for k, (offset, shape) in enumerate(self.spans):
            size = int(torch.Size(shape).numel())
            rows = buffer[:, offset : offset + size] if self.batched else buffer[0, offset : offset + size]
            if k in self.linear_slots and len(shape) == 2:  # a weight [out, in], held as [in, out]: [M, in, out]
                views.append(rows.view(*lead, *shape[::-1]))
            elif k in self.linear_slots and self.batched:  # a bias [out]: [M, 1, out], broadcast over the batch
                views.append(rows.view(*lead, 1, *shape))
            else:
                views.append(rows.view(*lead, *shape))
        return views

    def gather_grads(self) -> torch.Tensor:
        """flat_grad [M, P] filled with the leaves' gradients (one foreach copy): what a whole-buffer update reads."""
        torch._foreach_copy_(self.grad_views, [leaf.grad for leaf in self.leaves])
        return self.flat_grad

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._bind()  # the buffers may be new tensors: the views must follow them
        return self

    def _dropout_scale(self, i: int, dtype: torch.dtype) -> torch.Tensor:
        """[M, 1, 1]: 1 / (1 - p) per member of dropout layer i, rounded to dtype as model.keep_mask rounds it."""
        if dtype not in self.scales:
            scales = (1.0 / (1.0 - self.rates)).to(dtype)
            self.scales[dtype] = [s.view(-1, 1, 1) if self.batched else s.view(1, 1) for s in scales]
        return self.scales[dtype][i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, B, 784] (or [M, B, 28, 28]) -> logits [M, B, n_classes]."""
        return self.logits(x).view(self.n_members, x.shape[1], -1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The forward with the members' logits stacked as rows, [M * B, n_classes]: the loss's layout, no reshape for one member."""
        h = x if x.dim() == 3 else x.flatten(2)
        if not self.batched:
            h = h.squeeze(0)  # [B, in]
        for kind, module, params, buffers, names, buffer_names in self.layers:
            if kind == "linear":
                w = self.leaves[params[0]]  # [M, in, out], or [in, out]
                if self.batched:
                    h = torch.bmm(h, w) if len(params) == 1 else torch.baddbmm(self.leaves[params[1]], h, w)  # bias [M, 1, out]
                else:
                    h = torch.mm(h, w) if len(params) == 1 else torch.addmm(self.leaves[params[1]], h, w)
            elif kind == "dropout":
                i = params[0]
                if self.training and self.drops[i]:
                    h = h * keep_mask(h.shape, self.rate_views[i], h.dtype, h.device, self._dropout_scale(i, h.dtype))
            elif kind == "elementwise":
                h = module(h)
            else:
                module.train(self.training)
                state = {n: self.leaves[k] for n, k in zip(names, params, strict=True)}
                state |= {n: self.buffer_views[k] for n, k in zip(buffer_names, buffers, strict=True)}
                # in float32, as the members' own norms keep their weights: under bf16 autocast the input is bfloat16
                call = functools.partial(functional_call, module)
                z = vmap(lambda s, z, call=call: call(s, (z,)))(state, h.float()) if self.batched else call(state, (h.float(),))
                h = z.to(h.dtype)
        return h.flatten(0, 1) if self.batched else h

    def linear_weights(self) -> list[torch.Tensor]:
        """Each Linear's stacked weight [M, out, in] (row j: unit j's incoming weights), in layer order: views into flat."""
        weights = [self.leaves[params[0]] for kind, _, params, *_ in self.layers if kind == "linear"]
        return [w.transpose(1, 2) if self.batched else w.t().unsqueeze(0) for w in weights]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every leaf's gradient: the next backward writes fresh ones (no op, no zero_)."""
        for leaf in self.leaves:
            leaf.grad = None

    def state(self) -> dict[str, torch.Tensor]:
        """The members' weights and buffers as tensors: what `copy_members` and `member` read from a snapshot."""
        return {n: b for n, b in self.named_buffers() if n == "flat" or n.startswith("stacked_buffer")}

    @torch.no_grad()
    def copy_members(self, source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], members: Sequence[int]) -> None:
        """Copy these members' weights and buffers from state `source` to state `target`: one indexed copy per tensor, on the device."""
        index = torch.tensor(list(members), dtype=torch.long, device=self.flat.device)
        for name, tensor in target.items():
            tensor.index_copy_(0, index, source[name].index_select(0, index))

    @torch.no_grad()
    def member(self, m: int, state: dict[str, torch.Tensor] | None = None) -> MLP:
        """Member m as a standalone MLP (a copy, on the stacked device), from this module's state or a snapshot of it."""
        state = self.state() if state is None else state
        model = copy.deepcopy(self.skeletons[m]).to_empty(device=self.flat.device)
        for p, value in zip(model.parameters(), self.parameter_views(state["flat"], m), strict=True):
            p.copy_(value)  # a copy: nothing of the model shares the flat buffer
        for k, buffer in enumerate(model.buffers()):
            buffer.copy_(state[f"stacked_buffer{k}"][m])
        return model
