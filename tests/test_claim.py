"""Claiming run folders (records/claim.py) and writing files (core/files.py): nothing of the user's is ever deleted.

Each case of issue 19's data-loss list, in a temporary folder: --overwrite on a
folder of the user's, on a file, on "", on "..", on a symlink; replacing a record
keeps the old one until the new one stands; one writer at a time; the umask kept.
"""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from mnist_lib import Config, RunOptions
from mnist_lib.core.errors import UserError
from mnist_lib.core.files import MAX_TEXT_BYTES, atomic_write, read_text, writable_dir, write_json
from mnist_lib.records.claim import check_name, claim_run_dir, is_record, lock_run_dir
from mnist_lib.records.runs import RunRecorder
from mnist_lib.records.seal import SEAL_KEY, is_sealed, seal, write_sealed

TINY = Config(epochs=1, hidden=(8,), dropout=(0.0,))


def make_record(folder, status="completed", extra=()):
    """A run record as RunRecorder leaves it (summary, config, metrics), plus files named in `extra`."""
    rec = RunRecorder(claim_run_dir(folder), TINY, {"split_hash": "abc"})
    rec.end(status)
    rec.close()
    for name in extra:
        (folder / name).write_text("x")
    return folder


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "tab\tname", "x" * 201, None, 5])
def test_a_run_name_is_a_name(name):
    with pytest.raises(UserError, match="run name"):
        check_name(name)


@pytest.mark.parametrize("name", ["reference", "grid-0001", "20261130-131900", "mlp_aug v2", "é"])
def test_ordinary_names_are_accepted(name):
    assert check_name(name) == name


def test_overwrite_never_touches_a_folder_of_the_users(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years")
    (precious / "summary.json").write_text(json.dumps({"status": "completed", "split_hash": "x"}))  # looks like ours, is not only ours
    before = tree(precious)
    with pytest.raises(
        UserError, match=r"refusing to overwrite .*precious: not a record of this library \(it holds thesis.txt, which this library"
    ):
        claim_run_dir(precious, overwrite=True)
    assert tree(precious) == before and sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_overwrite_refuses_a_file_an_empty_path_a_name_that_escapes_and_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setattr("mnist_lib.records.claim.RUNS_DIR", tmp_path / "results" / "runs")
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "final.txt").write_text("keep")
    note = tmp_path / "some_file.txt"
    note.write_text("keep")
    with pytest.raises(UserError, match="exists and is a file"):
        claim_run_dir(note, overwrite=True)
    with pytest.raises(UserError, match="the run directory is empty"):
        claim_run_dir("", overwrite=True)
    with pytest.raises(UserError, match=r"run name '\.\.' is a path"):
        claim_run_dir(name="..", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "results")
    with pytest.raises(UserError, match="is a symbolic link"):
        claim_run_dir(tmp_path / "link", overwrite=True)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(UserError, match="loop: a symbolic link loop"):  # the real cause, from core.files.user_path
        claim_run_dir(tmp_path / "loop", overwrite=True)
    with pytest.raises(UserError, match="symbolic link loop"):
        claim_run_dir(tmp_path / "loop" / "r")
    assert note.read_text() == "keep" and (tmp_path / "results" / "final.txt").read_text() == "keep"


def test_a_record_is_recognised_by_its_files(tmp_path):
    run = make_record(tmp_path / "run", extra=["loss_curves.png", "model.safetensors"])
    assert is_record(run) == (True, "")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    make_record(seeds / "seed_0")
    write_sealed(seeds / "summary.json", {"n_seeds": 1, "config": {}})
    assert is_record(seeds) == (True, "")
    make_record(seeds / ".seed_1.replaced-99")  # a seed record a killed process had moved aside: still ours
    assert is_record(seeds) == (True, "")
    (seeds / "seed_0" / "notes.md").write_text("mine")
    ok, why = is_record(seeds)
    assert not ok and why.startswith("seed_0/: it holds notes.md")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "summary.json").write_text('{"accuracy": 1}')
    assert is_record(foreign) == (False, NOT_SEALED)


