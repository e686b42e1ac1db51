"""Every path a user gives (arguments, flags, environment variables) passes one check, core.files.user_path: a symbolic
link loop anywhere in it is one line naming what the path is, never a traceback or another reason."""

import pytest

from mnist_lib.cli import main
from mnist_lib.core.errors import UserError
from mnist_lib.core.files import user_path


@pytest.fixture
def loop(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path / "loop"


def test_user_path_names_the_real_cause(loop, tmp_path):
    (tmp_path / "file").write_text("x")
    assert user_path(tmp_path / "missing" / "x", "run") == tmp_path / "missing" / "x"  # missing: the caller says so
    for path, reason in ((loop, "a symbolic link loop"), (loop / "x", "a symbolic link loop"),
                         (tmp_path / "file" / "x", "a part of the path is a file, not a folder")):  # fmt: skip
        with pytest.raises(UserError) as e:
            user_path(path, "run directory")
        assert str(e.value) == f"run directory {path}: {reason}"
    with pytest.raises(UserError, match="the run directory is empty"):
        user_path("", "run directory")


@pytest.mark.parametrize(
    "argv, what",
    [
        (["evaluate", "{loop}"], "run directory {loop}"),
        (["predict", "{run}", "{loop}"], "image {loop}"),
        (["inspect", "{loop}"], "run {loop}"),
        (["inspect", "{run}", "--output", "{loop}/x"], "inspection folder {loop}/x"),
        (["train", "--epochs", "1", "--figures-dir", "{loop}/x", "--run-dir", "{tmp}/r"], "figures folder {loop}/x"),
        (["train", "--epochs", "1", "--run-dir", "{loop}/x"], "run directory {loop}"),
    ],
)
def test_a_symlink_loop_is_one_line_for_every_command(argv, what, loop, tmp_path, capsys):
    names = {"loop": loop, "tmp": tmp_path, "run": "results/runs/reference"}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "symbolic link loop" in err and what.format(**names) in err, err
    assert not (tmp_path / "r").exists()


def test_a_loop_in_the_results_folder_variable_is_one_line(loop, monkeypatch):
    from mnist_lib.records import claim

    monkeypatch.setattr(claim, "RUNS_DIR", loop / "runs")  # what MNIST_RESULTS_DIR=<loop> sets
    with pytest.raises(UserError, match=r"run directory .*loop/runs/quick: a symbolic link loop"):
        claim.claim_run_dir(name="quick")


def test_a_loop_in_a_data_folder_variable_names_the_variable(loop, monkeypatch):
    from mnist_lib.data.idx import data_dir

    monkeypatch.setenv("MNIST_DATA_DIR", str(loop))
    with pytest.raises(UserError, match=r"^data folder \(\$MNIST_DATA_DIR\) .*loop: a symbolic link loop$"):
        data_dir()
    monkeypatch.setenv("MNIST_DATA_ROOT", str(loop))
    with pytest.raises(UserError, match=r"^data folder \(\$MNIST_DATA_ROOT/fashion-mnist\) .*loop/fashion-mnist: a symbolic link loop$"):
        data_dir(dataset="fashion-mnist")
    with pytest.raises(UserError, match=r"^data folder .*loop: a symbolic link loop$"):
        data_dir(loop)
