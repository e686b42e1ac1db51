"""The independent reference for the training engine: one MLP trained the usual PyTorch way.

    loss, correct = plain_gradients(model, x, y, label_smoothing=0.1)   # forward, F.cross_entropy, backward
    history, model = plain_run(cfg, data)                               # epochs of torch.optim and torch's schedulers

Nothing of mnist_lib's engine is used: the model is an MLP (the thing being
trained, initialised from cfg.seed as the library does), the optimizer and the
schedulers are torch's own (make_optimizer here, train.make_scheduler, which only
pass the config's numbers to torch), the batches follow the library's
documented order (a torch.Generator seeded with cfg.seed, one randperm per epoch).
The MLP's Dropout modules draw their own masks, so a run with dropout agrees with
the engine only statistically; without dropout, to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mnist_lib import MLP, Config
from mnist_lib.training.train import examples_per_epoch, make_scheduler

CPU = torch.device("cpu")


def make_optimizer(model: torch.nn.Module, config: Config, device: torch.device = CPU) -> torch.optim.Optimizer:
    """torch.optim's config.optimizer over the model's parameters, fused as torch.optim offers it."""
    fused = True if device.type in ("cpu", "cuda") else None
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd, fused=fused)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=wd, fused=fused)


def plain_gradients(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """model.train(), forward, mean cross-entropy, backward into fresh .grad; (summed loss, correct count)."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    return loss.detach() * len(y), (logits.argmax(1) == y).sum()


@torch.no_grad()
def plain_evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode."""
    model.eval()
    logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def plain_run(cfg: Config, data) -> tuple[list[dict], MLP]:
    """cfg's epochs, the plain way; the per-epoch metrics and the final weights."""
    torch.manual_seed(cfg.seed)
    model = MLP.from_config(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(data.y_train)
    steps = -(-n // cfg.batch_size)
    opt = make_optimizer(model, cfg, CPU)
    plateau, per_step = make_scheduler(opt, cfg, steps)
    n_used = examples_per_epoch(n, cfg.batch_size, 2 if cfg.norm == "batch" else 1)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        lr = opt.param_groups[0]["lr"]
        perm = torch.randperm(n, generator=gen)[:n_used]
        loss_sum, correct = 0.0, 0
        for idx in perm.split(cfg.batch_size):
            loss, right = plain_gradients(model, data.x_train[idx], data.y_train[idx], cfg.label_smoothing)
            opt.step()
            if cfg.max_norm > 0:
                with torch.no_grad():
                    for lin in model.linears()[:-1]:
                        lin.weight.renorm_(2, 0, cfg.max_norm)
            if per_step is not None:
                per_step.step()
            loss_sum, correct = loss_sum + loss.item(), correct + right.item()
        val_loss, val_acc = plain_evaluate(model, data.x_val, data.y_val)
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / n_used,
                "train_acc": correct / n_used,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr,
            }
        )
        if plateau is not None:
            plateau.step(val_loss)
    return history, model
