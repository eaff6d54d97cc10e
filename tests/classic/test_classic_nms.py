"""``nonMaximumSuppression`` models (NonMaximumSuppression.proto) against a numpy greedy NMS
written here from the proto text, and hand-computed IoU cases.

Specs are built from Model.proto directly (coremltools has no builder for this type). Kept rows
are copies of the input rows, computed in float32: they match the float32-rounded inputs
exactly. Random boxes are continuous, so no IoU lands within float32 rounding of a threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlc
from mlc._errors import MLCFeatureTypeError, MLCParametersError
from mlc.io.proto import proto

DOUBLE, FLOAT32, INT32 = 65600, 65568, 131104


def _array(fd, name, dtype, shape=None, rows=None, cols=None):
    fd.name = name
    a = fd.type.multiArrayType
    a.dataType = dtype
    if shape is not None:
        a.shape.extend(shape)
    if rows is not None:  # (lo, hi) range on dimension 0
        r0 = a.shapeRange.sizeRanges.add()
        r0.lowerBound, r0.upperBound = rows
        r1 = a.shapeRange.sizeRanges.add()
        r1.lowerBound, r1.upperBound = cols, cols


def nms_spec(classes=3, out_rows=None, per_class=False, iou=0.5, confidence=0.1, labels=None,
             iou_input=False, threshold_input=False, dtype=DOUBLE):
    """``out_rows``: None (any number of boxes), K (a fixed output shape) or (lo, hi) (a range)."""
    spec = proto("Model").Model()
    spec.specificationVersion = 5
    d = spec.description
    _array(d.input.add(), "scores", dtype)
    _array(d.input.add(), "boxes", dtype)
    if iou_input:
        f = d.input.add()
        f.name = "iouThreshold"
        f.type.doubleType.SetInParent()
        f.type.isOptional = True
    if threshold_input:
        f = d.input.add()
        f.name = "confidenceThreshold"
        f.type.doubleType.SetInParent()
        f.type.isOptional = True
    for name, cols in (("confidence", classes), ("coordinates", 4)):
        if out_rows is None:
            _array(d.output.add(), name, dtype)
        elif isinstance(out_rows, int):
            _array(d.output.add(), name, dtype, shape=(out_rows, cols))
        else:
            _array(d.output.add(), name, dtype, rows=out_rows, cols=cols)
    m = spec.nonMaximumSuppression
    if per_class is not None:
        m.pickTop.perClass = per_class
    m.iouThreshold, m.confidenceThreshold = iou, confidence
    m.confidenceInputFeatureName, m.coordinatesInputFeatureName = "scores", "boxes"
    m.confidenceOutputFeatureName, m.coordinatesOutputFeatureName = "confidence", "coordinates"
    if iou_input:
        m.iouThresholdInputFeatureName = "iouThreshold"
    if threshold_input:
        m.confidenceThresholdInputFeatureName = "confidenceThreshold"
    if labels is not None:
        target = m.stringClassLabels if isinstance(labels[0], str) else m.int64ClassLabels
        target.vector.extend(labels)
    return spec


# -- the oracle ----------------------------------------------------------------------------------


def _iou(a, b):
    ax0, ax1, ay0, ay1 = a[0] - a[2] / 2, a[0] + a[2] / 2, a[1] - a[3] / 2, a[1] + a[3] / 2
    bx0, bx1, by0, by1 = b[0] - b[2] / 2, b[0] + b[2] / 2, b[1] - b[3] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def numpy_nms(scores, boxes, iou, confidence, per_class):
    """Greedy PickTop as the proto describes it: the indices kept, most confident first."""
    best, label = scores.max(axis=1), scores.argmax(axis=1)
    kept = []
    for i in sorted(range(len(scores)), key=lambda i: -best[i]):
        if best[i] < confidence:
            continue
        if any(_iou(boxes[i], boxes[j]) > iou and (not per_class or label[i] == label[j]) for j in kept):
            continue
        kept.append(i)
    return kept


def _detections(seed, n=40, classes=3):
    """Boxes clustered around a few centres (so many overlap), scores in [0, 1)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.8, size=(4, 2))
    xy = centres[rng.integers(0, 4, n)] + rng.normal(0, 0.03, size=(n, 2))
    wh = rng.uniform(0.1, 0.3, size=(n, 2))
    boxes = np.concatenate([xy, wh], axis=1).astype(np.float32).astype(np.float64)
    scores = rng.uniform(0, 1, size=(n, classes)).astype(np.float32).astype(np.float64)
    return scores, boxes


