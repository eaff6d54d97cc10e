"""The ``mlc`` command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

from mlc.cli import DEMO_IMAGE, DEMO_MODEL, main
from mlc.testing.mil_program import mil_mlmodel


@pytest.fixture(scope="module")
def add_package(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "Add.mlpackage"
    mil_mlmodel(lambda x: mb.mul(x=x, y=2.0), {"x": (2, 2)}).save(str(path))
    return str(path)


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "mlc.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("info", "predict", "update", "ops", "layers", "demo"):
        assert command in out


def test_ops_lists_the_registry(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "conv " in out and "scaled_dot_product_attention" in out and "iOS18+" in out


def test_layers_lists_the_neuralnetwork_registry(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 158 and "convolution" in out and "uniDirectionalLSTM" in out


def test_info_of_a_neuralnetwork_model_lists_layers(capsys, tmp_path):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    from coremltools.models.utils import save_spec

    b = NeuralNetworkBuilder([("data", datatypes.Array(3))], [("out", None)], disable_rank5_shape_mapping=True)
    b.add_activation("relu", "RELU", "data", "out")
    save_spec(b.spec, str(tmp_path / "m.mlmodel"))
    assert main(["info", str(tmp_path / "m.mlmodel")]) == 0
    out = capsys.readouterr().out
    assert "neuralNetwork (exact input mapping)" in out and "activation" in out and "unsupported layers: none" in out


def test_info(capsys):
    assert main(["info", DEMO_MODEL]) == 0
    out = capsys.readouterr().out
    assert "image: Image (RGB 64x64)" in out
    assert "classLabel: String" in out
    assert "conv" in out and "unsupported ops: none" in out


def test_info_json(capsys):
    assert main(["info", DEMO_MODEL, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unsupported_ops"] == {}
    assert report["ops"]["conv"] == 2
    assert report["functions"] == ["main"]


def test_predict_npy_json(add_package, tmp_path, capsys):
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    np.save(tmp_path / "x.npy", x)
    out_npz = tmp_path / "out.npz"
    assert main(["predict", add_package, "--input", f"x={tmp_path / 'x.npy'}", "--json", "--save", str(out_npz)]) == 0
    result = json.loads(capsys.readouterr().out)
    (values,) = result.values()
    np.testing.assert_array_equal(values, 2 * x)
    with np.load(out_npz) as saved:
        np.testing.assert_array_equal(next(iter(saved.values())), 2 * x)


def test_predict_json_literal(add_package, capsys):
    assert main(["predict", add_package, "-i", "x=[[1, 2], [3, 4]]", "--json"]) == 0
    (values,) = json.loads(capsys.readouterr().out).values()
    assert values == [[2, 4], [6, 8]]


def test_predict_image(capsys):
    assert main(["predict", DEMO_MODEL, "--input", f"image={DEMO_IMAGE}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["classLabel"] == "red"


def test_demo(capsys):
    assert main(["demo"]) == 0
    assert "classLabel: red" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "nope.mlpackage"], "[io]"),
        (["predict", "{pkg}", "-i", "x=[1, 2]"], "[featureType]"),
        (["predict", "{pkg}", "-i", "x"], "expected NAME=VALUE"),
        (["predict", "{pkg}", "-i", "y=1"], "unknown input 'y'"),
        (["info", "{tmp}/empty.mlmodel"], "the file is empty"),
    ],
)
def test_errors_exit_2_with_a_message(argv, message, add_package, tmp_path, capsys):
    (tmp_path / "empty.mlmodel").write_bytes(b"")
    argv = [a.format(pkg=add_package, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlc: error") and message in err
