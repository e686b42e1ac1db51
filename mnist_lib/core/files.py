"""Reading the text files users hand us (configs, summaries, sweep and run files): every way they can be bad is one UserError.

    read_json("results/runs/x/summary.json")        # parsed JSON
    read_yaml("sweeps/smoke.yaml", "sweep file")    # parsed YAML; the message names what the file is
    parse_json(text, "invalid config JSON")         # the same rules for a string

A missing file, an unreadable one, bytes that are not UTF-8, malformed syntax,
nesting deeper than Python's recursion limit, and integers longer than Python
converts (4300 digits) all end in a UserError naming the file. YAML aliases
(`*name`) are refused: a few lines of them can expand into gigabytes once the
values are walked (the "billion laughs" file), and no config of ours needs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UserError

# ValueError: a decoding error, JSON's own errors, an integer of more than 4300 digits;
# RecursionError: nesting deeper than the interpreter's stack
PARSE_ERRORS = (ValueError, RecursionError)


def read_text(path: str | Path, what: str = "file") -> str:
    """The file's text; missing, unreadable or non-UTF-8 files are a UserError."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
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