NOT_SEALED = "its summary.json was not written by this library (it has no valid seal: another program's, or edited by hand)"


def test_files_named_like_ours_are_not_a_record(tmp_path):
    """A folder of the user's whose files merely carry our names is refused untouched, even with overwrite."""
    mine = tmp_path / "d"
    mine.mkdir()
    (mine / "config.json").write_text('{"epochs": 40}')
    (mine / "metrics.csv").write_text("my notes")
    (mine / "loss_curves.png").write_text("my figure")
    before = tree(mine)
    assert is_record(mine) == (False, "it holds no summary.json written by this library")
    with pytest.raises(UserError, match="not a record of this library .it holds no summary.json written by this library"):
        claim_run_dir(mine, overwrite=True)
    assert tree(mine) == before
    # a summary.json with every field ours has, written by hand: no seal
    write_json(mine / "summary.json", {"status": "completed", "split_hash": "abc"})
    assert is_record(mine) == (False, NOT_SEALED)
    # one of ours, edited by hand afterwards: the seal no longer matches
    run = make_record(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    assert is_sealed(summary) and summary[SEAL_KEY].startswith("sha256:")
    write_json(run / "summary.json", {**summary, "best_val_acc": 0.999})
    assert is_record(run) == (False, NOT_SEALED)
    # a seed folder of the user's inside a record
    seeds = tmp_path / "speedrun"
    seeds.mkdir()
    write_sealed(seeds / "summary.json", {"status": "completed", "seeds_requested": [7]})
    (seeds / "seed_7").mkdir()
    (seeds / "seed_7" / "config.json").write_text("{}")
    assert is_record(seeds) == (False, "seed_7/: it holds no summary.json written by this library")
    # a folder holding nothing but our lock (a writer killed before its first file) loses nothing when replaced
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / ".lock").write_text("")
    assert is_record(locked) == (True, "")


def test_the_seal_covers_every_value_and_nothing_else(tmp_path):
    obj = {"status": "completed", "acc": 0.1 + 0.2, "nested": {"b": [1, 2.5, None], "a": "é"}, "nan": float("nan")}
    sealed = seal(obj)
    assert is_sealed(sealed) and set(sealed) == {*obj, SEAL_KEY}
    write_sealed(tmp_path / "s.json", obj)  # through the file: indentation and NaN written as null change nothing
    assert is_sealed(json.loads((tmp_path / "s.json").read_text()))
    for key, value in [("acc", 0.30000000000000005 + 1e-16), ("status", "Completed"), ("nested", {"a": "é", "b": [1, 2.5]}), ("x", 1)]:
        assert not is_sealed({**sealed, key: value}), key
    assert not is_sealed({k: v for k, v in sealed.items() if k != "acc"})
    assert not is_sealed({**sealed, SEAL_KEY: sealed[SEAL_KEY].upper()}) and not is_sealed([sealed]) and not is_sealed(None)


def test_replacing_keeps_the_old_record_until_the_new_one_has_started(tmp_path):
    run = make_record(tmp_path / "run", extra=["model.safetensors"])
    old = tree(run)
    claim = claim_run_dir(run, overwrite=True)
    asides = [p for p in tmp_path.iterdir() if p.name.startswith(".run.replaced-")]
    assert len(asides) == 1 and {k: v for k, v in tree(asides[0]).items() if k != ".lock"} == old  # moved aside, whole
    assert claim.path == run and [p.name for p in run.iterdir()] == [".lock"]
    claim.abort()  # the new run failed before its first files: the old record comes back
    claim.release()
    assert tree(run) == old and sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    claim = claim_run_dir(run, overwrite=True)
    RunRecorder(claim, TINY, {"split_hash": "new"})  # writes the first files, then claim.started()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the old record is gone only now
    assert {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k != SEAL_KEY} == {
        "status": "running",
        "split_hash": "new",
    }
    claim.release()
    assert not (run / ".lock").exists()


