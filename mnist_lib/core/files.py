"""Reading the text files users hand us, and writing ours: every way either can go wrong is one UserError.

    read_json("results/runs/x/summary.json")        # parsed JSON
    read_yaml("sweeps/smoke.yaml", "sweep file")    # parsed YAML; the message names what the file is
    parse_json(text, "invalid config JSON")         # the same rules for a string
    write_json(path, obj)                           # atomic; NaN and infinity become null
    atomic_write(path, data)                        # a temporary beside `path`, renamed over it

A missing file, an unreadable one, one larger than MAX_TEXT_BYTES (4 MiB: no
config, summary, sweep or run file comes near it; /dev/zero stops there), bytes
that are not UTF-8, malformed syntax, nesting deeper than Python's recursion
limit, and integers longer than Python converts (4300 digits) all end in a
UserError naming the file. YAML aliases (`*name`) are refused: a few lines of
them can expand into gigabytes once the values are walked (the "billion laughs"
file), and no config of ours needs them.

Writes go to a temporary file beside the target, created with the user's umask
(as an ordinary write would: a shared results folder stays readable by the
group), synced to the disk, then renamed over it, and the folder synced, so a
reader never sees half a file and a power cut leaves the old file or the new one. A write that
fails (no space left, a read-only folder, a file-size limit) leaves the old file
as it was and is a UserError naming the path and the reason (describe_os_error).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

MAX_TEXT_BYTES = 4 << 20  # the largest config, summary, sweep or run file we read

# ValueError: a decoding error, JSON's own errors, an integer of more than 4300 digits;
# RecursionError: nesting deeper than the interpreter's stack
PARSE_ERRORS = (ValueError, RecursionError)


def read_text(path: str | Path, what: str = "file") -> str:
    """The file's text; missing, unreadable, oversized (MAX_TEXT_BYTES) or non-UTF-8 files are a UserError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except OSError as e:
        raise UserError(f"{what} {path}: cannot read it ({describe_os_error(e)})") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise UserError(f"{what} {path} is larger than {MAX_TEXT_BYTES >> 20} MiB, more than any file of this kind needs")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path}: cannot read it ({e})") from None


def parse_json(text: str, what: str) -> Any:
    """json.loads, with every parse failure a UserError starting with `what`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{what}: nested too deeply") from None
    except ValueError as e:
        raise UserError(f"{what}: {e}") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing or malformed file is a UserError naming it."""
    return parse_json(read_text(path, what), f"{what} {path}: cannot read JSON")


def read_json_object(path: str | Path, what: str = "file") -> dict:
    """Parse a JSON file that must hold an object (a summary, a config); anything else is a UserError naming it."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise UserError(f"{what} {path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file (safe loader, no aliases); a missing or malformed file is a UserError naming `what` it is."""
    import yaml

    text = read_text(path, what)
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise UserError(f"{what} {path}: cannot read YAML (nested too deeply)") from None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
        # TypeError: a safe tag on the wrong node kind (`!!set 5`); AttributeError: PyYAML 6.0's
        # timestamp constructor on an explicit `!!timestamp` that is not one (a bug found by tests/test_fuzz.py)
        raise UserError(f"{what} {path}: cannot read YAML ({_one_line(e)})") from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _loader():
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        """yaml.SafeLoader that refuses aliases (*name) where they appear."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported", mark)
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


# --- writing ---------------------------------------------------------------------------------------

REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit was reached)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "it exists and is a file",
    errno.EISDIR: "it is a folder",
    errno.ELOOP: "a symbolic link loop",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOENT: "no such file or folder",
}


def describe_os_error(error: OSError, path: str | Path | None = None, doing: str = "") -> str:
    """One line for an OSError: '<doing> <path>: <reason>' (the path the error names, else `path`)."""
    where = error.filename if error.filename is not None else path
    reason = REASONS.get(error.errno or 0) or error.strerror or str(error)
    head = " ".join(str(p) for p in (doing, where) if p not in (None, ""))
    return f"{head}: {reason}" if head else reason


def user_path(value: str | Path, what: str) -> Path:
    """A path the user gave (an argument, a flag, an environment variable) as a Path: the one check every such path passes.

    A symbolic link loop anywhere in it, a part that is a file, or a name too long is
    a UserError naming `what` and the path, before anything resolves it (Path.resolve
    raises RuntimeError on a loop); a path that does not exist is returned as it is,
    for its caller to say what is missing.
    """
    if str(value).strip() == "":
        raise UserError(f"the {what} is empty (an unset shell variable?); name a path")
    path = Path(value)
    try:
        os.stat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserError(describe_os_error(e, path, what) if e.filename else f"{what} {path}: {describe_os_error(e)}") from None
    return path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (/proc), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path` (mode 0666 less the umask), then rename it over `path`; durable on power loss.

    The temporary's data reaches the disk (fsync) before the rename, and the rename
    (the folder's entry) after it, so that after a power cut `path` holds the old
    file or the new one, never an empty one. A failure leaves `path` as it was,
    removes the temporary, and is a UserError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())  # the data on disk before the name points at it
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        sync_folder(path.parent)  # the rename itself on disk
    except OSError as e:
        raise UserError(describe_os_error(e, path, "cannot write")) from None


def sync_folder(folder: str | Path) -> None:
    """fsync a folder, so that the names created or renamed in it survive a power cut (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows opens no folders; its rename is durable by itself (MoveFileEx with write-through aside)
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # a file system that cannot sync folders (some network mounts)
            raise
    finally:
        os.close(fd)


def finite_or_none(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None (JSON has no NaN), through dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as JSON, atomically; a value that is not finite is written as null, never as NaN."""
    atomic_write(path, json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: str | Path, rows: list[dict], columns: Sequence[str]) -> None:
    """Write `rows` as CSV with these columns, in this order (keys beyond them are an error), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def writable_dir(path: str | Path, what: str = "folder", create: bool = True) -> Path:
    """`path` as a folder this process can write into (created if missing), else a UserError naming the path and the reason.

    Checked before a run starts, so a figures or output folder that is a file, or
    read-only, is refused before any training instead of failing after it. With
    `create=False` nothing is made: the nearest folder that exists is checked
    instead, and the writes make the rest (atomic_write creates parents), so a
    command refused later leaves no empty folder behind.
    """
    if str(path).strip() == "":  # before Path(), which reads "" as "."
        raise UserError(f"the {what} is empty; name a folder")
    path = user_path(path, what)
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"{what} {path} exists and is a file, not a folder")
        if create:
            path.mkdir(parents=True, exist_ok=True)
        probe_dir = path
        while not probe_dir.exists():
            if probe_dir.is_symlink():  # a dangling link: mkdir would fail on it
                raise UserError(f"{what} {path}: {probe_dir} is a broken symbolic link")
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise UserError(f"{what} {path}: {probe_dir} is a file, not a folder")
        probe = probe_dir / f".write-test-{secrets.token_hex(4)}.tmp"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as e:
        raise UserError(describe_os_error(e, path, f"cannot write to the {what}")) from None
    return path
