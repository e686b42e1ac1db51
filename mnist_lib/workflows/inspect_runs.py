"""Inspect trained runs: what they learned, how well calibrated they are, where they break; figures and one JSON.

    python -m mnist_lib inspect results/final/seed_0                  # into the run folder
    python -m mnist_lib inspect results/final/seed_0 results/configs/mlp_aug/seed_0 --output results/inspections/ref_vs_aug

    report = inspect_runs(["results/final/seed_0"], overwrite=True)
    report["runs"]["final/seed_0"]["calibration"]["ece_after"]

For each run (records.inspection does the maths): the first-layer weights of its
16 strongest units, dead units and sparsity per hidden layer and a PCA of its last
hidden layer (on the validation split), saliency maps of the first validation
images, calibration on the test set (reliability diagram, ECE over 15 bins, NLL,
before and after a temperature fitted on validation), accuracy under rotation,
shift, Gaussian noise and a centred occlusion (all 10,000 test images), and under
FGSM and PGD (L-infinity, 20 steps, random start; the first `attack_examples`). Several runs share the reliability and robustness
figures, one line each. One run folder writes into itself by default; several
runs, or model files, into results/inspections/<labels>, a folder claimed as a
run's is (new, or an earlier inspection replaced only with `overwrite`; never a
folder of the user's). Every run read is locked while it is read. Everything is
computed before the first file is written; the figures come next and
inspection.json (sealed, records/seal.py) last, so a folder with the JSON holds a
finished inspection, and a failure leaves no new folder behind.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core import datasets
from ..core.errors import UserError
from ..core.files import user_path
from ..core.paths import RESULTS_DIR, repo_relative
from ..data.idx import read_split
from ..data.splits import prepare_data
from ..records import inspection as ins
from ..records import plots
from ..records.claim import claim_run_dir, lock_run_dir
from ..records.runs import SUMMARY_FILE, environment, load_model
from ..records.seal import write_sealed
from ..training.evaluate import predict_logits

LEVELS = {
    "rotation": [0, 10, 20, 30, 40, 50, 60],
    "shift": [0, 1, 2, 3, 4, 5, 6],
    "noise": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
    "occlusion": [0, 4, 8, 12, 16, 20],
}
EPSILONS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
UNITS = {
    "rotation": "rotation (degrees)",
    "shift": "shift right and down (pixels)",
    "noise": "Gaussian noise std (pixel range = 1)",
    "occlusion": "centred black square (side, pixels)",
    "fgsm": "FGSM epsilon (L-inf, pixel range = 1)",
    "pgd": "PGD-20 epsilon (L-inf, pixel range = 1)",
}
REPORT = "inspection.json"
SHARED_FIGURES = ("reliability.png", "robustness.png")
RUN_FIGURES = ("first_layer_weights.png", "embedding.png", "saliency.png")
N_SALIENCY = 8


def run_label(path: str | Path) -> str:
    """A run's name in tables and legends: its folder, with the parent for a seed folder (final/seed_0); a model file is named
    by the folder that holds it."""
    p = Path(path).resolve()
    if p.is_file():
        p = p.parent
    return f"{p.parent.name}/{p.name}" if p.name.startswith("seed_") else p.name


def inspect_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    labels: Sequence[str] | None = None,
    overwrite: bool = False,
    data_dir: str | Path | None = None,
    attack_examples: int | None = None,
    progress: bool = True,
) -> dict:
    """Inspect each run, write the figures and inspection.json into `out_dir`, and return the report (what the JSON holds).

    run_dirs: run folders, or model.safetensors files. One run folder is inspected into
    itself unless `out_dir` names another folder; anything else goes to `out_dir`
    (default results/inspections/<labels>), a folder this claims as a run claims its
    own (records/claim.py): new, or an earlier inspection replaced with `overwrite`.
    Every run folder read is locked for the whole inspection (shared; exclusive for
    the one written into), so no run can be replaced while it is read.
    attack_examples: FGSM and PGD on the first N test images (None: all 10,000; PGD's 20
    steps at 8 epsilons cost about a minute per run on 2 CPU threads for all of them).
    """
    if not run_dirs:
        raise UserError("name at least one run folder to inspect")
    paths = [user_path(r, "run") for r in run_dirs]
    out_dir = None if out_dir is None else user_path(out_dir, "inspection folder")
    labels = list(labels) if labels else [run_label(r) for r in paths]
    if len(labels) != len(paths) or len(set(labels)) != len(labels):
        raise UserError(f"need one distinct label per run, got {labels} for {len(paths)} runs")
    if attack_examples is not None and attack_examples < 1:
        raise UserError(f"attack_examples must be >= 1, got {attack_examples}")
    read = [p if p.is_dir() else p.parent for p in paths]  # the folders whose weights are read
    in_place = len(paths) == 1 and paths[0].is_dir() and (out_dir is None or _same(out_dir, paths[0]))
    if not in_place and out_dir is not None and any(_same(out_dir, r) for r in read):
        raise UserError(
            f"the output folder {out_dir} is a run being read; inspect several runs, or a model file, into a folder of their own"
        )
    if out_dir is None and not in_place:
        out_dir = RESULTS_DIR / "inspections" / "_vs_".join(lb.replace("/", "-") for lb in labels)
    with contextlib.ExitStack() as held:
        for folder in dict.fromkeys(read):  # a run folder (or one holding a run's model file) is locked before its weights are read
            if folder.is_dir() and (folder / SUMMARY_FILE).is_file():
                held.enter_context(lock_run_dir(folder, shared=not in_place))
        loaded = [load_model(p) for p in paths]  # every run checked before anything is written
        if in_place:
            out, claim = paths[0], None
            if (out / REPORT).exists() and not overwrite:
                raise UserError(f"{out / REPORT} already exists: an earlier inspection; pass overwrite (--overwrite) to replace it")
        else:
            claim = held.enter_context(claim_run_dir(out_dir, overwrite=overwrite, what="inspection folder", marker=REPORT))
            out = claim.path
        report = {
            "runs": {},
            "attack_examples": attack_examples,
            "date": time.strftime("%Y-%m-%d"),
            **environment("cpu", torch.get_num_threads()),
        }
        figures = {}
        for label, path, (model, config, mean, std) in tqdm(
            list(zip(labels, paths, loaded, strict=True)), desc="runs", disable=not progress
        ):
            result, figures[label] = inspect_one(model, config, mean, std, data_dir, attack_examples, source=str(path))
            result["run"] = repo_relative(path)
            report["runs"][label] = result
        if in_place:
            (out / REPORT).unlink(missing_ok=True)  # an earlier inspection's JSON never stands beside new figures
        _write(report, figures, out, single=len(paths) == 1)
        if claim is not None:
            claim.started()
    report["folder"] = str(out)
    return report


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _write(report: dict, figures: dict, out: Path, single: bool) -> None:
    """Every figure, then inspection.json (sealed), last: its presence means the inspection finished."""
    reliability, curves = {}, {}
    for label, result in report["runs"].items():
        reliability[f"{label}, before"] = result["calibration"].pop("reliability_before")
        reliability[f"{label}, after T = {result['calibration']['temperature']:.2f}"] = result["calibration"].pop("reliability_after")
        curves[label] = {kind: (v["levels"], v["accuracy"]) for kind, v in {**result["robustness"], **result["adversarial"]}.items()}
        # several runs: each run's own figures carry its label; the report says which file holds which figure
        result["figures"] = {name: name if single else f"{label.replace('/', '-')}_{name}" for name in figures[label]}
        for name, fig in figures[label].items():
            plots.save_figure(fig, out / result["figures"][name], close=True)
    plots.save_figure(plots.plot_reliability(reliability), out / "reliability.png", close=True)
    plots.save_figure(plots.plot_robustness(curves, UNITS), out / "robustness.png", close=True)
    write_sealed(out / REPORT, report)


def inspect_one(
    model, config, mean: float, std: float, data_dir, attack_examples: int | None, source: str | None = None
) -> tuple[dict, dict]:
    """The numbers of one run (validation for what it learned, test for calibration and robustness) and its own figures.

    source: where the model came from; outputs that are not finite are then a UserError naming it, before any work.
    """
    model = model.cpu().eval()
    spec = datasets.DATASETS[config.dataset]
    data = prepare_data(config, data_dir)
    test_images, test_labels = read_split("test", data_dir, config.dataset)
    test_images = test_images.float() / 255.0
    x_test = ((test_images - mean) / std).flatten(1)
    test_logits = predict_logits(model, x_test, source=source)  # first: weights that overflow stop here
    weights, units = ins.first_layer_weights(model, 16)
    activations = ins.hidden_activations(model, data.x_val)  # once: the units' table and the embedding both use them
    val_logits = predict_logits(model, data.x_val)
    # the last hidden layer; a network without one is embedded by its logits
    embedded, embedded_what = (activations[-1], "Last hidden layer") if activations else (val_logits, "Logits (no hidden layer)")
    points = ins.pca_2d(embedded)
    pick = torch.arange(N_SALIENCY)
    val_pred = predict_logits(model, data.x_val[pick]).argmax(1)
    maps = ins.saliency(model, data.x_val[pick], val_pred)
    val_images = (data.x_val[pick] * data.std + data.mean).reshape(-1, 28, 28)
    figures = {
        "first_layer_weights.png": plots.plot_digit_grid(
            weights, [f"unit {u}" for u in units.tolist()], 8, "First layer: the 16 units with the largest weight norm", signed=True
        ),
        "embedding.png": plots.plot_embedding(points, data.y_val, spec.classes, f"{embedded_what}: two principal components"),
        "saliency.png": plots.plot_digit_grid(
            torch.stack([t for pair in zip(val_images, maps, strict=True) for t in pair]),
            [t for p in val_pred.tolist() for t in (f"predicted {spec.classes[p]}", "saliency")],
            8, "Validation images and |d score / d pixel| for the predicted class",
        ),
    }  # fmt: skip
    t = ins.fit_temperature(val_logits, data.y_val)
    calibration = {
        "temperature": t,
        "ece_before": ins.expected_calibration_error(test_logits.softmax(1), test_labels),
        "ece_after": ins.expected_calibration_error((test_logits / t).softmax(1), test_labels),
        "nll_before": ins.nll(test_logits, test_labels),
        "nll_after": ins.nll(test_logits / t, test_labels),
        "reliability_before": ins.reliability(test_logits.softmax(1), test_labels),
        "reliability_after": ins.reliability((test_logits / t).softmax(1), test_labels),
    }
    imgs, labels = test_images[:attack_examples], test_labels[:attack_examples]
    result = {
        "dataset": config.dataset,
        "test_accuracy": float((test_logits.argmax(1) == test_labels).double().mean()),
        "units": ins.unit_activity(activations),
        "first_layer_units": units.tolist(),
        "embedding_of": embedded_what.lower(),
        "calibration": calibration,
        "robustness": {
            k: {"levels": lv, "accuracy": ins.robustness_curve(model, test_images, test_labels, k, lv, mean, std)} for k, lv in LEVELS.items()
        },
        "adversarial": {a: {"levels": EPSILONS, "accuracy": ins.adversarial_accuracy(model, imgs, labels, EPSILONS, mean, std, a)} for a in ins.ATTACKS},
        "attack_examples": len(labels),
    }  # fmt: skip
    return result, figures
