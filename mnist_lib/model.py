"""The multilayer perceptron: Linear -> ReLU -> Dropout per hidden layer, then a linear head.

model = MLP(hidden=(512, 256, 128), dropout=(0.4, 0.3, 0.3))   # the reference
count_params(model)   # 567434
"""

from __future__ import annotations

import torch
from torch import nn

from .config import N_CLASSES, Config

N_INPUTS = 28 * 28


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean dropout mask, each entry True (dropped) with probability p.

    `torch.rand(...) < p` is about 3x faster on the CPU than nn.Dropout's
    `bernoulli_` and draws from the same Bernoulli distribution. The uniforms are
    float32 even under bf16, so p is not rounded to 8 bits.
    """
    return torch.rand(shape, device=device) < p


def inverted_dropout(x: torch.Tensor, p: float, inplace: bool = False) -> torch.Tensor:
    """Zero each entry with probability p (drop_mask) and scale the rest by 1 / (1 - p).

    The one dropout computation: Dropout and the hand-written TrainStep both call it,
    so the same random state gives them the same mask.
    """
    dropped = drop_mask(x.shape, p, x.device)
    out = x.masked_fill_(dropped, 0) if inplace else x.masked_fill(dropped, 0)
    return out.mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """Inverted dropout, as nn.Dropout, with the cheaper `drop_mask`.

    Each unit is kept with probability 1 - p and scaled by 1 / (1 - p).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return inverted_dropout(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """784 -> hidden[0] -> ... -> hidden[-1] -> 10, with ReLU and dropout after each hidden layer."""

    def __init__(
        self,
        hidden=(512, 256, 128),
        dropout=(0.4, 0.3, 0.3),
        input_dropout: float = 0.0,
        n_inputs: int = N_INPUTS,
        n_classes: int = N_CLASSES,
    ) -> None:
        super().__init__()
        if len(hidden) != len(dropout):
            raise ValueError(f"need one dropout per hidden layer, got {len(hidden)} widths and {len(dropout)} rates")
        self.input_dropout = input_dropout
        # an input dropout layer only when used, so the reference's state_dict keys stay net.0, net.3, ...
        layers: list[nn.Module] = [Dropout(input_dropout)] if input_dropout > 0 else []
        width = n_inputs
        for h, p in zip(hidden, dropout, strict=True):
            layers += [nn.Linear(width, h), nn.ReLU(), Dropout(p)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    @classmethod
    def from_config(cls, config: Config) -> MLP:
        return cls(config.hidden, config.dropout, config.input_dropout)

    def linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def dropout_rates(self) -> list[float]:
        """Dropout after each hidden layer (not the input dropout)."""
        rates = [m.p for m in self.net if isinstance(m, Dropout)]
        return rates[1:] if self.input_dropout > 0 else rates


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
