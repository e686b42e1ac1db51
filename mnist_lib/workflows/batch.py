"""Run parameterized notebooks in batch through papermill: one YAML run file per execution.

    python -m mnist_lib notebooks                                  # every notebooks/params/*.yaml, by name
    python -m mnist_lib notebooks notebooks/params/02_train.yaml --overwrite

A run file names a notebook (relative to notebooks/, or absolute) and its parameters, which
must be names from the notebook's `parameters` cell:

    notebook: 02_train.ipynb
    parameters:
      run_name: reference
      epochs: 25

The executed copy is written to results/notebooks/<run file name>.ipynb, never
over the source. Every run file is checked before the first notebook starts: its
keys, its notebook, and each parameter's type (the one its `parameters` cell
declares) and value: Config fields as Config checks them, and the others by name
(PARAMETER_CHECKS: names such as run_name are names, not paths; threads, seeds and
devices by the rules the command line uses). A failing notebook keeps its
executed copy, error included, and the batch goes on; the command then exits with
status 1, naming each failed notebook and cell.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import Config, check_seeds, check_threads
from ..core.errors import UserError
from ..core.files import read_yaml, writable_dir
from ..core.paths import EXECUTED_NOTEBOOKS_DIR, NOTEBOOK_PARAMS_DIR, NOTEBOOKS_DIR, REPO_ROOT
from ..records.claim import check_name, check_subpath
from ..training.device import select_device

KERNEL = "python3"  # the project environment's own kernel (see use_project_kernel)


@dataclass
class NotebookRun:
    """One execution: which notebook, with which parameters, under which name."""

    name: str
    notebook: Path
    parameters: dict[str, Any]


@dataclass
class Outcome:
    run: NotebookRun
    output: Path
    ok: bool
    seconds: float
    error: str = ""


def notebook_parameters(notebook: str | Path) -> dict[str, dict]:
    """The parameters a notebook declares (name -> papermill's name/type/default/help); a non-notebook is a UserError."""
    import papermill

    try:
        return papermill.inspect_notebook(str(notebook))
    except Exception as e:  # noqa: BLE001 - nbformat and papermill raise many types for a file that is not a notebook
        raise UserError(f"{notebook}: not a readable notebook ({type(e).__name__})") from None


def load_run(path: str | Path) -> NotebookRun:
    """Read and check a run file: known keys, an existing notebook, declared and valid parameters."""
    path = Path(path)
    spec = read_yaml(path, "run file")
    if not isinstance(spec, dict) or set(spec) - {"notebook", "parameters"} or not isinstance(spec.get("notebook"), str):
        raise UserError(f"run file {path}: expected the keys 'notebook' (a notebook's file name) and optionally 'parameters'")
    notebook = NOTEBOOKS_DIR / spec["notebook"]  # an absolute path is kept as it is
    if notebook.suffix != ".ipynb" or not notebook.is_file():
        raise UserError(f"run file {path}: notebook {notebook} not found")
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise UserError(f"run file {path}: 'parameters' must be a mapping of names to values")
    try:
        declared = notebook_parameters(notebook)
    except UserError as e:
        raise UserError(f"run file {path}: {e}") from None
    unknown = sorted(map(str, set(params) - set(declared)))
    if unknown:
        raise UserError(f"run file {path}: {notebook.name} has no parameter(s) {', '.join(unknown)}; it has {', '.join(declared)}")
    try:
        Config().replace(**{k: v for k, v in params.items() if k in Config.field_names()})
        for name, value in params.items():
            if name not in Config.field_names():
                check_parameter(name, value, declared[name]["inferred_type_name"])
    except UserError as e:
        raise UserError(f"run file {path}: {e}") from None
    return NotebookRun(path.stem, notebook, params)


TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _has_type(value: Any, type_name: str) -> bool:
    """Whether `value` fits a parameters-cell annotation: str, int, float, bool or list[...] of them (others: anything)."""
    if type_name.startswith("list[") and type_name.endswith("]"):
        return isinstance(value, list) and all(_has_type(v, type_name[5:-1]) for v in value)
    if type_name not in TYPES:
        return True
    return isinstance(value, TYPES[type_name]) and (type_name == "bool" or not isinstance(value, bool))


def _name_or_empty(what: str):
    return lambda v: v == "" or check_name(v, what)


def _subpath_or_empty(what: str):
    return lambda v: v == "" or check_subpath(v, what)


def _at_least(minimum: int, what: str):
    def check(v):
        if v < minimum:
            raise UserError(f"{what} must be >= {minimum}, got {v}")

    return check


def _sweep_file(v: str) -> None:
    from .sweep_spec import load_spec

    load_spec(REPO_ROOT / v)


# the values of non-Config parameters, by name: a name means the same thing in every notebook that declares it
PARAMETER_CHECKS = {
    "run_name": _name_or_empty("run_name"),
    "output_name": _subpath_or_empty("output_name"),  # results/<output_name>, e.g. configs/mlp_aug
    "figures_subdir": _subpath_or_empty("figures_subdir"),
    "threads": lambda v: v == 0 or check_threads(v),  # 0: torch's default
    "workers": _at_least(0, "workers"),  # 0: the sweep file's
    "max_train_samples": _at_least(0, "max_train_samples"),  # 0: all
    "n_samples": _at_least(1, "n_samples"),
    "device": select_device,
    "seeds": check_seeds,
    "config_file": lambda v: v == "" or Config.load(REPO_ROOT / v),
    "sweep_file": _sweep_file,
}


def check_parameter(name: str, value: Any, type_name: str) -> None:
    """A UserError if a non-Config notebook parameter has the wrong type for its declaration, or a value its rule refuses."""
    if not _has_type(value, type_name):
        raise UserError(f"parameter {name} must be {type_name}, got {value!r:.60}")
    if name in PARAMETER_CHECKS:
        PARAMETER_CHECKS[name](value)


def default_run_files() -> list[Path]:
    return sorted(NOTEBOOK_PARAMS_DIR.glob("*.yaml"))


def use_project_kernel() -> None:
    """Make the kernel named python3 resolve to this interpreter's environment.

    Its kernelspec lives in <venv>/share/jupyter; putting that first on
    JUPYTER_PATH wins over any user-wide python3 kernel of another environment.
    """
    own = str(Path(sys.prefix) / "share" / "jupyter")
    paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    if own not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([own, *paths])


def run_batch(
    runs: list[NotebookRun], output_dir: str | Path = EXECUTED_NOTEBOOKS_DIR, overwrite: bool = False, progress: bool = True
) -> list[Outcome]:
    """Execute each run with papermill; a failure is recorded and the batch continues."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output_dir = Path(output_dir)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"two run files share a name: {names}")
    writable_dir(output_dir, "output folder")
    existing = [output_dir / f"{n}.ipynb" for n in names if (output_dir / f"{n}.ipynb").exists()]
    if existing and not overwrite:
        raise UserError(f"executed copies exist ({', '.join(map(str, existing))}); pass --overwrite to replace them")
    use_project_kernel()
    outcomes = []
    for run in runs:
        final = output_dir / f"{run.name}.ipynb"
        tmp = output_dir / f".{run.name}.running.ipynb"  # renamed when the run ends, so a copy is never half-written
        print(f"[{run.name}] {run.notebook.name} -> {final}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        error = ""
        try:
            papermill.execute_notebook(
                str(run.notebook), str(tmp), parameters=run.parameters, kernel_name=KERNEL, cwd=str(NOTEBOOKS_DIR), progress_bar=progress
            )
        except PapermillExecutionError as e:
            error = f"cell {e.cell_index} (execution count {e.exec_count}): {e.ename}: {e.evalue}"
        except Exception as e:  # kernel died, missing kernel, ...: still a failed run, not a crashed batch
            error = f"{type(e).__name__}: {e}"
        if tmp.exists():
            os.replace(tmp, final)
        outcomes.append(Outcome(run, final, not error, time.perf_counter() - start, error))
    return outcomes