def test_one_writer_at_a_time(tmp_path):
    first = claim_run_dir(tmp_path / "r")
    with pytest.raises(UserError, match="already exists"):
        claim_run_dir(tmp_path / "r")
    with pytest.raises(UserError, match="is in use by another process"):
        claim_run_dir(tmp_path / "r", overwrite=True)
    with pytest.raises(UserError, match="is in use by another process"):
        lock_run_dir(tmp_path / "r")
    first.release()
    claim_run_dir(tmp_path / "r", overwrite=True).release()  # free again: an empty record, replaced


def test_files_keep_the_users_umask(tmp_path):
    old = os.umask(0o002)  # a group-shared results folder
    try:
        atomic_write(tmp_path / "f.txt", "x")
        claim = claim_run_dir(tmp_path / "run")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE(claim.path.stat().st_mode) == 0o775
    claim.release()


def test_json_never_holds_nan(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": float("-inf")}})
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


def test_reads_are_capped(tmp_path):
    with pytest.raises(UserError, match=r"^config file /dev/zero is larger than 4 MiB"):
        read_text("/dev/zero", "config file")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_TEXT_BYTES + 1))
    with pytest.raises(UserError, match="larger than 4 MiB"):
        read_text(big)
    big.write_bytes(b" " * MAX_TEXT_BYTES)
    assert len(read_text(big)) == MAX_TEXT_BYTES


def test_an_output_folder_must_be_a_writable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"figures folder .*file exists and is a file"):
        writable_dir(tmp_path / "file", "figures folder")
    with pytest.raises(UserError, match="a part of the path is a file"):
        writable_dir(tmp_path / "file" / "sub", "figures folder")
    assert writable_dir(tmp_path / "new" / "deep").is_dir() and list((tmp_path / "new" / "deep").iterdir()) == []


def test_a_running_record_whose_writer_died_is_shown_killed(tmp_path):
    from mnist_lib.records.catalog import runs_table
    from mnist_lib.records.claim import writer_alive

    run = tmp_path / "results" / "r"
    rec = RunRecorder(claim_run_dir(run), TINY, {"split_hash": "x"})
    assert writer_alive(run) and runs_table(tmp_path / "results").loc["r", "status"] == "running"
    os.close(rec.claim._lock_fd)  # what the kernel does when the writer is SIGKILLed: the lock goes, the file stays
    assert (run / ".lock").exists() and not writer_alive(run)
    row = runs_table(tmp_path / "results").loc["r"]
    assert row["status"] == "killed" and "writer was killed" in row["error"]
    assert json.loads((run / "summary.json").read_text())["status"] == "running"  # reading never rewrites a record


# --- the exact answers (what mutation testing found unchecked) ------------------------------------


def test_name_and_path_messages_are_exact():
    from mnist_lib.records.claim import MAX_NAME, check_subpath

    for name, message in [
        ("", "run name must be a non-empty name, got ''"),
        (".", "run name '.' is a path, not a name: no '/', '\\', '.' or '..'"),
        ("a\x7fb", "run name 'a\\x7fb' holds a control character"),
        ("x" * (MAX_NAME + 1), f"run name is {MAX_NAME + 1} characters long; at most {MAX_NAME}"),
    ]:
        with pytest.raises(UserError) as e:
            check_name(name)
        assert str(e.value) == message
    assert check_name("x" * MAX_NAME) and check_name("a\x80b")  # 200 characters and a non-ASCII one are fine
    for path, message in [
        ("", "output_name must be a non-empty relative path, got ''"),
        (None, "output_name must be a non-empty relative path, got None"),
        ("/etc", "output_name '/etc' must be relative (a folder under its root), not absolute"),
        ("\\etc", "output_name '\\\\etc' must be relative (a folder under its root), not absolute"),
        ("a/../b", "output_name 'a/../b': output_name '..' is a path, not a name: no '/', '\\', '.' or '..'"),
    ]:
        with pytest.raises(UserError) as e:
            check_subpath(path, "output_name")
        assert str(e.value) == message
    assert check_subpath("configs/mlp_aug", "output_name") == "configs/mlp_aug"


