"""The one config: every hyperparameter, with the reference experiment as defaults.

Field names here are the names everywhere else: CLI flags (``--batch-size``),
notebook parameters and sweep files all use them. A Config validates itself on
construction and round-trips through JSON:

    cfg = Config(lr=1e-3)                     # raises UserError if invalid
    Config.from_json(cfg.to_json()) == cfg    # True
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import datasets
from .errors import UserError
from .files import parse_json, read_text

N_CLASSES = 10  # MNIST's; a run's own count is its dataset's (datasets.DATASETS[name].n_classes)


MAX_INDEX = 2**31 - 1  # widest layer: two such layers still have fewer than 2**63 weights, torch's element limit
MAX_STEPS = 10_000_000  # optimizer steps a run may take (epochs x batches per epoch): schedules are tabled per step
MIN_ELASTIC_SIGMA = 0.1  # pixels; below it the Gaussian is one pixel wide, and far below it underflows float32 into NaN
MAX_SEED = 2**32 - 1  # numpy's seed range (Optuna's samplers), inside torch.manual_seed's: one range for every seed
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("plateau", "cosine", "onecycle")
OPTIMIZERS = ("adam", "adamw", "sgd")
# the names of training/model.py's layer tables; model.register_activation and register_norm extend both
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "leaky_relu")
NORMS = ("none", "batch", "layer")


def _f(default: Any, help: str, choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()) -> Any:
    """A dataclass field whose help text (and choices, for strings; a function for a registry) feed the CLI and the docs."""
    return field(default=default, metadata={"help": help, "choices": choices})


def check_seed(value: Any, what: str = "seed") -> int:
    """`value` if it is a valid seed (an integer in [0, 2**32 - 1]), else a UserError: the one rule for every seed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{what} must be an integer in [0, 2**32 - 1], got {value!r:.60}")
    if not 0 <= value <= MAX_SEED:
        shown = str(value) if value.bit_length() < 128 else f"an integer of {value.bit_length()} bits"
        raise UserError(f"{what} must be in [0, 2**32 - 1], got {shown}")
    return value


def check_seeds(seeds: Any) -> list[int]:
    """`seeds` as a list if it is a non-empty list of distinct valid seeds (check_seed), else a UserError: --seeds, speedruns,
    notebook run files."""
    if not isinstance(seeds, (list, tuple)) or not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct integers, a non-empty list of them, got {seeds!r:.80}")
    for s in seeds:
        check_seed(s, "each seed")
    return list(seeds)


THREADS_PER_CORE = 4  # the most torch threads a run may ask for, per core: more only oversubscribes


