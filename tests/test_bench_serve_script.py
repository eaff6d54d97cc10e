"""scripts/bench_serve.py --quick end to end: builds the model, starts two `mlc serve` processes
(batching on and off), loads them over HTTP, and writes the report and its JSON.

Asserts the report's shape and that every request was answered, never timings (a smoke run on
a shared machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("coremltools")
pytest.importorskip("aiohttp")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_bench_serve_quick(tmp_path):
    out = tmp_path / "serve.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_serve.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-4000:]

    text = out.read_text()
    assert "## Results over keep-alive connections" in text and "## Results over a new connection per request" in text
    for clients in (1, 8, 64):
        for batching in ("on", "off"):
            # one row in each connection kind's results table, and one in its time-breakdown table
            assert text.count(f"| {clients} | {batching} |") == 4, (clients, batching)

    results = json.loads(out.with_suffix(".json").read_text())
    assert set(results["summary"]) == {"keep-alive", "new"}
    for mode in ("keep-alive", "new"):
        for batching in ("on", "off"):
            for clients in ("1", "8", "64"):
                runs = results["raw"][mode][batching][clients]
                assert len(runs) == 1 and runs[0]["failures"] == 0 and runs[0]["requests"] == 64
                assert runs[0]["model_calls"] > 0  # the server's /metrics saw the requests
        # batching off computes every request alone
        assert all(results["summary"][mode]["off"][c]["mean_batch_size"] == 1 for c in ("1", "8", "64"))
    assert results["server_exit_codes"] == {"on": 0, "off": 0}  # both stopped cleanly on SIGTERM
