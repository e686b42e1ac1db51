"""Speedrun records: each seed's accuracy is what an independent train-and-test gives, the statistics are records.stats',
the index keeps one row per record, develop mode never reads the test set, and failures leave no index row."""

import csv
import json

import pytest

from mnist_lib import Config, RunOptions, evaluate, prepare_data, train
from mnist_lib.cli import main
from mnist_lib.core.errors import UserError
from mnist_lib.data.idx import TEST_LOCK_ENV
from mnist_lib.data.splits import load_test
from mnist_lib.records.stats import at_least
from mnist_lib.workflows import speedrun as sr

RECIPE = Config(epochs=2, batch_size=256, lr=3e-3, hidden=(64,), dropout=(0.1,), lr_schedule="onecycle")
N = 3000


def options(mnist_dir):
    return RunOptions(data_dir=mnist_dir, max_train_samples=N, threads=2, device="cpu", progress=False)


def index_rows(folder):
    with open(folder / "records.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_record_is_independent_train_and_test_per_seed_with_its_statistics(tmp_path, mnist_dir):
    record = sr.speedrun(RECIPE, [0, 1, 2], 0.8, options(mnist_dir), recipe="configs/speedrun/x.json", out_dir=tmp_path / "x")
    data = prepare_data(RECIPE, mnist_dir, N, validation=False)
    assert len(data.y_train) == N and len(data.y_val) == 0
    x_test, y_test = load_test(data.mean, data.std, mnist_dir)
    for row in record.rows:  # the final weights of a run on the whole (here: subsampled) training file, tested once
        alone = train(RECIPE.replace(seed=row["seed"]), data, device="cpu", threads=2, progress=False)
        assert row["acc"] == evaluate(alone.model, x_test, y_test)["acc"] and row["epochs"] == 2 and row["seconds"] > 0
    s = record.summary
    accs = [r["acc"] for r in record.rows]
    assert s["n"] == 3 and s["acc_min"] == min(accs) and s["acc_mean"] == pytest.approx(sum(accs) / 3)
    assert s["p_value"] == pytest.approx(at_least(accs, 0.8))
    broken = f"trained on {N} of the 60000 training images; 3 seeds, fewer than the 10 a record on cpu needs"
    assert s["rules_broken"] == broken and not s["met"]  # a subset and 3 seeds: never a record, whatever p says
    assert s["status"] == "completed" and s["n_train"] == N and s["population"] == 1 and s["threads"] == 2
    assert s["load_seconds"] > 0 and s["torch_version"] and s["recipe"] == "configs/speedrun/x.json"
    on_disk = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert on_disk["p_value"] == pytest.approx(s["p_value"]) and on_disk["status"] == "completed"
    [row] = index_rows(tmp_path)
    assert (row["folder"], row["n"], row["target"], row["recipe"]) == ("x", "3", "0.8", "configs/speedrun/x.json")
    assert float(row["acc_mean"]) == pytest.approx(s["acc_mean"]) and float(row["p_value"]) == pytest.approx(s["p_value"])
    assert (row["met"], row["rules_broken"]) == ("False", broken)  # the row says why it does not count


def test_a_record_keeps_every_rule_or_is_never_met():
    """The rules of docs/speedrun.md, in aggregate alone: all 60,000 images, at least 10 seeds on the CPU and 25 on CUDA."""

    def rows(n):
        return [{"seed": i, "status": "completed", "acc": 0.99 + 0.001 * (i % 3), "seconds": 1.0, "epochs": 1} for i in range(n)]

    def agg(n, device="cpu", n_train=60000, develop=False, time_limit=None):
        a = sr.aggregate(rows(n), 0.98, time_limit, develop, device_type=device, n_train=n_train, full_train=60000)
        return a["met"], a["rules_broken"]

    assert agg(10) == (True, "") and agg(25, "cuda") == (True, "")
    assert agg(9) == (False, "9 seeds, fewer than the 10 a record on cpu needs")
    assert agg(24, "cuda") == (False, "24 seeds, fewer than the 25 a record on cuda needs")
    assert agg(10, "mps") == (False, "10 seeds, fewer than the 25 a record on mps needs")
    assert agg(10, n_train=59999) == (False, "trained on 59999 of the 60000 training images")
    assert agg(10, develop=True) == (False, "") and agg(10, time_limit=0.5) == (False, "")  # not met, though no rule is broken


def test_the_index_keeps_one_row_per_record_and_a_time_limit_counts(tmp_path, mnist_dir):
    opts = options(mnist_dir)
    sr.speedrun(RECIPE, [0, 1], 0.5, opts, recipe="a.json", out_dir=tmp_path / "a", warmup=False)
    with pytest.raises(UserError, match="already exists"):
        sr.speedrun(RECIPE, [0, 1], 0.5, opts, recipe="a.json", out_dir=tmp_path / "a")
    slow = sr.speedrun(RECIPE, [0, 1], 0.5, opts, recipe="a.json", out_dir=tmp_path / "a", overwrite=True, time_limit=1e-6)
    assert not slow.summary["met"]  # accurate enough, perhaps, but not within a microsecond
    sr.speedrun(RECIPE, [2, 3], 0.5, opts, recipe="b.json", out_dir=tmp_path / "b", warmup=False)
    rows = index_rows(tmp_path)
    assert [r["folder"] for r in rows] == ["a", "b"] and rows[0]["time_limit"] == "1e-06" and rows[0]["met"] == "False"


def test_develop_mode_measures_validation_and_never_reads_the_test_set(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv(TEST_LOCK_ENV, "1")  # reading the test set would raise
    record = sr.speedrun(RECIPE, [0], 0.5, options(mnist_dir), recipe="d.json", develop=True, out_dir=tmp_path / "d")
    data = prepare_data(RECIPE, mnist_dir, N)
    alone = train(RECIPE, data, device="cpu", threads=2, progress=False)
    assert record.rows[0]["acc"] == evaluate(alone.model, data.x_val, data.y_val)["acc"]
    assert record.summary["metric"] == "val_acc" and not record.summary["met"]
    assert not (tmp_path / "records.csv").exists()  # development leaves no record


def test_bad_recipes_and_arguments_are_one_clear_error(tmp_path, mnist_dir):
    opts = options(mnist_dir)
    with pytest.raises(UserError, match="chooses nothing during the run, and plateau steps on the validation loss"):
        sr.speedrun(Config(), [0], 0.98, opts, recipe="r.json", out_dir=tmp_path / "r")
    with pytest.raises(UserError, match="seeds must be distinct"):
        sr.speedrun(RECIPE, [1, 1], 0.98, opts, recipe="r.json", out_dir=tmp_path / "r")
    with pytest.raises(UserError, match=r"target must be an accuracy in \(0, 1\), got 98"):
        sr.speedrun(RECIPE, [0], 98, opts, recipe="r.json", out_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    (tmp_path / "records.csv").write_text("not,an,index\n")
    with pytest.raises(UserError, match="not a records index"):
        sr.read_index(tmp_path / "records.csv")


def test_a_failed_run_says_so_and_adds_no_row(tmp_path, mnist_dir, monkeypatch):
    real = sr.train
    calls = []

    def fails_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(sr, "train", fails_second)
    with pytest.raises(RuntimeError, match="boom"):
        sr.speedrun(RECIPE, [0, 1], 0.5, options(mnist_dir), recipe="f.json", out_dir=tmp_path / "f", warmup=False)
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "boom"
    assert (tmp_path / "f" / "summary.csv").read_text().count("\n") == 2  # the header and the one seed that finished
    assert not (tmp_path / "records.csv").exists()


def test_the_cli_runs_a_recipe_and_refuses_bad_input_in_one_line(tmp_path, mnist_dir, capsys):
    recipe = tmp_path / "tiny.json"
    recipe.write_text(RECIPE.to_json())
    code = main(["speedrun", str(recipe), "--target", "0.5", "--seeds", "0", "1", "--output", str(tmp_path / "out"),
                 "--max-train-samples", str(N), "--threads", "2", "--device", "cpu", "--quiet", "--data-dir", str(mnist_dir)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "2 seeds: test acc" in out and str(tmp_path / "out") in out
    assert f"target 50.00 % NOT met (not a record: trained on {N} of the 60000 training images; 2 seeds, fewer than" in out
    plateau = tmp_path / "plateau.json"
    plateau.write_text(Config().to_json())
    assert main(["speedrun", str(plateau), "--target", "0.98", "--output", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnist-lib: error: a speedrun recipe chooses nothing") and err.count("\n") == 1
    assert main(["speedrun", str(tmp_path / "missing.json"), "--target", "0.98"]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_every_committed_recipe_loads_chooses_nothing_and_has_a_record_run():
    from mnist_lib.core.paths import NOTEBOOK_PARAMS_DIR, REPO_ROOT
    from mnist_lib.workflows.batch import load_run

    recipes = sorted((REPO_ROOT / "configs" / "speedrun").glob("*.json"))
    runs = {p.stem: load_run(p) for p in sorted((NOTEBOOK_PARAMS_DIR / "records").glob("*.yaml"))}
    assert recipes and sorted(p.stem for p in recipes) == sorted(runs)
    for path in recipes:
        sr.check_recipe(Config.load(path))
        run = runs[path.stem]
        assert run.parameters["recipe"] == f"configs/speedrun/{path.name}" and run.parameters["output_name"] == path.stem
        assert len(run.parameters["seeds"]) >= 10 and not run.parameters.get("develop") and run.parameters["threads"] == 2


def test_every_argument_is_checked_before_the_record_folder_is_made(tmp_path, mnist_dir):
    """A seed out of range, a foreign records.csv beside the output, missing data: refused, and no folder is left to --overwrite."""
    opts = options(mnist_dir)
    with pytest.raises(UserError, match=r"each seed must be in \[0, 2\*\*32 - 1\], got 99999999999"):
        sr.speedrun(RECIPE, [0, 99999999999], 0.5, opts, recipe="s.json", out_dir=tmp_path / "x")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "records.csv").write_text("name,score\nmine,1\n")
    with pytest.raises(UserError, match="not a records index"):
        sr.speedrun(RECIPE, [0], 0.5, opts, recipe="s.json", out_dir=tmp_path / "p" / "rec")
    assert (tmp_path / "p" / "records.csv").read_text() == "name,score\nmine,1\n"
    with pytest.raises(UserError, match="not found"):
        sr.speedrun(RECIPE, [0], 0.5, RunOptions(data_dir=tmp_path / "nodata", device="cpu"), recipe="s.json", out_dir=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "p" / "rec").exists()