def _run(spec, scores, boxes, **extra):
    return mlc.load(spec).predict({"scores": scores, "boxes": boxes, **extra})


# -- outputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_greedy_nms(per_class, seed):
    scores, boxes = _detections(seed)
    out = _run(nms_spec(per_class=per_class, iou=0.4, confidence=0.3), scores, boxes)
    kept = numpy_nms(scores, boxes, 0.4, 0.3, per_class)
    assert 0 < len(kept) < len(scores)
    assert out["confidence"].dtype == np.float64 and out["coordinates"].dtype == np.float64
    np.testing.assert_array_equal(out["confidence"], scores[kept])
    np.testing.assert_array_equal(out["coordinates"], boxes[kept])


def test_per_class_keeps_overlapping_boxes_of_other_classes():
    scores, boxes = _detections(3)
    together = _run(nms_spec(per_class=False, iou=0.3, confidence=0.0), scores, boxes)["confidence"]
    apart = _run(nms_spec(per_class=True, iou=0.3, confidence=0.0), scores, boxes)["confidence"]
    assert len(apart) > len(together)


def test_hand_computed_iou():
    # unit squares whose centres are 0.5 apart: intersection 0.5, union 1.5, IoU 1/3
    boxes = np.array([[0.5, 0.5, 1.0, 1.0], [1.0, 0.5, 1.0, 1.0]])
    scores = np.array([[0.6], [0.9]])
    suppressed = _run(nms_spec(classes=1, iou=0.3, confidence=0.0), scores, boxes)
    np.testing.assert_array_equal(suppressed["coordinates"], boxes[[1]])  # the more confident one
    both = _run(nms_spec(classes=1, iou=0.34, confidence=0.0), scores, boxes)
    np.testing.assert_array_equal(both["coordinates"], boxes[[1, 0]])  # most confident first


def test_iou_threshold_one_suppresses_nothing():
    boxes = np.array([[0.5, 0.5, 0.2, 0.2]] * 3)  # identical boxes: IoU 1 (up to float32 rounding)
    scores = np.array([[0.25], [0.75], [0.5]])
    out = _run(nms_spec(classes=1, iou=1.0, confidence=0.0), scores, boxes)
    np.testing.assert_array_equal(out["confidence"], scores[[1, 2, 0]])


def test_confidence_threshold_keeps_equal_scores():
    boxes = np.array([[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]])
    scores = np.array([[0.25, 0.5], [0.125, 0.375], [0.75, 0.0]])  # exact in binary
    out = _run(nms_spec(classes=2, iou=0.5, confidence=0.5), scores, boxes)
    np.testing.assert_array_equal(out["confidence"], scores[[2, 0]])


def test_nothing_survives_gives_empty_outputs():
    scores, boxes = _detections(4)
    out = _run(nms_spec(confidence=2.0), scores, boxes)
    assert out["confidence"].shape == (0, 3) and out["coordinates"].shape == (0, 4)


# -- output shapes -----------------------------------------------------------------------------------


