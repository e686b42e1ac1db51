"""Every path the project uses, in one place.

A dataset's data folder comes from an explicit argument, else MNIST_DATA_DIR
(MNIST only), else MNIST_DATA_ROOT/<dataset>, else data/<dataset> (data.data_dir). Results and figures go under the repository unless MNIST_RESULTS_DIR
or MNIST_FIGURES_DIR point elsewhere: the notebook tests set both to a scratch
folder, so re-executing a notebook never touches the committed results.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # mnist_lib/core/paths.py -> the repository
DATA_DIR_ENV = "MNIST_DATA_DIR"
DATA_ROOT_ENV = "MNIST_DATA_ROOT"  # a folder holding mnist/, fashion-mnist/, ... side by side
DEFAULT_DATA_ROOT = REPO_ROOT / "data"
RESULTS_DIR = Path(os.environ.get("MNIST_RESULTS_DIR") or REPO_ROOT / "results")
FIGURES_DIR = Path(os.environ.get("MNIST_FIGURES_DIR") or REPO_ROOT / "figures")
RUNS_DIR = RESULTS_DIR / "runs"
RECORDS_DIR = RESULTS_DIR / "records"  # time-to-accuracy records (workflows/speedrun.py) and their index, records.csv
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_PARAMS_DIR = NOTEBOOKS_DIR / "params"
EXECUTED_NOTEBOOKS_DIR = RESULTS_DIR / "notebooks"


def repo_relative(path: str | Path) -> str:
    """`path` relative to the repository when it lies inside it (how records name recipes and runs), else as given."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)
