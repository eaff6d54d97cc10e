"""Cold start of one model: a fresh process per run, ``mlc.load`` + the first ``predict``.

Three modes per round, alternated so that the machine's load falls on all of them alike:

- ``off``: ``cache_dir=False`` (no persistent cache: XLA compiles, the program is traced);
- ``fill``: an empty cache folder (the run that writes XLA's executable and mlc's trace entry);
- ``hit``: a second process on the folder ``fill`` wrote;
- ``xla``: the same, with ``MLC_TRACE_CACHE=0``: XLA's executable read back, the program traced
  (the cold start before the trace cache).

Each child imports jax and mlc first (not timed), then times load and load + first predict,
wall clock and the process's CPU time (all threads), and reports whether the trace cache hit
(``mlc.runtime.trace_cache``'s events) and a digest of the outputs (hit, fill and off must agree
bit for bit). Prints a table of medians and the 1-minute load average before and after.

    .venv/bin/python scripts/cold_start.py bench/.models/resnet18-full/model.mlpackage --rounds 5
    .venv/bin/python scripts/cold_start.py MODEL --modes hit --env MLC_TRACE_CACHE=0   # XLA's cache alone
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import hashlib, json, sys, time
import numpy as np
import jax, jax.monitoring
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
import mlc
from mlc import features as F
path, cache = sys.argv[1], sys.argv[2]
cache = False if cache == "off" else cache
t0, c0 = time.perf_counter(), time.process_time()
model = mlc.load(path, cache_dir=cache)
t1, c1 = time.perf_counter(), time.process_time()
rng = np.random.default_rng(0)
feeds = {}
for name, feature in model.input_description.items():
    value = F.example_value(feature)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        value = rng.standard_normal(value.shape).astype(value.dtype)
    feeds[name] = value
out = model.predict(feeds)
t2, c2 = time.perf_counter(), time.process_time()
digest = {k: np.asarray(v).tobytes().hex()[:64] if not isinstance(v, dict) else repr(sorted(v.items()))[:64] for k, v in out.items()}
print(json.dumps({"load_s": t1 - t0, "load_cpu_s": c1 - c0, "first_s": t2 - t0, "first_cpu_s": c2 - c0,
                  "trace_hit": events.count("/mlc/trace_cache/hit"), "xla_hits": events.count("/jax/compilation_cache/cache_hits"),
                  "digest": hashlib.sha256(json.dumps(digest, sort_keys=True).encode()).hexdigest()[:16]}))
"""


def child(model: str, cache: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, model, cache], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default="off,fill,hit,xla", help="comma-separated, in the order run per round")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the children (repeatable)")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(kv.split("=", 1) for kv in args.env)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="mlc-cold-") as root:
        env["MLC_CACHE_DIR"] = root  # never the user's cache
        for r in range(args.rounds):
            folder = os.path.join(root, f"round{r}")
            if {"hit", "xla"} & set(modes) and "fill" not in modes:  # fill once, untimed
                child(args.model, folder, env)
            for mode in modes:
                res = child(args.model, "off" if mode == "off" else folder, {**env, "MLC_TRACE_CACHE": "0"} if mode == "xla" else env)
                res["load1"] = os.getloadavg()[0]
                runs[mode].append(res)
                print(f"round {r} {mode:4}: load+first {res['first_s']:.3f} s wall, {res['first_cpu_s']:.3f} s CPU "
                      f"(load {res['load_s']:.3f} s), trace hit {res['trace_hit']}, xla hits {res['xla_hits']}, "
                      f"outputs {res['digest']}, load average {res['load1']:.2f}", flush=True)
    load_after = os.getloadavg()[0]
    print(f"\n{args.model}: medians of {args.rounds} round(s); load average {load_before:.2f} before, {load_after:.2f} after")
    print("| mode | load + first predict (wall) | CPU | load (wall) | trace hits | outputs |")
    print("|---|---|---|---|---|---|")
    for mode, rs in runs.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print(f"| {mode} | {med('first_s'):.3f} s | {med('first_cpu_s'):.3f} s | {med('load_s'):.3f} s | "
              f"{sum(r['trace_hit'] for r in rs)}/{len(rs)} | {', '.join(sorted({r['digest'] for r in rs}))} |")
    digests = {r["digest"] for rs in runs.values() for r in rs}
    print("outputs agree across modes" if len(digests) == 1 else f"OUTPUTS DIFFER: {digests}")


if __name__ == "__main__":
    main()
