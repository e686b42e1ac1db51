"""mnist_lib: fully connected networks on MNIST-style datasets, from verified data to run records.

    from mnist_lib import Config, prepare_data, train
    result = train(Config(epochs=5), prepare_data(Config()))
    cfg = Config(dataset="fashion-mnist", optimizer="sgd", lr=0.05, momentum=0.9, activation="gelu", norm="batch")

Layers, each importing only those above it in this list:

    core/       config (hyperparameters), datasets (the registry), paths, errors, files (safe reading)
    data/       idx (IDX files: read, verify, download), splits (train/val, normalization), images, explore
    training/   model (MLP) -> stacked (M models as one, in a flat buffer) -> optim (its optimizer)
                -> train (the one step and loop: a run is a population of one) -> graphs (CUDA-graph
                replay); device, augment, evaluate (metrics), memory (will it fit?)
    records/    claim (run folders), runs (run records), compare (multi-seed results side by side), plots (figures)
    workflows/  experiment (a run end to end, over seeds), batch (notebooks via papermill), sweep*
    cli.py      python -m mnist_lib
"""

from .core.config import Config, RunOptions
from .core.errors import UserError
from .data.splits import load_test, prepare_data
from .records.runs import load_model
from .training.evaluate import classification_report, evaluate
from .training.model import MLP, count_params
from .training.train import train
from .workflows.experiment import evaluate_run, train_and_record

__all__ = [
    "Config",
    "MLP",
    "RunOptions",
    "UserError",
    "classification_report",
    "count_params",
    "evaluate",
    "evaluate_run",
    "load_model",
    "load_test",
    "prepare_data",
    "train",
    "train_and_record",
]
__version__ = "0.1.0"
