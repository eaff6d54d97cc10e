"""`mlc serve` with dynamic batching on and off: throughput and latency at 1, 8 and 64 clients.

The model, built here with torch and converted with coremltools (no downloads): an MLP
x float32 (1, 256) -> Linear 1024 -> ReLU -> Linear 10 -> softmax, an ML Program (iOS17),
273,418 parameters. One request costs little compute and a fixed dispatch, so it is a model
where batching should matter.

Two `mlc serve` processes serve the same file at once, on free loopback ports: batching on
(``--max-batch-size 64 --max-queue-delay-ms 5``, the defaults) and off (``--max-batch-size 1``).
They are measured one at a time, alternating: each round runs, for each connection kind and
concurrency level, one server then the other (the order swaps every other round). One
measurement: ``--warmup`` requests not counted, then a fixed number of requests (``--requests``,
one per concurrency level), from C clients: C asyncio tasks in this process speaking the Open
Inference Protocol's HTTP form with aiohttp and the binary tensor extension (binary output asked
for), each over its own keep-alive connection, or over a new connection per request
(``--connections``; both by default: on keep-alive connections today's server stalls each
response ~40 ms on TCP's delayed ACK, see the report's notes). Recorded per measurement: wall
time, each request's latency, the server process's CPU time (/proc/<pid>/stat, all its threads),
this process's CPU time, and the deltas of the server's ``/metrics`` histograms (mean batch size
from ``mlc_batch_size``; mean queue and compute time). The report gives medians over rounds.
The default run takes about 5 minutes on 2 busy cores.

    .venv/bin/python scripts/bench_serve.py [--rounds 5 --requests 200,1000,2000 --warmup 20]
    .venv/bin/python scripts/bench_serve.py --quick --out /tmp/serve.md     # a smoke run, ~30 s

Writes ``bench/serve.md`` and the raw numbers next to it (``bench/serve.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LISTENING = re.compile(r"mlc serve: listening http=(\S+)(?: grpc=(\S+))?")
MODEL = "mlp"  # the served name: the file is mlp.mlpackage
IN_FEATURES, HIDDEN, CLASSES = 256, 1024, 10
CONFIGS = ("on", "off")


# -- the model ------------------------------------------------------------------------------------
def build_model(folder: str):
    """The MLP, converted to an ML Program at ``folder/mlp.mlpackage``; returns (path, torch module)."""
    import torch

    from mlc.testing.torch_models import convert

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = torch.nn.Linear(IN_FEATURES, HIDDEN), torch.nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            return torch.softmax(self.out(torch.relu(self.hidden(x))), -1)

    torch.manual_seed(0)
    module = MLP().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = convert(module, (torch.zeros(1, IN_FEATURES),), target="iOS17", path=os.path.join(folder, f"{MODEL}.mlpackage"))
    return str(path), module


def model_call_times(path: str, batch: int, quick: bool) -> dict:
    """The model call alone, in this process (mlc ``predict`` on one row, ``predict_batch`` on
    ``batch`` rows stacked as the server stacks them): medians of 5 blocks, milliseconds per call."""
    import mlc

    model = mlc.load(path)
    x = np.random.default_rng(1).standard_normal((1, IN_FEATURES), dtype=np.float32)
    stacked = np.stack([x] * batch)
    calls = {"predict_1_ms": (lambda: model.predict({"x": x}), 20 if quick else 200),
             f"predict_batch_{batch}_ms": (lambda: model.predict_batch({"x": stacked}), 5 if quick else 40)}
    out = {}
    for name, (call, n) in calls.items():
        for _ in range(5):
            call()
        blocks = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                call()
            blocks.append((time.perf_counter() - start) / n * 1e3)
        out[name] = statistics.median(blocks)
    return out


# -- the servers ----------------------------------------------------------------------------------
class ServerProcess:
    """One ``mlc serve`` process on free loopback ports; its log goes to a file."""

    def __init__(self, label: str, model_path: str, args: list[str], log_path: Path):
        self.label, self.args = label, args
        self.command = [sys.executable, "-m", "mlc.cli", "serve", model_path, "--port", "0", "--grpc-port", "0", *args]
        env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, cwd=str(ROOT))
        line = self.proc.stdout.readline()
        match = LISTENING.search(line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"mlc serve ({label}) did not start: {line!r}\n{self.log_tail()}")
        self.http, self.grpc = match.group(1), match.group(2)
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep stdout drained

    def url(self, path: str) -> str:
        return f"http://{self.http}{path}"

    def log_tail(self, n: int = 4000) -> str:
        self._log.flush()
        return Path(self.log_path).read_text(errors="replace")[-n:]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process, all threads."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)

    def wait_ready(self, timeout: float = 600) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlc serve ({self.label}) exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url("/v2/health/ready"), timeout=10) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"mlc serve ({self.label}) was not ready in {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


_SAMPLE = re.compile(r'^(mlc_[a-z_]+)\{([^}]*)\} (\S+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """The sums and counts of the model's histograms in a /metrics exposition, by sample name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and (m.group(1).endswith("_sum") or m.group(1).endswith("_count")) and f'model="{MODEL}"' in m.group(2):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


