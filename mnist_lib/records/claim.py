"""Claiming a run folder before writing into it: a name that is a name, one writer at a time, and no data lost on replace.

    claim = claim_run_dir(name="quick")                 # results/runs/quick/, created and locked
    claim = claim_run_dir("runs/x", overwrite=True)     # replaces runs/x only if it is a run record
    ...write the new record's first files into claim.path...
    claim.started()     # the new record stands: the one it replaces is removed only now
    claim.release()     # at the end of the run (also on every failure)

Rules, each one line and exit status 2 when broken:

- A run name is a name (`check_name`): not empty, no path separator, not `.` or
  `..`, no leading dot (hidden names are this module's own), no control
  character, at most 200 characters. Its folder must resolve inside the runs folder.
- An explicit run folder may be any path but the empty string (an unset shell
  variable), a file, or a symlink.
- An existing folder that is not empty is replaced only with `overwrite`, and only
  if it is a record (`is_record`): a folder holding nothing but the files this
  library writes (RECORD_FILES), with a summary.json or inspection.json that carries
  this library's seal (seal.py), and seed_<n>/ subfolders that are records
  themselves. A folder of the user's (a thesis, a data folder, the results folder
  itself, files merely named like ours) is never touched.
- One writer per folder: an exclusive `flock` on <folder>/.lock, held for the whole
  run and released by the OS if the process dies. A second writer is refused, and so
  is a writer while a reader (inspect) holds the folder's shared lock.
- Replacing moves the old record aside (a hidden sibling, `.<name>.replaced-<pid>`)
  before the new folder takes its name, and deletes it only at `started()`. If the new
  run fails before that, `abort()` puts the old record back. A process killed
  between the two leaves the old record under the hidden name, never nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ..core.errors import UserError
from ..core.files import current_umask, describe_os_error, read_json_object, sync_folder, user_path
from ..core.paths import RUNS_DIR
from .seal import is_sealed

LOCK_FILE = ".lock"
MAX_NAME = 200
# every file a run record or a multi-seed folder may hold (runs.py, experiment.py, plots written beside the record)
RECORD_FILES = frozenset(
    {
        "config.json",
        "metrics.csv",
        "summary.json",
        "summary.csv",
        "model.safetensors",
        "test_per_class.csv",
        "test_misclassified.csv",
        "loss_curves.png",
        "accuracy_curves.png",
        "confusion_matrix.png",
        "per_class_accuracy.png",
        "misclassified.png",
        "inspection.json",  # mnist_lib inspect, into a run's own folder (workflows/inspect_runs.py)
        "first_layer_weights.png",
        "embedding.png",
        "saliency.png",
        "reliability.png",
        "robustness.png",
        LOCK_FILE,
    }
)
SEED_FOLDER = re.compile(r"seed_\d+")
TEMP_FILE = re.compile(r"\..+\.tmp")  # core.files.atomic_write's temporaries, left by a killed writer
OWN_FOLDER = re.compile(r"\.seed_\d+\.(replaced-\d+|new-\w+)")  # a seed record moved aside, or a new one, left by a killed writer
MARKER_FILES = ("summary.json", "inspection.json")  # a record's proof of origin: one of them, sealed (seal.py)


def check_name(name: str, what: str = "run name") -> str:
    """`name` if it is a plain name for a folder (see the module docstring), else a UserError saying why."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{what} must be a non-empty name, got {name!r}")
    bad = [c for c in ("/", "\\") if c in name]
    if bad or name in (".", ".."):
        raise UserError(f"{what} {name!r} is a path, not a name: no '/', '\\', '.' or '..'")
    if name.startswith("."):
        raise UserError(f"{what} {name!r} may not start with '.' (hidden names are the library's own)")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"{what} {name!r} holds a control character")
    if len(name) > MAX_NAME:
        raise UserError(f"{what} is {len(name)} characters long; at most {MAX_NAME}")
    return name


def check_subpath(path: str, what: str) -> str:
    """`path` if it is a relative path of names (`configs/mlp_aug`): each part passes check_name, so it stays below its root."""
    if not isinstance(path, str) or not path:
        raise UserError(f"{what} must be a non-empty relative path, got {path!r}")
    if path.startswith(("/", "\\")):
        raise UserError(f"{what} {path!r} must be relative (a folder under its root), not absolute")
    for part in path.split("/"):
        try:
            check_name(part, what)
        except UserError as e:
            raise UserError(f"{what} {path!r}: {e}") from None
    return path


def run_dir_for(run_dir: str | Path | None, name: str | None, default_name: str) -> Path:
    """The folder a run writes to: `run_dir` as given, else RUNS_DIR/`name` (checked), else RUNS_DIR/`default_name`."""
    if run_dir is not None:
        if str(run_dir).strip() == "":
            raise UserError("the run directory is empty (an unset shell variable?); name a folder")
        return user_path(run_dir, "run directory")
    name = check_name(default_name if name is None else name)
    path = user_path(RUNS_DIR / name, "run directory")  # $MNIST_RESULTS_DIR may hold a loop
    if path.resolve().parent != RUNS_DIR.resolve():  # a symlinked runs folder is fine; a name that escapes it is not
        raise UserError(f"run name {name!r} does not stay inside {RUNS_DIR}")
    return path