def test_fixed_output_shape_pads_with_zeros_and_truncates():
    scores, boxes = _detections(5)
    kept = numpy_nms(scores, boxes, 0.4, 0.3, False)
    many = _run(nms_spec(out_rows=len(kept) + 3, iou=0.4, confidence=0.3), scores, boxes)
    assert many["confidence"].shape == (len(kept) + 3, 3)
    np.testing.assert_array_equal(many["confidence"][: len(kept)], scores[kept])
    np.testing.assert_array_equal(many["coordinates"][len(kept):], 0.0)
    np.testing.assert_array_equal(many["confidence"][len(kept):], 0.0)
    few = _run(nms_spec(out_rows=2, iou=0.4, confidence=0.3), scores, boxes)
    np.testing.assert_array_equal(few["coordinates"], boxes[kept[:2]])


def test_fixed_output_shape_is_jittable_and_batches():
    spec = nms_spec(out_rows=6, iou=0.4, confidence=0.3)
    model = mlc.load(spec)
    batch = [_detections(s) for s in (6, 7, 8)]
    out = model.predict_batch({"scores": np.stack([s for s, _ in batch]), "boxes": np.stack([b for _, b in batch])})
    for i, (scores, boxes) in enumerate(batch):
        kept = numpy_nms(scores, boxes, 0.4, 0.3, False)[:6]
        np.testing.assert_array_equal(out["coordinates"][i][: len(kept)], boxes[kept])
        np.testing.assert_array_equal(out["coordinates"][i][len(kept):], 0.0)


def test_row_range_pads_to_lower_and_cuts_at_upper_bound():
    scores, boxes = _detections(9)
    kept = numpy_nms(scores, boxes, 0.4, 0.3, False)
    assert len(kept) > 3
    lower = _run(nms_spec(out_rows=(len(kept) + 2, -1), iou=0.4, confidence=0.3), scores, boxes)
    assert lower["confidence"].shape == (len(kept) + 2, 3)
    np.testing.assert_array_equal(lower["confidence"][len(kept):], 0.0)
    upper = _run(nms_spec(out_rows=(1, 3), iou=0.4, confidence=0.3), scores, boxes)
    np.testing.assert_array_equal(upper["confidence"], scores[kept[:3]])
    inside = _run(nms_spec(out_rows=(1, 100), iou=0.4, confidence=0.3), scores, boxes)
    np.testing.assert_array_equal(inside["confidence"], scores[kept])


# -- optional inputs ----------------------------------------------------------------------------------


def test_threshold_inputs_override_the_parameters():
    scores, boxes = _detections(10)
    spec = nms_spec(iou=0.4, confidence=0.3, iou_input=True, threshold_input=True)
    default = _run(spec, scores, boxes)
    np.testing.assert_array_equal(default["confidence"], scores[numpy_nms(scores, boxes, 0.4, 0.3, False)])
    for iou, confidence in [(0.2, 0.3), (0.4, 0.6), (0.7, 0.05)]:
        out = _run(spec, scores, boxes, iouThreshold=iou, confidenceThreshold=confidence)
        kept = numpy_nms(scores, boxes, iou, confidence, False)
        np.testing.assert_array_equal(out["coordinates"], boxes[kept])
    only_iou = _run(spec, scores, boxes, iouThreshold=0.2)
    np.testing.assert_array_equal(only_iou["coordinates"], boxes[numpy_nms(scores, boxes, 0.2, 0.3, False)])


@pytest.mark.parametrize("labels", [["cat", "dog", "bird"], [3, 1, 2]])
def test_class_labels_do_not_change_outputs(labels):
    scores, boxes = _detections(11)
    out = _run(nms_spec(labels=labels, per_class=True, iou=0.4, confidence=0.3), scores, boxes)
    np.testing.assert_array_equal(out["confidence"], scores[numpy_nms(scores, boxes, 0.4, 0.3, True)])


def test_float32_features():
    scores, boxes = _detections(12)
    out = _run(nms_spec(dtype=FLOAT32, iou=0.4, confidence=0.3), scores.astype(np.float32), boxes.astype(np.float32))
    assert out["confidence"].dtype == np.float32
    np.testing.assert_array_equal(out["confidence"], scores[numpy_nms(scores, boxes, 0.4, 0.3, False)])


