"""What a trained MLP learned, how well calibrated it is, and where it breaks: the numbers behind notebook 08_inspect.

    model, config, mean, std = load_model("results/final/seed_0")
    first_layer_weights(model, k=16)                 # [16, 28, 28]: the units with the largest weight norm
    acts = hidden_activations(model, x_val)          # per hidden layer, [N, width] after its activation
    unit_activity(acts)                              # per hidden layer: dead share, activation sparsity
    pca_2d(acts[-1])                                 # [N, 2]: the last hidden layer, projected
    saliency(model, x, y)                            # [N, 28, 28]: |d class score / d input|
    expected_calibration_error(probs, y)             # 15 equal-width confidence bins
    fit_temperature(val_logits, y_val)               # T minimizing validation NLL (Guo et al. 2017)
    robustness_curve(model, images, y, "rotation", [0, 15, 30], mean, std)   # accuracy per level
    adversarial_accuracy(model, images, y, [0.1], mean, std, "pgd")         # L-infinity, in [0, 1] pixel units

Models take normalized, flattened inputs, as trained; perturbations are made on
images in [0, 1] (N x 28 x 28 floats) and normalized with the run's mean and
std just before the model sees them, so an epsilon of 0.1 means 0.1 of the
pixel range, as in the adversarial literature. Every function works on any
model of the package (and any module mapping N x 784 to logits), on any
dataset's images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..training.evaluate import predict_logits  # noqa: F401 (re-exported for notebooks and tests)
from ..training.model import ACTIVATIONS, MLP

ECE_BINS = 15
PERTURBATIONS = ("rotation", "shift", "noise", "occlusion")
ATTACKS = ("fgsm", "pgd")
PGD_STEPS = 20


def first_layer_weights(model: MLP, k: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The incoming weights of the `k` first-layer units with the largest L2 norm, as [k, 28, 28] images, and those units' indices."""
    w = model.linears()[0].weight.detach().float().cpu()
    order = w.norm(dim=1).argsort(descending=True)[:k]
    return w[order].reshape(-1, 28, 28), order


def hidden_activations(model: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Each hidden layer's output after its activation (eval mode, so dropout is off), [N, width] per layer."""
    acts = [m for m in model.net if isinstance(m, tuple(ACTIVATIONS.values()))]
    captured: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().float())) for m in acts]
    try:
        predict_logits(model, x)
    finally:
        for h in hooks:
            h.remove()
    n_layers = len(acts)
    return [torch.cat(captured[i::n_layers]) for i in range(n_layers)]  # predict_logits runs in chunks


def unit_activity(activations: list[torch.Tensor]) -> list[dict]:
    """Per hidden layer (hidden_activations on some images): units, the share of dead units (never above 0 on those
    images) and the activation sparsity (share of outputs <= 0)."""
    out = []
    for i, a in enumerate(activations, start=1):
        active = a > 0
        dead = ~active.any(0)
        out.append({"layer": i, "units": a.shape[1], "dead_units": int(dead.sum()), "dead_share": float(dead.float().mean()),
                    "sparsity": float((~active).float().mean())})  # fmt: skip
    return out


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """The first two principal components of `features` (centred; SVD), [N, 2], with signs fixed so the result is deterministic.

    A layer of one unit has one component: the second column is then zero.
    """
    centred = features.double() - features.double().mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    top = v[:2].T
    k = top.shape[1]
    top = top * torch.sign(top[top.abs().argmax(0), torch.arange(k)])  # the largest loading of each component positive
    return F.pad(centred @ top, (0, 2 - k)).float()


