"""Sweep files: what to search. A grid over Config fields, then refinement around the best grid points.

    spec = load_spec("sweeps/smoke.yaml")     # refused with one clear line if invalid
    spec.grid_points()                         # every combination, as Config-field dicts
    refine_space(spec, best_points)            # the finer ranges stage 2 samples from

A sweep file (field names are Config's):

    name: smoke                 # results/sweeps/<name>/ (default: the file name)
    base: {epochs: 2}           # fixed for every trial; unlisted fields keep the reference values
    grid:                       # stage 1: every combination
      lr: [5.0e-4, 1.0e-3]
      weight_decay: [0.0, 5.0e-5]
      optimizer:                # a value may be a mapping: it sets its key's field and companions (over base) together
        - {optimizer: adam}
        - {optimizer: sgd, momentum: 0.9}
    refine: {trials: 4, top: 2} # stage 2: `trials` TPE trials inside the ranges spanned by the best `top` grid points
    trial: {executor: papermill, max_train_samples: 0, threads: 1, device: auto, population: 0}
    workers: 2                  # parallel worker processes (default: one per CPU core)
    storage: ""                 # "": SQLite in results/sweeps/<name>/; or a database URL shared by several machines
    seed: 0                     # sampler seed

A grid may hold at most MAX_GRID_POINTS (1,000,000) points, counted before any is
built. The study remembers the file that made it (`fingerprint`: every key but
`workers` and `storage`), so an edited file is refused rather than resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..core.config import Config, check_seed, check_threads
from ..core.errors import UserError
from ..core.files import read_yaml

EXECUTORS = ("papermill", "library")
DEVICES = ("auto", "cpu", "cuda")
TRIAL_KEYS = {"executor", "max_train_samples", "threads", "device", "population"}
AUTO_POPULATION_CUDA = 64  # trial.population 0 on CUDA: up to this many trials side by side
TOP_KEYS = {"name", "base", "grid", "refine", "trial", "workers", "storage", "seed"}
MAX_GRID_POINTS = 1_000_000  # queueing one takes about 6 ms with SQLite on the 2-core machine: 10**6 is about 100 minutes
NOT_FINGERPRINTED = ("workers", "storage", "path")  # how many processes and where the study lives do not change what it is


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file."""

    name: str
    base: dict[str, Any]
    grid: dict[str, list]
    refine_trials: int = 0
    refine_top: int = 3
    executor: str = "papermill"
    max_train_samples: int = 0  # 0: the whole training split
    threads: int = 1  # torch threads per worker
    device: str = "auto"  # where trials train: auto (CUDA if present), cpu or cuda
    population: int = 0  # trials trained side by side per population: 0 auto (64 on CUDA, 1 on the CPU), 1 never
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    storage: str = ""
    seed: int = 0
    path: str = ""

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid values, in a fixed order."""
        return list(self.iter_grid_points())

    def iter_grid_points(self):
        """The grid points one at a time, in grid_points' order (no list of a million dicts)."""
        names = list(self.grid)
        return (dict(zip(names, combo, strict=True)) for combo in itertools.product(*(self.grid[n] for n in names)))

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    def defining(self) -> dict[str, Any]:
        """What the sweep is, as JSON-ready values: every field but NOT_FINGERPRINTED."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in NOT_FINGERPRINTED}

    def fingerprint(self) -> str:
        """A hash of `defining()`: equal for two files that define the same sweep (comments, key order and workers aside)."""
        return hashlib.sha256(json.dumps(self.defining(), sort_keys=True).encode()).hexdigest()[:16]

    def population_size(self, device_type: str) -> int:
        """How many trials train side by side on `device_type` ("cpu" or "cuda"): 1 means one at a time."""
        if self.population:
            return self.population
        # the CPU: one at a time. Trials train at trial.threads (1 by default) in `workers` processes, and at
        # 1 thread a population is slower per model (1.09x for 2 members: experiment.populations_pay)
        return AUTO_POPULATION_CUDA if device_type == "cuda" else 1

    def config_for(self, point: dict[str, Any]) -> Config:
        return Config.from_dict({**self.base, **expand(point)})


def expand(point: dict[str, Any]) -> dict[str, Any]:
    """A grid point as Config fields: a mapping value (a bundle, e.g. an optimizer with its own lr) sets all its fields."""
    out: dict[str, Any] = {}
    for name, value in point.items():
        out.update(value if isinstance(value, dict) else {name: value})
    return out


def _need(ok: bool, path: str, msg: str) -> None:
    if not ok:
        raise UserError(f"invalid sweep file {path}: {msg}")


def _json_value(value: Any) -> str | None:
    """The JSON text of a grid value (the study stores it so), or None for YAML-only types (dates, sets, bytes)."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _positive_int(value: Any, path: str, what: str, minimum: int = 1) -> int:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        path,
        f"{what} must be an integer >= {minimum}, got {value!r}",
    )
    return value


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; every grid point must make a valid Config."""
    path = Path(path)
    raw = read_yaml(path, "sweep file")
    p = str(path)
    _need(isinstance(raw, dict), p, "expected a mapping at the top level")
    unknown = sorted(map(str, set(raw) - TOP_KEYS))  # str: YAML keys may be numbers or dates
    _need(not unknown, p, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(TOP_KEYS))}")
    fields = set(Config.field_names())
    base = raw.get("base") or {}
    grid = raw.get("grid")
    _need(isinstance(base, dict), p, "'base' must map Config fields to values")
    _need(isinstance(grid, dict) and grid, p, "'grid' must map at least one Config field to a list of values")
    for section, keys in (("base", base), ("grid", grid)):
        bad = sorted(map(str, set(keys) - fields))
        _need(not bad, p, f"unknown field(s) in {section}: {', '.join(bad)}; valid fields: {', '.join(Config.field_names())}")
    for name, values in grid.items():
        _need(isinstance(values, list) and values, p, f"grid.{name} must be a non-empty list of values")
    size = math.prod(len(v) for v in grid.values())
    _need(size <= MAX_GRID_POINTS, p, f"the grid has {size:,} points; at most {MAX_GRID_POINTS:,} (split it into several sweeps)")
    for name, values in grid.items():
        infinite = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
        _need(not infinite, p, f"grid.{name} holds {infinite[0] if infinite else ''}, which is not a finite number")
        encoded = [_json_value(v) for v in values]
        _need(None not in encoded, p, f"grid.{name} holds a value that is not a number, string, list or mapping: {values!r:.80}")
        _need(len(set(encoded)) == len(values), p, f"grid.{name} repeats a value")
        for bundle in (v for v in values if isinstance(v, dict)):
            _need(name in bundle, p, f"grid.{name}: a mapping value must set {name} itself, got {json.dumps(bundle)[:80]}")
            bad = sorted(map(str, set(bundle) - fields))
            _need(not bad, p, f"grid.{name}: unknown field(s) {', '.join(bad)}")
            clash = sorted(map(str, set(bundle) & set(grid) - {name}))  # over base it wins: it is the more specific
            _need(not clash, p, f"grid.{name}: field(s) {', '.join(clash)} also searched by their own grid key")
    _need(not set(base) & set(grid), p, f"field(s) both fixed and searched: {', '.join(sorted(set(base) & set(grid)))}")
    refine = raw.get("refine") or {}
    trial = raw.get("trial") or {}
    _need(isinstance(refine, dict) and set(refine) <= {"trials", "top"}, p, "'refine' takes 'trials' and 'top'")
    _need(
        isinstance(trial, dict) and set(trial) <= TRIAL_KEYS,
        p,
        "'trial' takes " + ", ".join(f"'{k}'" for k in sorted(TRIAL_KEYS)),
    )
    spec = SweepSpec(
        name=str(raw.get("name") or path.stem),
        base=base,
        grid={k: list(v) for k, v in grid.items()},
        refine_trials=_positive_int(refine.get("trials", 0), p, "refine.trials", minimum=1 if "refine" in raw else 0),
        refine_top=_positive_int(refine.get("top", 3), p, "refine.top"),
        executor=trial.get("executor", "papermill"),
        max_train_samples=_positive_int(trial.get("max_train_samples", 0), p, "trial.max_train_samples", minimum=0),
        threads=_checked(check_threads, trial.get("threads", 1), p, "trial.threads"),
        device=str(trial.get("device", "auto")),
        population=_positive_int(trial.get("population", 0), p, "trial.population", minimum=0),
        workers=_positive_int(raw.get("workers", os.cpu_count() or 1), p, "workers"),
        storage=str(raw.get("storage") or ""),
        seed=_checked(check_seed, raw.get("seed", 0), p, "seed"),
        path=p,
    )
    _need(spec.executor in EXECUTORS, p, f"trial.executor must be one of {', '.join(EXECUTORS)}, got {spec.executor!r}")
    _need(spec.device in DEVICES, p, f"trial.device must be one of {', '.join(DEVICES)}, got {spec.device!r}")
    _need(spec.name.replace("-", "").replace("_", "").isalnum(), p, f"name may hold letters, digits, - and _ only, got {spec.name!r}")
    _need(_storage_ok(spec.storage), p, f"storage {spec.storage!r}: {_storage_problem(spec.storage)}")
    points = tqdm(spec.iter_grid_points(), total=size, desc="checking grid points", unit="pt", disable=size < 10_000)
    for point in points:  # refuse a bad value before anything runs
        try:
            spec.config_for(point)
        except UserError as e:
            raise UserError(f"invalid sweep file {p}: grid point {json.dumps(point)}: {e}") from None
    return spec


def _checked(check, value: Any, path: str, what: str):
    """`check(value, what)`'s value, its UserError as this sweep file's."""
    try:
        return check(value, what)
    except UserError as e:
        raise UserError(f"invalid sweep file {path}: {e}") from None


def _storage_problem(url: str) -> str:
    """Why `url` cannot hold a sweep's study ("" if it can): malformed, or an in-memory database each process would have alone."""
    if not url:
        return ""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        return f"not a database URL ({' '.join(str(e).split())[:120]})"
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return "an in-memory SQLite database lives in one process; the sweep's workers need a file (sqlite:///path.db) or a server"
    return ""


