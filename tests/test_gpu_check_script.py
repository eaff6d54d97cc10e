"""scripts/gpu_check.sh / gpu_check.py: the CPU dry run goes through every step of the GPU check.

No GPU here: the dry run checks the tiny CNN and the VAD step's fp32 programs against torch with
JAX's default matmul precision and with "highest", counts what each compute_precision asks XLA
for, runs their fp16 twins and times them, and writes the report. Asserts on agreement and on
the report, never on timings.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlc.testing.scripts import load_script

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
AUTO, HIGHEST = "mlc, default precision", "mlc, precision highest"


@pytest.mark.timeout(600)
def test_gpu_check_dry_run_through_the_wrapper(tmp_path):
    out, raw = tmp_path / "gpu_check.md", tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    p = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--no-install", "--dry-run", "--",
         "--models-dir", str(tmp_path / "models"), "--out", str(out), "--json", str(raw)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=580,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "dry run" in p.stdout

    results = json.loads(raw.read_text())
    assert results["dry_run"] and results["env"]["device"] == "cpu"
    assert set(results["models"]) == {"tinycnn", "vad"}
    for name, r in results["models"].items():
        assert "error" not in r, (name, r)
        for lab in (AUTO, HIGHEST, "torch (CPU)"):
            for b in ("1", "32"):
                c = r["fp32"][lab][b]
                assert c["ok"] and c["rel"] < 1e-5, (name, lab, b, c)
        for cp in ("auto", "float32", "float16"):
            ops = r["ops"][cp]
            assert ops["ops"] > 0 and sum(ops["precision"].values()) == ops["ops"], (name, cp, ops)
            assert set(ops["dtype"]) == {"float32"}  # an fp32 program stays fp32 whatever compute_precision says
        # the fp16 twin: fp32 on the CPU by default, fp16 when asked for
        assert set(r["fp16_ops"]["auto"]["dtype"]) == {"float32"}
        assert set(r["fp16_ops"]["float16"]["dtype"]) == {"float16"}
        for lab in ("mlc fp16 program, auto", "mlc fp16 program, float32"):
            for b in ("1", "32"):
                assert r["fp16"][lab][b]["ok"], (name, lab, b, r["fp16"][lab][b])
                assert r["fp16_time"][b][lab]["median_s"] > 0
        for b in ("1", "32"):
            for lab in (AUTO, HIGHEST):
                assert r["time"][b][lab]["median_s"] > 0

    text = out.read_text()
    assert text.startswith("# mlc on the GPU")
    assert "**DRY RUN on the CPU** (--dry-run)" in text
    for heading in ("## Finding", "## fp32 programs against torch", "## What mlc asks XLA for, per compute_precision",
                    "## fp16 programs", "## Timing"):  # fmt: skip
        assert heading in text, heading
    assert "compute_precision='auto':" in text and "| tiny CNN | fp16 |" in text and "| VAD LSTM step |" in text


def test_matmul_ops_counts_precision_and_dtype_inside_loops():
    import jax
    import jax.numpy as jnp

    gpu_check = load_script("gpu_check")

    def f(x, w):
        y = jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST)

        def step(c, _):
            return jnp.dot(c, w), None

        z, _ = jax.lax.scan(step, y, None, length=3)
        return jnp.dot(z.astype(jnp.float16), w.astype(jnp.float16))

    x = jnp.ones((2, 4), jnp.float32)
    w = jnp.ones((4, 4), jnp.float32)
    ops = gpu_check.matmul_ops(jax.make_jaxpr(f)(x, w).jaxpr)
    assert ops["ops"] == 3
    assert ops["precision"] == {"HIGHEST": 1, "unset (follows jax_default_matmul_precision)": 2}
    assert ops["dtype"] == {"float32": 2, "float16": 1}