def is_record(folder: Path, marker: str = "summary.json") -> tuple[bool, str]:
    """(whether `folder` is a record this library wrote and may replace, why not). Reads names and our JSON files only.

    A record holds its `marker` file, summary.json (a run, a multi-seed folder, a speedrun
    record) or inspection.json (an inspection folder), and every such file it holds
    carries this library's seal (seal.py); it holds nothing but the files this library
    writes: RECORD_FILES, the figures a sealed inspection.json names, temporaries of a
    killed write, and seed_<n>/ records. A folder holding nothing but our lock file (a
    writer killed before its first file) is ours too.
    """
    try:
        entries = sorted(folder.iterdir())  # sorted: the same answer, and the same first reason, on every file system
    except OSError as e:
        return False, describe_os_error(e, folder)
    markers = {}
    for name in MARKER_FILES:
        if (folder / name).is_file() and not (folder / name).is_symlink():
            try:
                markers[name] = read_json_object(folder / name, "summary" if name == "summary.json" else "inspection")
            except UserError as e:
                return False, str(e)
    sealed = {name: is_sealed(data) for name, data in markers.items()}
    own = RECORD_FILES | (_declared_figures(markers["inspection.json"]) if sealed.get("inspection.json") else frozenset())
    foreign = []
    for entry in entries:
        if entry.name in own and not entry.is_symlink() and entry.is_file():
            continue
        if TEMP_FILE.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            continue
        if (SEED_FOLDER.fullmatch(entry.name) or OWN_FOLDER.fullmatch(entry.name)) and entry.is_dir() and not entry.is_symlink():
            ok, why = is_record(entry)
            if ok:
                continue
            return False, f"{entry.name}/: {why}"
        foreign.append(entry.name)
    if foreign:
        return False, f"it holds {', '.join(sorted(foreign)[:3])}{' ...' if len(foreign) > 3 else ''}, which this library did not write"
    for name, ok in sealed.items():
        if not ok:
            return False, f"its {name} was not written by this library (it has no valid seal: another program's, or edited by hand)"
    if marker not in markers and [e.name for e in entries] not in ([], [LOCK_FILE]):
        return False, f"it holds no {marker} written by this library"
    return True, ""


def _declared_figures(inspection: dict) -> frozenset[str]:
    """The file names a (sealed) inspection.json says it wrote (a per-run figure of several runs is named after its run)."""
    runs = inspection.get("runs")
    names = [n for r in runs.values() if isinstance(r, dict) for n in (r.get("figures") or {}).values()] if isinstance(runs, dict) else []
    return frozenset(n for n in names if isinstance(n, str) and "/" not in n and not n.startswith("."))


class Claim:
    """A run folder held by this process: `path`, its lock, and the old record it replaces (until `started`)."""

    def __init__(self, path: Path, lock_fd: int, aside: Path | None, old_lock_fd: int | None, shared: bool = False) -> None:
        self.path, self._lock_fd, self.aside, self._old_lock_fd = path, lock_fd, aside, old_lock_fd
        self.is_started, self.shared = False, shared

    def started(self) -> None:
        """The new record's first files are written: remove the record it replaces, if any."""
        self.is_started = True
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None
        _close(self._old_lock_fd)
        self._old_lock_fd = None

    def abort(self) -> None:
        """The new run failed before `started`: remove the new folder (ours) and put the replaced record back, if any."""
        if self.is_started:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if self.aside is not None:
            with contextlib.suppress(OSError):
                os.rename(self.aside, self.path)
                self.aside = None
                _unlink_lock(self.path, self._old_lock_fd)  # the record comes back as it was, without our lock file
        _close(self._old_lock_fd)
        self._old_lock_fd = None

    def release(self) -> None:
        """Give up the lock (idempotent). The lock file goes too: a waiting writer then sees another inode and retries."""
        if self._lock_fd is None:
            return
        if not self.shared or _sole_holder(self._lock_fd):  # a reader leaves the file to the other readers that still hold it
            _unlink_lock(self.path, self._lock_fd)
        _close(self._lock_fd)
        self._lock_fd = None
        _close(self._old_lock_fd)
        self._old_lock_fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        """Released however the block ends; one that fails before `started` also aborts (the old record comes back)."""
        if exc[0] is not None:
            self.abort()
        self.release()


def _unlink_lock(folder: Path, fd: int | None) -> None:
    """Remove folder/.lock if it is the file `fd` holds (not one another writer made since)."""
    with contextlib.suppress(OSError, TypeError):
        if os.stat(folder / LOCK_FILE).st_ino == os.fstat(fd).st_ino:
            os.unlink(folder / LOCK_FILE)


