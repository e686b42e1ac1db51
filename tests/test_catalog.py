"""The runs table (records/catalog.py) and the widgets of notebooks 06 and 07, without a browser.

The table is checked against the committed results, counted independently from
the files on disk, and against records broken on purpose; the drawing pad
against the reference model on strokes drawn from code.
"""

import json
import shutil

import pandas as pd
import pytest
import torch

from mnist_lib import Config
from mnist_lib.core.errors import UserError
from mnist_lib.core.paths import REPO_ROOT
from mnist_lib.data.images import to_mnist
from mnist_lib.records.catalog import config_diff, history, runs_table
from mnist_lib.records.runs import load_model
from mnist_lib.training.evaluate import predict_proba
from mnist_lib.widgets import PEN, SIDE, DigitPad, RunBrowser, model_runs

RESULTS = REPO_ROOT / "results"
COMMITTED = ["final", "configs", "ablations", "runs/reference"]  # what git holds; sweep trials and other runs stay local


def test_the_table_lists_every_committed_run_record_once():
    table = runs_table(RESULTS, COMMITTED)
    # independently: a run record is a folder with a config.json beside its summary.json
    on_disk = sorted(str(p.parent.relative_to(RESULTS)) for f in COMMITTED for p in (RESULTS / f).rglob("config.json"))
    assert sorted(table.index) == on_disk and len(on_disk) == 28
    assert (table["status"] == "completed").all() and (table["error"] == "").all()
    assert set(table["kind"]) == {"seed", "run"} and table.loc["runs/reference", "kind"] == "run"
    assert set(Config.field_names()) <= set(table.columns)
    fashion = table.loc["configs/fashion_reference/seed_1"]
    summary = json.loads((RESULTS / "configs/fashion_reference/seed_1/summary.json").read_text())
    assert fashion["dataset"] == "fashion-mnist" and fashion["test_acc"] == summary["test_acc"]
    assert fashion["best_val_acc"] == summary["best_val_acc"] and fashion["has_weights"]
    assert pd.isna(table.loc["ablations/affine_only/seed_0", "test_acc"])  # never evaluated on test
    assert not table.loc["ablations/affine_only/seed_0", "has_weights"]


def test_unreadable_records_are_flagged_not_fatal(tmp_path):
    for name in ("good", "bad_json", "bad_config", "no_config"):
        shutil.copytree(RESULTS / "runs" / "reference", tmp_path / "runs" / name)
    (tmp_path / "runs/bad_json/summary.json").write_text("{not json")
    config = json.loads((tmp_path / "runs/bad_config/config.json").read_text())
    (tmp_path / "runs/bad_config/config.json").write_text(json.dumps({**config, "learning_rate": 1}))
    (tmp_path / "runs/no_config/config.json").unlink()
    (tmp_path / "runs/summary.json").write_text(json.dumps({"n_seeds": 3}))  # a multi-seed aggregate: not a run
    table = runs_table(tmp_path)
    assert sorted(table.index) == ["runs/bad_config", "runs/bad_json", "runs/good", "runs/no_config"]
    assert table.loc["runs/good", "status"] == "completed"
    for name, phrase in (("bad_json", "cannot read JSON"), ("bad_config", "learning_rate"), ("no_config", "config.json")):
        assert table.loc[f"runs/{name}", "status"] == "unreadable"
        assert phrase in table.loc[f"runs/{name}", "error"]
    with pytest.raises(UserError, match="no results folder"):
        runs_table(tmp_path / "nowhere")


def test_config_diff_shows_only_the_fields_that_differ():
    table = runs_table(RESULTS, ["configs"])
    diff = config_diff(table.loc["configs/mlp_noaug/seed_0"], table.loc["configs/mlp_aug/seed_0"])
    a, b = (Config.load(RESULTS / f"configs/{n}/seed_0/config.json").to_dict() for n in ("mlp_noaug", "mlp_aug"))
    assert list(diff.index) == [k for k in a if a[k] != b[k]]
    assert config_diff(table.loc["configs/mlp_aug/seed_0"], table.loc["configs/mlp_aug/seed_1"]).index.tolist() == ["seed"]
    assert len(history(RESULTS / "configs/mlp_aug/seed_0")) == 80
    with pytest.raises(UserError, match="metrics.csv"):
        history(RESULTS / "configs")


