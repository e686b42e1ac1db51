"""records.inspection against independent computations: hand-built calibration, closed-form attacks on a linear model,
exact image transforms, units killed by hand."""

import math

import numpy as np
import pytest
import torch

from mnist_lib import MLP, Config, train
from mnist_lib.core.errors import UserError
from mnist_lib.records import inspection as ins


class Linear(torch.nn.Module):
    """logits = x W^T + b on flattened inputs: every gradient has a closed form."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def test_ece_of_hand_built_predictions():
    # bin (14/15, 1]: 4 predictions at confidence 0.95, 3 right; bin (8/15, 9/15]: 6 at 0.55, 3 right
    conf = torch.tensor([0.95] * 4 + [0.55] * 6, dtype=torch.float64)
    probs = torch.stack([conf, 1 - conf], 1)
    labels = torch.tensor([0, 0, 0, 1] + [0, 0, 0, 1, 1, 1])
    assert ins.expected_calibration_error(probs, labels) == pytest.approx(0.4 * 0.20 + 0.6 * 0.05)
    rows = ins.reliability(probs, labels)
    assert len(rows) == 15 and [r["count"] for r in rows if r["count"]] == [6, 4]
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert ins.expected_calibration_error(perfect, torch.tensor([0, 1])) == 0


def test_fgsm_on_a_linear_model_is_the_closed_form_worst_case():
    """Two classes, logits W x + b: the worst L-infinity step of size eps lowers the margin by eps * |w_y - w_other|_1 / std."""
    torch.manual_seed(0)
    w, b = torch.randn(2, 784) * 0.05, torch.zeros(2)
    model = Linear(w, b)
    images = (0.5 + 0.1 * torch.rand(200, 28, 28)).double().float()  # far from 0 and 1: no clipping at eps <= 0.3
    mean, std = 0.2, 0.4
    x = ((images - mean) / std).flatten(1)
    labels = (x @ w.T + b).argmax(1)  # every example starts right
    for eps in (0.0, 0.01, 0.05, 0.3):
        margin = ((x @ w.T + b).gather(1, labels[:, None]) - (x @ w.T + b).gather(1, 1 - labels[:, None]))[:, 0]
        dw = (w[labels] - w[1 - labels]).abs().sum(1)
        expected = float(((margin - eps * dw / std) > 0).double().mean())
        assert ins.adversarial_accuracy(model, images, labels, [eps], mean, std, "fgsm") == [pytest.approx(expected)]
    assert ins.adversarial_accuracy(model, images, labels, [0.3], mean, std, "fgsm")[0] < 1.0


def test_saliency_of_a_linear_model_is_its_weight_row():
    torch.manual_seed(1)
    w = torch.randn(10, 784)
    model = Linear(w, torch.zeros(10))
    classes = torch.tensor([3, 7])
    sal = ins.saliency(model, torch.randn(2, 784), classes)
    torch.testing.assert_close(sal, w[classes].abs().reshape(2, 28, 28))


@pytest.fixture(scope="module")
def quick_model(small_data):
    cfg = Config(epochs=2, batch_size=128, lr=2e-3, hidden=(128, 64), dropout=(0.1, 0.1), lr_schedule="cosine")
    return train(cfg, small_data, device="cpu", threads=2, progress=False).model.eval()


def pixels(data, n=1000):
    """The first n validation images back in [0, 1], with their labels."""
    return (data.x_val[:n] * data.std + data.mean).reshape(-1, 28, 28), data.y_val[:n]


def test_pgd_is_never_weaker_than_fgsm(quick_model, small_data):
    images, labels = pixels(small_data)
    eps = [0.0, 0.02, 0.05, 0.1]
    f = ins.adversarial_accuracy(quick_model, images, labels, eps, small_data.mean, small_data.std, "fgsm")
    p = ins.adversarial_accuracy(quick_model, images, labels, eps, small_data.mean, small_data.std, "pgd")
    assert f[0] == p[0] > 0.9  # epsilon 0: the clean accuracy
    assert all(pi <= fi for pi, fi in zip(p, f, strict=True)) and p[-1] < f[-1]
    assert all(a >= b for a, b in zip(p, p[1:], strict=False))  # a larger ball never helps the model


def test_temperature_scaling_fixes_an_over_confident_model(quick_model, small_data):
    hot = MLP((128, 64), (0.1, 0.1))
    hot.load_state_dict(quick_model.state_dict())
    with torch.no_grad():  # logits five times too large: the same predictions, far too sure of them
        hot.linears()[-1].weight.mul_(5)
        hot.linears()[-1].bias.mul_(5)
    logits = ins.predict_logits(hot.eval(), small_data.x_val)
    t = ins.fit_temperature(logits, small_data.y_val)
    assert t > 2
    assert ins.nll(logits / t, small_data.y_val) < ins.nll(logits, small_data.y_val)
    grid = [ins.nll(logits / s, small_data.y_val) for s in np.linspace(0.5 * t, 1.5 * t, 41)]
    assert ins.nll(logits / t, small_data.y_val) <= min(grid) + 1e-9  # the minimum, not merely better


def test_perturbations_are_the_exact_transforms():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 28, 28, generator=g)
    for kind in ins.PERTURBATIONS:  # level 0 changes nothing
        torch.testing.assert_close(ins.perturb(images, kind, 0), images, atol=1e-5, rtol=0)  # grid_sample: float rounding
    torch.testing.assert_close(ins.perturb(images, "rotation", 90), torch.rot90(images, 1, (1, 2)), atol=1e-5, rtol=0)
    shifted = torch.zeros_like(images)
    shifted[:, 3:, 3:] = images[:, :-3, :-3]  # 3 px right and down, zeros coming in
    torch.testing.assert_close(ins.perturb(images, "shift", 3), shifted, atol=1e-5, rtol=0)
    occluded = ins.perturb(images, "occlusion", 8)
    assert (occluded[:, 10:18, 10:18] == 0).all() and torch.equal(occluded[:, :10], images[:, :10])
    noisy = ins.perturb(images, "noise", 0.3)
    assert noisy.min() >= 0 and noisy.max() <= 1 and torch.equal(noisy, ins.perturb(images, "noise", 0.3))


def test_zero_rotation_leaves_accuracy_unchanged(quick_model, small_data):
    images, labels = pixels(small_data)
    clean = ins.accuracy(quick_model, images, labels, small_data.mean, small_data.std)
    curve = ins.robustness_curve(quick_model, images, labels, "rotation", [0, 30, 60], small_data.mean, small_data.std)
    assert curve[0] == clean and curve[2] < curve[1] < clean


def test_dead_units_killed_by_hand_are_counted():
    torch.manual_seed(0)
    model = MLP((32, 16), (0.0, 0.0)).eval()
    first = model.linears()[0]
    with torch.no_grad():
        first.weight[:5] = 0
        first.bias[:5] = -1.0  # units 0-4: never above 0
        first.bias[5:] = 100.0  # the others: always above 0
    x = torch.randn(500, 784)
    acts = ins.hidden_activations(model, x)
    layer1 = ins.unit_activity(acts)[0]
    assert (layer1["units"], layer1["dead_units"]) == (32, 5)
    assert layer1["dead_share"] == pytest.approx(5 / 32) and layer1["sparsity"] == pytest.approx(5 / 32)
    assert [a.shape for a in acts] == [(500, 32), (500, 16)]


def test_pca_finds_the_direction_of_largest_spread():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(400, generator=g)
    axis = torch.tensor([1.0, 1.0, 0.0, 0.0]) / math.sqrt(2)
    features = t[:, None] * 5 * axis + 0.1 * torch.randn(400, 4, generator=g)
    pc = ins.pca_2d(features)
    centred = features - features.mean(0)
    proj = centred @ axis
    assert abs(float(torch.corrcoef(torch.stack([pc[:, 0], proj]))[0, 1])) > 0.999
    assert pc[:, 0].var() > 100 * pc[:, 1].var()
    torch.testing.assert_close(pc, ins.pca_2d(features))


def test_first_layer_weights_are_the_largest_norm_units():
    torch.manual_seed(0)
    model = MLP((64,), (0.0,))
    w = model.linears()[0].weight.detach()
    images, units = ins.first_layer_weights(model, k=5)
    assert units.tolist() == w.norm(dim=1).argsort(descending=True)[:5].tolist()
    torch.testing.assert_close(images[0], w[units[0]].reshape(28, 28))


# --- mnist_lib inspect: the workflow and the command line ------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, mnist_dir):
    from mnist_lib import RunOptions
    from mnist_lib.workflows.experiment import train_and_record

    root = tmp_path_factory.mktemp("inspect")
    options = RunOptions(data_dir=mnist_dir, max_train_samples=3000, threads=2, device="cpu", progress=False)
    cfg = Config(epochs=1, hidden=(64,), dropout=(0.0,), lr=3e-3, lr_schedule="cosine", batch_size=128)
    for name, c in (("plain", cfg), ("rotated", cfg.replace(aug_rotate=30.0))):
        train_and_record(c, options, run_dir=root / name)
    return root


def test_inspect_writes_the_figures_and_numbers_that_agree_with_the_model(two_runs, mnist_dir):
    import json

    from mnist_lib.data.idx import read_split
    from mnist_lib.records.runs import load_model
    from mnist_lib.workflows.inspect_runs import inspect_runs

    run = two_runs / "plain"
    report = inspect_runs([run], data_dir=mnist_dir, attack_examples=300, progress=False)
    on_disk = json.loads((run / "inspection.json").read_text())
    for name in ("first_layer_weights.png", "embedding.png", "saliency.png", "reliability.png", "robustness.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"
    r = on_disk["runs"]["plain"]
    model, _, mean, std = load_model(run)
    images, labels = read_split("test", mnist_dir)
    images = images.float() / 255
    assert r["test_accuracy"] == pytest.approx(ins.accuracy(model, images, labels, mean, std))
    clean_300 = ins.accuracy(model, images[:300], labels[:300], mean, std)
    for kind, curve in r["adversarial"].items():  # epsilon 0: the clean accuracy of the attacked images
        assert curve["accuracy"][0] == pytest.approx(clean_300), kind
    for kind, curve in r["robustness"].items():  # level 0 of every perturbation (on all of the test set): the clean accuracy
        assert curve["accuracy"][0] == pytest.approx(r["test_accuracy"], abs=2e-4), kind
    assert r["attack_examples"] == 300 and r["calibration"]["nll_after"] <= r["calibration"]["nll_before"] + 1e-9
    assert [u["units"] for u in r["units"]] == [64] and report["runs"]["plain"]["test_accuracy"] == r["test_accuracy"]
    with pytest.raises(UserError, match="inspection.json already exists: an earlier inspection; pass overwrite"):
        inspect_runs([run], data_dir=mnist_dir, attack_examples=300, progress=False)
    from mnist_lib.records.claim import is_record

    assert is_record(run) == (True, "")  # the run folder is still a record this library may replace


def test_several_runs_share_the_curves_and_bad_runs_are_one_line(two_runs, mnist_dir, tmp_path, capsys):
    import json

    from mnist_lib.cli import main

    out = tmp_path / "both"
    code = main(["inspect", str(two_runs / "plain"), str(two_runs / "rotated"), "--output", str(out), "--attack-examples", "200",
                 "--data-dir", str(mnist_dir), "--quiet", "--threads", "2"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "plain: test acc" in printed and "rotated: test acc" in printed
    report = json.loads((out / "inspection.json").read_text())
    assert list(report["runs"]) == ["plain", "rotated"]
    assert (out / "plain_saliency.png").exists() and (out / "rotated_first_layer_weights.png").exists()
    assert report["runs"]["plain"]["figures"]["saliency.png"] == "plain_saliency.png"  # the report names each run's files
    rot = {k: report["runs"][k]["robustness"]["rotation"]["accuracy"] for k in ("plain", "rotated")}
    assert rot["rotated"][3] > rot["plain"][3]  # trained under rotations of up to 30 degrees, it holds up better at 30
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["inspect", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnist-lib: error: no model at") and err.count("\n") == 1
    (empty / "model.safetensors").write_bytes(b"not safetensors")
    assert main(["inspect", str(empty)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (empty / "inspection.json").exists()


def test_inspect_names_fashion_mnist_classes(tmp_path, fashion_dir):
    import json

    import matplotlib

    matplotlib.use("Agg")
    from mnist_lib import RunOptions
    from mnist_lib.records.runs import load_model
    from mnist_lib.workflows import inspect_runs as wf
    from mnist_lib.workflows.experiment import train_and_record

    options = RunOptions(data_dir=fashion_dir, max_train_samples=2000, threads=2, device="cpu", progress=False)
    cfg = Config(dataset="fashion-mnist", epochs=1, hidden=(32,), dropout=(0.0,), lr=3e-3, lr_schedule="cosine")
    run, _, _ = train_and_record(cfg, options, run_dir=tmp_path / "fashion")
    model, config, mean, std = load_model(run)
    result, figures = wf.inspect_one(model, config, mean, std, fashion_dir, attack_examples=50)
    legend = [t.get_text() for t in figures["embedding.png"].axes[0].get_legend().get_texts()]
    assert legend[:3] == ["T-shirt/top", "Trouser", "Pullover"] and len(legend) == 10
    captions = [t.get_text() for t in figures["saliency.png"].axes[0].texts]
    assert all(c == "saliency" or c.startswith("predicted ") for c in captions) and any(c[10:] in legend for c in captions)
    assert result["dataset"] == "fashion-mnist" and 0.5 < result["test_accuracy"] < 0.95
    json.dumps(result)  # the report is plain JSON


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_inspect_writes_only_into_folders_it_claimed(two_runs, mnist_dir, tmp_path):
    """A folder of the user's, even one whose files carry our names, is refused untouched; so is a run record as output."""
    from mnist_lib.workflows.inspect_runs import inspect_runs

    mine = tmp_path / "o"
    mine.mkdir()
    (mine / "reliability.png").write_text("mine")
    for overwrite, match in ((False, "inspection folder .*o already exists"), (True, "it holds no inspection.json written by this")):
        with pytest.raises(UserError, match=match):
            inspect_runs([two_runs / "plain"], mine, overwrite=overwrite, data_dir=mnist_dir, attack_examples=20, progress=False)
        assert tree(mine) == {"reliability.png": b"mine"}
    before = tree(two_runs / "rotated")
    with pytest.raises(UserError, match="it holds no inspection.json written by this library"):  # a run is not an inspection
        inspect_runs([two_runs / "plain"], two_runs / "rotated", overwrite=True, data_dir=mnist_dir, attack_examples=20, progress=False)
    assert tree(two_runs / "rotated") == before
    with pytest.raises(UserError, match="is a run being read"):
        inspect_runs([two_runs / "plain", two_runs / "rotated"], two_runs / "rotated", data_dir=mnist_dir, progress=False)


