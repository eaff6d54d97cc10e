"""scripts/batch_predict.py and mlc.deploy.batch: sharded batch scoring of image folders and array files.

One subprocess runs the script on 4 forced host devices (XLA_FLAGS must be set before JAX starts,
and this process's JAX has already started with one device); two more run it as a 2-process JAX
cluster on localhost (2 host devices each, CPU collectives), the multi-host path on one host;
everything else runs here, on one device.

Tolerance: the 4-device run computes 1 example per device per step, the 1-device run 4 per step,
``model.predict`` 1 unbatched. XLA's CPU kernels (conv, dot) are chosen per shape, so the
float32 sums can be taken in another order: results agree to a few float32 ulps, not bit for bit
(measured: up to 6e-7 on ColorNet's probabilities, whose logits reach ~10). They are compared
within 1e-6 (absolute and relative), a bound such reordering stays inside for values of this
size; labels, input names and order must be identical.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mlc
from mlc.deploy import batch
from mlc.testing.images import write_corrupt_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "batch_predict.py")
COLORNET = os.path.join(ROOT, "mlc", "data", "ColorNet.mlpackage")
N = 10  # examples; with batch 4 the last batch is partial
TOL = dict(rtol=1e-6, atol=1e-6)


def _script():
    spec = importlib.util.spec_from_file_location("batch_predict_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_images(folder: str) -> None:
    """10 readable images (sizes and modes that need converting and resizing, one in a subfolder)
    and one corrupt file, sorted between them."""
    rng = np.random.default_rng(0)
    for i in range(N):
        width, height = (64, 64) if i % 3 else (80, 50)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert("L") if i == 5 else Image.fromarray(pixels)
        sub = "sub" if i == 7 else ""
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        image.save(os.path.join(folder, sub, f"im{i:02d}.png"))
    truncated_jpeg = write_corrupt_files(folder + "_corrupt")[1]
    shutil.copy(truncated_jpeg, os.path.join(folder, "im03b.jpg"))


def _write_program(path: str) -> None:
    """An ML Program with two inputs (x: 2x3, b: 5) and two outputs (h = relu(x @ W + b), s = sum(x, 1))."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_mlmodel

    w = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    body = lambda x, b: (mb.relu(x=mb.add(x=mb.matmul(x=x, y=w), y=b), name="h"), mb.reduce_sum(x=x, axes=[1], name="s"))  # noqa: E731
    mil_mlmodel(body, {"x": (2, 3), "b": (5,)}).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("batch_predict"))
    images = os.path.join(root, "images")
    _write_images(images)
    program = os.path.join(root, "prog.mlpackage")
    _write_program(program)
    rng = np.random.default_rng(2)
    arrays = {"x": rng.normal(size=(N, 2, 3)).astype(np.float32), "b": rng.normal(size=(N, 5)).astype(np.float32)}
    np.savez(os.path.join(root, "arrays.npz"), **arrays)
    return {"root": root, "images": images, "program": program, "npz": os.path.join(root, "arrays.npz"), "arrays": arrays}


