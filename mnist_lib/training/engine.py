"""The training step, built by autograd from whatever model the config describes.

    step = TrainStep(model, optimizer, precision="fp32", label_smoothing=0.1)
    loss_sum, correct = step(x, y)      # one optimizer step on the batch; 0-dim tensors, no host sync

One step: augment the batch (training batches only), forward in training mode
(dropout masks drawn in layer order, BatchNorm on batch statistics), mean
cross-entropy with optional label smoothing, backward, optimizer step, max-norm,
then the per-step learning-rate schedule. Any torch.nn layer works, since nothing
here knows the network's shape: a new activation or norm needs no backward pass
written by hand.

precision "bf16": the forward runs under autocast, so the matmuls and the
activations are bfloat16 while the weights, gradients, optimizer state and loss
stay float32.

For the plain ReLU family (activation relu, no norm) backprop.ReluTrainStep
computes the same gradients by hand, faster on the CPU; train.build_step picks it
automatically (README, Performance: how much it buys).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .augment import Augment

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class TrainStep:
    """One optimizer step of any nn.Module classifier on a batch: forward, autograd's backward, update."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        precision: str = "fp32",
        *,
        label_smoothing: float = 0.0,
        max_norm: float = 0.0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        augment: Augment | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.dtype = DTYPES[precision]
        self.label_smoothing = label_smoothing
        self.max_norm = max_norm
        # max-norm caps the hidden units' incoming weights (Srivastava et al. 2014): every Linear but the head
        self.max_norm_layers = _hidden_linears(model)
        self.scheduler = scheduler
        self.augment = augment
        # BatchNorm cannot normalize a batch of one example: train_epoch skips such a last batch
        self.min_batch = 2 if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()) else 1

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on (x, y), filling each parameter's .grad; returns (summed loss, correct count)."""
        self.model.train()
        h = x.flatten(1)
        if self.augment is not None:  # training batches only: nothing else passes through a TrainStep
            h = self.augment(h)
        with self._autocast(h.device):
            logits = self.model(h)
        logits = logits.float()
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            return loss.detach() * len(y), (logits.argmax(1) == y).sum()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, correct = self.gradients(x, y)
        self.optimizer.step()
        if self.max_norm > 0:
            with torch.no_grad():
                for lin in self.max_norm_layers:
                    lin.weight.renorm_(2, 0, self.max_norm)
        if self.scheduler is not None:
            self.scheduler.step()
        return loss_sum, correct

    def _autocast(self, device: torch.device):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def _hidden_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[:-1]


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bfloat16 matmuls run natively (CPU: AVX-512-BF16 or AMX; CUDA: Ampere or newer)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False
