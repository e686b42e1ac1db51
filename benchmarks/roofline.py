"""Roofline of a training epoch: GEMM-only time vs the library's real epoch (fp32, bf16) and a torchvision-style epoch, in one run.

    .venv/bin/python benchmarks/roofline.py --threads 2 --rounds 7 --csv results/benchmarks/roofline.csv
    .venv/bin/python benchmarks/roofline.py --device cuda     # on a GPU: GEMM-only and library epochs

GEMM-only: for every step of an epoch (the real batch sizes of the 54,000-example
split), each layer's three matmuls on resident tensors of the right shapes:
forward (addmm), grad-input (g @ W) and grad-weight (g.T @ h). Nothing else.
efficiency = GEMM-only time / library epoch time. The first layer's grad-input is
never needed (the images need no gradient) and the library skips it, so
`efficiency_needed` also leaves it out of the GEMM time: the stricter figure.

The library epoch is mnist_lib.training.train.population_epoch with the step
train() runs: a population of one (stacked weights in a flat buffer, torch's fused
Adam over it). The autograd-step epoch is the loop written the usual way
(model(x), F.cross_entropy, backward(), fused Adam), without the library.

--baseline REV also times the library's epoch as it was at git revision REV
(its mnist_lib, extracted to a temporary folder and imported as
mnist_lib_baseline), so a change to the training step is judged against the old
step in the same run: `vs_baseline` is the new epoch's time over the old one's. The torchvision-style epoch is benchmarks/epoch_speed.py's pipeline
(per-sample PIL dataset, DataLoader, nn.Dropout, plain Adam, loss.item() per step),
CPU only. bf16 is measured where the device runs it natively.

Everything is interleaved round by round; each measurement reports its median and
fastest round, each ratio the median of per-round ratios. One JSON object per
measurement on stdout (and --jsonl), the same rows as CSV with --csv.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import emit, interleave, library_epoch, machine, paired_ratio, summary
from epoch_speed import torchvision_style_epoch

from mnist_lib import Config, prepare_data
from mnist_lib.core.paths import REPO_ROOT
from mnist_lib.training.device import DTYPES, bf16_supported, select_device, set_threads
from mnist_lib.training.model import MLP


def gemm_epoch(cfg: Config, n: int, dtype: torch.dtype, device: torch.device, needed_only: bool):
    """A function running one epoch's GEMMs (forward, grad-input, grad-weight per layer)."""
    widths = [784, *cfg.hidden, 10]
    sizes = [cfg.batch_size] * (n // cfg.batch_size) + ([n % cfg.batch_size] if n % cfg.batch_size else [])

    def t(*shape):
        return torch.randn(*shape, dtype=dtype, device=device)

    weights = [t(o, i) for i, o in zip(widths, widths[1:], strict=False)]
    biases = [t(o) for o in widths[1:]]
    acts = {b: [t(b, i) for i in widths[:-1]] for b in set(sizes)}
    grads = {b: [t(b, o) for o in widths[1:]] for b in set(sizes)}

    def run() -> None:
        for b in sizes:
            for layer, (w, bias, h, g) in enumerate(zip(weights, biases, acts[b], grads[b], strict=True)):
                torch.addmm(bias, h, w.t())
                if layer > 0 or not needed_only:
                    torch.mm(g, w)
                torch.mm(g.t(), h)

    return run


def autograd_epoch(cfg: Config, data, device: torch.device):
    """The same epoch the plain way: model(x), F.cross_entropy, backward(), fused Adam, zero_grad(set_to_none)."""
    torch.manual_seed(0)
    model = MLP.from_config(cfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    x, y = data.x_train.to(device), data.y_train.to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def run() -> None:
        for idx in torch.randperm(len(y), device=device, generator=gen).split(cfg.batch_size):
            loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def baseline_package(rev: str):
    """mnist_lib as it was at git revision `rev`, imported under the name mnist_lib_baseline (it uses relative imports only)."""
    folder = Path(tempfile.mkdtemp(prefix="mnist_lib_baseline_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev, "mnist_lib"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "mnist_lib").rename(folder / "mnist_lib_baseline")
    sys.path.insert(0, str(folder))
    return importlib.import_module("mnist_lib_baseline")


def baseline_epoch(pkg, cfg: Config, data, precision: str, device: torch.device):
    """One epoch of the baseline revision's training step for `cfg` (its own Config, model and build_step)."""
    try:  # the module, not the package's function `train`: training/train.py since the layer folders, train.py before
        train_mod = importlib.import_module(f"{pkg.__name__}.training.train")
    except ModuleNotFoundError:
        train_mod = importlib.import_module(f"{pkg.__name__}.train")
    fields = set(pkg.Config.field_names())
    old_cfg = pkg.Config.from_dict({k: v for k, v in cfg.to_dict().items() if k in fields}).replace(precision=precision)
    torch.manual_seed(0)
    model = pkg.MLP.from_config(old_cfg).to(device)
    step, _ = train_mod.build_step(model, old_cfg, data, device)  # duck-typed Data: y_train, mean, std
    x, y = data.x_train.to(device, DTYPES[precision]), data.y_train.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    return lambda: train_mod.train_epoch(step, x, y, old_cfg.batch_size, gen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round (default: 5)")
    ap.add_argument("--batch-size", type=int, default=Config.batch_size, help="batch size (default: the reference's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--no-torchvision-style", action="store_true", help="skip the slow torchvision-style epoch")
    ap.add_argument("--baseline", metavar="REV", help="also time the training step of git revision REV, in the same rounds")
    ap.add_argument("--jsonl", help="also write the JSON lines to this file")
    ap.add_argument("--csv", help="also write the rows as CSV to this file")
    args = ap.parse_args()

    device = select_device(args.device)
    threads = set_threads(args.threads)
    cfg = Config(batch_size=args.batch_size)
    data = prepare_data(cfg)
    n = len(data.y_train)
    precisions = ["fp32"] + (["bf16"] if bf16_supported(device) else [])

    baseline = baseline_package(args.baseline) if args.baseline else None
    fns = {}
    for prec in precisions:
        fns[f"gemm/{prec}"] = gemm_epoch(cfg, n, DTYPES[prec], device, needed_only=False)
        fns[f"gemm_needed/{prec}"] = gemm_epoch(cfg, n, DTYPES[prec], device, needed_only=True)
        fns[f"mnist_lib/{prec}"] = library_epoch(cfg, data, prec, device)
        if baseline is not None:
            fns[f"baseline/{prec}"] = baseline_epoch(baseline, cfg, data, prec, device)
    fns["autograd_step/fp32"] = autograd_epoch(cfg, data, device)
    if device.type == "cpu" and not args.no_torchvision_style:
        fns["torchvision_style/fp32"] = torchvision_style_epoch(cfg, data)
    times = interleave(fns, args.rounds, device)

    common = {**machine(device, threads), "batch_size": cfg.batch_size, "hidden": list(cfg.hidden), "n_train": n}
    rows = [{"measure": name.split("/")[0], "precision": name.split("/")[1], **summary(ts), **common} for name, ts in times.items()]
    for prec in precisions:
        lib = times[f"mnist_lib/{prec}"]
        rows.append(
            {
                "measure": "efficiency",
                "precision": prec,
                "ratio": round(paired_ratio(times[f"gemm/{prec}"], lib), 3),
                "ratio_needed": round(paired_ratio(times[f"gemm_needed/{prec}"], lib), 3),
                **common,
            }
        )
    for prec in precisions if args.baseline else []:
        ratio = paired_ratio(times[f"mnist_lib/{prec}"], times[f"baseline/{prec}"])
        rows.append({"measure": "vs_baseline", "precision": prec, "ratio": round(ratio, 3), "baseline": args.baseline, **common})
    ratio = paired_ratio(times["autograd_step/fp32"], times["mnist_lib/fp32"])
    rows.append({"measure": "speedup_vs_autograd_step", "precision": "fp32", "ratio": round(ratio, 2), **common})
    if "torchvision_style/fp32" in times:
        for prec in precisions:
            ratio = paired_ratio(times["torchvision_style/fp32"], times[f"mnist_lib/{prec}"])
            rows.append({"measure": "speedup_vs_torchvision_style", "precision": prec, "ratio": round(ratio, 2), **common})
    emit(rows, args.jsonl, args.csv)


if __name__ == "__main__":
    main()