@pytest.fixture(scope="module")
def four_devices(data):
    """Both runs on 4 forced host devices, in one subprocess: the images to .jsonl, the arrays to .npz."""
    out = os.path.join(data["root"], "four")
    os.makedirs(out)
    driver = (
        "import importlib.util, json, sys, jax\n"
        f"spec = importlib.util.spec_from_file_location('bp', {SCRIPT!r})\n"
        "bp = importlib.util.module_from_spec(spec); spec.loader.exec_module(bp)\n"
        f"rcs = [bp.main([{COLORNET!r}, {data['images']!r}, '-o', {os.path.join(out, 'images.jsonl')!r}, '--batch-size', '4']),\n"
        f"       bp.main([{data['program']!r}, {data['npz']!r}, '-o', {os.path.join(out, 'arrays.npz')!r}, '--batch-size', '3', '--quiet'])]\n"
        "print(json.dumps({'devices': jax.device_count(), 'rcs': rcs}))\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "TQDM_DISABLE": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"dir": out, "stdout": proc.stdout, "stderr": proc.stderr, **report}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(data):
    """Both runs as 2 processes of 2 host devices each, over JAX's distributed runtime on
    localhost (CPU collectives through gloo): the arrays (9 of them, so that process 0, with the
    smaller share, runs a step of padding only) to .npz, then the images to .jsonl."""
    out = os.path.join(data["root"], "two")
    os.makedirs(out)
    nine = os.path.join(out, "nine.npz")
    np.savez(nine, **{k: v[:9] for k, v in data["arrays"].items()})
    address = f"localhost:{_free_port()}"
    driver = (
        "import importlib.util, json, sys, jax\n"
        f"spec = importlib.util.spec_from_file_location('bp', {SCRIPT!r})\n"
        "bp = importlib.util.module_from_spec(spec); spec.loader.exec_module(bp)\n"
        f"rcs = [bp.main([{data['program']!r}, {nine!r}, '-o', {os.path.join(out, 'arrays.npz')!r}, '--batch-size', '4', '--quiet',\n"
        f"                '--distributed', '--coordinator', {address!r}, '--num-processes', '2', '--process-id', sys.argv[1]]),\n"
        f"       bp.main([{COLORNET!r}, {data['images']!r}, '-o', {os.path.join(out, 'images.jsonl')!r}, '--batch-size', '4', '--quiet'])]\n"
        "print(json.dumps({'process': jax.process_index(), 'devices': jax.device_count(), 'local': jax.local_device_count(), 'rcs': rcs}))\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", driver, str(i)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    return {"dir": out, "reports": reports, "stdout": outputs[0][0], "stderr": [e for _, e in outputs]}


def _one_device(data, inputs: str, model: str, out: str, batch_size: int = 4) -> str:
    path = os.path.join(data["root"], out)
    assert _script().main([model, inputs, "-o", path, "--batch-size", str(batch_size), "--quiet"]) == 0
    return path


def _readable(folder: str) -> list[str]:
    return [p for p in batch.image_files(folder) if not p.endswith("im03b.jpg")]


def test_images_to_jsonl_on_four_devices_match_one_device_and_predict(data, four_devices):
    assert four_devices["devices"] == 4 and four_devices["rcs"] == [0, 0]
    assert "on 4 cpu device(s), batch 4" in four_devices["stdout"]
    four = [json.loads(line) for line in open(os.path.join(four_devices["dir"], "images.jsonl"))]
    one = [json.loads(line) for line in open(_one_device(data, data["images"], COLORNET, "one.jsonl"))]
    paths = batch.image_files(data["images"])
    assert [r["input"] for r in four] == [r["input"] for r in one] == paths  # every input, in sorted order
    assert paths[4].endswith("im03b.jpg") and "skipped" in four[4] and "skipped" in one[4]
    model = mlc.load(COLORNET)
    for r4, r1 in zip(four, one):
        if "skipped" in r4:
            continue
        expected = model.predict({"image": Image.open(r4["input"]).convert("RGB").resize((64, 64))})
        assert r4["outputs"]["classLabel"] == r1["outputs"]["classLabel"] == expected["classLabel"]
        labels = list(expected["classLabel_probs"])
        got4, got1 = ([r["outputs"]["classLabel_probs"][k] for k in labels] for r in (r4, r1))
        np.testing.assert_allclose(got4, got1, **TOL)
        np.testing.assert_allclose(got1, [expected["classLabel_probs"][k] for k in labels], **TOL)


def test_corrupt_image_is_skipped_with_a_warning_and_recorded(data, four_devices):
    assert "warning: 1 of 11 input(s) could not be read" in four_devices["stderr"]
    assert "im03b.jpg" in four_devices["stderr"] and "Traceback" not in four_devices["stderr"]
    assert "10 of 11 inputs scored" in four_devices["stdout"]
    out = _one_device(data, data["images"], COLORNET, "one.npz")
    with np.load(out) as npz:
        assert list(npz["_input"]) == _readable(data["images"])
        assert list(npz["_skipped"]) == [os.path.join(data["images"], "im03b.jpg")]
        assert "corrupt or truncated" in npz["_skipped_reason"][0]
        assert npz["classLabel_probs"].shape == (N, 6) and list(npz["classLabel_probs_keys"])[0] == "red"


def test_arrays_to_npz_on_four_devices_match_one_device_and_predict(data, four_devices):
    four = dict(np.load(os.path.join(four_devices["dir"], "arrays.npz")))
    one = dict(np.load(_one_device(data, data["npz"], data["program"], "one_arrays.npz", batch_size=3)))
    assert sorted(four) == sorted(one) == ["_input", "_skipped", "_skipped_reason", "h", "s"]
    assert list(four["_input"]) == list(range(N)) and four["h"].shape == (N, 2, 5) and four["h"].dtype == np.float32
    model = mlc.load(data["program"])
    x, b = data["arrays"]["x"], data["arrays"]["b"]
    expected = [model.predict({"x": x[i], "b": b[i]}) for i in range(N)]
    for name in ("h", "s"):
        np.testing.assert_allclose(four[name], one[name], **TOL)
        np.testing.assert_allclose(one[name], np.stack([e[name] for e in expected]), **TOL)
    weight = np.asarray(model.params["matmul_0_y_0"])
    np.testing.assert_allclose(one["h"], np.maximum(x @ weight + b[:, None], 0), rtol=1e-5, atol=1e-5)  # numpy, the oracle


def test_two_processes_match_one_device(data, two_processes):
    """The multi-host path on one host: every process feeds its own share, process 0 writes."""
    assert [(r["process"], r["devices"], r["local"], r["rcs"]) for r in two_processes["reports"]] == [(0, 4, 2, [0, 0]), (1, 4, 2, [0, 0])]
    assert "9 of 9 inputs scored on 4 cpu device(s)" in two_processes["stdout"]
    one = dict(np.load(_one_device(data, data["npz"], data["program"], "one_arrays.npz", batch_size=3)))
    with np.load(os.path.join(two_processes["dir"], "arrays.npz")) as two:
        assert list(two["_input"]) == list(range(9))
        for name in ("h", "s"):
            np.testing.assert_allclose(two[name], one[name][:9], **TOL)
    two = [json.loads(line) for line in open(os.path.join(two_processes["dir"], "images.jsonl"))]
    one = [json.loads(line) for line in open(_one_device(data, data["images"], COLORNET, "one.jsonl"))]
    assert [r["input"] for r in two] == [r["input"] for r in one] == batch.image_files(data["images"])
    assert "skipped" in two[4] and "corrupt or truncated" in two[4]["skipped"]  # in process 0's share: its reason is known
    for r2, r1 in zip(two, one):
        if "outputs" in r2:
            assert r2["outputs"]["classLabel"] == r1["outputs"]["classLabel"]
            labels = list(r1["outputs"]["classLabel_probs"])
            np.testing.assert_allclose([r2["outputs"]["classLabel_probs"][k] for k in labels],
                                       [r1["outputs"]["classLabel_probs"][k] for k in labels], **TOL)


def test_one_compile_for_a_run_with_a_partial_last_batch(data):
    model = mlc.load(data["program"])
    predictor = batch.BatchPredictor(model, batch_size=4)
    done = []
    results = predictor.predict(batch.open_inputs(model, data["npz"]), progress=done.append)
    assert done == [4, 4, 2] and predictor._fn.compiled_signatures() == 1
    assert list(results.indices) == list(range(N)) and results.outputs["h"].shape == (N, 2, 5)


def test_a_step_with_nothing_readable_runs_on_blank_padding(data):
    """What a process whose share is used up or unreadable feeds, to keep in step with the others
    (only multi-process runs launch such a step; here it is launched by hand)."""
    model = mlc.load(COLORNET)
    predictor = batch.BatchPredictor(model, batch_size=4)
    source = batch.open_inputs(model, data["images"])
    assert source.blank()["image"].shape == (1, 1, 3, 64, 64)
    step = predictor._finish(*predictor._launch(source, None, np.zeros(0, np.int64), 1), None)
    assert step.indices.size == 0 and step.outputs["classLabel"] == [] and step.done == 1


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn on multi_class="ovr", which coremltools needs
def test_a_classic_model_in_double_from_an_npy(data, tmp_path):
    """Classic models compute in JAX's 64-bit mode: placement and the call run inside it."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    from coremltools.converters import sklearn as skc

    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 3))
    estimator = sklearn.LogisticRegression(multi_class="ovr").fit(x, rng.choice([1, 2, 3], size=N))
    skc.convert(estimator, "x", "target").save(str(tmp_path / "glm.mlmodel"))
    np.save(tmp_path / "x.npy", x)
    out = _one_device(data, str(tmp_path / "x.npy"), str(tmp_path / "glm.mlmodel"), "glm.npz")
    model = mlc.load(str(tmp_path / "glm.mlmodel"))
    expected = [model.predict({"x": row}) for row in x]
    with np.load(out) as npz:
        assert list(npz["target"]) == [e["target"] for e in expected]
        assert list(npz["classProbability_keys"]) == [1, 2, 3]
        np.testing.assert_allclose(npz["classProbability"], [[e["classProbability"][k] for k in (1, 2, 3)] for e in expected], rtol=1e-12)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_inputs", "no such file or folder"),
        ("unknown_inputs_kind", "unknown kind of inputs '.txt'"),
        ("npz_keys", "has no input named 'z'"),
        ("npz_shape", "shape mismatch"),
        ("npz_lengths", "different numbers of examples"),
        ("npy_for_two_inputs", "an .npy file feeds a model with one input"),
        ("folder_for_array_model", "a folder of images feeds a model with one image input"),
        ("out_suffix", "must be an .npz or a .jsonl file"),
        ("all_unreadable", "none of the 1 input(s) could be read"),
        ("distributed_after_jax_started", "jax.distributed.initialize() failed"),  # JAX already runs in this process
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(data, tmp_path, capsys, case, message):
    model, inputs, out = data["program"], data["npz"], str(tmp_path / "out.npz")
    bad = str(tmp_path / "bad.npz")
    if case == "missing_inputs":
        inputs = str(tmp_path / "nowhere")
    elif case == "unknown_inputs_kind":
        inputs = str(tmp_path / "inputs.txt")
        open(inputs, "w").write("1 2 3\n")
    elif case == "npz_keys":
        np.savez(bad, x=data["arrays"]["x"], z=data["arrays"]["b"])
    elif case == "npz_shape":
        np.savez(bad, x=np.zeros((N, 3, 2), np.float32), b=data["arrays"]["b"])
    elif case == "npz_lengths":
        np.savez(bad, x=data["arrays"]["x"], b=data["arrays"]["b"][:4])
    elif case == "npy_for_two_inputs":
        np.save(str(tmp_path / "x.npy"), data["arrays"]["x"])
        inputs = str(tmp_path / "x.npy")
    elif case == "folder_for_array_model":
        inputs = data["images"]
    elif case == "out_suffix":
        out = str(tmp_path / "out.csv")
    elif case == "all_unreadable":
        model, inputs = COLORNET, str(tmp_path / "images")
        write_corrupt_files(inputs)
        for path in batch.image_files(inputs)[1:]:
            os.remove(path)
    if case.startswith("npz_"):
        inputs = bad
    extra = ["--distributed"] if case.startswith("distributed") else []
    assert _script().main([model, inputs, "-o", out, "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert "batch_predict: error [" in err and message in err, err
    assert not os.path.exists(out) and not [n for n in os.listdir(tmp_path) if n.startswith(".out")]