def test_what_is_not_a_record_and_why(tmp_path):
    assert is_record(write(tmp_path / "f.txt")) == (False, f"{tmp_path / 'f.txt'}: a part of the path is a file, not a folder")
    run = make_record(tmp_path / "run")
    (run / ".summary.json.ab12.tmp").symlink_to(tmp_path / "f.txt")  # a temporary's name, but a link: not ours
    assert not is_record(run)[0]
    (run / ".summary.json.ab12.tmp").unlink()
    (run / ".summary.json.ab12.tmp").write_text("half")  # a real temporary a killed writer left: ours
    write(run / "zzz.txt")
    assert is_record(run) == (False, "it holds zzz.txt, which this library did not write")  # seen past the temporary
    (run / "zzz.txt").unlink()
    (run / "data").mkdir()
    write(run / "data" / "config.json")  # a folder of record-like files that is not seed_<n>
    assert is_record(run) == (False, "it holds data, which this library did not write")
    for name in ("b", "c", "d"):
        write(run / name)
    assert is_record(run) == (False, "it holds b, c, d ..., which this library did not write")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    make_record(seeds / "seed_0")
    write(seeds / "zzz.txt")
    assert is_record(seeds) == (False, "it holds zzz.txt, which this library did not write")  # seen past the seed folder
    (seeds / "zzz.txt").unlink()
    (seeds / "summary.json").write_text("[1]")
    assert is_record(seeds) == (False, f"summary {seeds / 'summary.json'}: expected a JSON object, got list")


def write(path, text="x"):
    path.write_text(text)
    return path


def test_a_claim_as_a_context_aborts_only_on_error_and_an_update_lock_never_deletes(tmp_path):
    with claim_run_dir(tmp_path / "kept") as claim:
        RunRecorder(claim, TINY, {})
    assert (tmp_path / "kept" / "summary.json").is_file() and not (tmp_path / "kept" / ".lock").exists()
    with pytest.raises(RuntimeError), claim_run_dir(tmp_path / "failed"):
        raise RuntimeError("before the first files")
    assert not (tmp_path / "failed").exists()  # nothing was started: the new folder is gone
    run = make_record(tmp_path / "run")
    before = tree(run)
    with pytest.raises(RuntimeError), lock_run_dir(run) as claim:
        assert claim.path == run and (run / ".lock").exists()
        raise RuntimeError("evaluate failed")
    assert tree(run) == before  # an update that fails leaves the record as it was, lock file gone


def test_os_errors_are_described_in_one_line():
    import errno

    from mnist_lib.core.files import describe_os_error

    assert describe_os_error(OSError(errno.ENOSPC, "No space left", "/x/m.bin"), "/x", "cannot write") == (
        "cannot write /x/m.bin: no space left on the device"
    )
    assert describe_os_error(OSError(errno.EROFS, "Read-only"), "/x") == "/x: read-only file system"
    assert describe_os_error(OSError(errno.EACCES, "denied"), doing="cannot lock") == "cannot lock: permission denied"
    assert describe_os_error(OSError(errno.EIO, "Input/output error")) == "Input/output error"


def test_read_yaml_messages_name_the_file_and_the_problem(tmp_path):
    from mnist_lib.core.files import read_yaml

    with pytest.raises(UserError) as e:
        read_yaml(write(tmp_path / "a.yaml", "a: &x 1\nb: *x\n"), "sweep file")
    assert str(e.value).startswith(f"sweep file {tmp_path / 'a.yaml'}: cannot read YAML (aliases (*name) are not supported in ")
    with pytest.raises(UserError) as e:
        read_yaml(tmp_path / "none.yaml", "run file")
    assert str(e.value) == f"run file {tmp_path / 'none.yaml'} not found"
    with pytest.raises(
        UserError, match=r"^sweep file .*b\.yaml: cannot read YAML \(while parsing a flow sequence in \"<unicode string>\", line 1"
    ):
        read_yaml(write(tmp_path / "b.yaml", "[1, 2"), "sweep file")


