"""Every path the project uses, in one place.

Override the data location with the MNIST_DATA_DIR environment variable or an
explicit argument; everything else is relative to the repository root.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "MNIST_DATA_DIR"
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "mnist"
RESULTS_DIR = REPO_ROOT / "results"
RUNS_DIR = RESULTS_DIR / "runs"
FIGURES_DIR = REPO_ROOT / "figures"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
