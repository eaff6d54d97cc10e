"""Fuzz mlc's loader with hypothesis: mutated .mlmodel bytes and fields, .mlpackage manifests
and weight blobs, compiled .mlmodelc folders (text MIL, espresso files, coremldata.bin,
metadata.json, the folder's structure); every outcome must be a load (and prediction) or an
mlc error.

    python scripts/fuzz_load.py --cases 100000 --workers 2      # writes fuzz/results.md and .json
    python scripts/fuzz_load.py --targets 'mlmodelc_*' --report compiled --cases 24000   # fuzz/compiled.md

Cases are split evenly over the (seed model, target) pairs of ``mlc.testing.fuzz.TARGETS``
(``--targets``: only those matching a pattern) and run in ``--workers`` processes, each under an address-space limit (``--memory``) so a
memory bomb that gets through fails as an allocation error (counted as a finding) instead of
taking the machine down, and each case under a time limit (a hang is a finding). Inputs that
give a finding are saved under ``fuzz/findings/`` to replay with ``--replay FILE``. Compiled
targets need ../shared/testdata/compiled; where it is absent they are skipped, and the report
says so.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import hashlib
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def _worker(job: dict) -> dict:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (job["memory"], job["memory"]))
    os.environ["MLC_COMPILATION_CACHE"] = "0"
    os.environ.setdefault("TQDM_DISABLE", "1")
    from mlc.testing import fuzz

    counts: collections.Counter = collections.Counter()
    findings: list[dict] = []
    seeds = fuzz.make_seeds(job["seed_dir"], compiled=any(s in fuzz.COMPILED_SEEDS for s, _, _ in job["pairs"]))
    with tempfile.TemporaryDirectory(prefix="mlc-fuzz-") as scratch:
        work = fuzz.Workspace(seeds, scratch)
        for seed_name, target, n in job["pairs"]:
            if not n:  # fewer cases than workers for this pair
                continue
            key = f"{seed_name}/{target}"
            start = time.perf_counter()
            _fuzz_pair(work, seed_name, target, n, job, counts, findings)()
            counts[(key, "@seconds")] += round(time.perf_counter() - start, 1)
    return {"counts": [[k, o, c] for (k, o), c in counts.items()], "findings": findings}


def _fuzz_pair(work, seed_name: str, target: str, n: int, job: dict, counts, findings):
    """The hypothesis test running ``n`` cases of one (seed, target) pair, recording outcomes."""
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    from mlc.testing import fuzz

    key = f"{seed_name}/{target}"

    @seed(job["seed"] + zlib.crc32(key.encode()))
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        path, mutated = work.mutated_file(seed_name, target, fuzz.hypothesis_draw(data))
        with work.with_file(path, mutated):
            reruns = work.reruns
            try:
                jit = counts[(key, "@cases")] % job["jit_every"] == 0
                outcome = work.run(seed_name, predict=job["predict"], jit=jit, seconds=job["seconds"])
            except fuzz.Unexpected as e:
                outcome = f"UNEXPECTED {e.kind}"
                findings.append(_save_finding(job["findings"], key, path, mutated, e))
            counts[(key, "@reruns")] += work.reruns - reruns
        counts[(key, outcome)] += 1
        counts[(key, "@cases")] += 1

    return case


def _save_finding(folder: str, key: str, path: str, data: bytes, error) -> dict:
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    extension = os.path.splitext(path)[1] if os.path.isfile(path) else ""
    name = f"{key.replace('/', '-')}-{digest}{extension or '.json'}"
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
    return {"target": key, "file": name, "kind": error.kind, "detail": error.detail[-1500:]}


def _pairs(args) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (seed, target) pairs to fuzz, and the seeds left out with why (absent test data)."""
    from mlc.testing import fuzz

    patterns = [p for p in args.targets.split(",") if p] if args.targets else ["*"]
    chosen = [(s, t) for s, targets in fuzz.TARGETS.items() for t in targets
              if any(fnmatch.fnmatchcase(f"{s}/{t}", p) or fnmatch.fnmatchcase(s, p) for p in patterns)]
    skipped = {s: fuzz.missing_seed_reason(s) for s, _ in chosen if fuzz.missing_seed_reason(s)}
    return [(s, t) for s, t in chosen if s not in skipped], skipped