def max_threads() -> int:
    """The most CPU threads a run may ask for: THREADS_PER_CORE per core of this machine."""
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def check_threads(threads: int, what: str = "threads") -> int:
    """`threads` if it is an integer in [1, max_threads()], else a UserError: the one rule for thread counts."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= max_threads():
        raise UserError(f"{what} must be an integer in [1, {max_threads()}] ({THREADS_PER_CORE} per core here), got {threads!r:.40}")
    return threads


def _registered_datasets() -> tuple[str, ...]:
    return tuple(datasets.DATASETS)  # read at each check: a dataset registered later is a valid choice


def _registered_activations() -> tuple[str, ...]:
    return ACTIVATIONS  # the module global, read at each check: model.register_activation extends it


def _registered_norms() -> tuple[str, ...]:
    return NORMS


@dataclass(frozen=True)
class Config:
    """Hyperparameters of one training run (reference values by default)."""

    dataset: str = _f("mnist", "registered dataset to train on (datasets.py): mnist, fashion-mnist or kmnist", _registered_datasets)
    epochs: int = _f(25, "passes over the training split")
    batch_size: int = _f(128, "examples per optimizer step")
    optimizer: str = _f("adam", "adam, adamw (decoupled weight decay) or sgd", OPTIMIZERS)
    lr: float = _f(5e-4, "learning rate (one-cycle's peak)")
    weight_decay: float = _f(
        5e-5, "weight decay: for adam and sgd an L2 penalty added to the gradient, for adamw decoupled (lr * wd * w subtracted)"
    )
    momentum: float = _f(0.0, "sgd only: momentum (0: plain SGD); one-cycle cycles it between 0.85/0.95 of this value and the value")
    nesterov: bool = _f(False, "sgd only: Nesterov momentum (needs momentum > 0)")
    hidden: tuple[int, ...] = _f((512, 256, 128), "hidden layer widths, input to output")
    dropout: tuple[float, ...] = _f((0.4, 0.3, 0.3), "dropout rate after each hidden layer")
    activation: str = _f("relu", "hidden-layer nonlinearity: relu, gelu, silu, tanh or leaky_relu (slope 0.01)", _registered_activations)
    norm: str = _f(
        "none", "normalization per hidden layer, Linear -> norm -> activation -> dropout: none, batch or layer", _registered_norms
    )
    lr_schedule: str = _f(
        "plateau", "plateau (ReduceLROnPlateau), cosine (anneal to 0 over all steps) or onecycle (warm up to lr, then anneal)", LR_SCHEDULES
    )
    lr_factor: float = _f(0.5, "ReduceLROnPlateau: multiply lr by this when val loss stalls")
    lr_patience: int = _f(3, "ReduceLROnPlateau: epochs without val-loss improvement first")
    val_size: int = _f(6000, "validation examples held out of the dataset's training file (60k for MNIST)")
    split_seed: int = _f(0, "seed of the stratified train/validation split")
    seed: int = _f(0, "seed of weight init, shuffling and dropout")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing: targets (1 - e) one-hot + e / 10 (0: off)")
    max_norm: float = _f(0.0, "cap each unit's incoming weight vector at this L2 norm after every step (0: off)")
    input_dropout: float = _f(0.0, "dropout rate on the input pixels (0: off)")
    aug_rotate: float = _f(0.0, "augmentation: max rotation, degrees (0: off)")
    aug_scale: float = _f(0.0, "augmentation: max relative zoom, e.g. 0.1 for 0.9-1.1 (0: off)")
    aug_shear: float = _f(0.0, "augmentation: max shear angle, degrees (0: off)")
    aug_translate: float = _f(0.0, "augmentation: max shift per axis, pixels (0: off)")
    aug_elastic_alpha: float = _f(0.0, "augmentation: peak elastic displacement, pixels (0: off)")
    aug_elastic_sigma: float = _f(4.0, "augmentation: Gaussian smoothing of the elastic field, pixels")
    precision: str = _f("fp32", "training arithmetic: fp32, or bf16 (bfloat16 matmuls; fp32 weights, loss and optimizer)", PRECISIONS)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
        self._check()

    def _check(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(f"invalid config: {msg}")

        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be > 0, got {self.lr}")
        need(
            self.weight_decay >= 0 and math.isfinite(self.weight_decay),
            f"weight_decay must be >= 0, got {self.weight_decay}",
        )
        need(all(1 <= w <= MAX_INDEX for w in self.hidden), f"hidden widths must be in [1, 2**31 - 1], got {list(self.hidden)!s:.200}")
        need(
            len(self.dropout) == len(self.hidden),
            f"need one dropout per hidden layer: {len(self.hidden)} hidden layers but {len(self.dropout)} dropout rates",
        )
        need(all(0 <= p < 1 for p in self.dropout), f"dropout must be in [0, 1), got {list(self.dropout)}")
        need(0 < self.lr_factor < 1, f"lr_factor must be in (0, 1), got {self.lr_factor}")
        need(self.lr_patience >= 0, f"lr_patience must be >= 0, got {self.lr_patience}")
        for f in dataclasses.fields(self):
            choices = self.choices(f.name)
            need(
                not choices or getattr(self, f.name) in choices,
                f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}",
            )
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(
            self.optimizer == "sgd" or (self.momentum == 0 and not self.nesterov),
            f"momentum and nesterov are sgd's; {self.optimizer} has its own (Adam's beta1), so leave them at 0 and false",
        )
        need(not self.nesterov or self.momentum > 0, "nesterov needs momentum > 0")
        need(
            self.norm != "batch" or self.batch_size >= 2, "norm batch needs batch_size >= 2 (batch statistics of one example are undefined)"
        )
        spec = datasets.DATASETS[self.dataset]
        lo, hi = spec.n_classes, spec.n_train - spec.n_classes  # at least one example per class on each side, on average
        need(lo <= self.val_size <= hi, f"val_size must be in [{lo}, {hi}] for {self.dataset}, got {self.val_size}")
        steps = self.epochs * math.ceil((spec.n_train - self.val_size) / self.batch_size)  # the most a run of this config takes
        need(
            steps <= MAX_STEPS,
            f"epochs x batches per epoch must be at most {MAX_STEPS:,} optimizer steps; {self.epochs} epochs of "
            f"{math.ceil((spec.n_train - self.val_size) / self.batch_size):,} batches are {steps:,}",
        )
        for name in ("seed", "split_seed"):
            try:
                check_seed(getattr(self, name), name)
            except UserError as e:
                need(False, str(e))
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.max_norm >= 0 and math.isfinite(self.max_norm), f"max_norm must be >= 0 (0: off), got {self.max_norm}")
        need(0 <= self.input_dropout < 1, f"input_dropout must be in [0, 1), got {self.input_dropout}")
        need(0 <= self.aug_rotate <= 180, f"aug_rotate must be in [0, 180] degrees, got {self.aug_rotate}")
        need(0 <= self.aug_scale < 1, f"aug_scale must be in [0, 1), got {self.aug_scale}")
        need(0 <= self.aug_shear < 90, f"aug_shear must be in [0, 90) degrees, got {self.aug_shear}")
        need(0 <= self.aug_translate <= 14, f"aug_translate must be in [0, 14] pixels, got {self.aug_translate}")
        need(0 <= self.aug_elastic_alpha <= 14, f"aug_elastic_alpha must be in [0, 14] pixels, got {self.aug_elastic_alpha}")
        need(
            MIN_ELASTIC_SIGMA <= self.aug_elastic_sigma <= 14,
            f"aug_elastic_sigma must be in [0.1, 14] pixels, got {self.aug_elastic_sigma}",
        )

    # --- conversion -------------------------------------------------------
    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        """The valid values of a string field (empty: any)."""
        choices = cls.__dataclass_fields__[name].metadata["choices"]
        return choices() if callable(choices) else choices

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Build a Config from a mapping; unknown keys are refused with the valid list."""
        if not isinstance(d, dict):
            raise UserError(f"invalid config: expected a mapping of field names, got {type(d).__name__}")
        unknown = sorted(map(str, set(d) - set(cls.field_names())))  # str: a YAML key may be a number
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}; valid keys: {', '.join(cls.field_names())}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(parse_json(text, "invalid config JSON"))

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a config JSON file (a run's config.json or a sweep's best config)."""
        text = read_text(path, "config file")
        try:
            return cls.from_json(text)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated, unknown names refused)."""
        return Config.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class RunOptions:
    """Where and how a run trains, not what it learns: one object for one run, a population, several seeds, the CLI and sweeps.

        opts = RunOptions(device="cuda", max_train_samples=5000, progress=False)
        train_and_record(cfg, opts, name="quick")      # workflows/experiment.py

    Checked where they are used, before anything is written (device, graph, threads).
    """

    data_dir: str | Path | None = None  # the dataset's folder (None: $MNIST_DATA_DIR / $MNIST_DATA_ROOT, else data/)
    max_train_samples: int | None = None  # train on a stratified subset of this many examples (None: all)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps
    progress: bool = True  # progress bars
    graph: bool | None = None  # replay the step as a CUDA graph (None: on CUDA, off elsewhere)


def _coerce(name: str, typ: str, value: Any) -> Any:
    """Check a field's type, accepting JSON's lists for tuples and ints for floats."""

    def bad(want: str) -> UserError:
        return UserError(f"invalid config: {name} must be {want}, got {value!r}")

    def as_int(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise bad("an integer" if "tuple" not in typ else "a list of integers")
        return v

    def as_float(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad("a number" if "tuple" not in typ else "a list of numbers")
        try:
            return float(v)
        except OverflowError:  # an integer beyond 1.8e308
            raise bad("a finite number") from None

    if typ == "int":
        return as_int(value)
    if typ == "float":
        return as_float(value)
    if typ == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if typ == "bool":
        if not isinstance(value, bool):  # strict: "false" or 0 in a JSON file is a mistake, not False
            raise bad("true or false")
        return value
    if typ.startswith("tuple["):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise bad("a list")
        conv = as_int if typ.startswith("tuple[int") else as_float
        return tuple(conv(v) for v in value)
    raise TypeError(f"no coercion for {name}: {typ}")  # a new field type needs a rule here