def test_writable_dir_messages(tmp_path):
    with pytest.raises(UserError) as e:
        writable_dir("")
    assert str(e.value) == "the folder is empty; name a folder"
    with pytest.raises(UserError) as e:
        writable_dir(write(tmp_path / "f"))
    assert str(e.value) == f"folder {tmp_path / 'f'} exists and is a file, not a folder"


def test_a_population_whose_third_folder_is_taken_writes_nothing(tmp_path, mnist_dir):
    from mnist_lib.workflows.experiment import train_population_and_record

    (tmp_path / "seed_2").mkdir()
    write(tmp_path / "seed_2" / "mine.txt")
    configs = [TINY.replace(seed=s) for s in range(3)]
    with pytest.raises(UserError, match="seed_2 already exists"):
        train_population_and_record(
            configs, [tmp_path / f"seed_{s}" for s in range(3)], RunOptions(max_train_samples=200, threads=1, device="cpu", progress=False)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_2"] and tree(tmp_path / "seed_2") == {"mine.txt": b"x"}


def test_lock_races_and_failures_are_one_line(tmp_path, monkeypatch):
    import errno
    import fcntl

    from mnist_lib.records import claim as claim_module
    from mnist_lib.records.claim import lock_folder

    run = make_record(tmp_path / "r")
    real = fcntl.flock

    def replaced_meanwhile(fd, op):  # its owner released and removed the lock file, and another writer made a new one
        real(fd, op)
        (run / ".lock").unlink()
        (run / ".lock").write_text("")

    def failing(err):
        def flock(fd, op):
            raise OSError(err, os.strerror(err))

        return flock

    for flock, message in [
        (replaced_meanwhile, f"run directory {run} changed while it was being locked; try again"),
        (failing(errno.ENOENT), f"run directory {run} changed while it was being locked; try again"),
        (failing(errno.EIO), f"cannot lock the run directory {run}: Input/output error"),
    ]:
        monkeypatch.setattr(claim_module.fcntl, "flock", flock)
        with pytest.raises(UserError) as e:
            lock_folder(run)
        assert str(e.value) == message
    monkeypatch.undo()

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(claim_module.os, "open", denied)
    with pytest.raises(UserError) as e:
        lock_folder(run)
    assert str(e.value) == f"cannot lock the run directory {run / '.lock'}: permission denied"


def test_claims_close_their_files_and_a_started_one_is_never_undone(tmp_path):
    run = make_record(tmp_path / "run")
    claim = claim_run_dir(run, overwrite=True)
    old_fd, fd = claim._old_lock_fd, claim._lock_fd
    RunRecorder(claim, TINY, {"split_hash": "new"})  # started: the old record's lock is closed with it
    with pytest.raises(OSError):
        os.fstat(old_fd)
    claim.abort()  # too late to undo: the new record stands
    assert json.loads((run / "summary.json").read_text())["split_hash"] == "new"
    claim.release()
    claim.release()  # twice is harmless
    with pytest.raises(OSError):
        os.fstat(fd)
    deep = claim_run_dir(tmp_path / "a" / "b" / "c")  # missing parents are made
    assert deep.path.is_dir()
    deep.release()
    write(tmp_path / "f.txt")
    with pytest.raises(UserError) as e:
        claim_run_dir(tmp_path / "f.txt" / "r")
    assert str(e.value) == f"run directory {tmp_path / 'f.txt' / 'r'}: a part of the path is a file, not a folder"


def test_a_folder_that_appears_or_a_rename_that_fails_midway_loses_nothing(tmp_path, monkeypatch):
    import errno

    from mnist_lib.records import claim as claim_module

    real_rename = os.rename

    def rename_failing(err, intruder=None):
        def rename(src, dst):
            if ".new-" in os.path.basename(src):  # the fresh folder taking the name
                if intruder:
                    intruder()
                raise OSError(err, os.strerror(err))
            return real_rename(src, dst)

        return rename

    def refused(target, **kw):
        with pytest.raises(UserError) as e:
            claim_run_dir(target, **kw)
        return str(e.value)

    run = make_record(tmp_path / "run")
    old = tree(run)
    monkeypatch.setattr(claim_module.os, "rename", rename_failing(errno.ENOTEMPTY))
    fresh = tmp_path / "fresh"
    assert refused(fresh) == f"run directory {fresh} was just created by another process; choose another name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # its hidden new folder is gone too

    def another_writer():
        (tmp_path / "run").mkdir()
        write(tmp_path / "run" / "theirs.txt")

    monkeypatch.setattr(claim_module.os, "rename", rename_failing(errno.ENOTEMPTY, another_writer))
    message = refused(run, overwrite=True)
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(".run.replaced-")]
    assert message == f"run directory {run} was just created by another process; choose another name; the old record is kept at {aside}"
    assert {k: v for k, v in tree(aside).items() if k != ".lock"} == old and tree(run) == {"theirs.txt": b"x"}

    monkeypatch.undo()
    shutil.rmtree(run)
    real_rename(aside, run)
    monkeypatch.setattr(claim_module.os, "rename", rename_failing(errno.EIO))
    assert refused(run, overwrite=True) == f"cannot create the run directory {run}: Input/output error"
    assert {k: v for k, v in tree(run).items() if k != ".lock"} == old  # moved aside, then put back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_name_whose_folder_resolves_outside_the_runs_folder_is_refused(tmp_path, monkeypatch):
    from mnist_lib.records.claim import run_dir_for

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "elsewhere").symlink_to(tmp_path)
    monkeypatch.setattr("mnist_lib.records.claim.RUNS_DIR", runs)
    with pytest.raises(UserError) as e:
        run_dir_for(None, "elsewhere", "x")
    assert str(e.value) == f"run name 'elsewhere' does not stay inside {runs}"
    with pytest.raises(UserError) as e:
        run_dir_for(" ", None, "x")
    assert str(e.value) == "the run directory is empty (an unset shell variable?); name a folder"
    assert run_dir_for(None, None, "stamp") == runs / "stamp" and run_dir_for("a/b", "ignored", "x") == Path("a/b")


