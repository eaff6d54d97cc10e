"""scripts/bench.py end to end on its tiny LSTM: convert, export, check against torch, write the report.

Asserts agreement with torch, never timings (the timing rounds are one or two runs here).
"""

import json

import pytest

from mlc.testing.scripts import load_script


pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")  # torch.onnx.export's dynamo exporter
torch = pytest.importorskip("torch")


def _bench():
    return load_script("bench")


@pytest.mark.timeout(120)
def test_bench_tiny_lstm_agrees_with_torch(tmp_path):
    bench = _bench()
    out = tmp_path / "results.md"
    argv = ["--quick", "--models", "lstm", "--size", "tiny", "--cold-repeats", "0",
            "--threads", str(torch.get_num_threads()), "--models-dir", str(tmp_path / "models"), "--out", str(out)]  # fmt: skip
    results = bench.main(argv)

    lstm = results["models"]["lstm"]
    for framework in ("mlc", "ort", "mlc-jit"):
        check = lstm["check"][framework]
        assert "error" not in check, check
        for batch in ("1", "32"):
            assert check[batch]["ok"], (framework, batch, check[batch])
            assert check[batch]["max_abs_diff"] < 1e-4 * max(1.0, check[batch]["ref_max_abs"])
    for key in ("b1", "b32"):
        for framework in ("mlc", "torch", "ort"):
            assert lstm[key][framework]["median_s"] > 0
    text = out.read_text()
    assert "## Ratios (CPU)" in text and "| LSTM |" in text
    assert json.loads(out.with_suffix(".json").read_text())["models"]["lstm"]["check"]["mlc"]["1"]["ok"]
    # a second run finds the converted model in the cache folder
    assert bench.prepare("lstm", "tiny", tmp_path / "models") == json.loads((tmp_path / "models" / "lstm-tiny" / "meta.json").read_text())
