"""mnist_lib: fully connected networks on MNIST-style datasets, from verified data to run records.

    from mnist_lib import Config, prepare_data, train
    result = train(Config(epochs=5), prepare_data(Config()))
    cfg = Config(dataset="fashion-mnist", optimizer="sgd", lr=0.05, momentum=0.9, activation="gelu", norm="batch")

Modules: config (hyperparameters), datasets (the registry), data (IDX files), splits
(train/val, normalization), model (MLP), augment (batch augmentation), engine (the
autograd training step), backprop (its hand-written ReLU fast path), train (loop),
evaluate (metrics), runs (records), plots (figures), experiment (run end to end, over
seeds), compare (multi-seed results side by side), cli (python -m mnist_lib).
"""

from .config import Config
from .errors import UserError
from .evaluate import classification_report, evaluate
from .experiment import evaluate_run, train_and_record
from .model import MLP, count_params
from .runs import load_model
from .splits import load_test, prepare_data
from .train import train

__all__ = [
    "Config",
    "MLP",
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
