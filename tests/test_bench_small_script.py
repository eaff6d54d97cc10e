"""scripts/bench_small.py runs end to end on tiny models and writes its table (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_small_writes_its_table(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pytest.importorskip("torch")
    out = tmp_path / "small.md"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_small.py"), "--size", "tiny", "--rounds", "1", "--blocks", "1", "--calls", "2",
         "--models-dir", str(tmp_path / "models"), "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    for row in ("| tiny CNN | inline |", "| tiny CNN | async |", "| VAD LSTM step | inline |", "| VAD LSTM step | async |"):
        assert row in table
    raw = json.loads(out.with_suffix(".json").read_text())
    assert set(raw["results"]["vad"]) == {"inline", "async"}