def test_read_text_messages(tmp_path):
    from mnist_lib.core.files import read_text

    with pytest.raises(UserError) as e:
        read_text(tmp_path, "config file")
    assert str(e.value) == f"config file {tmp_path} is a directory"
    with pytest.raises(UserError) as e:
        read_text(write(tmp_path / "f") / "x.json")
    assert (
        str(e.value)
        == f"file {tmp_path / 'f' / 'x.json'}: cannot read it ({tmp_path / 'f' / 'x.json'}: a part of the path is a file, not a folder)"
    )


def test_readers_share_a_run_and_exclude_its_writers(tmp_path):
    run = make_record(tmp_path / "run")
    first, second = lock_run_dir(run, shared=True), lock_run_dir(run, shared=True)  # two inspections of one run at once
    for attempt in (lambda: claim_run_dir(run, overwrite=True), lambda: lock_run_dir(run)):
        with pytest.raises(UserError, match="is in use by another process"):
            attempt()
    first.release()
    assert (run / ".lock").exists()  # the second reader still holds it
    with pytest.raises(UserError, match="is in use by another process"):
        claim_run_dir(run, overwrite=True)
    second.release()
    assert not (run / ".lock").exists()  # the last reader leaves the record as it found it
    writer = lock_run_dir(run)
    with pytest.raises(UserError, match="is in use by another process"):
        lock_run_dir(run, shared=True)
    writer.release()
    claim_run_dir(run, overwrite=True).release()


def test_every_atomic_write_reaches_the_disk_before_its_name_and_the_name_after(tmp_path, monkeypatch):
    """fsync of the temporary, then the rename, then fsync of the folder: a power cut leaves the old file or the new one."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "f.txt", "data")
    assert len(events) == 3 and events[0][0] == "fsync" and events[0][1].startswith(str(tmp_path / ".f.txt."))
    assert events[1:] == [("replace", str(tmp_path / "f.txt")), ("fsync", str(tmp_path))]
    events.clear()
    claim = claim_run_dir(tmp_path / "run")  # a new run folder's name is synced in its parent too
    assert ("fsync", str(tmp_path)) in events
    claim.release()