def _jobs(args, pairs: list[tuple[str, str]]) -> list[dict]:
    per_pair = -(-args.cases // len(pairs))
    jobs = []
    for w in range(args.workers):
        share = [(s, t, per_pair // args.workers + (1 if w < per_pair % args.workers else 0)) for s, t in pairs]
        jobs.append(dict(pairs=share, seed=args.seed + 1000 * w, memory=args.memory << 30, seconds=args.seconds, predict=not args.load_only,
                         jit_every=args.jit_every, seed_dir=args.seed_dir, findings=os.path.join(args.out, "findings")))
    return jobs


def _report(args, results: list[dict], elapsed: float, skipped: dict[str, str]) -> dict:
    per_target: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    seconds: collections.Counter = collections.Counter()
    reruns: collections.Counter = collections.Counter()
    for r in results:
        for key, outcome, count in r["counts"]:
            if outcome == "@seconds":
                seconds[key] += count
            elif outcome == "@reruns":
                reruns[key] += count
            elif outcome.startswith("@"):
                continue
            else:
                per_target[key][outcome] += count
    findings = [f for r in results for f in r["findings"]]
    total = sum(sum(c.values()) for c in per_target.values())
    unexpected = sum(n for c in per_target.values() for o, n in c.items() if o.startswith("UNEXPECTED"))
    import mlc

    return {
        "cases": total,
        "unexpected": unexpected,
        "elapsed_s": round(elapsed, 1),
        "cases_per_s": round(total / elapsed, 1) if elapsed else None,
        "per_target": {k: dict(sorted(c.items())) for k, c in sorted(per_target.items())},
        "seconds_per_target": dict(sorted(seconds.items())),
        "reruns_per_target": {k: v for k, v in sorted(reruns.items()) if v},
        "findings": findings,
        "skipped": skipped,
        "settings": {"workers": args.workers, "seed": args.seed, "memory_limit_gib": args.memory, "case_time_limit_s": args.seconds,
                     "predict": not args.load_only, "jit_every": args.jit_every, "targets": args.targets or "*"},
        "commit": _commit(),
        "versions": {"mlc": mlc.__version__, "python": platform.python_version(), "hypothesis": _version("hypothesis"),
                     "jax": _version("jax"), "coremltools": _version("coremltools"), "protobuf": _version("protobuf")},
    }


def _commit() -> str | None:
    """The git commit of the code fuzzed (None outside a checkout)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


COMPILED_TEXT = (
    "Compiled `.mlmodelc` targets (seeds: copies of ../shared/testdata/compiled): `mil_text` edits model.mil's tokens and lines "
    "(deleted, duplicated, swapped, replaced, spliced), truncates it or flips bytes; `mil_values` makes numbers huge or invalid, "
    "changes shapes and data types, nests brackets and types deeply, points BLOBFILE paths out of the folder and offsets anywhere, "
    "swaps op types and value names; `coremldata`/`stage_coremldata` edit coremldata.bin's header (format, kind and its length, "
    "specification version, payload length), its protobuf payload and its trailer; `net`/`shape`/`metadata` edit "
    "model.espresso.net, model.espresso.shape and metadata.json as JSON (values, types, blob ids, layer order, deep nesting); "
    "`espresso_weights` edits model.espresso.weights' blob count, table and length; `neighbors` a kNN's numberOfNeighbors; "
    "`structure` removes, empties, replaces, renames, copies or links files and stage folders (a link out of the folder to a copy "
    "of the very file must be refused wherever the loader reads it: anything else counts as an `escape` finding), or makes a FIFO. "
    "mlmodelc_findfour only loads (its prediction takes seconds). "
)


def _markdown(report: dict) -> str:
    lines = [
        "# Loader fuzzing (scripts/fuzz_load.py)",
        "",
        f"{report['cases']} generated cases, **{report['unexpected']} unexpected outcomes** (anything but a load, a prediction "
        f"or an mlc error; a hang past {report['settings']['case_time_limit_s']} s or an allocation past the "
        f"{report['settings']['memory_limit_gib']} GiB address-space limit counts as one"
        + (f"; {sum(report['reruns_per_target'].values())} cases ran past the time limit once, cold, and ended when run again "
           "(op-by-op compiles on a loaded machine): only a case past it twice is a hang" if report.get("reruns_per_target") else "")
        + "). "
        f"{report['elapsed_s']} s on {report['settings']['workers']} worker(s), {report['cases_per_s']} cases/s.",
        "",
        "Each case mutates one file of a valid seed model (mlc.testing.fuzz): `bytes` flips, overwrites, inserts, deletes or "
        "truncates the protobuf; `fields` parses it and sets a field anywhere to an edge value or another name of the spec, or "
        "deletes, duplicates or swaps repeated elements; `manifest` edits Manifest.json; `weights` edits the weight blob's "
        "header, metadata or bytes. " + (COMPILED_TEXT if any(k.startswith("mlmodelc_") for k in report["per_target"]) else "") + (
            f"A model that loads then predicts on example inputs: every {report['settings']['jit_every']}th case jitted "
            "(an XLA compile), the others op by op (`jax.disable_jit`)."
            if report["settings"]["predict"] else "Load only (`--load-only`): a model that loads is not run."
        ),
        "",
        "| seed/target | cases | loaded (not run) | predicted (jit) | predicted (op by op) | mlc errors (by code) | unexpected |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, outcomes in report["per_target"].items():
        n = sum(outcomes.values())
        errors = {o[4:]: c for o, c in outcomes.items() if o.startswith("mlc:")}
        bad = sum(c for o, c in outcomes.items() if o.startswith("UNEXPECTED"))
        codes = ", ".join(f"{k} {v}" for k, v in sorted(errors.items()))
        lines.append(
            f"| {key} | {n} | {outcomes.get('loaded', 0)} | {outcomes.get('predicted', 0)} | {outcomes.get('predicted op by op', 0)} "
            f"| {codes} | {bad} |"
        )
    for seed, why in report.get("skipped", {}).items():
        lines.append(f"| {seed}/* | skipped: {why} | | | | | |")
    if report["findings"]:
        lines += ["", "## Findings", ""]
        for f in report["findings"][:50]:
            last = f["detail"].strip().splitlines()[-1] if f["detail"].strip() else ""
            lines.append(f"- {f['target']} `{f['file']}`: {f['kind']}: {last}")
    lines += ["", f"Commit {report.get('commit')}; versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}.", ""]
    return "\n".join(lines)


def _rewrite(folder: str, name: str) -> None:
    """Write ``NAME.md`` again from ``NAME.json`` (after a change to the report's format)."""
    with open(os.path.join(folder, f"{name}.json")) as f:
        report = json.load(f)
    with open(os.path.join(folder, f"{name}.md"), "w") as f:
        f.write(_markdown(report))


def _replay(path: str) -> None:
    """Put a saved finding back into a seed workspace and run it in the foreground."""
    from mlc.testing import fuzz

    name = os.path.basename(path)
    seed_name, target = name.split("-")[:2]
    if fuzz.missing_seed_reason(seed_name):
        sys.exit(f"{name}: cannot replay: {fuzz.missing_seed_reason(seed_name)}")
    seeds = fuzz.make_seeds(os.path.join(ROOT, "fuzz", ".seeds"))
    with tempfile.TemporaryDirectory() as scratch:
        work = fuzz.Workspace(seeds, scratch)
        with open(path, "rb") as f, work.with_file(work.target_file(seed_name, target), f.read()):
            print(work.run(seed_name))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=60.0, help="time limit per case")
    p.add_argument("--memory", type=int, default=8, help="address-space limit per worker, GiB")
    p.add_argument("--load-only", action="store_true", help="do not predict on models that load")
    p.add_argument("--jit-every", type=int, default=10, help="every K-th case predicts jitted (compiled); the others op by op")
    p.add_argument("--out", default=os.path.join(ROOT, "fuzz"))
    p.add_argument("--seed-dir", default=os.path.join(ROOT, "fuzz", ".seeds"))
    p.add_argument("--targets", default="", help="comma-separated patterns of SEED/TARGET or SEED to fuzz (default: all), e.g. 'mlmodelc_*'")
    p.add_argument("--report", default="results", help="write OUT/REPORT.md and OUT/REPORT.json")
    p.add_argument("--replay", help="run one saved finding")
    p.add_argument("--rewrite", action="store_true", help="only write OUT/REPORT.md again from OUT/REPORT.json")
    args = p.parse_args()
    if args.replay:
        return _replay(args.replay)
    if args.rewrite:
        return _rewrite(args.out, args.report)
    from mlc.testing import fuzz

    os.environ["MLC_COMPILATION_CACHE"] = "0"
    os.environ.setdefault("TQDM_DISABLE", "1")
    pairs, skipped = _pairs(args)
    for seed, why in skipped.items():
        print(f"skipped {seed}: {why}", file=sys.stderr)
    if not pairs:
        sys.exit("no target to fuzz" + (f" (skipped: {', '.join(skipped)})" if skipped else ""))
    fuzz.make_seeds(args.seed_dir)  # once, before the workers read them
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        results = pool.map(_worker, _jobs(args, pairs))
    report = _report(args, results, time.perf_counter() - start, skipped)
    os.makedirs(args.out, exist_ok=True)
    from mlc.io.atomic import atomic_write

    with atomic_write(os.path.join(args.out, f"{args.report}.json")) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    with atomic_write(os.path.join(args.out, f"{args.report}.md")) as tmp, open(tmp, "w") as f:
        f.write(_markdown(report))
    print(_markdown(report))
    sys.exit(1 if report["unexpected"] else 0)


if __name__ == "__main__":
    main()