def _sole_holder(fd: int) -> bool:
    """Whether this shared lock is the only lock on its file: it then becomes exclusive (flock converts it), as a writer's."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def lock_folder(folder: Path, shared: bool = False, what: str = "run directory") -> int:
    """A lock on folder/.lock (its fd): exclusive for a writer, shared for a reader (inspect reading a run); a UserError if
    another process holds a lock that excludes it, or the folder is not writable."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise UserError(describe_os_error(e, folder, f"cannot lock the {what}")) from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        same = os.stat(path).st_ino == os.fstat(fd).st_ino  # not a lock file its owner removed while we opened it
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UserError(
                f"{what} {folder} is in use by another process (a run, an evaluation or an inspection); wait for it or choose another name"
            ) from None
        if e.errno == errno.ENOENT:
            raise UserError(f"{what} {folder} changed while it was being locked; try again") from None
        raise UserError(describe_os_error(e, folder, f"cannot lock the {what}")) from None
    if not same:
        os.close(fd)
        raise UserError(f"{what} {folder} changed while it was being locked; try again")
    return fd


def claim_run_dir(
    run_dir: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
    default_name: str | None = None,
    what: str = "run directory",
    marker: str = "summary.json",
) -> Claim:
    """Create and lock a run folder (RUNS_DIR/<name>, or `run_dir`); with `overwrite`, replace a record there.

    A fresh folder appears under its name already locked: it is made under a
    hidden temporary name beside the target and renamed into place. `what` names
    the folder in messages (a speedrun's "record folder", an "inspection folder"),
    and `marker` the file a record it replaces must hold (is_record): an inspection
    never replaces a run, nor a run an inspection.
    """
    path = run_dir_for(run_dir, name, default_name or time.strftime("%Y%m%d-%H%M%S"))
    try:
        with contextlib.suppress(FileNotFoundError):  # a missing parent is made below
            os.stat(path.parent)  # a symlink loop or a path through a file, named as such
        if path.is_symlink():
            raise UserError(f"{what} {path} is a symbolic link; name the folder itself")
        exists = path.exists()
        if exists and not path.is_dir():
            raise UserError(f"{what} {path} exists and is a file, not a folder; choose another path")
        occupied = exists and any(path.iterdir())
    except OSError as e:
        raise UserError(describe_os_error(e, path, f"cannot use the {what}")) from None
    aside = old_fd = None
    if occupied:
        if not overwrite:
            raise UserError(f"{what} {path} already exists; choose another name or pass overwrite (--overwrite)")
        ok, why = is_record(path, marker)
        if not ok:
            raise UserError(f"refusing to overwrite {path}: not a record of this library ({why}); nothing was touched")
        old_fd = lock_folder(path, what=what)
    try:
        fresh = _locked_temp_dir(path, what)
    except BaseException:
        _close(old_fd)
        raise
    new_dir, fd = fresh
    try:
        if occupied:
            aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
            os.rename(path, aside)
        os.rename(new_dir, path)  # atomic; fails if another writer's folder took the name meanwhile
        sync_folder(path.parent)  # the new folder's name on disk, as atomic_write does for a file's
    except OSError as e:
        shutil.rmtree(new_dir, ignore_errors=True)
        _close(fd)
        if aside is not None and not path.exists():
            with contextlib.suppress(OSError):
                os.rename(aside, path)
                aside = None
        _close(old_fd)
        kept = f"; the old record is kept at {aside}" if aside is not None else ""
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise UserError(f"{what} {path} was just created by another process; choose another name{kept}") from None
        raise UserError(describe_os_error(e, path, f"cannot create the {what}") + kept) from None
    return Claim(path, fd, aside, old_fd)


def _locked_temp_dir(path: Path, what: str) -> tuple[Path, int]:
    """A hidden, locked, empty folder beside `path` (parents created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new_dir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-"))
        os.chmod(new_dir, 0o777 & ~current_umask())  # mkdtemp makes 0700; a run folder gets the user's usual mode
    except OSError as e:
        raise UserError(describe_os_error(e, path.parent, f"cannot create the {what}")) from None
    try:
        return new_dir, lock_folder(new_dir, what=what)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise


def writer_alive(folder: str | Path) -> bool:
    """Whether a process holds the folder's lock now: a record that says "running" without one was left by a writer that was killed."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: released (or never taken)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def lock_run_dir(folder: str | Path, shared: bool = False) -> Claim:
    """Lock an existing run folder: exclusively for an update (evaluate, an inspection into it), shared to read it (inspect).

    A Claim to release; refused while another process writes the folder (or, for an update, reads it).
    """
    folder = Path(folder)
    claim = Claim(folder, lock_folder(folder, shared), None, None, shared=shared)
    claim.is_started = True  # nothing of its to remove on failure
    return claim
