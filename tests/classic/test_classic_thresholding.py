"""``classConfidenceThresholding`` (ClassConfidenceThresholding.proto): output ``[2, C]`` with
the confidences in row 0 and ones in row 1 (the proto: the model "simply takes all the
classes"); the precision/recall curves are validated as Core ML's validator does.

Row 0 is a copy of the input (classic models compute in double): it equals the input exactly
(rounded to the declared output type).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlc
from mlc._errors import MLCParametersError
from mlc.io.proto import proto

DOUBLE, FLOAT32, FLOAT16 = 65600, 65568, 65552


def _curve(curve, precision=(0.1, 0.5, 0.9), recall=(0.9, 0.5, 0.1)):
    curve.precisionValues.vector.extend(precision)
    curve.precisionConfidenceThresholds.vector.extend([0.0, 0.3, 0.8][: len(precision)])
    curve.recallValues.vector.extend(recall)
    curve.recallConfidenceThresholds.vector.extend([0.1, 0.4, 0.7][: len(recall)])
    return curve


def thresholding_spec(classes=4, dtype=DOUBLE, declared=True, curves=None):
    spec = proto("Model").Model()
    spec.specificationVersion = 7
    for fd, name, shape in ((spec.description.input.add(), "confidences", [classes]),
                            (spec.description.output.add(), "filtered", [2, classes])):
        fd.name = name
        fd.type.multiArrayType.dataType = dtype
        if declared:
            fd.type.multiArrayType.shape.extend(shape)
    spec.classConfidenceThresholding.SetInParent()
    for _ in range(classes if curves is None else curves):
        _curve(spec.classConfidenceThresholding.precisionRecallCurves.add())
    return spec


@pytest.mark.parametrize("dtype, np_dtype", [(DOUBLE, np.float64), (FLOAT32, np.float32), (FLOAT16, np.float16)])
def test_output_is_confidences_over_ones(dtype, np_dtype):
    x = np.random.default_rng(0).uniform(0, 1, 4).astype(np_dtype)
    out = mlc.load(thresholding_spec(dtype=dtype)).predict({"confidences": x})["filtered"]
    assert out.shape == (2, 4) and out.dtype == np_dtype
    np.testing.assert_array_equal(out[0], x.astype(np_dtype))
    np.testing.assert_array_equal(out[1], np.ones(4))


def test_batches():
    x = np.random.default_rng(1).uniform(0, 1, (5, 4))
    out = mlc.load(thresholding_spec()).predict_batch({"confidences": x})["filtered"]
    assert out.shape == (5, 2, 4)
    np.testing.assert_array_equal(out[:, 0], x)
    np.testing.assert_array_equal(out[:, 1], 1.0)


def test_undeclared_shape_takes_any_class_count():
    x = np.array([0.25, 0.75, 0.5])
    out = mlc.load(thresholding_spec(classes=2, declared=False)).predict({"confidences": x})["filtered"]
    np.testing.assert_array_equal(out, [x, [1, 1, 1]])


def _bad(edit):
    spec = thresholding_spec()
    edit(spec.classConfidenceThresholding.precisionRecallCurves[1])
    return spec


@pytest.mark.parametrize(
    "spec, match",
    [
        (thresholding_spec(curves=0), "no precisionRecallCurves"),
        (thresholding_spec(curves=3), "3 precisionRecallCurves for 4 classes"),
        (_bad(lambda c: c.precisionConfidenceThresholds.vector.append(0.9)), "same length"),
        (_bad(lambda c: c.ClearField("recallValues") or c.ClearField("recallConfidenceThresholds")), "non-empty"),
        (_bad(lambda c: c.precisionValues.vector.__setitem__(0, -0.5)), "non-negative"),
        (_bad(lambda c: c.recallConfidenceThresholds.vector.__setitem__(2, float("nan"))), "finite"),
        (_bad(lambda c: c.recallValues.vector.__setitem__(2, float("inf"))), "finite"),
    ],
)
def test_bad_parameters(spec, match):
    with pytest.raises(MLCParametersError, match=match):
        mlc.load(spec)


def test_bad_features():
    spec = thresholding_spec()
    spec.description.output[0].type.doubleType.SetInParent()
    with pytest.raises(MLCParametersError, match="multiarray"):
        mlc.load(spec)
    spec = thresholding_spec()
    extra = spec.description.input.add()
    extra.CopyFrom(spec.description.input[0])
    extra.name = "more"
    with pytest.raises(MLCParametersError, match="one input"):
        mlc.load(spec)