def _storage_ok(url: str) -> bool:
    return not _storage_problem(url)


# --- stage 2: ranges around the best grid points -------------------------------------------------


def refine_space(spec: SweepSpec, best: list[dict[str, Any]]) -> dict[str, dict]:
    """Search space for refinement, from the best grid points (best first).

    A numeric field searched over several grid values gets a continuous range
    from the grid value just below the lowest of the best points to the one just
    above the highest, one grid step further where a best point sits on the
    edge of the grid (log scale when all values are positive). Any other field
    (lists such as hidden/dropout, strings, booleans, bundles, or one-value
    fields) becomes one categorical choice among the combinations the best
    points used.
    """
    space: dict[str, dict] = {}
    categorical = []
    for name, values in spec.grid.items():
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not numeric or len(values) < 2:
            categorical.append(name)
            continue
        ordered = sorted(values)
        chosen = [pt[name] for pt in best]
        lo_i, hi_i = ordered.index(min(chosen)), ordered.index(max(chosen))
        log = ordered[0] > 0
        # one grid step beyond the best points; past an edge of the grid, one more step of the same size
        low = (
            ordered[lo_i - 1]
            if lo_i > 0
            else (
                ordered[0] ** 2 / ordered[1]
                if log
                else max(0, 2 * ordered[0] - ordered[1])
                if ordered[0] >= 0
                else 2 * ordered[0] - ordered[1]
            )
        )
        high = ordered[hi_i + 1] if hi_i < len(ordered) - 1 else (ordered[-1] ** 2 / ordered[-2] if log else 2 * ordered[-1] - ordered[-2])
        is_int = all(isinstance(v, int) for v in values)
        if is_int:
            low, high = int(round(low)), int(round(high))
        if log and is_int:  # a log scale takes no integer bound below 1 (a float one stays > 0: a square over a positive)
            low = max(low, 1)
        # each bound clipped to what the field accepts, found by asking Config itself (the one place its range lives)
        low = _accepted(spec, best[0], name, low, min(chosen), is_int)
        high = _accepted(spec, best[0], name, high, max(chosen), is_int)
        space[name] = {"type": "int" if is_int else "float", "low": low, "high": high, "log": log}
    if categorical:
        combos = []
        for pt in best:
            combo = json.dumps({n: pt[n] for n in categorical}, sort_keys=True)
            if combo not in combos:
                combos.append(combo)
        space["_choice"] = {"type": "categorical", "choices": combos}
    return space


def _accepted(spec: SweepSpec, point: dict[str, Any], name: str, bound: float, inside: float, is_int: bool) -> float:
    """`bound` if Config accepts it for `name` (with the rest of `point`), else the value nearest it, towards `inside` (a value
    Config accepted: a best grid point's), that it accepts; found by bisection, so no field's range is written down twice."""

    def ok(value) -> bool:
        try:
            spec.config_for({**point, name: value})
            return True
        except UserError:
            return False

    if ok(bound):
        return bound
    good, bad = inside, bound
    for _ in range(64):  # float bisection reaches the boundary to within an ulp-scale step long before 64 halvings
        mid = (good + bad) / 2
        if is_int:
            mid = int(math.floor(mid) if good < bad else math.ceil(mid))
            if mid in (good, bad):
                break
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def decode_choice(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna params -> Config fields (the categorical '_choice' and grid values are JSON strings)."""
    out = {}
    for name, value in params.items():
        if name == "_choice":
            out.update(json.loads(value))
        elif isinstance(value, str):
            out[name] = json.loads(value)
        else:
            out[name] = value
    return out