# -- the clients ----------------------------------------------------------------------------------
def request_body(x: np.ndarray) -> tuple[bytes, dict]:
    """One binary-extension inference request for ``x`` (float32, (1, 256)), and its headers."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    head = json.dumps({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def decode_output(body: bytes, headers) -> np.ndarray:
    n = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:n])
    out = doc["outputs"][0]
    return np.frombuffer(body[n:], dtype="<f4").reshape(out["shape"])


async def _load(url: str, bodies: list[tuple[bytes, dict]], concurrency: int, count: int, session) -> tuple[list[float], float, int]:
    """``count`` requests from ``concurrency`` tasks; (latencies in seconds, wall seconds, failures)."""
    latencies: list[float] = []
    failures = 0
    issued = 0
    expected = CLASSES * 4

    async def client():
        nonlocal issued, failures
        while issued < count:
            body, headers = bodies[issued % len(bodies)]
            issued += 1
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                ok = resp.status == 200 and len(data) - int(resp.headers.get("Inference-Header-Content-Length", -1)) == expected
            latencies.append(time.perf_counter() - start)
            failures += not ok

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start, failures


async def _measure_async(server: ServerProcess, bodies, concurrency: int, requests: int, warmup: int, connections: str) -> dict:
    import aiohttp

    url = server.url(f"/v2/models/{MODEL}/infer")
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=connections == "new")
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await _load(url, bodies, concurrency, max(warmup, 2 * concurrency), session)  # connections opened, not counted
        async with session.get(server.url("/metrics")) as r:
            before = parse_metrics(await r.text())
        cpu0, client0 = server.cpu_seconds(), time.process_time()
        latencies, wall, failures = await _load(url, bodies, concurrency, requests, session)
        cpu1, client1 = server.cpu_seconds(), time.process_time()
        async with session.get(server.url("/metrics")) as r:
            after = parse_metrics(await r.text())

    def delta(name):
        return after.get(name, 0.0) - before.get(name, 0.0)

    lat_ms = np.asarray(latencies) * 1e3
    calls = delta("mlc_batch_size_count")
    served = delta("mlc_request_total_seconds_count")
    return {
        "requests": requests, "failures": failures, "wall_s": wall, "throughput_rps": requests / wall,
        "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
        "mean_ms": float(lat_ms.mean()), "max_ms": float(lat_ms.max()),
        "server_cpu_s": cpu1 - cpu0, "client_cpu_s": client1 - client0,
        "model_calls": calls, "mean_batch_size": delta("mlc_batch_size_sum") / calls if calls else None,
        "server_queue_ms": delta("mlc_request_queue_seconds_sum") / served * 1e3 if served else None,
        "server_compute_ms": delta("mlc_request_compute_seconds_sum") / served * 1e3 if served else None,
        "server_total_ms": delta("mlc_request_total_seconds_sum") / served * 1e3 if served else None,
    }


def measure(server, bodies, concurrency, requests, warmup, connections) -> dict:
    """One measurement; ``connections``: "keep-alive" (each client keeps one connection) or
    "new" (a new connection per request: aiohttp's ``force_close``)."""
    return asyncio.run(_measure_async(server, bodies, concurrency, requests, warmup, connections))


def check_outputs(servers: dict, module, x: np.ndarray) -> dict:
    """Each server's answer for ``x`` against torch's: the largest absolute difference."""
    import urllib.request

    import torch

    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    body, headers = request_body(x)
    out = {}
    for label, server in servers.items():
        req = urllib.request.Request(server.url(f"/v2/models/{MODEL}/infer"), data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            got = decode_output(r.read(), r.headers)
        diff = float(np.abs(got.reshape(expected.shape) - expected).max())
        if not diff < 1e-4:
            raise AssertionError(f"server {label}: the output differs from torch's by {diff}")
        out[label] = diff
    return out


# -- the run --------------------------------------------------------------------------------------
def summarize(runs: list[dict]) -> dict:
    def med(key):
        values = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(values) if values else None

    keys = ("throughput_rps", "p50_ms", "p99_ms", "mean_ms", "wall_s", "server_cpu_s", "client_cpu_s", "mean_batch_size",
            "server_queue_ms", "server_compute_ms", "server_total_ms")
    out = {k: med(k) for k in keys}
    out["throughput_min"] = min(r["throughput_rps"] for r in runs)
    out["throughput_max"] = max(r["throughput_rps"] for r in runs)
    out["server_cpu_ms_per_request"] = statistics.median(r["server_cpu_s"] / r["requests"] * 1e3 for r in runs)
    out["client_cpu_ms_per_request"] = statistics.median(r["client_cpu_s"] / r["requests"] * 1e3 for r in runs)
    out["server_cores_busy"] = statistics.median(r["server_cpu_s"] / r["wall_s"] for r in runs)
    out["failures"] = sum(r["failures"] for r in runs)
    out["rounds"] = len(runs)
    return out


def run(args) -> dict:
    t_start = time.perf_counter()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this process's model_call_times, and the servers
    load_before = os.getloadavg()
    server_args = {
        "on": ["--max-batch-size", str(args.max_batch_size), "--max-queue-delay-ms", str(args.max_queue_delay_ms)],
        "off": ["--max-batch-size", "1"],
    }
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, IN_FEATURES), dtype=np.float32) for _ in range(16)]
    bodies = [request_body(x) for x in inputs]
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as folder:
        path, module = build_model(folder)
        alone = model_call_times(path, args.max_batch_size, args.quick)
        t_model = time.perf_counter()
        servers: dict[str, ServerProcess] = {}
        try:
            for label in CONFIGS:  # both start at once, load and compile side by side
                servers[label] = ServerProcess(label, path, server_args[label], Path(folder) / f"server-{label}.log")
            for server in servers.values():
                server.wait_ready()
            t_ready = time.perf_counter()
            agreement = check_outputs(servers, module, inputs[0])
            raw = {mode: {label: {str(c): [] for c in args.concurrency} for label in CONFIGS} for mode in args.connections}
            for r in range(args.rounds):
                for mode in args.connections:
                    for c, n in zip(args.concurrency, args.requests):
                        order = CONFIGS if r % 2 == 0 else CONFIGS[::-1]
                        for label in order:
                            result = measure(servers[label], bodies, c, n, args.warmup, mode)
                            result["round"] = r
                            raw[mode][label][str(c)].append(result)
                            print(f"round {r + 1}/{args.rounds} {mode:<10} c={c:<3} batching {label:<3}: {result['throughput_rps']:8.1f} req/s  "
                                  f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                                  f"batch {result['mean_batch_size'] or 0:5.1f}  server cpu {result['server_cpu_s']:.2f} s / wall {result['wall_s']:.2f} s",
                                  flush=True)
            t_done = time.perf_counter()
        finally:
            codes = {label: s.stop() for label, s in servers.items()}
    summary = {mode: {label: {c: summarize(runs) for c, runs in per.items()} for label, per in by_label.items()}
               for mode, by_label in raw.items()}
    ratios = {mode: {} for mode in args.connections}
    for mode in args.connections:
        for c in map(str, args.concurrency):
            on, off = summary[mode]["on"][c], summary[mode]["off"][c]
            ratios[mode][c] = {k: on[k] / off[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request")}
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("mlc", "jax", "jaxlib", "aiohttp", "uvicorn", "torch", "coremltools")},
        "cores": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "jax_platforms": os.environ.get("JAX_PLATFORMS", "cpu"),
        "model": {"name": MODEL, "layers": f"Linear({IN_FEATURES}, {HIDDEN}) -> ReLU -> Linear({HIDDEN}, {CLASSES}) -> softmax",
                  "input": f"x float32 (1, {IN_FEATURES})", "parameters": IN_FEATURES * HIDDEN + HIDDEN + HIDDEN * CLASSES + CLASSES,
                  "format": "ML Program, iOS17, fp32 (coremltools from a torch trace)"},
        "servers": {label: " ".join(["mlc serve", f"{MODEL}.mlpackage", "--port 0 --grpc-port 0", *server_args[label]]) for label in CONFIGS},
        "server_exit_codes": codes,
        "max_abs_diff_vs_torch": agreement,
        "model_call_alone": alone,
        "settings": {"rounds": args.rounds, "requests": dict(zip(map(str, args.concurrency), args.requests)), "warmup": args.warmup,
                     "concurrency": args.concurrency, "connections": args.connections,
                     "max_batch_size": args.max_batch_size, "max_queue_delay_ms": args.max_queue_delay_ms, "quick": args.quick},
        "seconds": {"model_build": t_model - t_start, "servers_ready": t_ready - t_model, "measuring": t_done - t_ready,
                    "total": time.perf_counter() - t_start},
        "summary": summary, "ratios_on_over_off": ratios, "raw": raw,
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# -- the report -----------------------------------------------------------------------------------
def _f(value, digits=1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


MODE_TITLES = {"keep-alive": "over keep-alive connections, one per client", "new": "over a new connection per request"}


def report(results: dict) -> str:
    s, v, m = results["settings"], results["versions"], results["model"]
    secs = results["seconds"]
    lb, la = results["load_average_before"], results["load_average_after"]
    levels = [str(c) for c in s["concurrency"]]
    alone = results["model_call_alone"]
    batch_key = f"predict_batch_{s['max_batch_size']}_ms"
    counts = ", ".join(f"{n} at {c} client{'s' if c != '1' else ''}" for c, n in s["requests"].items())
    lines = [
        "# `mlc serve`: dynamic batching on vs off",
        "",
        f"Written by `scripts/bench_serve.py` on {results['date'][:10]} (python {results['python']}, mlc {v['mlc']}, jax {v['jax']}, "
        f"aiohttp {v['aiohttp']}, uvicorn {v['uvicorn']}; JAX_PLATFORMS={results['jax_platforms']}; {results['cores']} cores, "
        f"load average {lb[0]:.1f} before and {la[0]:.1f} after). "
        f"The run took {secs['total']:.0f} s: {secs['model_build']:.0f} s to build and time the model, {secs['servers_ready']:.0f} s until both "
        f"servers were ready, {secs['measuring']:.0f} s measuring." + (" **A `--quick` smoke run: too few requests to mean much.**" if s["quick"] else ""),
        "",
        "The machine is shared with other jobs and has few cores, and the clients run on it too, so the numbers are "
        "noisy: each figure is the median over rounds, with the range of throughput over rounds beside it.",
        "",
        f"**Model:** an MLP, {m['layers']}, input {m['input']}, {m['parameters']:,} parameters; {m['format']}, built by the script "
        "with random weights (seed 0). Both servers' answer to one request matched torch's "
        f"(largest difference {max(results['max_abs_diff_vs_torch'].values()):.1e}). "
        f"The model call alone, in the benchmark process before the servers start (mlc's public API, medians): `predict` on "
        f"one row {alone['predict_1_ms']:.3f} ms; `predict_batch` on {s['max_batch_size']} rows {alone[batch_key]:.3f} ms "
        f"({alone[batch_key] / s['max_batch_size'] * 1e3:.1f} µs a row). Everything above that in the figures below is the "
        "server (HTTP, the protocol, the queue, Python) and the clients sharing the machine.",
        "",
        "**Servers:** two processes serving the same file at once, measured one at a time:",
        "",
        f"- batching on: `{results['servers']['on']}`",
        f"- batching off: `{results['servers']['off']}`",
        "",
        "**Clients:** aiohttp over loopback, the Open Inference Protocol's HTTP form with the binary tensor extension "
        "(input and output as raw bytes after a JSON header). C clients are C asyncio tasks in the benchmark process, each "
        "sending its next request when the previous one is answered, "
        + " and ".join({"keep-alive": "over keep-alive connections (one per client)",
                        "new": "over a new connection per request (aiohttp's `force_close`)"}[mode] for mode in s["connections"]) + ".",
        "",
        f"**Method:** {s['rounds']} rounds; in each round, for each connection kind and concurrency level, one server then "
        f"the other (the order swaps every other round). Each measurement: {s['warmup']} warm-up requests (not counted; at "
        f"least 2 × C), then a fixed number of requests ({counts}). Latency is per request, at the client (send to last "
        "byte read). Server CPU is the server process's user + system time (`/proc/<pid>/stat`, all threads) over the "
        "counted requests; 'cores busy' is that CPU time over the wall time. Mean batch size is the delta of the server's "
        "`mlc_batch_size` histogram (sum / count, from `/metrics` before and after), i.e. requests per model call (before "
        "padding to a power of two).",
        "",
    ]
    for mode in s["connections"]:
        summary, ratios = results["summary"][mode], results["ratios_on_over_off"][mode]
        lines += [
            f"## Results {MODE_TITLES[mode]} (medians over rounds)",
            "",
            "| clients | batching | req/s | req/s min–max | p50 ms | p99 ms | mean batch | wall s | server CPU s | cores busy | server CPU ms/req | client CPU ms/req |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in levels:
            for label in CONFIGS:
                r = summary[label][c]
                lines.append(
                    f"| {c} | {label} | {_f(r['throughput_rps'])} | {_f(r['throughput_min'], 0)}–{_f(r['throughput_max'], 0)} | "
                    f"{_f(r['p50_ms'], 2)} | {_f(r['p99_ms'], 2)} | {_f(r['mean_batch_size'], 1)} | {_f(r['wall_s'], 2)} | "
                    f"{_f(r['server_cpu_s'], 2)} | {_f(r['server_cores_busy'], 2)} | {_f(r['server_cpu_ms_per_request'], 3)} | "
                    f"{_f(r['client_cpu_ms_per_request'], 3)} |"
                )
        lines += [
            "",
            "Batching on / off (ratios of the medians):",
            "",
            "| clients | throughput | p50 latency | p99 latency | server CPU per request |",
            "|---|---|---|---|---|",
        ]
        for c in levels:
            q = ratios[c]
            lines.append(f"| {c} | {q['throughput_rps']:.2f}× | {q['p50_ms']:.2f}× | {q['p99_ms']:.2f}× | {q['server_cpu_ms_per_request']:.2f}× |")
        lines += [
            "",
            "Where a request's time goes by the server's own histograms (means, ms): queue, from its arrival at the model "
            "to the start of the model call that computed it; compute, that call alone (the whole batch's call); server "
            "total, from its arrival at the service to its answer, so it also holds the wait for the event loop to reach "
            "the request after the call (HTTP parsing and writing not included); beside the client's p50.",
            "",
            "| clients | batching | queue | compute | server total | client p50 |",
            "|---|---|---|---|---|---|",
        ]
        for c in levels:
            for label in CONFIGS:
                r = summary[label][c]
                lines.append(f"| {c} | {label} | {_f(r['server_queue_ms'], 2)} | {_f(r['server_compute_ms'], 2)} | "
                             f"{_f(r['server_total_ms'], 2)} | {_f(r['p50_ms'], 2)} |")
        lines.append("")
    failures = sum(results["summary"][mode][label][c]["failures"] for mode in s["connections"] for label in CONFIGS for c in levels)
    lines += [
        "## Notes",
        "",
        f"- With batching on, the first request of a batch waits up to {s['max_queue_delay_ms']:g} ms (`--max-queue-delay-ms`) "
        f"for others until {s['max_batch_size']} have come. With one client no other request ever comes, so every request "
        "waits the whole delay: that is the price of batching at low load, not a fault.",
    ]
    if "keep-alive" in s["connections"] and levels[0] == "1":
        off = results["summary"]["keep-alive"]["off"]["1"]
        gap = off["p50_ms"] - (off["server_total_ms"] or 0)
        line = (f"- At 1 client over keep-alive connections, batching off, the client's p50 is {off['p50_ms']:.1f} ms while "
                f"the server's own mean time per request is {_f(off['server_total_ms'], 2)} ms")
        if "new" in s["connections"]:
            line += f"; with a new connection per request the client's p50 is {results['summary']['new']['off']['1']['p50_ms']:.1f} ms"
        line += "."
        if gap > 20:
            line += (" A gap near 40 ms is TCP's delayed ACK meeting Nagle's algorithm: the server's accepted sockets do not "
                     "have TCP_NODELAY (`mlc/serve/server.py` `_bind` makes its listening socket with protocol 0, and asyncio "
                     "sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP), and uvicorn writes a response's head and "
                     "body separately, so on a connection that already carried a request the body waits for the client's "
                     "delayed ACK. A new connection per request does not wait (the ACK is immediate early in a connection), at "
                     "the cost of a TCP handshake per request. The keep-alive figures above measure this stall more than "
                     "batching; the new-connection figures are the fairer batching comparison until it is fixed.")
        lines.append(line)
    lines += [
        "- Every server request is also logged (one JSON line to stderr, here to a file): part of the server CPU above.",
        f"- Failed requests (not 200, or a wrong-sized output): {failures}.",
        "- Raw numbers, per round: `" + results.get("json_path", "serve.json") + "`.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds of on/off measurements (default 5)")
    p.add_argument("--concurrency", default="1,8,64", help="client counts, comma-separated (default 1,8,64)")
    p.add_argument("--requests", default="200,1000,2000",
                   help="counted requests per measurement: one number, or one per concurrency level (default 200,1000,2000)")
    p.add_argument("--warmup", type=int, default=20, help="uncounted requests before each measurement, at least 2 x clients (default 20)")
    p.add_argument("--connections", default="keep-alive,new",
                   help="client connection kinds, comma-separated: keep-alive, new (a new connection per request); default both")
    p.add_argument("--max-batch-size", type=int, default=64, help="the batching server's --max-batch-size (default 64)")
    p.add_argument("--max-queue-delay-ms", type=float, default=5.0, help="the batching server's --max-queue-delay-ms (default 5)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 64 requests per level after 16 warm-up")
    p.add_argument("--out", default=str(ROOT / "bench" / "serve.md"), help="the report (the JSON goes beside it, .json)")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.connections = [c.strip() for c in args.connections.split(",")]
    if args.quick:
        args.rounds, args.requests, args.warmup = 1, "64", 16
    args.requests = [int(n) for n in str(args.requests).split(",")]
    if len(args.requests) == 1:
        args.requests *= len(args.concurrency)
    if len(args.requests) != len(args.concurrency):
        p.error("--requests takes one number or one per concurrency level")
    if set(args.connections) - set(MODE_TITLES) or not args.connections:
        p.error("--connections takes keep-alive, new or both")
    if min(args.rounds, *args.requests, *args.concurrency) < 1 or args.warmup < 0:
        p.error("--rounds, --requests and each concurrency must be at least 1, --warmup at least 0")
    results = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    results["json_path"] = json_path.name
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    text = report(results)
    out.write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