def test_no_run_is_replaced_while_it_is_inspected_and_a_failure_leaves_nothing(two_runs, mnist_dir, tmp_path, monkeypatch):
    from mnist_lib.records import plots
    from mnist_lib.records.claim import claim_run_dir, lock_run_dir
    from mnist_lib.workflows import inspect_runs as wf

    run = two_runs / "rotated"
    with lock_run_dir(run), pytest.raises(UserError, match="is in use by another process"):  # a writer holds it: no inspection
        wf.inspect_runs([run], tmp_path / "a", data_dir=mnist_dir, attack_examples=20, progress=False)
    real, tried = wf.inspect_one, []

    def replaced_meanwhile(*args, **kwargs):  # `train --overwrite` of the run being read, in the middle of the inspection
        with pytest.raises(UserError, match="is in use by another process"):
            claim_run_dir(run, overwrite=True)
        tried.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(wf, "inspect_one", replaced_meanwhile)
    wf.inspect_runs([run], tmp_path / "b", data_dir=mnist_dir, attack_examples=20, progress=False)
    assert tried and (tmp_path / "b" / "inspection.json").is_file() and not (tmp_path / "b" / ".lock").exists()
    before = tree(tmp_path / "b")
    monkeypatch.setattr(wf, "inspect_one", real)
    saved = plots.save_figure

    def disk_full_at_the_third_figure(fig, path, **kw):
        if len(list(path.parent.glob("*.png"))) == 2:
            raise UserError(f"cannot write {path}: no space left on the device")
        return saved(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", disk_full_at_the_third_figure)
    for out, overwrite in ((tmp_path / "c", False), (tmp_path / "b", True)):
        with pytest.raises(UserError, match="no space left"):
            wf.inspect_runs([run], out, overwrite=overwrite, data_dir=mnist_dir, attack_examples=20, progress=False)
    assert not (tmp_path / "c").exists() and tree(tmp_path / "b") == before  # no half folder; the earlier inspection is back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_outputs_that_overflow_are_one_line_and_leave_nothing(tmp_path, mnist_dir, capsys):
    """Every weight at 3e38 is finite, and passes the weight check; the logits are not."""
    from mnist_lib.cli import main
    from mnist_lib.records.runs import save_model

    model = MLP.from_config(Config())
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3e38)
    save_model(tmp_path / "huge.safetensors", model, Config(), 0.1307, 0.3081)
    digit = tmp_path / "digit.png"
    from PIL import Image

    stroke = np.zeros((28, 28), dtype=np.uint8)
    stroke[4:24, 12:16] = 255  # a "1"
    Image.fromarray(stroke).save(digit)
    assert main(["predict", str(tmp_path / "huge.safetensors"), str(digit)]) == 2
    assert capsys.readouterr().err == (
        f"mnist-lib: error: {tmp_path / 'huge.safetensors'}: the model's outputs are not finite numbers (its weights overflow); "
        "not a usable model\n"
    )
    out = tmp_path / "o"
    assert main(["inspect", str(tmp_path / "huge.safetensors"), "--output", str(out), "--data-dir", str(mnist_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outputs are not finite" in err and not out.exists()


@pytest.mark.parametrize("hidden", [(), (1,)])
def test_inspect_takes_every_shape_a_config_allows(hidden, tmp_path, mnist_dir, monkeypatch):
    """No hidden layer (embedded by its logits), a layer of one unit (one principal component), and a model file as input,
    which goes to results/inspections/<its folder>."""
    from mnist_lib import RunOptions
    from mnist_lib.workflows import inspect_runs as wf
    from mnist_lib.workflows.experiment import train_and_record

    options = RunOptions(data_dir=mnist_dir, max_train_samples=500, threads=2, device="cpu", progress=False)
    run, _, _ = train_and_record(Config(epochs=1, hidden=hidden, dropout=(0.0,) * len(hidden)), options, run_dir=tmp_path / "r")
    monkeypatch.setattr(wf, "RESULTS_DIR", tmp_path / "results")
    report = wf.inspect_runs([run / "model.safetensors"], data_dir=mnist_dir, attack_examples=20, progress=False)
    r = report["runs"]["r"]
    assert (
        report["folder"] == str(tmp_path / "results" / "inspections" / "r") and (tmp_path / "results/inspections/r/embedding.png").is_file()
    )
    assert [u["units"] for u in r["units"]] == list(hidden)
    assert r["embedding_of"] == ("logits (no hidden layer)" if not hidden else "last hidden layer")
    assert sorted(p.name for p in run.iterdir()) == sorted(["config.json", "metrics.csv", "summary.json", "model.safetensors",
                                                           "loss_curves.png", "accuracy_curves.png"])  # fmt: skip


def test_pca_of_one_unit_has_one_component():
    x = torch.tensor([[1.0], [3.0], [2.0]])
    torch.testing.assert_close(ins.pca_2d(x), torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
