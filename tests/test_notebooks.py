"""Notebook rules (thin, one parameters cell, no functions), the executed copies, and the batch runner."""

from __future__ import annotations

import ast
import dataclasses
import json

import nbformat
import pytest
import yaml

from mnist_lib import Config
from mnist_lib.cli import main
from mnist_lib.core.errors import UserError
from mnist_lib.core.paths import EXECUTED_NOTEBOOKS_DIR, NOTEBOOK_PARAMS_DIR, NOTEBOOKS_DIR
from mnist_lib.workflows.batch import load_run, notebook_parameters

SOURCES = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
RUN_FILES = sorted(NOTEBOOK_PARAMS_DIR.glob("*.yaml"))
# parameters a notebook may have besides Config fields (documented in docs/notebooks.md)
EXTRAS = {
    "01_explore_data.ipynb": {"n_samples", "figures_subdir", "config_file"},
    "02_train.ipynb": {"run_name", "max_train_samples", "threads", "device", "overwrite", "figures_subdir"},
    "03_tune.ipynb": {"sweep_file", "workers", "overwrite"},
    "04_final_evaluation.ipynb": {"config_file", "seeds", "output_name", "max_train_samples", "threads", "device", "overwrite"},
    "05_compare_configs.ipynb": {"runs", "labels", "baseline", "metric", "figures_subdir"},
    "06_play.ipynb": {"run", "results_dir"},
    "07_runs.ipynb": {"results_dir", "folders", "diff_a", "diff_b"},
    "09_inspect.ipynb": {"runs", "labels", "output_name", "attack_examples", "threads", "overwrite"},
    "08_speedrun.ipynb": {
        "recipe",
        "target",
        "time_limit",
        "seeds",
        "develop",
        "threads",
        "device",
        "output_name",
        "overwrite",
        "figures_subdir",
    },
}
FIELD_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(Config)}


def read(path):
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def param_cells(nb):
    return [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]


def test_every_notebook_is_known():
    assert [p.name for p in SOURCES] == sorted(EXTRAS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_opens_with_markdown_and_has_one_flat_parameters_cell(path):
    nb = read(path)
    assert nb.cells[0].cell_type == "markdown" and "How to run" in nb.cells[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = param_cells(nb)
    assert len(cells) == 1
    lines = [line for line in cells[0].source.splitlines() if line.strip()]
    tree = ast.parse(cells[0].source)
    assert len(tree.body) == len(lines), "one assignment per line"
    for stmt, line in zip(tree.body, lines, strict=True):
        assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name), line
        ast.literal_eval(stmt.value)  # a flat literal, nothing computed
        assert "  # " in line, f"no inline comment: {line}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_parameter_names_are_config_fields_or_documented_extras(path):
    declared = notebook_parameters(path)
    extras = EXTRAS[path.name]
    assert set(declared) <= set(FIELD_HELP) | extras
    for name, info in declared.items():
        assert info["inferred_type_name"] != "None" and info["help"], name  # papermill --help-notebook documents it
        if name in FIELD_HELP:
            assert info["help"] == FIELD_HELP[name], f"{name}: comment differs from the Config field's help"
            default = ast.literal_eval(info["default"])
            assert Config().replace(**{name: default}) == Config(), f"{name}: default differs from Config's"


def test_train_notebook_exposes_every_config_field_and_passes_it_on():
    nb = read(NOTEBOOKS_DIR / "02_train.ipynb")
    assert set(FIELD_HELP) <= set(notebook_parameters(NOTEBOOKS_DIR / "02_train.ipynb"))
    code = "\n".join(c.source for c in code_cells(nb))
    for name in FIELD_HELP:
        assert f"{name}={name}" in code, f"{name} is not passed to Config"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_functions_or_classes_and_no_stored_outputs(path):
    for cell in code_cells(read(path)):
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), cell.source
        assert cell.outputs == [] and cell.execution_count is None, "source notebooks are committed without outputs"


def test_train_and_explore_notebooks_never_read_the_test_set():
    for name in ("01_explore_data.ipynb", "02_train.ipynb", "03_tune.ipynb", "05_compare_configs.ipynb"):
        code = "\n".join(c.source for c in code_cells(read(NOTEBOOKS_DIR / name)))
        for needle in ("load_test", "evaluate_run", "multi_seed", 'read_split("test")', "t10k-images"):
            assert needle not in code, f"{name} uses {needle}"


