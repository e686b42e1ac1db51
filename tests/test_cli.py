"""The command line: every sub-command works, bad input is one line on stderr and exit status 2."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_lib.cli import main
from mnist_lib.core.datasets import DATASETS
from mnist_lib.data.idx import find_file, read_split

pytestmark = pytest.mark.slow  # the CLI in real processes: make test-fast leaves it out

FILES = DATASETS["mnist"].files  # MNIST's four IDX files


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        code = main(list(argv))
        raise SystemExit(code)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--epochs", "1", "--max-train-samples", "8000", "--hidden", "128", "--dropout", "0.1", "--lr", "2e-3", "--batch-size", "64",
                 "--run-dir", str(run_dir), "--quiet", "--threads", "2", "--device", "cpu"])  # fmt: skip
    assert code == 0
    return run_dir


def test_train_flags_reach_the_config(trained):
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["epochs"] == 1 and cfg["hidden"] == [128] and cfg["dropout"] == [0.1]
    assert cfg["weight_decay"] == 5e-5  # untouched fields keep the reference defaults


def test_config_file_then_flags(tmp_path, capsys, mnist_dir):
    (tmp_path / "c.json").write_text(json.dumps({"hidden": [16], "dropout": [0.0], "epochs": 3}))
    code, out, err = run_cli(capsys, "train", "--config", str(tmp_path / "c.json"), "--epochs", "1", "--max-train-samples", "500",
                             "--precision", "bf16", "--run-dir", str(tmp_path / "r"), "--quiet")  # fmt: skip
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["hidden"] == [16] and cfg["epochs"] == 1 and cfg["precision"] == "bf16"
    assert "completed" in out


def test_evaluate_writes_test_metrics_and_figures(trained, capsys, tmp_path):
    code, out, err = run_cli(capsys, "evaluate", str(trained), "--figures-dir", str(tmp_path))
    assert code == 0, err
    summary = json.loads((trained / "summary.json").read_text())
    assert 0.8 < summary["test_acc"] <= 1.0 and "test_loss" in summary
    assert {"confusion_matrix.png", "per_class_accuracy.png", "misclassified.png"} <= {p.name for p in tmp_path.iterdir()}
    assert (trained / "test_per_class.csv").is_file()
    # a second evaluation is refused without --overwrite
    code, _, err = run_cli(capsys, "evaluate", str(trained))
    assert code == 2 and "already evaluated" in err


def test_predict_classifies_png_digits(trained, capsys, tmp_path, mnist_dir):
    images, labels = read_split("test", mnist_dir)
    paths = []
    for i in range(10):
        # black digit on white, 3x larger, off-centre: predict must undo all of that
        big = Image.fromarray(255 - images[i].numpy()).resize((84, 84))
        canvas = Image.new("L", (120, 100), 255)
        canvas.paste(big, (30, 5))
        canvas.save(tmp_path / f"d{i}.png")
        paths.append(str(tmp_path / f"d{i}.png"))
    code, out, err = run_cli(capsys, "predict", str(trained), *paths)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 10
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert sum(p == y for p, y in zip(predicted, labels[:10].tolist(), strict=True)) >= 8


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--no-such-flag"], "unrecognized arguments"),
        (["train", "--lr", "-1"], "lr must be > 0"),
        (["train", "--lr", "abc"], "invalid float value"),
        (["train", "--dropout", "0.5", "0.5"], "one dropout per hidden layer"),
        (["train", "--epochs", "0"], "epochs must be >= 1"),
        (["train", "--threads", "0"], "must be >= 1"),
        (["train", "--config", "/no/such/file.json"], "config file /no/such/file.json not found"),
        (["train", "--device", "tpu"], "unknown device"),
        (["train", "--precision", "fp16"], "invalid choice: 'fp16'"),
        (["train", "--seeds", "0", "0"], "distinct integers"),
        (["train", "--seeds"], "expected at least one argument"),
        (["evaluate", "/no/such/run"], "does not exist"),
        (["predict", "/no/such/run", "x.png"], "no model"),
        (["bogus"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_predict_rejects_a_non_image(trained, capsys, tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    code, _, err = run_cli(capsys, "predict", str(trained), str(tmp_path / "x.png"))
    assert code == 2 and "not a readable image" in err


@pytest.mark.parametrize("evaluate_test", [False, True])
def test_train_over_seeds_writes_one_record_each_and_the_summary(tmp_path, capsys, mnist_dir, evaluate_test):
    out_dir = tmp_path / "seeds"
    argv = ["train", "--seeds", "3", "5", "--epochs", "1", "--max-train-samples", "500", "--hidden", "16", "--dropout", "0.0",
            "--run-dir", str(out_dir), "--quiet", "--threads", "1"] + (["--evaluate-test"] if evaluate_test else [])  # fmt: skip
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    per_seed = [json.loads((out_dir / f"seed_{s}" / "summary.json").read_text()) for s in (3, 5)]
    assert [json.loads((out_dir / f"seed_{s}" / "config.json").read_text())["seed"] for s in (3, 5)] == [3, 5]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["seeds"] == [3, 5] and summary["config"]["hidden"] == [16]
    assert summary["val_acc_mean"] == pytest.approx(np.mean([s["best_val_acc"] for s in per_seed]))
    assert ("test_acc_mean" in summary) == evaluate_test  # the test set is read only when asked
    assert f"-> {out_dir}" in out and "2 seeds" in out
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "already exists" in err  # never overwritten silently


def test_existing_run_dir_is_refused(trained, capsys):
    code, _, err = run_cli(capsys, "train", "--run-dir", str(trained), "--epochs", "1", "--quiet")
    assert code == 2 and "already exists" in err


def test_corrupt_data_file_is_exit_2_in_a_real_process(tmp_path, mnist_dir):
    for name in FILES:
        src = find_file(mnist_dir, name)
        os.symlink(src, tmp_path / src.name)
    bad = find_file(mnist_dir, "train-labels-idx1-ubyte")
    (tmp_path / bad.name).unlink()
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + np.zeros(8, np.uint8).tobytes())
    proc = subprocess.run([sys.executable, "-m", "mnist_lib", "data", "--data-dir", str(tmp_path), "--no-download"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2
    assert "MD5" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_documents_every_option():
    proc = subprocess.run([sys.executable, "-m", "mnist_lib", "train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    from mnist_lib import Config

    for name in Config.field_names():
        assert "--" + name.replace("_", "-") in proc.stdout
    for flag in ("--config", "--run-dir", "--max-train-samples", "--threads", "--device", "--quiet", "--evaluate-test", "--overwrite"):
        assert flag in proc.stdout
    top = subprocess.run([sys.executable, "-m", "mnist_lib", "--help"], capture_output=True, text=True)
    assert all(cmd in top.stdout for cmd in ("data", "train", "evaluate", "predict"))


def test_data_command_prints_split(capsys, mnist_dir):
    code, out, _ = run_cli(capsys, "data", "--data-dir", str(mnist_dir), "--no-download")
    assert code == 0
    assert "train 54000, validation 6000, test 10000" in out


def test_ctrl_c_keeps_the_record_marked_interrupted_and_exits_130(tmp_path, capsys, mnist_dir, monkeypatch):
    from conftest import ctrl_c_in_epoch

    ctrl_c_in_epoch(monkeypatch, 2)
    code, out, err = run_cli(capsys, "train", "--epochs", "3", "--max-train-samples", "500", "--hidden", "16", "--dropout", "0",
                             "--run-dir", str(tmp_path / "r"), "--quiet", "--device", "cpu")  # fmt: skip
    assert code == 130 and err.strip() == "mnist-lib: interrupted" and out.startswith("interrupted: ")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] == 1 and (tmp_path / "r" / "model.safetensors").is_file()
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "r"))
    assert code == 2 and "has status 'interrupted'" in err


def test_data_command_on_fashion_mnist_names_its_classes(capsys, fashion_dir):
    code, out, err = run_cli(capsys, "data", "--dataset", "fashion-mnist", "--no-download")  # found through $MNIST_DATA_ROOT
    assert code == 0, err
    assert f"data: Fashion-MNIST in {fashion_dir} (4 files, MD5 verified)" in out
    assert "train 54000, validation 6000, test 10000" in out
    rows = {line.rsplit(maxsplit=3)[0].strip(): line.split()[-3:] for line in out.splitlines()[3:]}
    assert rows["Ankle boot"] == ["5400", "600", "1000"] and len(rows) == 10  # 6,000 per class, split 90/10


def test_predict_with_a_fashion_model_names_its_classes(tmp_path, capsys, fashion_dir, mnist_dir):
    """A digit photo given to a Fashion-MNIST model is still classified, in the model's own classes."""
    run_dir = tmp_path / "fashion"
    code, out, err = run_cli(capsys, "train", "--dataset", "fashion-mnist", "--epochs", "1", "--max-train-samples", "6000", "--hidden", "64",
                             "--dropout", "0.1", "--lr", "2e-3", "--run-dir", str(run_dir), "--quiet", "--threads", "2")  # fmt: skip
    assert code == 0, err
    fashion_images, _ = read_split("test", fashion_dir, "fashion-mnist")
    digits, _ = read_split("test", mnist_dir)
    Image.fromarray(fashion_images[0].numpy()).save(tmp_path / "item.png")  # white on black, as the dataset stores it
    Image.fromarray(255 - digits[0].numpy()).save(tmp_path / "digit.png")
    code, out, err = run_cli(capsys, "predict", str(run_dir), str(tmp_path / "item.png"), str(tmp_path / "digit.png"))
    assert code == 0, err
    lines = out.strip().splitlines()
    names = DATASETS["fashion-mnist"].classes
    assert len(lines) == 2 and all(re.search(r"\(class \d of Fashion-MNIST\) \(probability [01]\.\d{3}\)$", line) for line in lines)
    for line in lines:  # predict's conversion is MNIST's (a 20 x 20 box), so only the naming is asserted, not the answer
        name, index = re.search(r": (.+) \(class (\d) of", line).groups()
        assert names[int(index)] == name
