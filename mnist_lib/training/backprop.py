"""The fast path for the plain ReLU family: forward and backward written out by hand.

    step = ReluTrainStep(model, optimizer, precision="fp32")   # model: an MLP with relu, no norm
    loss_sum, correct = step(x, y)      # one optimizer step on the batch; 0-dim tensors, no host sync

It computes the gradients that engine.TrainStep gets from autograd, with the same
dropout masks (same random draws, same order), and shares its update (optimizer,
max-norm, schedule); tests/test_backprop.py checks the two against each other.
train.build_step picks it for activation relu and norm none, the reference's
family, because it is faster there on the CPU (README, Performance): for a
network this small, autograd's fresh gradient buffers every step (the first
layer's 1.6 MB weight gradient costs more when it lands in new memory) and its
extra elementwise passes are a large share of an epoch on a 2-core CPU. Here the
gradients are written into buffers allocated once. Any other layer goes through
autograd, so this is the only backward written by hand.

Per hidden layer, with input h, weight W, bias b and dropout rate p:
    forward   z = h @ W.T + b;   h' = relu(z) * keep / (1 - p)      (keep: model.keep_mask)
    backward  dW = g.T @ h;   db = g.sum(0);   g_h = (g @ W) * [h > 0] * model.dropout_scale(p)
where [h' > 0] holds exactly where the unit was kept and z > 0, so the step keeps
no mask. The loss is the mean cross-entropy; its gradient is (softmax - onehot) / batch.

Everything else (augmentation, input dropout, label smoothing, max-norm, the
optimizer and its schedule, bf16 as autocast would run it) works as in
engine.TrainStep.
"""

from __future__ import annotations

import torch

from .engine import TrainStep
from .model import MLP, dropout_scale, inverted_dropout


class ReluTrainStep(TrainStep):
    """engine.TrainStep for an MLP of ReLU layers without norms, with the gradients computed by hand."""

    def __init__(self, model: MLP, optimizer: torch.optim.Optimizer, precision: str = "fp32", **options) -> None:
        if not supports(model):
            raise ValueError("ReluTrainStep needs an MLP with relu activations and no norm layers")
        super().__init__(model, optimizer, precision, **options)
        self.layers = model.linears()
        self.rates = model.dropout_rates()
        self.scales = [dropout_scale(p, self.dtype) for p in self.rates]  # the forward's own (bf16: rounded) factors
        self.input_dropout = model.input_dropout
        for p in model.parameters():  # written in place every step, so never zeroed or reallocated
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self._minus_one: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _onehot_delta(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, device)
        if key not in self._minus_one:  # hoisted: one per batch size
            self._minus_one[key] = torch.full((n, 1), self.label_smoothing - 1.0, device=device)
        return self._minus_one[key]

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on (x, y): fills each parameter's .grad; returns (summed loss, correct count)."""
        dt = self.dtype
        weights = [lin.weight.to(dt) for lin in self.layers]  # .to is a no-op in fp32
        biases = [lin.bias.to(dt) for lin in self.layers]
        h = x.flatten(1)
        if self.augment is not None:  # training batches only: nothing else passes through a TrainStep
            h = self.augment(h)
        if self.input_dropout > 0:  # out of place: x may be the caller's tensor; before the cast, as in MLP.forward
            h = inverted_dropout(h, self.input_dropout)
        h = h.to(dt)
        inputs = [h]
        for w, b, p in zip(weights[:-1], biases[:-1], self.rates, strict=True):  # hidden layers
            h = torch.addmm(b, h, w.t()).relu_()
            if p > 0:
                inverted_dropout(h, p, inplace=True)
            inputs.append(h)
        logits = torch.addmm(biases[-1], h, weights[-1].t()).float()

        log_probs = torch.log_softmax(logits, 1)
        target = y.unsqueeze(1)
        eps = self.label_smoothing
        loss_sum = -log_probs.gather(1, target).sum()
        if eps > 0:
            loss_sum = (1.0 - eps) * loss_sum - eps / log_probs.shape[1] * log_probs.sum()
        correct = (logits.argmax(1) == y).sum()
        g = log_probs.exp_()  # softmax
        if eps > 0:
            g.sub_(eps / g.shape[1])
        g.scatter_add_(1, target, self._onehot_delta(len(y), g.device)).mul_(1.0 / len(y))

        for layer in reversed(range(len(self.layers))):
            lin, h = self.layers[layer], inputs[layer]
            gc = g.to(dt)
            _mm_into(lin.weight.grad, gc.t(), h)
            torch.sum(g, 0, dtype=lin.bias.grad.dtype, out=lin.bias.grad)
            if layer > 0:
                # relu's own backward op zeroes g where h == 0: dropped units and z <= 0 alike
                g = torch.ops.aten.threshold_backward(torch.mm(gc, weights[layer]), h, 0)
                if self.rates[layer - 1] > 0:
                    g.mul_(self.scales[layer - 1])
        return loss_sum, correct


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype == out.dtype:
        torch.mm(a, b, out=out)
    else:  # bf16 product into the fp32 gradient
        out.copy_(torch.mm(a, b))


def supports(model: torch.nn.Module) -> bool:
    """Whether `model` is in the family this step computes: an MLP of Linear, ReLU and Dropout layers."""
    return isinstance(model, MLP) and model.activation == "relu" and model.norm == "none"