@pytest.mark.parametrize("run_file", RUN_FILES, ids=lambda p: p.name)
def test_run_files_are_valid_and_executed_copies_match_their_source(run_file):
    run = load_run(run_file)
    executed = read(EXECUTED_NOTEBOOKS_DIR / f"{run.name}.ipynb")
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    ns: dict = {}
    exec(injected[0].source, ns)  # papermill writes plain assignments
    assert {k: v for k, v in ns.items() if k in run.parameters} == run.parameters
    fresh = [c.source for c in code_cells(executed) if c not in injected]
    assert fresh == [c.source for c in code_cells(read(run.notebook))], "re-run make reproduce after editing a notebook"
    assert all(o.output_type != "error" for c in code_cells(executed) for o in c.outputs)
    assert all(c.execution_count is not None for c in code_cells(executed))


# --- the batch runner ------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path, monkeypatch, mnist_dir):
    """Kernels write results and figures under tmp_path (they inherit these variables)."""
    monkeypatch.setenv("MNIST_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MNIST_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("MNIST_DATA_DIR", str(mnist_dir))
    return tmp_path


def write_run(path, notebook, **parameters):
    path.write_text(yaml.safe_dump({"notebook": str(notebook), "parameters": parameters}))
    return path


@pytest.mark.slow  # notebooks through papermill and a kernel
def test_batch_runs_notebooks_and_keeps_going_after_a_failure(scratch, capsys):
    broken = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('deliberate')")]
    )
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(broken, scratch / "broken.ipynb")
    runs = [
        write_run(scratch / "a_broken.yaml", scratch / "broken.ipynb"),
        write_run(scratch / "b_tiny.yaml", "02_train.ipynb", epochs=1, hidden=[16], dropout=[0.0], max_train_samples=500, run_name="tiny"),
    ]
    out = scratch / "executed"
    code = main(["notebooks", *map(str, runs), "--output-dir", str(out), "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 1
    assert "broken.ipynb" in stderr and "cell 1" in stderr and "ValueError" in stderr
    failed = read(out / "a_broken.ipynb")
    assert any(o.output_type == "error" for o in failed.cells[-1].outputs)
    tiny = read(out / "b_tiny.ipynb")  # the batch went on after the failure
    assert sum(len(c.outputs) for c in code_cells(tiny)) > 5
    summary = json.loads((scratch / "results" / "runs" / "tiny" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["n_train"] == 500
    assert not list(out.glob(".*running*"))  # no half-written copy
    source = read(NOTEBOOKS_DIR / "02_train.ipynb")
    assert all(c.outputs == [] for c in code_cells(source)), "the source notebook was written to"
    # executed copies are not replaced without --overwrite
    assert main(["notebooks", str(runs[1]), "--output-dir", str(out), "--quiet"]) == 2


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"notebook": "02_train.ipynb", "parameters": {"learning_rate": 1}}, "has no parameter"),
        ({"notebook": "02_train.ipynb", "parameters": {"lr": -1}}, "lr must be > 0"),
        ({"notebook": "missing.ipynb"}, "not found"),
        ({"notebook": "02_train.ipynb", "params": {}}, "expected the keys"),
        ({"notebook": "02_train.ipynb", "parameters": [1, 2]}, "must be a mapping"),
    ],
)
def test_bad_run_files_are_refused_before_anything_runs(tmp_path, spec, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match=message):
        load_run(path)


def test_bad_run_file_exits_2_and_writes_nothing(tmp_path, capsys):
    good = write_run(tmp_path / "good.yaml", "01_explore_data.ipynb")
    bad = write_run(tmp_path / "bad.yaml", "02_train.ipynb", nonsense=1)
    code = main(["notebooks", str(good), str(bad), "--output-dir", str(tmp_path / "out")])
    assert code == 2 and "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- the committed configs and make results ---------------------------------------------------


def test_committed_configs_load_fit_the_budget_and_each_has_a_results_run():
    from mnist_lib import MLP, count_params
    from mnist_lib.core.paths import REPO_ROOT
    from mnist_lib.training.augment import Augment

    configs = {p.stem: Config.load(p) for p in sorted((REPO_ROOT / "configs").glob("*.json"))}
    assert {"mlp_noaug", "mlp_aug"} <= set(configs)
    for cfg in configs.values():
        assert count_params(MLP(cfg.hidden, cfg.dropout, cfg.input_dropout)) <= 600_000  # the budget
    assert Augment.from_config(configs["mlp_noaug"]) is None and Augment.from_config(configs["mlp_aug"]) is not None
    runs = {p.stem: load_run(p) for p in sorted((NOTEBOOK_PARAMS_DIR / "results").glob("*.yaml"))}
    assert sorted(runs) == sorted(configs)
    for name, run in runs.items():
        assert run.parameters["config_file"] == f"configs/{name}.json"
        assert run.parameters["output_name"] == f"configs/{name}"
        assert len(run.parameters["seeds"]) >= 3
