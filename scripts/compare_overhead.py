"""Per-call ``predict`` overhead of two mlc source trees (two commits), processes alternating.

Two versions of one package cannot share a process, so each round runs one process per tree,
alternating, each timing ``model.predict`` on the one-op model of ``scripts/bench_overhead.py``
(``y = relu(x)``, float32 (1, 16)): median and min of 15 blocks of 2000 calls after warm-up.
Reports the per-round medians, the median over rounds, and the ratio second/first.

    git worktree add /tmp/old <commit>
    .venv/bin/python scripts/compare_overhead.py /tmp/old . [--rounds 5] [--out bench/overhead_ab.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TIMER = """
import statistics, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import mlc
m = mlc.load(sys.argv[2], cache_dir=False)
x = {next(iter(m.input_description)): np.zeros((1, 16), np.float32)}
for _ in range(500):
    m.predict(x)
blocks = []
for _ in range(15):
    t = time.perf_counter()
    for _ in range(2000):
        m.predict(x)
    blocks.append((time.perf_counter() - t) / 2000 * 1e6)
print(statistics.median(blocks), min(blocks))
"""


def _commit(tree: str) -> str:
    out = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return (out.stdout.strip() or "?") + (" + uncommitted changes" if dirty.strip() else "")


def _time(tree: str, model: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", TIMER, os.path.abspath(tree), model], capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    median, low = out.stdout.split()
    return float(median), float(low)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "bench" / "overhead_ab.md"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_overhead import build

    with tempfile.TemporaryDirectory() as folder:
        _, model, _ = build(folder)
        rows = []
        for _ in range(args.rounds):
            rows.append((_time(args.first, model), _time(args.second, model)))
    first = statistics.median(r[0][0] for r in rows)
    second = statistics.median(r[1][0] for r in rows)
    lines = [
        "# Per-call `predict` overhead: two commits, processes alternating",
        "",
        f"Written by `scripts/compare_overhead.py` on {datetime.date.today()} (python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        f"`y = relu(x)`, float32 (1, 16); per process the median (and min) of 15 blocks of 2000 `predict` calls, "
        f"microseconds per call. First: `{_commit(args.first)}`; second: `{_commit(args.second)}`.",
        "",
        "| round | first median | first min | second median | second min |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {i + 1} | {a[0]:.1f} | {a[1]:.1f} | {b[0]:.1f} | {b[1]:.1f} |" for i, (a, b) in enumerate(rows)]
    lines += ["", f"Median over rounds: first {first:.1f} µs, second {second:.1f} µs; second / first = {second / first:.2f}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
