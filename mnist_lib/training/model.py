"""The multilayer perceptron: Linear -> [norm] -> activation -> Dropout per hidden layer, then a linear head.

model = MLP(hidden=(512, 256, 128), dropout=(0.4, 0.3, 0.3))   # the reference
count_params(model)   # 567434
MLP.from_config(Config(activation="gelu", norm="batch", dataset="fashion-mnist"))

Any layer torch.nn has can go in: register_activation("mish", nn.Mish) or
register_norm("rms", nn.RMSNorm), and it trains everywhere (on the CPU, on CUDA,
in populations and under a CUDA graph), since the one training engine
(stacked.py) walks this module's layer list. An activation must act elementwise;
a norm is built from the layer's width.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core import config as config_module
from ..core import datasets
from ..core.config import N_CLASSES, Config

N_INPUTS = 28 * 28
# Config.activation -> the module; leaky_relu with torch's default slope 0.01
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
# Config.norm -> the module, given the layer's width
NORM_LAYERS = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


def register_activation(name: str, module: type[nn.Module]) -> None:
    """Make `name` a valid Config.activation, built as module(): an elementwise nonlinearity."""
    ACTIVATIONS[name] = module
    config_module.ACTIVATIONS = (*dict.fromkeys((*config_module.ACTIVATIONS, name)),)


def register_norm(name: str, module: type[nn.Module]) -> None:
    """Make `name` a valid Config.norm, built as module(width) between each hidden Linear and its activation."""
    NORM_LAYERS[name] = module
    config_module.NORMS = (*dict.fromkeys((*config_module.NORMS, name)),)


def keep_mask(shape: torch.Size | tuple[int, ...], p, dtype: torch.dtype = torch.float32, device=None, scale=None) -> torch.Tensor:
    """Inverted-dropout multipliers: 1 / (1 - p) where a unit is kept (probability 1 - p), 0 where dropped.

    The one dropout computation: Dropout calls it with a float p, a population
    (stacked.py) with p and scale as [M, 1, 1] tensors, one rate per member, from
    one uniform draw for all members. Drawn as `torch.rand(shape) >= p`, in place on
    the float32 uniforms (so p is not rounded to 8 bits under bf16). One multiply by
    this mask is about 3x cheaper on the CPU than nn.Dropout's `bernoulli_`, and
    than `masked_fill`, in the forward and the backward pass alike. Under bf16 the
    mask is bfloat16, so the scale is 1 / (1 - p) rounded to 8 bits.
    """
    mask = torch.rand(shape, device=device).ge_(p)  # 1.0 kept, 0.0 dropped
    if dtype != mask.dtype:  # no call at all when it would change nothing: each op counts on a GPU
        mask = mask.to(dtype)
    return mask.mul_(1.0 / (1.0 - p) if scale is None else scale)  # rounded to dtype, without a host sync


class Dropout(nn.Module):
    """Inverted dropout, as nn.Dropout, with the cheaper `keep_mask`.

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
        return x * keep_mask(x.shape, self.p, x.dtype, x.device)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """784 -> hidden[0] -> ... -> hidden[-1] -> n_classes; each hidden layer Linear -> [norm] -> activation -> Dropout.

    Why this order. The norm sits between the Linear and the nonlinearity, as in
    Ioffe and Szegedy (2015): it standardizes the pre-activations, so the activation
    works on zero-mean, unit-variance inputs whatever the weights' scale. Dropout
    comes last, after the nonlinearity as in the reference: placed before a
    BatchNorm, it would shift the variance the norm sees between training and
    evaluation (Li et al. 2019, "Understanding the disharmony between dropout and
    batch normalization"), so the running statistics would not fit eval mode. With
    BatchNorm the Linear has no bias: the norm subtracts the batch mean, which
    would cancel it.
    """

    def __init__(
        self,
        hidden=(512, 256, 128),
        dropout=(0.4, 0.3, 0.3),
        input_dropout: float = 0.0,
        n_inputs: int = N_INPUTS,
        n_classes: int = N_CLASSES,
        *,
        activation: str = "relu",
        norm: str = "none",
    ) -> None:
        super().__init__()
        if len(hidden) != len(dropout):
            raise ValueError(f"need one dropout per hidden layer, got {len(hidden)} widths and {len(dropout)} rates")
        if activation not in ACTIVATIONS or norm not in (*NORM_LAYERS, "none"):
            raise ValueError(f"unknown activation {activation!r} or norm {norm!r}")
        self.input_dropout = input_dropout
        self.activation, self.norm = activation, norm
        # an input dropout layer only when used, so the reference's state_dict keys stay net.0, net.3, ...
        layers: list[nn.Module] = [Dropout(input_dropout)] if input_dropout > 0 else []
        width = n_inputs
        for h, p in zip(hidden, dropout, strict=True):
            layers.append(nn.Linear(width, h, bias=norm != "batch"))
            if norm != "none":
                layers.append(NORM_LAYERS[norm](h))
            layers += [ACTIVATIONS[activation](), Dropout(p)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    @classmethod
    def from_config(cls, config: Config) -> MLP:
        n_classes = datasets.DATASETS[config.dataset].n_classes
        return cls(config.hidden, config.dropout, config.input_dropout, n_classes=n_classes, activation=config.activation, norm=config.norm)

    def linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def norm_layers(self) -> list[nn.Module]:
        """The hidden layers' BatchNorm1d or LayerNorm modules, in order (none for norm "none")."""
        return [m for m in self.net if isinstance(m, tuple(NORM_LAYERS.values()))]

    def dropout_rates(self) -> list[float]:
        """Dropout after each hidden layer (not the input dropout)."""
        rates = [m.p for m in self.net if isinstance(m, Dropout)]
        return rates[1:] if self.input_dropout > 0 else rates


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
