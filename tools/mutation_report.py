"""Mutation score of the core modules from mutmut's results: per module, in all, and every surviving mutant's diff.

    make mutate                              # mutmut run, then this script
    .venv/bin/python tools/mutation_report.py --out results/mutation   # only the report, from mutants/

A mutant is killed when a test fails on it; a timeout or a crash (segfault) also
counts as caught. The score is caught / (caught + survived + no tests + suspicious);
skipped and unchecked mutants are left out. Writes OUT/summary.json (counts, score,
date, versions) and OUT/survivors.md (the diff of each survivor, for review).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

CAUGHT = {"killed", "timeout", "segfault"}
LEFT_OUT = {"skipped", "not checked"}


def mutmut(*args: str) -> str:
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=True).stdout


def statuses() -> dict[str, str]:
    """mutant name -> status, from `mutmut results --all true` (lines 'NAME: STATUS')."""
    out = {}
    for line in mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("mnist_lib."):
            out[name] = status
    return out


def summarize(by_name: dict[str, str], source_commit: str | None = None) -> dict:
    modules: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, status in by_name.items():
        # "mnist_lib.<layer>.<module>.<function>__mutmut_<n>": the module is the part before the function
        modules[name.rsplit(".", 1)[0].rsplit(".", 1)[-1]][status] += 1

    def score(counts: collections.Counter) -> float | None:
        caught = sum(counts[s] for s in CAUGHT)
        counted = sum(n for s, n in counts.items() if s not in LEFT_OUT)
        return round(caught / counted, 4) if counted else None

    total = sum(modules.values(), collections.Counter())
    import torch

    return {
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "source_commit": source_commit,  # the revision of mnist_lib that was mutated, when it is not the working tree's
        "checked": sum(n for s, n in total.items() if s != "not checked"),
        "complete": total["not checked"] == 0,  # False: the run was stopped before every mutant was tried
        "modules": {m: {**dict(c), "score": score(c)} for m, c in sorted(modules.items())},
        "total": {**dict(total), "score": score(total)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/mutation", help="folder for summary.json and survivors.md")
    p.add_argument("--source-commit", help="the git revision mutants/ was generated from, recorded in summary.json")
    p.add_argument(
        "--modules", nargs="+", metavar="M", help="only these modules (a run restricted to them: mutmut run 'mnist_lib.records.claim*' ...)"
    )
    args = p.parse_args()
    by_name = statuses()
    if args.modules:
        by_name = {n: s for n, s in by_name.items() if n.rsplit(".", 1)[0].rsplit(".", 1)[-1] in args.modules}
    if not by_name:
        sys.exit("no mutmut results: run `make mutate` (mutmut run) first")
    summary = summarize(by_name, args.source_commit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    survivors = [n for n, s in sorted(by_name.items()) if s not in CAUGHT | LEFT_OUT]
    lines = [f"# Surviving mutants ({len(survivors)}), {summary['date']}\n"]
    for name in survivors:
        diff = [line for line in mutmut("show", name).splitlines() if line[:2] in ("- ", "+ ")]
        lines += [f"## {name} ({by_name[name]})", "```diff", *diff, "```", ""]
    (out / "survivors.md").write_text("\n".join(lines))
    print(f"{'module':<10} {'mutants':>8} {'caught':>7} {'survived':>9} {'score':>7}")
    for module, c in [*summary["modules"].items(), ("all", summary["total"])]:
        n = sum(v for k, v in c.items() if k != "score")
        caught = sum(c.get(s, 0) for s in CAUGHT)
        print(f"{module:<10} {n:>8} {caught:>7} {c.get('survived', 0):>9} {100 * (c['score'] or 0):>6.1f}%")
    print(f"-> {out / 'summary.json'}, {out / 'survivors.md'}")


if __name__ == "__main__":
    main()
