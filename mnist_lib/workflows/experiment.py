"""One training run end to end, and the explicit test-set evaluation of a finished run.

    run_dir, result, summary = train_and_record(Config(), RunOptions(threads=2), name="reference")
    evaluate_run(run_dir)      # reads the test set, adds test_acc to summary.json
    seeds = multi_seed(Config(), [0, 1, 2], "results/final")   # train + test per seed, mean ± std

Every entry takes the same RunOptions (core/config.py): data folder, training
subset, threads, device, progress bars, CUDA graph.

Used by the CLI (`python -m mnist_lib train` / `evaluate`) and by the notebooks.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..core import datasets
from ..core.config import Config, RunOptions, check_seeds
from ..core.errors import UserError
from ..core.files import atomic_write, writable_dir
from ..data.idx import read_split
from ..data.splits import load_test, prepare_data
from ..records import plots
from ..records.claim import Claim, claim_run_dir, lock_run_dir, writer_alive
from ..records.runs import RunRecorder, environment, load_model, read_summary, update_summary
from ..records.seal import write_sealed
from ..training.device import resolve_graph, select_device, set_threads
from ..training.evaluate import Report, classification_report
from ..training.memory import check_fits, human, is_out_of_memory, training_bytes
from ..training.model import count_params
from ..training.train import TrainResult, check_compatible, check_trainable, train, train_population

POPULATION_CHOICES = ("auto", "on", "off")  # multi_seed's population option


def train_and_record(
    config: Config,
    options: RunOptions = RunOptions(),
    *,
    run_dir: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
    figures_dir: str | Path | None = None,
) -> tuple[Path, TrainResult, dict]:
    """Train per `config` and write a run record; returns (run_dir, result, summary).

    Everything that can be refused (device, threads, a model too large for the
    device's memory, data, the figures folder, the run directory: records/claim.py)
    is checked before anything is written. However the run ends, summary.json says
    how (records/runs.py); running out of memory or disk is a UserError saying so.
    """
    dev, n_threads, data = _prepare(config, options)
    if figures_dir is not None:
        writable_dir(figures_dir, "figures folder", create=False)  # made by its first figure: a refused run leaves no folder
    recorder = _start_record(claim_run_dir(run_dir, name, overwrite), config, data, dev, n_threads, options.max_train_samples)
    try:
        result = train(
            config, data, device=dev, threads=n_threads, progress=options.progress, on_epoch=recorder.on_epoch, graph=options.graph
        )
        summary = _finish_record(recorder, result, figures_dir)
    except BaseException as e:
        _fail_records([recorder], e, config, dev, 1)
        raise
    finally:
        recorder.close()
    return recorder.dir, result, summary


def train_population_and_record(
    configs: list[Config],
    run_dirs: list[Path],
    options: RunOptions = RunOptions(),
    *,
    overwrite: bool = False,
) -> list[tuple[Path, TrainResult, dict]]:
    """Train `configs` side by side as one population (training/train.py); a run record per member in `run_dirs`.

    Each record has the layout and fields of a single run's, plus population_size,
    population_index (its place) and population_members (the members' folder
    names, in order): a member is reproduced by its config and that population.
    Its train_seconds is the population's wall time, shared by all its members.
    The run directories must be new unless `overwrite` (claim_run_dir's rules apply to each).
    """
    check_compatible(configs)  # so the members share dataset, val_size and split_seed: one split for all
    dev, n_threads, data = _prepare(configs[0], options, models=len(configs))
    claims: list[Claim] = []
    try:  # every folder claimed, or none: one that is taken refuses the population before anything is written
        for run_dir in run_dirs:
            claims.append(claim_run_dir(run_dir, overwrite=overwrite))
    except BaseException:
        for claim in claims:
            claim.abort()
            claim.release()
        raise
    recorders: list[RunRecorder] = []
    try:
        # what reproduces a member: its seed (config) and its population, the members in order (they share one dropout stream)
        members = [claim.path.name for claim in claims]
        for m, (claim, cfg) in enumerate(zip(claims, configs, strict=True)):
            population = {"population_size": len(configs), "population_index": m, "population_members": members}
            recorders.append(_start_record(claim, cfg, data, dev, n_threads, options.max_train_samples, **population))
    except BaseException as e:  # the first files could not be written (a full disk): the started records say so
        _fail_records(recorders, e, configs[0], dev, len(configs))
        for r in recorders:
            r.close()
        for claim in claims[len(recorders) + 1 :]:
            claim.abort()
            claim.release()
        raise
    try:
        results = train_population(
            configs,
            data,
            device=dev,
            threads=n_threads,
            progress=options.progress,
            on_epoch=lambda m, row: recorders[m].on_epoch(row),
            graph=options.graph,
        )
        return [(rec.dir, res, _finish_record(rec, res, None)) for rec, res in zip(recorders, results, strict=True)]
    except BaseException as e:
        _fail_records([r for r in recorders if r.summary["status"] == "running"], e, configs[0], dev, len(configs))
        raise
    finally:
        for r in recorders:
            r.close()


def _prepare(config: Config, options: RunOptions, models: int = 1):
    """(device, threads, data): everything that can be refused, checked before anything is written."""
    dev = select_device(options.device)
    resolve_graph(options.graph, dev)
    n_threads = set_threads(options.threads)
    check_fits(config, dev, models=models)
    data = prepare_data(config, options.data_dir, options.max_train_samples)
    check_trainable(config, len(data.y_train))
    return dev, n_threads, data


def _start_record(claim: Claim, config: Config, data, dev, n_threads: int, max_train_samples: int | None, **extra) -> RunRecorder:
    """The record's first files in the claimed folder; if they cannot be written, the folder goes and a replaced record returns."""
    try:
        return RunRecorder(
            claim,
            config,
            {
                "params": None,
                "split_hash": data.split_hash,
                "n_train": len(data.y_train),
                "n_val": len(data.y_val),
                "max_train_samples": max_train_samples,
                "norm_mean": data.mean,
                "norm_std": data.std,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **extra,
                **environment(str(dev), n_threads),
            },
        )
    except BaseException:
        claim.abort()
        claim.release()
        raise


def _fail_records(recorders: list[RunRecorder], error: BaseException, config: Config, dev, models: int) -> None:
    """Mark every record failed with the reason (interrupted for Ctrl-C or SIGTERM); out of memory becomes the UserError that says so."""
    for recorder in recorders:
        recorder.fail(error)
    if is_out_of_memory(error) and recorders:
        _, needed = training_bytes(config)
        where = recorders[0].dir if models == 1 else recorders[0].dir.parent
        raise UserError(
            f"out of memory on {dev} while training (at least {human(needed * models)} needed); run marked failed in {where}"
        ) from None


def _finish_record(recorder: RunRecorder, result: TrainResult, figures_dir: str | Path | None) -> dict:
    """Weights (if any epoch was finite), then the figures, then the summary with the run's status: completed comes last."""
    saved = bool(result.best_epoch) and recorder.save_model(result.model, recorder.summary["norm_mean"], recorder.summary["norm_std"])
    recorder.summary.update(
        params=count_params(result.model),
        epochs_run=len(result.history),
        best_epoch=result.best_epoch,
        weights_epoch=result.best_epoch if saved else None,  # null: no epoch had finite weights and loss, nothing saved
        best_val_acc=result.best_val_acc,
        final_val_acc=result.final_val_acc,
        train_seconds=round(result.train_seconds, 3),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    out = Path(figures_dir) if figures_dir is not None else recorder.dir
    if result.history:
        plots.save_figure(plots.plot_loss_curves(result.history), out / "loss_curves.png", close=True)
        plots.save_figure(plots.plot_accuracy_curves(result.history), out / "accuracy_curves.png", close=True)
    return recorder.end(result.status)


def evaluate_run(
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    figures_dir: str | Path | None = None,
    overwrite: bool = False,
    device: str = "cpu",
) -> Report:
    """Evaluate a finished run's best weights on the 10k test set, once.

    Adds test_loss and test_acc to summary.json, writes per-class metrics and
    the misclassified list as CSV, and confusion-matrix, per-class and
    misclassified-digit figures (into the run directory unless `figures_dir`).
    The run folder is locked while it is written; summary.json is written last,
    so an evaluation that fails (a full disk, a read-only folder) records nothing.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary.get("status") == "running" and not writer_alive(run_dir):
        raise UserError(f"run {run_dir} says 'running' but no process writes it (its writer was killed); only completed runs are evaluated")
    if summary.get("status") != "completed":
        raise UserError(f"run {run_dir} has status {summary.get('status')!r}; only completed runs are evaluated")
    if summary.get("test_acc") is not None and not overwrite:
        raise UserError(
            f"run {run_dir} was already evaluated on the test set (test_acc={summary['test_acc']:.4f}); pass --overwrite to redo it"
        )
    dev = select_device(device)
    out = writable_dir(figures_dir, "figures folder") if figures_dir is not None else run_dir
    with lock_run_dir(run_dir):
        model, config, mean, std = load_model(run_dir, dev)
        classes = datasets.DATASETS[config.dataset].classes
        x_test, y_test = load_test(mean, std, data_dir, config.dataset)
        report = classification_report(model, x_test.to(next(model.parameters()).device), y_test, classes, source=str(run_dir))
        if not (math.isfinite(report.loss) and math.isfinite(report.acc)):
            raise UserError(f"run {run_dir}: the test loss is not finite ({report.loss}); its weights overflow on the test set")
        atomic_write(run_dir / "test_per_class.csv", report.per_class.to_csv(lineterminator="\n"))
        atomic_write(run_dir / "test_misclassified.csv", report.misclassified.to_csv(index=False, lineterminator="\n"))
        raw_test_images, _ = read_split("test", data_dir, config.dataset)
        figures = {
            "confusion_matrix.png": plots.plot_confusion_matrix(report.confusion, "Test confusion matrix", classes),
            "per_class_accuracy.png": plots.plot_per_class_accuracy(report.per_class, classes=classes),
            "misclassified.png": plots.plot_misclassified(raw_test_images, report.misclassified, classes=classes),
        }
        try:
            for name, fig in figures.items():
                plots.save_figure(fig, out / name)
        finally:
            for fig in figures.values():
                plots.plt.close(fig)
        update_summary(run_dir, test_loss=report.loss, test_acc=report.acc, test_evaluated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return report


@dataclass
class SeedResults:
    """One config trained once per seed: a row per seed, the aggregate, each seed's test report."""

    config: Config
    table: pd.DataFrame  # seed, status, best_epoch, best_val_acc, final_val_acc, test_acc, test_loss, train_seconds
    aggregate: dict
    reports: dict[int, Report] = field(default_factory=dict)
    out_dir: Path | None = None  # where the seeds' records and the summaries are

    def line(self) -> str:
        """'validation 98.11 ± 0.03 %, test 98.49 ± 0.08 % (3 seeds)', or why there is no mean."""
        a = self.aggregate
        if not a["n_seeds"]:
            statuses = ", ".join(f"seed {s} {st}" for s, st in zip(self.table["seed"], self.table["status"], strict=True))
            return f"no seed completed ({statuses or 'none ran'}): no mean to report"
        val = f"validation {100 * a['val_acc_mean']:.2f} ± {100 * a['val_acc_std']:.2f} %"
        if "test_acc_mean" not in a:
            return f"{val} ({a['n_seeds']} seeds)"
        return f"{val}, test {100 * a['test_acc_mean']:.2f} ± {100 * a['test_acc_std']:.2f} % ({a['n_seeds']} seeds)"


def populations_pay(device, threads: int, members: int) -> bool:
    """Whether `members` models train faster side by side than one after another: on CUDA; on the CPU, with 2+ threads
    and a member count the threads divide.

    torch's batched matmul on the CPU splits the members between its threads, so 3 members on 2 threads
    leave one thread idle for a third of every layer. Measured with benchmarks/population.py (2026-11-30,
    2-vCPU Intel Xeon, reference network, fp32, results/benchmarks/population_cpu_members.csv and
    population_cpu_1thread.csv): per model, a population's epoch took 0.89x (2 members), 1.13x (3),
    0.90x (4) and 0.83x (8) a single run's at 2 threads, and 1.09x (2) and 1.08x (4) at 1 thread.
    """
    return device.type == "cuda" or (device.type == "cpu" and threads > 1 and members % threads == 0)


def multi_seed(
    config: Config,
    seeds: list[int],
    out_dir: str | Path | None,
    options: RunOptions = RunOptions(),
    *,
    name: str | None = None,
    evaluate_test: bool = True,
    overwrite: bool = False,
    population: str = "auto",
) -> SeedResults:
    """Train `config` once per seed into out_dir/seed_<s>/ (one shared split), then evaluate each on test.

    out_dir None means results/runs/<name> (default name: a timestamp), as for one run.
    population: "on" trains the seeds side by side as one population
    (training/train.py), "off" one after another, "auto" side by side where that
    is faster per model (populations_pay: on CUDA; on the CPU with 2+ threads that divide the seeds).

    Writes out_dir/summary.csv (a row per seed) and out_dir/summary.json (config,
    mean and sample std of validation and test accuracy, split hash, versions, and
    a status: running, then completed if every seed completed, interrupted, or
    failed with the reason). Ctrl-C or SIGTERM stops every seed, not just the
    current one: the summaries are written and KeyboardInterrupt is raised again.
    """
    check_seeds(seeds)
    if population not in POPULATION_CHOICES:
        raise UserError(f"population must be one of {', '.join(POPULATION_CHOICES)}, got {population!r}")
    dev = select_device(options.device)
    resolve_graph(options.graph, dev)  # refused before the output folder is made
    n_threads = set_threads(options.threads)
    side_by_side = population == "on" or (population == "auto" and populations_pay(dev, n_threads, len(seeds)))
    claim = claim_run_dir(out_dir, name, overwrite)
    out_dir = claim.path
    started = {
        "status": "running",
        "config": config.to_dict(),
        "seeds_requested": list(seeds),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        write_sealed(out_dir / "summary.json", started)
    except BaseException:
        claim.abort()
        claim.release()
        raise
    claim.started()
    rows, reports, first = [], {}, None
    try:
        if side_by_side:
            runs = train_population_and_record([config.replace(seed=s) for s in seeds], [out_dir / f"seed_{s}" for s in seeds], options)
        else:
            runs = (
                train_and_record(config.replace(seed=s), options, run_dir=out_dir / f"seed_{s}")
                for s in tqdm(seeds, desc="seeds", disable=not options.progress)
            )
        for seed, (run_dir, result, summary) in zip(seeds, runs, strict=False):
            first = first or summary
            row = {k: summary[k] for k in ("status", "best_epoch", "best_val_acc", "final_val_acc", "train_seconds")}
            rows.append({"seed": seed, **row})
            if result.status == "interrupted":
                raise KeyboardInterrupt  # the whole command stops, not just this seed
            if evaluate_test and result.status == "completed":
                reports[seed] = evaluate_run(run_dir, data_dir=options.data_dir, device=options.device)
                rows[-1].update(test_acc=reports[seed].acc, test_loss=reports[seed].loss)
    except BaseException as e:
        status, error = ("interrupted", None) if isinstance(e, KeyboardInterrupt) else ("failed", _reason(e))
        with contextlib.suppress(UserError, OSError):  # the error on its way out says more than a failed summary write
            _write_seed_summaries(out_dir, started, config, rows, first, side_by_side, len(seeds), status, error)
        claim.release()
        raise
    try:
        table, aggregate = _write_seed_summaries(out_dir, started, config, rows, first, side_by_side, len(seeds))
    finally:
        claim.release()
    return SeedResults(config, table, aggregate, reports, out_dir)


def _reason(error: BaseException) -> str:
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def _write_seed_summaries(
    out_dir: Path, started: dict, config: Config, rows: list[dict], first: dict | None, side_by_side: bool, n_requested: int,
    status: str | None = None, error: str | None = None,
) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """summary.csv (a row per seed that ran) and summary.json (mean ± std over the completed ones, and a true status)."""
    table = pd.DataFrame(
        rows, columns=["seed", "status", "best_epoch", "best_val_acc", "final_val_acc", "train_seconds"] if not rows else None
    )
    done = table[table["status"] == "completed"]
    aggregate = {"n_seeds": len(done), "seeds": done["seed"].tolist()}
    for col in ("best_val_acc", "test_acc", "train_seconds"):
        if col in done and len(done):
            key = "val_acc" if col == "best_val_acc" else col
            aggregate[f"{key}_mean"] = float(done[col].mean())
            aggregate[f"{key}_std"] = float(done[col].std(ddof=1)) if len(done) > 1 else 0.0
    if status is None:
        status = "completed" if len(done) == n_requested else "failed"
        if status == "failed":
            error = f"{n_requested - len(done)} of {n_requested} seeds did not complete (" + ", ".join(
                f"seed {r['seed']} {r['status']}" for r in rows if r["status"] != "completed"
            ) + ")"  # fmt: skip
    keep = ("split_hash", "params", "max_train_samples", "device", "threads", "cpu", "torch_version", "python_version")
    record = {**started, "status": status, "config": config.to_dict(), **aggregate, **{k: first[k] for k in keep if first and k in first}}
    record["date"] = time.strftime("%Y-%m-%d")
    if error:
        record["error"] = error
    if side_by_side:  # train_seconds is then the whole population's wall time, shared by its seeds
        record["population_size"] = n_requested
    atomic_write(out_dir / "summary.csv", table.to_csv(index=False, lineterminator="\n"))
    write_sealed(out_dir / "summary.json", record)
    return table, aggregate
