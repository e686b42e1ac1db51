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
figures, one line each. One run writes into its own folder by default, several
into results/inspections/<labels>; an earlier inspection there is replaced only
with `overwrite`. The figures are written first and inspection.json last, so a
folder with the JSON holds a finished inspection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core import datasets
from ..core.errors import UserError
from ..core.files import writable_dir, write_json
from ..core.paths import RESULTS_DIR, repo_relative
from ..data.idx import read_split
from ..data.splits import prepare_data
from ..records import inspection as ins
from ..records import plots
from ..records.runs import environment, load_model
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
    """A run's name in tables and legends: its folder, with the parent for a seed folder (final/seed_0)."""
    p = Path(path).resolve()
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

    attack_examples: FGSM and PGD on the first N test images (None: all 10,000; PGD's 20
    steps at 8 epsilons cost about a minute per run on 2 CPU threads for all of them).
    """
    if not run_dirs:
        raise UserError("name at least one run folder to inspect")
    labels = list(labels) if labels else [run_label(r) for r in run_dirs]
    if len(labels) != len(run_dirs) or len(set(labels)) != len(labels):
        raise UserError(f"need one distinct label per run, got {labels} for {len(run_dirs)} runs")
    if attack_examples is not None and attack_examples < 1:
        raise UserError(f"attack_examples must be >= 1, got {attack_examples}")
    loaded = [load_model(r) for r in run_dirs]  # every run checked before anything is written
    if out_dir is None:
        out_dir = (
            Path(run_dirs[0]) if len(run_dirs) == 1 else RESULTS_DIR / "inspections" / "_vs_".join(lb.replace("/", "-") for lb in labels)
        )
    out = writable_dir(out_dir, "inspection folder")
    if (out / REPORT).exists() and not overwrite:
        raise UserError(f"{out / REPORT} already exists: an earlier inspection; pass overwrite (--overwrite) to replace it")
    report = {
        "runs": {},
        "attack_examples": attack_examples,
        "date": time.strftime("%Y-%m-%d"),
        **environment("cpu", torch.get_num_threads()),
    }
    reliability, curves = {}, {}
    single = len(run_dirs) == 1
    for label, path, (model, config, mean, std) in tqdm(
        list(zip(labels, run_dirs, loaded, strict=True)), desc="runs", disable=not progress
    ):
        result, figures = inspect_one(model, config, mean, std, data_dir, attack_examples)
        result["run"] = repo_relative(path)
        report["runs"][label] = result
        reliability[f"{label}, before"] = result["calibration"].pop("reliability_before")
        reliability[f"{label}, after T = {result['calibration']['temperature']:.2f}"] = result["calibration"].pop("reliability_after")
        curves[label] = {kind: (v["levels"], v["accuracy"]) for kind, v in {**result["robustness"], **result["adversarial"]}.items()}
        # several runs: each run's own figures carry its label; the report says which file holds which figure
        result["figures"] = {name: name if single else f"{label.replace('/', '-')}_{name}" for name in figures}
        for name, fig in figures.items():
            plots.save_figure(fig, out / result["figures"][name], close=True)
    plots.save_figure(plots.plot_reliability(reliability), out / "reliability.png", close=True)
    plots.save_figure(plots.plot_robustness(curves, UNITS), out / "robustness.png", close=True)
    write_json(out / REPORT, report)  # last: its presence means the inspection finished
    report["folder"] = str(out)
    return report


def inspect_one(model, config, mean: float, std: float, data_dir, attack_examples: int | None) -> tuple[dict, dict]:
    """The numbers of one run (validation for what it learned, test for calibration and robustness) and its own figures."""
    model = model.cpu().eval()
    spec = datasets.DATASETS[config.dataset]
    data = prepare_data(config, data_dir)
    test_images, test_labels = read_split("test", data_dir, config.dataset)
    test_images = test_images.float() / 255.0
    x_test = ((test_images - mean) / std).flatten(1)
    weights, units = ins.first_layer_weights(model, 16)
    activations = ins.hidden_activations(model, data.x_val)  # once: the units' table and the embedding both use them
    points = ins.pca_2d(activations[-1])
    pick = torch.arange(N_SALIENCY)
    val_pred = predict_logits(model, data.x_val[pick]).argmax(1)
    maps = ins.saliency(model, data.x_val[pick], val_pred)
    val_images = (data.x_val[pick] * data.std + data.mean).reshape(-1, 28, 28)
    figures = {
        "first_layer_weights.png": plots.plot_digit_grid(
            weights, [f"unit {u}" for u in units.tolist()], 8, "First layer: the 16 units with the largest weight norm", signed=True
        ),
        "embedding.png": plots.plot_embedding(points, data.y_val, spec.classes),
        "saliency.png": plots.plot_digit_grid(
            torch.stack([t for pair in zip(val_images, maps, strict=True) for t in pair]),
            [t for p in val_pred.tolist() for t in (f"predicted {spec.classes[p]}", "saliency")],
            8, "Validation images and |d score / d pixel| for the predicted class",
        ),
    }  # fmt: skip
    val_logits, test_logits = predict_logits(model, data.x_val), predict_logits(model, x_test)
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
        "calibration": calibration,
        "robustness": {
            k: {"levels": lv, "accuracy": ins.robustness_curve(model, test_images, test_labels, k, lv, mean, std)} for k, lv in LEVELS.items()
        },
        "adversarial": {a: {"levels": EPSILONS, "accuracy": ins.adversarial_accuracy(model, imgs, labels, EPSILONS, mean, std, a)} for a in ins.ATTACKS},
        "attack_examples": len(labels),
    }  # fmt: skip
    return result, figures