def test_unset_suppression_method_is_pick_top_across_classes():
    scores, boxes = _detections(13)
    out = _run(nms_spec(per_class=None, iou=0.4, confidence=0.3), scores, boxes)
    np.testing.assert_array_equal(out["confidence"], scores[numpy_nms(scores, boxes, 0.4, 0.3, False)])


# -- refusals -----------------------------------------------------------------------------------------


def _edit(edit, **kw):
    spec = nms_spec(**kw)
    edit(spec)
    return spec


@pytest.mark.parametrize(
    "spec, match",
    [
        (nms_spec(iou=1.5), "iouThreshold"),
        (nms_spec(iou=-0.1), "iouThreshold"),
        (nms_spec(confidence=-0.1), "confidenceThreshold"),
        (nms_spec(labels=["a", "b"], out_rows=4), "2 class labels"),
        (_edit(lambda s: setattr(s.nonMaximumSuppression, "confidenceOutputFeatureName", "nope")), "confidence"),
        (_edit(lambda s: setattr(s.nonMaximumSuppression, "coordinatesInputFeatureName", "")), "input"),
        (_edit(lambda s: s.description.output[1].type.multiArrayType.__setattr__("dataType", FLOAT32)), "element type"),
        (nms_spec(dtype=INT32), "element type"),
        (_edit(lambda s: s.description.output[0].type.multiArrayType.shape.extend([4])), "2 dimensions"),
    ],
)
def test_bad_parameters(spec, match):
    with pytest.raises(MLCParametersError, match=match):
        mlc.load(spec)


def test_unnamed_input_is_refused():
    spec = nms_spec()
    f = spec.description.input.add()
    f.name = "extra"
    f.type.doubleType.SetInParent()
    with pytest.raises(MLCParametersError, match="'extra'"):
        mlc.load(spec)


def test_bad_input_shapes():
    model = mlc.load(nms_spec(labels=["a", "b", "c"]))
    scores, boxes = _detections(14)
    with pytest.raises(MLCFeatureTypeError, match=r"\(N, 4\)"):
        model.predict({"scores": scores, "boxes": boxes[:, :3]})
    with pytest.raises(MLCFeatureTypeError, match="same N"):
        model.predict({"scores": scores[:5], "boxes": boxes})
    with pytest.raises(MLCFeatureTypeError, match="class labels"):
        model.predict({"scores": scores[:, :2], "boxes": boxes})


# -- in a pipeline ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [None, 6])
def test_detector_pipeline(rows):
    """The object-detector layout: a NeuralNetwork producing scores and boxes, then NMS."""
    pytest.importorskip("coremltools")
    from mlc.testing.nn_specs import network

    b = network({"raw_scores": (40, 3), "raw_boxes": (40, 4)}, ["scores", "boxes"], exact=True)
    b.add_activation("s", "LINEAR", "raw_scores", "scores", params=[2.0, 0.0])
    b.add_activation("b", "LINEAR", "raw_boxes", "boxes", params=[1.0, 0.0])
    for o in b.spec.description.output:
        o.type.multiArrayType.dataType = DOUBLE
    nms = nms_spec(out_rows=rows, iou=0.4, confidence=0.6)
    spec = proto("Model").Model()
    spec.specificationVersion = 5
    spec.description.input.extend(b.spec.description.input)
    spec.description.output.extend(nms.description.output)
    spec.pipeline.models.add().CopyFrom(b.spec)
    spec.pipeline.models.add().CopyFrom(nms)
    scores, boxes = _detections(15)
    out = mlc.load(spec).predict({"raw_scores": scores, "raw_boxes": boxes})
    kept = numpy_nms(2 * scores, boxes, 0.4, 0.6, False)[:rows]
    np.testing.assert_array_equal(out["confidence"][: len(kept)], 2 * scores[kept])
    np.testing.assert_array_equal(out["coordinates"][: len(kept)], boxes[kept])
    assert len(out["coordinates"]) == (rows or len(kept))
