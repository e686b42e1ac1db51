"""Proof that this library wrote a record's JSON file: a digest of its content, under a key of ours.

    write_sealed(folder / "summary.json", summary)    # core.files.write_json, with the seal added
    is_sealed(read_json_object(path))                 # whether the seal matches the content

Every summary.json (a run, a multi-seed folder, a speedrun record) and every
inspection.json this library writes carries SEAL_KEY: the SHA-256 of the rest of
the object in a canonical form (sorted keys, no spaces, NaN as null), behind a
domain prefix. A summary.json a user wrote, another program's, or one of ours
edited by hand has no seal or one that no longer matches, so records/claim.py
refuses to replace its folder (`--overwrite`). The digest tells our files from
look-alikes and from accidents; it is not a signature and does not resist a
deliberate forgery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from ..core.files import finite_or_none, write_json

SEAL_KEY = "mnist_lib_seal"
DOMAIN = b"mnist_lib record v1\n"  # a digest of some other JSON file never equals a seal by accident


def digest(obj: dict) -> str:
    """The seal of `obj` (without any SEAL_KEY of its own): 'sha256:<hex>' of its canonical JSON."""
    body = {k: v for k, v in obj.items() if k != SEAL_KEY}
    text = json.dumps(finite_or_none(body), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(DOMAIN + text.encode()).hexdigest()


def seal(obj: dict) -> dict:
    """`obj` with its seal (an earlier seal replaced)."""
    body = {k: v for k, v in obj.items() if k != SEAL_KEY}
    return {**body, SEAL_KEY: digest(body)}


def is_sealed(obj: Any) -> bool:
    """Whether `obj` is a JSON object whose seal matches its content (this library wrote it, and nobody changed it since)."""
    if not isinstance(obj, dict) or not isinstance(obj.get(SEAL_KEY), str):
        return False
    try:
        return hmac.compare_digest(obj[SEAL_KEY], digest(obj))
    except (TypeError, ValueError, RecursionError):  # a value JSON cannot hold: not a file of ours
        return False


def write_sealed(path: str | Path, obj: dict) -> None:
    """Write `obj` as JSON with its seal, atomically (core.files.write_json)."""
    write_json(path, seal(obj))
