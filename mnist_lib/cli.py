"""Command line: python -m mnist_lib {data,train,evaluate,predict,notebooks,sweep,speedrun,inspect} (also the `mnist-lib` script).

    python -m mnist_lib data                       # verify (or download) MNIST, show the split
    python -m mnist_lib data --dataset fashion-mnist
    python -m mnist_lib train --dataset fashion-mnist --optimizer sgd --momentum 0.9 --norm batch --activation gelu
    python -m mnist_lib train --epochs 5 --lr 1e-3 --name quick
    python -m mnist_lib train --config configs/mlp_aug.json --seeds 0 1 2 --name aug3   # mean ± std over seeds
    python -m mnist_lib train --seeds 0 1 2 3 --population on      # the seeds side by side (the default on CUDA)
    python -m mnist_lib evaluate results/runs/quick
    python -m mnist_lib predict results/runs/quick my_digit.png
    python -m mnist_lib notebooks                  # execute notebooks/params/*.yaml with papermill
    python -m mnist_lib speedrun configs/speedrun/cpu_98.json --target 0.98 --time-limit 10 --threads 2   # time to accuracy
    python -m mnist_lib inspect results/final/seed_0 results/configs/mlp_aug/seed_0   # what they learned, calibration, robustness

Every Config field is a `train` flag of the same name (underscores become
dashes). Bad input, and ordinary file-system trouble (a full disk, a read-only
folder), print one line on stderr and exit with status 2. Ctrl-C exits with 130,
and SIGTERM (kill, timeout, SLURM, docker stop), SIGHUP (a dropped SSH session)
and every other catchable signal whose default action ends a process
(core/stop.py) with 128 + its number (143 for SIGTERM); each one stops the whole
command, and every run record it was writing says "interrupted".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .core.config import Config, RunOptions
from .core.errors import UserError

PROG = "mnist-lib"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, named after it, defaulting to 'not given'."""
    group = parser.add_argument_group("hyperparameters (Config fields; defaults are the reference experiment)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        is_int = "int" in f.type
        extra = {"type": int if is_int else float, "metavar": "N" if is_int else "X"}
        if f.type == "str":
            choices = Config.choices(f.name)
            extra = {"type": str, "choices": choices or None, "metavar": "{" + ",".join(choices) + "}"}
        if f.type == "bool":
            extra = {"action": argparse.BooleanOptionalAction}  # --nesterov / --no-nesterov
        if f.type.startswith("tuple"):
            extra["nargs"] = "*"  # --hidden 512 256 128; an empty list means no hidden layer
        default = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        help_text = f"{f.metadata['help']} (default: {default})"
        group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=help_text, **extra)


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults < --config file < explicit flags."""
    base = Config.load(args.config) if args.config else Config()
    given = {k: getattr(args, k) for k in Config.field_names() if hasattr(args, k)}
    return base.replace(**given)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Train, evaluate and use MLPs on MNIST. Each sub-command has its own --help.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def data_dir_flag(sp):
        sp.add_argument(
            "--data-dir",
            metavar="DIR",
            help="folder with the dataset's four IDX files (default: $MNIST_DATA_DIR for MNIST, else $MNIST_DATA_ROOT/DATASET, "
            "else data/DATASET)",
        )

    d = sub.add_parser("data", help="verify (or download) a dataset and print split sizes and class counts")
    data_dir_flag(d)
    d.add_argument(
        "--dataset", default=Config.dataset, choices=Config.choices("dataset"), help=f"registered dataset (default: {Config.dataset})"
    )
    d.add_argument("--val-size", type=int, default=Config.val_size, help=f"validation size (default: {Config.val_size})")
    d.add_argument("--split-seed", type=int, default=Config.split_seed, help=f"split seed (default: {Config.split_seed})")
    d.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")

    t = sub.add_parser(
        "train",
        help="train an MLP and write a run record",
        description="Train an MLP and write a run record under results/runs/ (or --run-dir).",
    )
    t.add_argument(
        "--config", metavar="FILE", help="JSON config to start from (a run's config.json or a sweep's best config); flags override it"
    )
    t.add_argument("--run-dir", metavar="DIR", help="where to write the run record (default: results/runs/NAME)")
    t.add_argument("--name", help="run name under results/runs/ (default: a timestamp)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory instead of refusing")
    t.add_argument("--max-train-samples", type=_positive_int, metavar="N", help="train on a stratified subset of N examples (quick runs)")
    t.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads (default: torch's choice, usually one per core)")
    t.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: auto)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--evaluate-test", action="store_true", help="after training, evaluate once on the test set")
    t.add_argument(
        "--seeds", type=int, nargs="+", metavar="S",
        help="train once per seed into RUN_DIR/seed_<S>/ and write summary.json/.csv with mean ± std (overrides --seed)",
    )  # fmt: skip
    t.add_argument(
        "--population", choices=["auto", "on", "off"],
        help="with --seeds: train the seeds side by side as one population (on), one after another (off), or side by side "
        "where it is faster per model (auto, the default: on CUDA; on the CPU with 2+ threads that divide the number of seeds)",
    )  # fmt: skip
    t.add_argument(
        "--graph", action=argparse.BooleanOptionalAction,
        help="replay the training step as a CUDA graph (default: on CUDA; --no-graph for the eager step, to debug)",
    )  # fmt: skip
    t.add_argument("--figures-dir", metavar="DIR", help="where to write the figures (default: the run directory)")
    data_dir_flag(t)
    add_config_flags(t)

    e = sub.add_parser("evaluate", help="evaluate a finished run on the test set")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--figures-dir", metavar="DIR", help="where to write the figures (default: the run directory)")
    e.add_argument("--overwrite", action="store_true", help="redo an evaluation already recorded in the summary")
    e.add_argument("--device", default="cpu", help="device for the evaluation (default: cpu)")
    data_dir_flag(e)

    nb = sub.add_parser(
        "notebooks",
        help="execute notebooks in batch with papermill (run files under notebooks/params/)",
        description="Execute notebooks with papermill, one YAML run file each; executed copies go to results/notebooks/.",
    )
    nb.add_argument("run_files", metavar="RUN_FILE", nargs="*", help="YAML run files (default: every notebooks/params/*.yaml)")
    nb.add_argument("--output-dir", metavar="DIR", help="where executed copies go (default: results/notebooks)")
    nb.add_argument("--overwrite", action="store_true", help="replace executed copies that already exist")
    nb.add_argument("--quiet", action="store_true", help="no per-cell progress bar")

    sw = sub.add_parser(
        "sweep",
        help="hyperparameter search: grid, then refinement (resumable)",
        description="Run or resume a sweep file: the grid, then refinement, in parallel workers; results in results/sweeps/<name>/.",
    )
    sw.add_argument("sweep_file", metavar="SWEEP_FILE")
    sw.add_argument("--workers", type=_positive_int, metavar="N", help="worker processes (default: the file's, else one per core)")
    sw.add_argument("--overwrite", action="store_true", help="delete the sweep's earlier trials and outputs and start afresh")
    sw.add_argument(
        "--recover", action="store_true", help="re-queue trials left running by a killed sweep (automatic with the default SQLite store)"
    )

    sr = sub.add_parser(
        "speedrun",
        help="time to accuracy: train a recipe on all 60k training images per seed, timed, and test once per seed",
        description="Train a fixed recipe once per seed on the whole training file, time it, evaluate the test set once per seed; "
        "the statistics go to results/records/<recipe>/ and a row of results/records/records.csv.",
    )
    sr.add_argument("recipe", metavar="RECIPE", help="recipe: a config JSON file (configs/speedrun/)")
    sr.add_argument("--target", type=float, required=True, metavar="ACC", help="test accuracy the record claims, e.g. 0.98")
    sr.add_argument("--time-limit", type=float, metavar="S", help="mean seconds the record must stay within (default: none)")
    sr.add_argument(
        "--seeds", type=int, nargs="+", metavar="S", help="seeds (default: 0-9 on the CPU, 0-24 on CUDA: the minimum n of a record)"
    )
    sr.add_argument(
        "--develop", action="store_true",
        help="develop the recipe: train on 54k, measure on the 6k validation split, write no index row (the test set is not read)",
    )  # fmt: skip
    sr.add_argument("--output", metavar="DIR", help="the record's folder (default: results/records/RECIPE_NAME[-develop])")
    sr.add_argument("--overwrite", action="store_true", help="replace an existing record folder instead of refusing")
    sr.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads (default: torch's choice)")
    sr.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: auto)")
    sr.add_argument("--population", choices=["auto", "on", "off"], default="auto", help="train the seeds side by side (auto: on CUDA)")
    sr.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up epoch")
    sr.add_argument("--max-train-samples", type=_positive_int, metavar="N", help="train on a subset of N examples (tests only)")
    sr.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir_flag(sr)

    ins = sub.add_parser(
        "inspect",
        help="what trained runs learned, how well calibrated they are, where they break: figures and inspection.json",
        description="Inspect one or more runs: first-layer weights, dead units, a PCA of the last hidden layer, saliency, "
        "calibration (ECE, NLL, temperature scaling), accuracy under rotation, shift, noise, occlusion, FGSM and PGD.",
    )
    ins.add_argument("runs", metavar="RUN", nargs="+", help="run folders (or model.safetensors files) to inspect")
    ins.add_argument("--output", metavar="DIR", help="where to write (default: the run's folder; several runs: results/inspections/...)")
    ins.add_argument("--labels", nargs="+", metavar="NAME", help="a name per run for legends (default: the folder names)")
    ins.add_argument("--overwrite", action="store_true", help="replace an earlier inspection in that folder")
    ins.add_argument("--attack-examples", type=_positive_int, metavar="N", help="FGSM and PGD on the first N test images (default: all)")
    ins.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads (default: torch's choice)")
    ins.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir_flag(ins)

    pr = sub.add_parser("predict", help="classify digit images (PNG/JPEG) with a trained run")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", metavar="IMAGE", nargs="+")
    return p


def cmd_data(args) -> None:
    import torch

    from .data.idx import ensure_files, read_split, spec_of
    from .data.splits import stratified_split

    spec = spec_of(args.dataset)
    Config(dataset=spec.name, val_size=args.val_size, split_seed=args.split_seed)  # the same rules as train's, before any reading
    paths = ensure_files(args.data_dir, allow_download=not args.no_download, dataset=spec.name)
    images, labels = read_split("train", args.data_dir, spec.name)
    _, test_labels = read_split("test", args.data_dir, spec.name)
    train_idx, val_idx = stratified_split(labels, args.val_size, args.split_seed, spec.n_classes)
    print(f"data: {spec.title} in {next(iter(paths.values())).parent} ({len(paths)} files, MD5 verified)")
    print(f"split: train {len(train_idx)}, validation {len(val_idx)}, test {len(test_labels)} (split_seed {args.split_seed})")
    counts = [torch.bincount(y, minlength=spec.n_classes) for y in (labels[train_idx], labels[val_idx], test_labels)]
    width = max(5, *map(len, spec.classes))
    print(f"{'class':>{width}} {'train':>7} {'val':>6} {'test':>6}")
    for c, name in enumerate(spec.classes):
        print(f"{name:>{width}} {counts[0][c]:>7} {counts[1][c]:>6} {counts[2][c]:>6}")


def _headless_plots() -> None:
    """The CLI only writes PNGs: no display needed (set here, not in the environment notebooks inherit)."""
    import matplotlib

    matplotlib.use("Agg")


def cmd_train(args) -> None:
    _headless_plots()
    from .workflows.experiment import evaluate_run, train_and_record

    config = config_from_args(args)
    options = RunOptions(
        data_dir=args.data_dir, max_train_samples=args.max_train_samples, threads=args.threads, device=args.device,
        progress=not args.quiet, graph=args.graph,
    )  # fmt: skip
    if args.population and not args.seeds:
        raise UserError("--population applies to several seeds; add --seeds S [S ...]")
    if args.seeds:
        from .workflows.experiment import multi_seed

        population = args.population or "auto"
        results = multi_seed(
            config, args.seeds, args.run_dir, options, name=args.name, overwrite=args.overwrite, evaluate_test=args.evaluate_test,
            population=population,
        )  # fmt: skip
        print(f"{results.line()} -> {results.out_dir}")
        if results.aggregate["n_seeds"] < len(args.seeds):
            missed = ", ".join(f"seed {r.seed} {r.status}" for r in results.table.itertuples() if r.status != "completed")
            raise UserError(
                f"{len(args.seeds) - results.aggregate['n_seeds']} of {len(args.seeds)} seeds did not complete ({missed}); see {results.out_dir}"
            )
        return
    run_dir, result, summary = train_and_record(
        config, options, run_dir=args.run_dir, name=args.name, overwrite=args.overwrite, figures_dir=args.figures_dir
    )
    weights = f"weights of epoch {summary['weights_epoch']}" if summary["weights_epoch"] else "no weights saved"
    print(
        f"{summary['status']}: best val_acc {_acc(result.best_val_acc)} (epoch {summary['best_epoch']}), "
        f"final val_acc {_acc(result.final_val_acc)}, {summary['train_seconds']:.1f} s on {summary['device']} "
        f"({summary['threads']} threads), {weights} -> {run_dir}"
    )
    if result.status == "interrupted":
        raise KeyboardInterrupt
    if result.status != "completed":
        raise UserError(f"training {result.status} ({weights}); record kept in {run_dir}")
    if args.evaluate_test:
        report = evaluate_run(run_dir, data_dir=args.data_dir, figures_dir=args.figures_dir, device=args.device)
        print(f"test: acc {report.acc:.4f}, loss {report.loss:.4f}")


def _acc(value: float) -> str:
    return f"{value:.4f}" if value == value else "none"  # NaN: no epoch finished


def cmd_evaluate(args) -> None:
    _headless_plots()
    from .workflows.experiment import evaluate_run

    report = evaluate_run(args.run_dir, data_dir=args.data_dir, figures_dir=args.figures_dir, overwrite=args.overwrite, device=args.device)
    print(f"test: acc {report.acc:.4f}, loss {report.loss:.4f} ({len(report.misclassified)} misclassified) -> {args.run_dir}")


def cmd_predict(args) -> None:
    import torch

    from .data.idx import spec_of
    from .data.images import load_digit
    from .records.runs import load_model
    from .training.evaluate import predict_proba

    model, config, mean, std = load_model(args.run_dir)
    spec = spec_of(config.dataset)
    digits = torch.stack([load_digit(path) for path in args.images])
    conf, pred = predict_proba(model, digits, mean, std, source=args.run_dir).max(1)  # eval mode
    for path, p, c in zip(args.images, pred.tolist(), conf.tolist(), strict=True):
        print(f"{path}: {spec.label(p)} (probability {c:.3f})")


def cmd_notebooks(args) -> int:
    from .core.paths import EXECUTED_NOTEBOOKS_DIR
    from .workflows.batch import default_run_files, load_run, run_batch

    files = args.run_files or default_run_files()
    if not files:
        raise UserError("no run files given and none found in notebooks/params/")
    runs = [load_run(f) for f in files]  # all checked before anything runs
    outcomes = run_batch(runs, args.output_dir or EXECUTED_NOTEBOOKS_DIR, overwrite=args.overwrite, progress=not args.quiet)
    for o in outcomes:
        print(f"{'ok    ' if o.ok else 'FAILED'} {o.run.name:<24} {o.seconds:7.1f} s  {o.output}")
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"{PROG}: notebook {o.run.notebook.name} (run {o.run.name}) failed at {o.error}; see {o.output}", file=sys.stderr)
    return 1 if failed else 0


def cmd_sweep(args) -> None:
    from .workflows.sweep import run_sweep
    from .workflows.sweep_report import trials_table
    from .workflows.sweep_spec import load_spec

    spec = load_spec(args.sweep_file)
    out = run_sweep(spec, workers=args.workers, recover=True if args.recover else None, overwrite=args.overwrite)
    table = trials_table(spec)
    done = table[table["status"] == "completed"]
    print(f"{len(table)} trials ({len(done)} completed) -> {out}")
    if len(done):
        print(f"best validation accuracy {done['best_val_acc'].max():.4f}; config: {out / 'best_config.json'}")
    elif len(table):
        errors = table["error"].dropna().astype(str)
        first = errors[errors != ""].iloc[0] if (errors != "").any() else "see the logs"
        raise UserError(f"sweep {spec.name}: none of its {len(table)} trials completed (first error: {first[:200]}); see {out / 'logs'}")


def cmd_speedrun(args) -> None:
    from .training.device import select_device
    from .workflows.speedrun import speedrun

    config = Config.load(args.recipe)
    seeds = args.seeds or list(range(25 if select_device(args.device).type == "cuda" else 10))
    options = RunOptions(
        data_dir=args.data_dir, max_train_samples=args.max_train_samples, threads=args.threads, device=args.device, progress=not args.quiet
    )
    record = speedrun(
        config, seeds, args.target, options, recipe=args.recipe, time_limit=args.time_limit, develop=args.develop, out_dir=args.output,
        overwrite=args.overwrite, population={"auto": None, "on": True, "off": False}[args.population], warmup=not args.no_warmup,
    )  # fmt: skip
    print(f"{record.line()} -> {record.folder}")


def cmd_inspect(args) -> None:
    _headless_plots()
    from .training.device import set_threads
    from .workflows.inspect_runs import inspect_runs

    set_threads(args.threads)
    report = inspect_runs(
        args.runs, args.output, labels=args.labels, overwrite=args.overwrite, data_dir=args.data_dir, attack_examples=args.attack_examples,
        progress=not args.quiet,
    )  # fmt: skip
    for label, r in report["runs"].items():
        c = r["calibration"]
        fgsm = dict(zip(r["adversarial"]["fgsm"]["levels"], r["adversarial"]["fgsm"]["accuracy"], strict=True))
        print(
            f"{label}: test acc {100 * r['test_accuracy']:.2f} %, ECE {100 * c['ece_before']:.2f} % -> {100 * c['ece_after']:.2f} % "
            f"(T = {c['temperature']:.2f}), FGSM eps 0.1: {100 * fgsm[0.1]:.1f} %"
        )
    print(f"-> {report['folder']}")


COMMANDS = {
    "sweep": cmd_sweep,
    "inspect": cmd_inspect,
    "speedrun": cmd_speedrun,
    "data": cmd_data,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "notebooks": cmd_notebooks,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .core.files import describe_os_error
    from .core.stop import signal_name, stop_signals

    with stop_signals() as received:
        try:
            return COMMANDS[args.command](args) or 0
        except UserError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # file-system trouble no check foresaw: still one line naming the path
            print(f"{PROG}: error: {describe_os_error(e)}".replace("\n", " "), file=sys.stderr)
            return 2
        except MemoryError:
            print(f"{PROG}: error: out of memory", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if received:  # a stop signal (core/stop.py): 128 + its number, as a shell reports a process it ended
                print(f"{PROG}: terminated ({signal_name(received[0])})", file=sys.stderr)
                return 128 + received[0]
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