def saliency(model: MLP, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """|d logit[class] / d input| for each row of `x` (normalized inputs), as [N, 28, 28]."""
    was_training = model.training
    model.eval()
    try:
        inputs = x.detach().clone().requires_grad_(True)
        score = model(inputs).gather(1, classes.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, inputs)
    finally:
        model.train(was_training)
    return grad.abs().reshape(-1, 28, 28)


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin: its range, count, mean confidence and accuracy (a reliability diagram's bars)."""
    confidence, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    rows = []
    for b in range(bins):
        lo, hi = float(edges[b]), float(edges[b + 1])
        inside = (confidence > lo) & (confidence <= hi) if b else (confidence >= lo) & (confidence <= hi)
        n = int(inside.sum())
        rows.append({"low": lo, "high": hi, "count": n,
                     "confidence": float(confidence[inside].double().mean()) if n else math.nan,
                     "accuracy": float(correct[inside].mean()) if n else math.nan})  # fmt: skip
    return rows


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins (Naeini et al. 2015; Guo et al. 2017)."""
    n = len(labels)
    return sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in reliability(probs, labels, bins) if r["count"])


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood (cross-entropy) of the labels."""
    return float(F.cross_entropy(logits.double(), labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimizing the NLL of logits / T (fit on validation, then applied to test)."""
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    z = logits.detach().double()
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def _normalized(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return ((images - mean) / std).flatten(1)


def perturb(images: torch.Tensor, kind: str, level: float, seed: int = 0) -> torch.Tensor:
    """`images` ([N, 28, 28] in [0, 1]) rotated by `level` degrees, shifted by `level` pixels (right and down), with Gaussian noise
    of std `level` (clipped to [0, 1]), or with a centred black square of side `level` pixels."""
    if kind == "rotation" or kind == "shift":
        angle = math.radians(level) if kind == "rotation" else 0.0
        shift = 2 * level / 28 if kind == "shift" else 0.0  # grid units: the image spans [-1, 1]
        theta = torch.tensor([[math.cos(angle), -math.sin(angle), -shift], [math.sin(angle), math.cos(angle), -shift]], dtype=images.dtype)
        grid = F.affine_grid(theta.expand(len(images), 2, 3), [len(images), 1, 28, 28], align_corners=False)
        return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return (images + level * torch.randn(images.shape, generator=g, dtype=images.dtype)).clamp(0, 1)
    if kind == "occlusion":
        side = int(round(level))
        out = images.clone()
        lo = (28 - side) // 2
        out[:, lo : lo + side, lo : lo + side] = 0.0
        return out
    raise ValueError(f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")


def accuracy(model: MLP, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> float:
    """Accuracy on [0, 1] images, normalized as the model expects."""
    return float((predict_logits(model, _normalized(images, mean, std)).argmax(1) == labels).double().mean())


def robustness_curve(
    model: MLP, images: torch.Tensor, labels: torch.Tensor, kind: str, levels: Sequence[float], mean: float, std: float
) -> list[float]:
    """Accuracy under `perturb(images, kind, level)` at each level."""
    return [accuracy(model, perturb(images, kind, level), labels, mean, std) for level in levels]


def _loss_grad(model: MLP, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """d cross-entropy / d image (in [0, 1] pixel units)."""
    x = images.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(_normalized(x, mean, std)).float(), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: MLP, images: torch.Tensor, labels: torch.Tensor, eps: float, mean: float, std: float) -> torch.Tensor:
    """The fast gradient sign attack (Goodfellow et al. 2015): one step of size eps along the sign of the loss gradient, clipped to [0, 1]."""
    return (images + eps * _loss_grad(model, images, labels, mean, std).sign()).clamp(0, 1)


def pgd_fooled(
    model: MLP, images: torch.Tensor, labels: torch.Tensor, eps: float, mean: float, std: float, steps: int = PGD_STEPS, seed: int = 0
) -> torch.Tensor:
    """Which examples projected gradient descent (Madry et al. 2018; L-infinity ball of radius eps, random start, `steps` steps of
    2.5 eps / steps) misclassifies at its start or at any step: [N] bool."""
    g = torch.Generator().manual_seed(seed)
    x = (images + eps * (2 * torch.rand(images.shape, generator=g, dtype=images.dtype) - 1)).clamp(0, 1)
    alpha = 2.5 * eps / steps
    fooled = torch.zeros(len(images), dtype=torch.bool)
    for _ in range(steps):
        fooled |= predict_logits(model, _normalized(x, mean, std)).argmax(1) != labels
        x = x + alpha * _loss_grad(model, x, labels, mean, std).sign()
        x = torch.min(torch.max(x, images - eps), images + eps).clamp(0, 1)
    return fooled | (predict_logits(model, _normalized(x, mean, std)).argmax(1) != labels)


def adversarial_accuracy(
    model: MLP, images: torch.Tensor, labels: torch.Tensor, epsilons: Sequence[float], mean: float, std: float, attack: str = "fgsm"
) -> list[float]:
    """Accuracy under `attack` (fgsm or pgd) at each epsilon, in [0, 1] pixel units."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {', '.join(ATTACKS)}")
    was_training = model.training
    model.eval()
    try:
        out = []
        for eps in epsilons:
            if eps == 0:
                out.append(accuracy(model, images, labels, mean, std))
            elif attack == "fgsm":
                out.append(accuracy(model, fgsm(model, images, labels, eps, mean, std), labels, mean, std))
            else:
                out.append(1.0 - float(pgd_fooled(model, images, labels, eps, mean, std).double().mean()))
        return out
    finally:
        model.train(was_training)