def test_the_pad_answers_a_stroke_as_predict_would():
    runs = model_runs(RESULTS)
    assert "runs/reference" in runs and all((p / "model.safetensors").is_file() for p in runs.values())
    pad = DigitPad(runs, "runs/reference")
    assert pad.prediction is None and "Draw a digit" in pad.answer.value  # blank canvas: no answer
    pad.draw([(140, 40), (140, 240)])
    assert pad.prediction[:2] == (1, "1") and pad.prediction[2] > 0.5
    # independently: the same stroke drawn with PIL, converted and classified as `predict` does
    from PIL import Image, ImageDraw

    image = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(image).line([(140, 40), (140, 240)], fill=255, width=PEN)
    model, _, mean, std = load_model(runs["runs/reference"])
    ref = predict_proba(model, to_mnist(image)[None], mean, std)[0]
    assert int(ref.argmax()) == 1 and torch.allclose(pad.probabilities, ref, atol=0.05)
    assert 'data-class="1"' in pad.answer.value and pad.bars.value.count("mnist-bar") == 10


def test_the_pad_clears_draws_a_seven_and_switches_models():
    pad = DigitPad(model_runs(RESULTS), "runs/reference")
    pad.draw([(70, 60), (210, 60), (120, 240)])
    assert pad.prediction[0] == 7
    before = pad.bars.value
    pad.use("configs/fashion_reference/seed_0")  # the same drawing, another dataset's classes
    assert pad.spec.name == "fashion-mnist" and pad.prediction[1].endswith("of Fashion-MNIST)") and pad.bars.value != before
    pad.clear()
    assert pad.strokes == [] and pad.prediction is None
    with pytest.raises(UserError, match="no run with weights"):
        DigitPad({})


def test_the_browser_filters_by_dataset_status_and_any_query():
    table = runs_table(RESULTS, COMMITTED)
    browser = RunBrowser(table, RESULTS)
    assert len(browser.filtered()) == 28
    browser.dataset.value = "fashion-mnist"
    assert list(browser.filtered()["dataset"].unique()) == ["fashion-mnist"] and len(browser.filtered()) == 3
    browser.dataset.value = "(all)"
    browser.query.value = "norm == 'batch' and test_acc > 0.985"
    assert sorted(browser.filtered().index) == sorted(n for n in table.index if n.startswith("configs/mlp_noaug_v2"))
    browser.query.value = "norm == "  # half typed: ignored, not an error
    assert len(browser.filtered()) == 28


def test_the_pad_refuses_an_unknown_run_and_survives_a_corrupt_model_file(tmp_path):
    runs = model_runs(RESULTS)
    with pytest.raises(UserError, match="no run 'runs/nope' with weights; choose one of"):
        DigitPad(runs, "runs/nope")
    broken = tmp_path / "broken"
    shutil.copytree(RESULTS / "runs" / "reference", broken)
    (broken / "model.safetensors").write_bytes(b"PK\x03\x04 not safetensors")
    pad = DigitPad({"runs/reference": runs["runs/reference"], "broken": broken}, "runs/reference")
    pad.draw([(140, 40), (140, 240)])
    pad.menu.value = "broken"  # what choosing it in the menu does
    assert "Cannot use broken" in pad.answer.value and "safetensors" in pad.answer.value
    assert pad.spec.name == "mnist" and pad.prediction[0] == 1  # the previous model stays in use
    with pytest.raises(UserError, match="safetensors"):
        DigitPad({"broken": broken})


def test_the_pad_says_when_a_models_outputs_are_not_finite(tmp_path):
    from mnist_lib import MLP, Config
    from mnist_lib.records.runs import save_model

    model = MLP.from_config(Config())
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3e38)  # finite weights, infinite logits
    save_model(tmp_path / "huge.safetensors", model, Config(), 0.1307, 0.3081)
    pad = DigitPad({"huge": tmp_path / "huge.safetensors"}, "huge")
    pad.draw([(140, 40), (140, 240)])
    assert pad.prediction is None and pad.probabilities is None
    assert "outputs are not finite numbers" in pad.answer.value and "nan" not in pad.answer.value.lower()
