"""``mlc.cost_report`` and ``mlc info --cost``: FLOPs and bytes per op family from XLA's cost analysis.

The oracle is arithmetic: a matmul of (M, K) by (K, N) is 2*M*N*K FLOPs, a valid-padded conv
2*Cout*(Cin/groups)*Kh*Kw*Hout*Wout, a bias add one FLOP per output element, an elementwise
op one FLOP (or one transcendental) per element.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb

import mlc
from mlc.deploy import cost
from mlc.runtime import observe
from mlc.cli import main
from mlc.testing import nn_specs
from mlc.testing.mil_program import mil_mlmodel

RNG = np.random.default_rng(0)


def _weights(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _family(report, name):
    assert name in report.families, f"{name!r} not among {list(report.families)}"
    return report.families[name]


# -- ML Programs ----------------------------------------------------------------------------------


def test_matmul_and_linear_count_2mnk_flops_plus_the_bias():
    M, K, N = 4, 8, 16
    w, b = _weights(N, K), _weights(N)
    model = mil_mlmodel(lambda x: (mb.matmul(x=x, y=w.T.copy()), mb.linear(x=x, weight=w, bias=b)), {"x": (M, K)})
    report = mlc.cost_report(model)
    linear = _family(report, "linear")
    assert linear.ops == 2
    assert linear.op_types["matmul"].cost.flops == 2 * M * N * K
    assert linear.op_types["linear"].cost.flops == 2 * M * N * K + M * N
    assert report.uncosted == {} and not report.eager


def test_grouped_conv_counts_its_multiply_adds():
    cin, cout, groups, k, h, w = 4, 6, 2, 3, 10, 9
    weight, bias = _weights(cout, cin // groups, k, k), _weights(cout)
    model = mil_mlmodel(lambda x: mb.conv(x=x, weight=weight, bias=bias, groups=groups, pad_type="valid"), {"x": (1, cin, h, w)})
    report = mlc.cost_report(model)
    hout, wout = h - k + 1, w - k + 1
    conv = _family(report, "conv")
    assert conv.ops == 1 and list(conv.op_types) == ["conv"]
    assert conv.cost.flops == 2 * cout * (cin // groups) * k * k * hout * wout + cout * hout * wout
    assert list(report.families)[0] == "conv"  # sorted by FLOPs


def test_elementwise_ops_count_per_element_and_transcendentals():
    model = mil_mlmodel(lambda x, y: mb.exp(x=mb.add(x=x, y=y)), {"x": (2, 3), "y": (2, 3)})
    report = mlc.cost_report(model)
    add = _family(report, "elementwise_binary").op_types["add"]
    assert (add.ops, add.cost.flops, add.cost.transcendentals) == (1, 6, 0)
    exp = _family(report, "elementwise_unary").op_types["exp"]
    assert (exp.ops, exp.cost.transcendentals) == (1, 6)
    assert add.cost.bytes_accessed == 3 * 6 * 4  # two float32 inputs read, one output written
    # nothing outside the ops: the whole program before XLA's optimisations is their sum
    assert report.program == report.per_op
    assert report.fused.flops == report.per_op.flops and report.fused.transcendentals == 6


def test_repeated_identical_ops_count_per_occurrence_and_are_costed_once(monkeypatch):
    calls = []
    real = cost._lowered_cost
    monkeypatch.setattr(cost, "_lowered_cost", lambda *a: calls.append(1) or real(*a))
    model = mil_mlmodel(lambda x: mb.relu(x=mb.relu(x=mb.relu(x=x))), {"x": (5, 7)})
    report = mlc.cost_report(model)
    relu = _family(report, "activation").op_types["relu"]
    assert relu.ops == 3 and relu.cost.flops == 3 * 35
    assert len(calls) == 1


def test_shape_arithmetic_is_folded_not_counted():
    def body(x):
        first = mb.slice_by_size(x=mb.shape(x=x), begin=[0], size=[1])
        return mb.reshape(x=mb.sigmoid(x=x), shape=mb.concat(values=[first, [-1]], axis=0))

    report = mlc.cost_report(mil_mlmodel(body, {"x": (2, 3, 4)}))
    assert report.folded_ops >= 2  # slice_by_size and concat of the static shape
    assert _family(report, "activation").op_types["sigmoid"].ops == 1


def test_data_dependent_model_is_costed_op_by_op():
    model = mil_mlmodel(lambda x: mb.non_zero(x=mb.relu(x=x)), {"x": (4, 3)})
    report = mlc.cost_report(model, inputs={"x": np.eye(4, 3, dtype=np.float32)})
    assert report.eager and report.program is None and report.fused is None
    assert report.uncosted["non_zero"]["ops"] == 1 and "depends on the input values" in report.uncosted["non_zero"]["reason"]
    assert _family(report, "activation").cost.flops == 12
    assert "costed op by op" in report.table()


def test_an_mlc_model_that_already_ran_is_costed_fully_and_observation_ends():
    model = mlc.load(mil_mlmodel(lambda x: mb.tanh(x=x), {"x": (3,)}))
    model.predict({"x": np.ones(3, np.float32)})  # its jit cache is warm
    report = mlc.cost_report(model)
    assert _family(report, "elementwise_unary").op_types["tanh"].cost.transcendentals == 3
    assert observe.current() is None


@pytest.mark.filterwarnings("ignore:Input, .state.:UserWarning")
def test_stateful_program_costs_its_state_writes():
    import coremltools as ct
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.StateTensorSpec((2, 3), dtype=types.fp16), mb.TensorSpec((2, 3), dtype=types.fp16)],
                opset_version=ct.target.iOS18)
    def prog(state, x):
        total = mb.add(x=mb.read_state(input=state), y=x)
        mb.coreml_update_state(state=state, value=total)
        return total

    mlmodel = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                         pass_pipeline=ct.PassPipeline.EMPTY, compute_precision=ct.precision.FLOAT16)
    report = mlc.cost_report(mlmodel)
    assert _family(report, "elementwise_binary").cost.flops == 6
    # the write rounds through fp16 (Core ML's state storage): two converts of 6 elements
    assert _family(report, "state").cost.flops == 12 and report.uncosted == {}


# -- NeuralNetwork and classic models -------------------------------------------------------------


def test_neuralnetwork_inner_product_and_convolution():
    k, n = 12, 5
    b = nn_specs.network({"x": (k,)}, ["y"], exact=True)
    b.add_inner_product("fc", _weights(n, k), _weights(n), k, n, True, "x", "y")
    report = mlc.cost_report(b.spec)
    fc = _family(report, "linear").op_types["innerProduct"]
    assert (fc.ops, fc.cost.flops) == (1, 2 * k * n + n)

    cin, cout, kh, kw, h, w = 3, 4, 3, 2, 7, 6
    b = nn_specs.network({"x": (cin, h, w)}, ["y"], exact=False)
    b.add_convolution("c", cin, cout, kh, kw, 1, 1, "valid", 1, _weights(kh, kw, cin, cout), _weights(cout), True,
                      input_name="x", output_name="y")
    report = mlc.cost_report(b.spec)
    hout, wout = h - kh + 1, w - kw + 1
    conv = _family(report, "conv").op_types["convolution"]
    assert (conv.ops, conv.cost.flops) == (1, 2 * cout * cin * kh * kw * hout * wout + cout * hout * wout)


def test_classic_pipeline_families_are_model_types():
    pytest.importorskip("sklearn")
    from coremltools.converters import sklearn as skc
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x = RNG.normal(size=(20, 3))
    pipe = Pipeline([("s", StandardScaler()), ("r", LinearRegression())]).fit(x, x @ [1.0, 2.0, 3.0])
    report = mlc.cost_report(skc.convert(pipe, "x", "y").get_spec())
    assert set(report.families) == {"scaler", "glmRegressor"}
    assert all(f.ops == 1 and f.cost.flops > 0 for f in report.families.values())
    assert report.inputs == {"x": "float64[3]"}  # classic models compute in double
    assert report.fused is not None and report.uncosted == {}


# -- CLI, errors and the package surface ----------------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("cost") / "Mat.mlpackage"
    w = _weights(8, 4)
    mil_mlmodel(lambda x: mb.relu(x=mb.linear(x=x, weight=w)), {"x": (2, 4)}).save(str(path))
    return str(path)


def test_cli_info_cost_prints_a_table(capsys, package):
    assert main(["info", "--cost", package]) == 0
    out = capsys.readouterr().out
    assert "unsupported ops: none" in out
    table = out[out.index("cost (XLA cost analysis"):]
    rows = [line.split() for line in table.splitlines()[2:]]
    assert [r[0] for r in rows[:2]] == ["linear", "activation"]
    assert rows[0][1] == "1" and rows[0][-1].endswith("%")
    assert "per-op sum (unfused)" in table and "whole program, fused (XLA)" in table


def test_cli_info_cost_json(capsys, package):
    assert main(["info", "--cost", "--json", package]) == 0
    report = json.loads(capsys.readouterr().out)["cost"]
    assert report["families"]["linear"]["flops"] == 2 * 2 * 4 * 8 + 2 * 8  # MIL's linear always adds a bias (zeros here)
    assert report["families"]["linear"]["op_types"]["linear"]["ops"] == 1
    assert report["per_op"]["ops"] == 2 and report["fused"]["flops"] > 0
    assert report["inputs"] == {"x": "float32[2,4]"}


def test_bad_path_is_an_mlc_io_error(capsys, tmp_path):
    missing = str(tmp_path / "missing.mlpackage")
    with pytest.raises(mlc.MLCIOError, match="missing.mlpackage"):
        mlc.cost_report(missing)
    assert main(["info", "--cost", missing]) == 2
    assert "error [io]" in capsys.readouterr().err


def test_import_mlc_stays_light():
    code = (
        "import sys, mlc; assert 'mlc.deploy.cost' not in sys.modules and 'coremltools' not in sys.modules; "
        "assert mlc.cost_report.__module__ == 'mlc.deploy.cost'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
