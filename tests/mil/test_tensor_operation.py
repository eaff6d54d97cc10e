"""Tensor operations (tensor_operation.py and select) against numpy / torch."""

import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb

import mlc
from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(actual, expected, rtol=1e-6, atol=1e-6):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def same(actual, expected):
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    np.testing.assert_array_equal(actual, expected)


# -- band_part, cumsum -------------------------------------------------------------------------
@pytest.mark.parametrize("lower, upper", [(-1, -1), (0, -1), (-1, 0), (1, 2)])
def test_band_part(lower, upper):
    x = rand(2, 4, 5)
    expected = x
    if lower >= 0:
        expected = np.triu(expected, -lower)
    if upper >= 0:
        expected = np.tril(expected, upper)
    out, = run_mil(lambda x: mb.band_part(x=x, lower=lower, upper=upper), {"x": x})
    same(out, expected)


@pytest.mark.parametrize("axis, exclusive, reverse", [(0, False, False), (-1, True, False), (1, False, True), (-1, True, True)])
def test_cumsum(axis, exclusive, reverse):
    x = rand(3, 4, 5)
    t = torch.from_numpy(x)
    if reverse:
        t = t.flip(axis)
    y = t.cumsum(axis)
    if exclusive:
        y = y - t
    expected = (y.flip(axis) if reverse else y).numpy()
    out, = run_mil(lambda x: mb.cumsum(x=x, axis=axis, exclusive=exclusive, reverse=reverse), {"x": x})
    close(out, expected, rtol=1e-5, atol=1e-5)  # summation order differs


def test_cumsum_int_exclusive_default_axis():
    x = RNG.integers(-5, 5, (4, 3)).astype(np.int32)
    out, = run_mil(lambda x: mb.cumsum(x=x, exclusive=True), {"x": x})
    same(out, np.cumsum(x, axis=0) - x)


# -- fill, fill_like ---------------------------------------------------------------------------
def test_fill_from_traced_shape():
    x = rand(2, 3, 4)
    out, ints = run_mil(lambda x: (mb.fill(shape=mb.shape(x=x), value=2.5), mb.fill(shape=mb.shape(x=x), value=np.int32(7))), {"x": x})
    same(out, np.full((2, 3, 4), 2.5, np.float32))
    same(ints, np.full((2, 3, 4), 7, np.int32))


def test_fill_static():
    x = rand(2, 3)
    out, = run_mil(lambda x: mb.add(x=x, y=mb.fill(shape=np.array([2, 3], np.int32), value=1.5)), {"x": x})
    same(out, x + np.float32(1.5))


@pytest.mark.parametrize("target", ["iOS16", "iOS17"])
def test_fill_like(target):
    x = rand(3, 1, 2)
    out, ints = run_mil(lambda x: (mb.fill_like(ref_tensor=x, value=-3.0), mb.fill_like(ref_tensor=x, value=np.int32(4))), {"x": x}, target=target)
    same(out, np.full((3, 1, 2), -3.0, np.float32))
    assert ints.dtype == np.int32
    same(ints, np.full((3, 1, 2), 4, np.int32))


# -- non_maximum_suppression -------------------------------------------------------------------
def _iou(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _ref_nms(boxes, scores, iou_threshold, score_threshold, max_boxes, per_class):
    """Greedy NMS per the spec (boxes (n, B, 4), scores (n, B, K)); as Core ML, at least one box."""
    n, _, k = scores.shape
    out = (np.zeros((n, max_boxes, 4), np.float32), np.zeros((n, max_boxes, k), np.float32), -np.ones((n, max_boxes), np.int32), np.zeros(n, np.int32))
    for b in range(n):
        best, cls = scores[b].max(-1), scores[b].argmax(-1)
        kept = []
        for i in sorted(range(len(best)), key=lambda i: -best[i]):
            if score_threshold is not None and best[i] < score_threshold:
                continue
            if any(_iou(boxes[b, i], boxes[b, j]) > iou_threshold and (not per_class or cls[i] == cls[j]) for j in kept):
                continue
            kept.append(i)
        kept = (kept or [int(best.argmax())])[:max_boxes]
        m = len(kept)
        out[0][b, :m], out[1][b, :m], out[2][b, :m], out[3][b] = boxes[b, kept], scores[b, kept], kept, m
    return out


def test_nms_ios15_smoke():
    """The example of coremltools' own test, whose expectations Apple checks on Core ML."""
    boxes = np.array([[[0.0] * 4, [1.0] * 4, [2.0] * 4, [3.0] * 4]], np.float32)
    scores = np.array([[[-3.5], [9.4], [2.3], [0.7]]], np.float32)
    out = run_mil(
        lambda boxes, scores: mb.non_maximum_suppression(
            boxes=boxes, scores=scores, iou_threshold=0.2, score_threshold=0.4, max_boxes=2, per_class_suppression=True
        ),
        {"boxes": boxes, "scores": scores},
        target="iOS15",
    )
    same(out[0], [[[1.0] * 4, [2.0] * 4]])
    same(out[1], np.array([[[9.4], [2.3]]], np.float32))
    same(out[2], [[1, 2]])
    same(out[3], [2])


def _nms_inputs(n, b, k):
    centers = RNG.uniform(0, 60, (n, b, 2))
    sizes = RNG.uniform(5, 30, (n, b, 2))
    scores = RNG.permutation(n * b * k).reshape(n, b, k) / (n * b * k) - 0.5  # distinct scores
    return np.concatenate([centers, sizes], -1).astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize(
    "per_class, score_threshold, max_boxes",
    [(False, -1.0, 5), (True, 0.1, 6), (False, 0.6, 4), (True, -1.0, 30)],  # 0.6: no box passes
)
def test_nms_ios15(per_class, score_threshold, max_boxes):
    boxes, scores = _nms_inputs(2, 20, 3)
    out = run_mil(
        lambda boxes, scores: mb.non_maximum_suppression(
            boxes=boxes, scores=scores, iou_threshold=0.25, score_threshold=score_threshold, max_boxes=max_boxes,
            per_class_suppression=per_class,
        ),
        {"boxes": boxes, "scores": scores},
        target="iOS15",
    )
    for actual, expected in zip(out, _ref_nms(boxes, scores, 0.25, score_threshold, max_boxes, per_class)):
        same(actual, expected)


@pytest.mark.parametrize("per_class, max_boxes", [(False, 7), (True, 25)])
def test_nms_ios17(per_class, max_boxes):
    boxes, scores = _nms_inputs(2, 20, 3)
    out = run_mil(
        lambda boxes, scores: mb.non_maximum_suppression(
            boxes=boxes, scores=scores, iou_threshold=0.3, max_boxes=max_boxes, per_class_suppression=per_class
        ),
        {"boxes": boxes.transpose(0, 2, 1).copy(), "scores": scores.transpose(0, 2, 1).copy()},
        target="iOS17",
    )
    ref = _ref_nms(boxes, scores, 0.3, None, max_boxes, per_class)
    assert len(out) == 3
    same(out[0], ref[0].transpose(0, 2, 1))
    same(out[1], ref[1].transpose(0, 2, 1))
    same(out[2], ref[2])


# -- non_zero (data-dependent shape), range_1d -------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_non_zero(dtype):
    x = (RNG.integers(0, 3, (3, 4, 2)) * (RNG.random((3, 4, 2)) > 0.5)).astype(dtype)
    out, = run_mil(lambda x: mb.non_zero(x=x), {"x": x})
    same(out, np.argwhere(x))


def test_range_1d_with_concrete_end_in_eager_program():
    """With a data-dependent op the program runs op by op, so range_1d can read a computed end."""
    x = np.array([1, 0, 3, 0, 2], np.int32)

    def body(x):
        return mb.non_zero(x=x), mb.range_1d(start=np.int32(1), end=mb.reduce_sum(x=x, axes=[0]), step=np.int32(2))

    nz, r = run_mil(body, {"x": x})
    same(nz, np.argwhere(x))
    same(r, np.arange(1, 6, 2, dtype=np.int32))


@pytest.mark.parametrize(
    "start, end, step", [(0, 5, 1), (7, -3, -2), (0.5, 2.0, 0.25), (1.0, -1.0, -0.3)]
)
def test_range_1d_static(start, end, step):
    dtype = np.int32 if isinstance(start, int) else np.float32
    x = np.zeros(1, dtype)
    out, = run_mil(lambda x: mb.add(x=x, y=mb.range_1d(start=dtype(start), end=dtype(end), step=dtype(step))), {"x": x})
    expected = np.arange(dtype(start), dtype(end), dtype(step), dtype=dtype)
    assert out.dtype == dtype
    close(out, expected)


def test_range_1d_from_shape_arithmetic():
    x = rand(2, 6)
    out, = run_mil(lambda x: mb.range_1d(start=np.int32(0), end=mb.gather(x=mb.shape(x=x), indices=np.int32(-1)), step=np.int32(1)), {"x": x})
    same(out, np.arange(6, dtype=np.int32))


def test_range_1d_with_a_traced_end_runs_op_by_op():
    """The length depends on input values: predict falls back to eager, jit of the pure function refuses."""
    import jax

    from mlc.testing.mil_program import mil_model

    x = np.array([2, 3], np.int32)
    model = mil_model(lambda x: mb.range_1d(start=np.int32(0), end=mb.reduce_sum(x=x, axes=[0]), step=np.int32(1)), {"x": ((2,), "int32")})
    (out,) = model.predict({"x": x}).values()
    same(out, np.arange(5, dtype=np.int32))
    (out,) = model.predict({"x": np.array([1, 1], np.int32)}).values()
    same(out, np.arange(2, dtype=np.int32))
    fn, params = model.jax_function()
    with pytest.raises(mlc.MLCUnsupportedError, match="range_1d.*output shape depends on data"):
        jax.jit(fn)(params, {"x": x})


# -- one_hot, pad, tile ------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(axis):
    idx = np.array([[0, 3, 1], [2, 5, -1]], np.int32)  # 5 and -1 are out of range: all off_value
    out, = run_mil(lambda i: mb.one_hot(indices=i, one_hot_vector_size=4, axis=axis, on_value=2.0, off_value=-1.0), {"i": idx})
    hot = idx[..., None] == np.arange(4)
    same(out, np.moveaxis(np.where(hot, 2.0, -1.0).astype(np.float32), -1, axis))


@pytest.mark.parametrize(
    "pad, mode",
    [([1, 2], "constant"), ([0, 1, 2, 0], "constant"), ([1, 2, 2, 1], "reflect"), ([2, 0, 1, 3], "replicate"), ([1, 0, 0, 1, 1, 2], "replicate")],
)
def test_pad(pad, mode):
    x = rand(2, 3, 4)
    pairs = [(0, 0)] * (3 - len(pad) // 2) + [tuple(pad[i : i + 2]) for i in range(0, len(pad), 2)]
    if mode == "constant":
        expected = np.pad(x, pairs, constant_values=0.5)
    else:
        expected = np.pad(x, pairs, mode="edge" if mode == "replicate" else mode)
    kwargs = {"constant_val": np.float32(0.5)} if mode == "constant" else {}
    out, = run_mil(lambda x: mb.pad(x=x, pad=np.array(pad, np.int32), mode=mode, **kwargs), {"x": x})
    same(out, expected)


def test_pad_from_shape_arithmetic():
    """Pad amounts computed from a shape stay static."""
    x = rand(3, 2)
    out, = run_mil(lambda x: mb.pad(x=x, pad=mb.concat(values=[mb.shape(x=x), np.array([0, 1], np.int32)], axis=0)), {"x": x})
    same(out, np.pad(x, [(3, 2), (0, 1)]))


@pytest.mark.parametrize("reps", [[2, 1, 3], [1, 1, 1]])
def test_tile(reps):
    x = rand(2, 3, 1)
    out, = run_mil(lambda x: mb.tile(x=x, reps=reps), {"x": x})
    same(out, np.tile(x, reps))


def test_tile_static():
    x = np.zeros((2, 6), np.int32)
    out, = run_mil(lambda x: mb.add(x=x, y=mb.tile(x=np.array([[1, 2, 3]], np.int32), reps=[2, 2])), {"x": x})
    same(out, np.tile(np.array([[1, 2, 3]]), [2, 2]))


# -- argsort, topk -----------------------------------------------------------------------------
@pytest.mark.parametrize("axis, ascending", [(-1, False), (0, True)])
def test_argsort(axis, ascending):
    x = RNG.permutation(60).reshape(3, 4, 5).astype(np.float32)
    out, = run_mil(lambda x: mb.argsort(x=x, axis=axis, ascending=ascending), {"x": x})
    same(out, torch.argsort(torch.from_numpy(x), dim=axis, descending=not ascending).numpy())


def test_argsort_ties_are_stable():
    x = np.array([[1, 3, 3, 2, 3, 1]], np.int32)
    out, = run_mil(lambda x: mb.argsort(x=x), {"x": x})
    same(out, [[1, 2, 4, 3, 0, 5]])


@pytest.mark.parametrize("k, axis, ascending", [(1, -1, False), (3, 0, False), (2, 1, True)])
def test_topk_ios15(k, axis, ascending):
    x = RNG.permutation(60).reshape(4, 3, 5).astype(np.float32)
    values, indices = run_mil(lambda x: mb.topk(x=x, k=k, axis=axis, ascending=ascending), {"x": x}, target="iOS15")
    ref = torch.topk(torch.from_numpy(x), k, dim=axis, largest=not ascending)
    same(values, ref.values.numpy())
    same(indices, ref.indices.numpy())


def test_topk_ios17_values_only_and_ascending():
    x = RNG.permutation(24).reshape(2, 12).astype(np.int32)

    def body(x):
        return mb.topk(x=x, k=3, sort=True, return_indices=False), *mb.topk(x=x, k=12, ascending=True)

    top3, values, indices = run_mil(body, {"x": x}, target="iOS17")
    same(top3, -np.sort(-x, axis=-1)[:, :3])
    same(values, np.sort(x, axis=-1))
    same(indices, np.argsort(x, axis=-1))


def test_topk_ios16():
    x = rand(3, 8)
    values, indices = run_mil(lambda x: mb.topk(x=x, k=2, axis=-1, sort=True), {"x": x}, target="iOS16")
    ref = torch.topk(torch.from_numpy(x), 2)
    same(values, ref.values.numpy())
    same(indices, ref.indices.numpy())


# -- flatten2d, shape --------------------------------------------------------------------------
@pytest.mark.parametrize("shape, axis, expected", [((2, 3, 4), 1, (2, 12)), ((2, 3, 4), -1, (6, 4)), ((3,), -1, (1, 3)), ((3,), 1, (3, 1))])
def test_flatten2d(shape, axis, expected):
    x = rand(*shape)
    out, = run_mil(lambda x: mb.flatten2d(x=x, axis=axis), {"x": x})
    same(out, x.reshape(expected))


def test_shape_of_traced_input_is_static():
    x = rand(2, 3, 4)
    s, tiled = run_mil(lambda x: (mb.shape(x=x), mb.tile(x=x, reps=mb.shape(x=x))), {"x": x})  # tile needs reps static
    same(s, np.array([2, 3, 4], np.int32))
    same(tiled, np.tile(x, [2, 3, 4]))


def test_shape_static():
    x = np.zeros(2, np.int32)
    out, = run_mil(lambda x: mb.add(x=x, y=mb.shape(x=np.zeros((5, 7), np.int32))), {"x": x})
    same(out, [5, 7])


# -- concat, split, stack, identity, select ----------------------------------------------------
@pytest.mark.parametrize("axis", [0, -1])
def test_concat(axis):
    a, b = rand(2, 3), rand(2, 3)
    c = rand(2, 3)  # a float constant: a traced param
    out, = run_mil(lambda a, b: mb.concat(values=[a, b, c], axis=axis), {"a": a, "b": b})
    same(out, np.concatenate([a, b, c], axis=axis))


def test_concat_interleave():
    a, b = rand(3, 2), rand(3, 2)
    out, = run_mil(lambda a, b: mb.concat(values=[a, b], axis=0, interleave=True), {"a": a, "b": b})
    expected = np.empty((6, 2), np.float32)
    expected[0::2], expected[1::2] = a, b
    same(out, expected)


def test_concat_static_shape_arithmetic():
    """shape -> gather -> concat folds to numpy, so it can feed fill's static shape."""
    x = rand(2, 3, 4)

    def body(x):
        last = mb.gather(x=mb.shape(x=x), indices=np.array([-1, 0], np.int32))
        return mb.fill(shape=mb.concat(values=[np.array([5], np.int32), last], axis=0), value=1.0)

    out, = run_mil(body, {"x": x})
    same(out, np.ones((5, 4, 2), np.float32))


@pytest.mark.parametrize("kwargs", [{"num_splits": 3, "axis": 1}, {"split_sizes": [1, 3, 2], "axis": -1}, {"num_splits": 1, "axis": 0}])
def test_split(kwargs):
    x = rand(2, 6, 6)
    outs = run_mil(lambda x: mb.split(x=x, **kwargs), {"x": x})
    if "split_sizes" in kwargs:
        expected = np.split(x, np.cumsum(kwargs["split_sizes"])[:-1], axis=kwargs["axis"])
    else:
        expected = np.split(x, kwargs["num_splits"], axis=kwargs["axis"])
    assert len(outs) == len(expected)
    for o, e in zip(outs, expected):
        same(o, e)


def test_split_static():
    x = rand(4, 3)

    def body(x):
        a, b = mb.split(x=mb.shape(x=x), split_sizes=[1, 1], axis=0)
        return mb.fill(shape=mb.concat(values=[b, a], axis=0), value=0.0)

    out, = run_mil(body, {"x": x})
    same(out, np.zeros((3, 4), np.float32))


@pytest.mark.parametrize("axis", [0, -1, 1])
def test_stack(axis):
    a, b = rand(2, 3), rand(2, 3)
    out, = run_mil(lambda a, b: mb.stack(values=[a, b], axis=axis), {"a": a, "b": b})
    same(out, np.stack([a, b], axis=axis))


def test_stack_static():
    x = rand(3, 2)

    def body(x):
        s = mb.shape(x=x)
        return mb.fill(shape=mb.stack(values=[mb.gather(x=s, indices=np.int32(1)), np.int32(4)], axis=0), value=1.0)

    out, = run_mil(body, {"x": x})
    same(out, np.ones((2, 4), np.float32))


def _stack_of_flexible(default, axis=1):
    """stack([a, b, relu(c)]) with a, b (2, 3, 4) and c (2, 3, RangeDim(1..10, default)): coremltools'
    TestStack::test_stack_dynamic_range_dim as a MIL program."""
    import coremltools as ct
    from coremltools.converters.mil.mil import get_new_symbol, types

    specs = [mb.TensorSpec(shape=shape, dtype=types.fp32) for shape in ((2, 3, 4), (2, 3, 4), (2, 3, get_new_symbol()))]

    @mb.program(input_specs=specs, opset_version=ct.target.iOS17)
    def prog(a, b, c):
        return mb.stack(values=[a, b, mb.relu(x=c)], axis=axis)

    inputs = [ct.TensorType(name="a", shape=(2, 3, 4)), ct.TensorType(name="b", shape=(2, 3, 4)),
              ct.TensorType(name="c", shape=(2, 3, ct.RangeDim(1, 10, default=default)))]
    return ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                      compute_precision=ct.precision.FLOAT32, pass_pipeline=ct.PassPipeline.EMPTY, inputs=inputs)


def test_stack_of_flexible_input_refused_at_load_when_default_shapes_differ():
    """Core ML compiles the program for the inputs' default shapes and refuses a stack of (2, 3, 4) values with
    a (2, 3, 2) one there, whatever the predictions feed; mlc refuses it at load, naming the op and the shapes."""
    with pytest.raises(mlc.MLCParametersError, match=r"'stack_\d+' \(stack\).*\(2, 3, 4\), \(2, 3, 4\), \(2, 3, 2\)"
                       r".*default shapes \{'c': \(2, 3, 2\)\}"):
        mlc.load(_stack_of_flexible(default=2))


def test_stack_of_flexible_input_checked_at_predict():
    """At default (2, 3, 4) it loads and stacks; a prediction feeding c another size the range allows is refused."""
    model = mlc.load(_stack_of_flexible(default=4))
    a, b, c = rand(2, 3, 4), rand(2, 3, 4), rand(2, 3, 4)
    (out,) = model.predict({"a": a, "b": b, "c": c}).values()
    same(out, np.stack([a, b, np.maximum(c, 0)], axis=1))
    with pytest.raises(mlc.MLCParametersError, match=r"'stack_\d+' \(stack\).*\(2, 3, 4\), \(2, 3, 4\), \(2, 3, 5\)"):
        model.predict({"a": a, "b": b, "c": rand(2, 3, 5)})


def test_stack_of_declared_different_shapes_refused_at_load():
    """Declared types that already differ (a file edited by hand: b declared (2, 4)) are refused at load."""
    from mlc.testing.mil_program import mil_mlmodel

    mlmodel = mil_mlmodel(lambda a, b: mb.stack(values=[a, b], axis=0), {"a": (2, 3), "b": (2, 3)})
    spec = mlmodel.get_spec()
    (b_input,) = [i for i in spec.mlProgram.functions["main"].inputs if i.name == "b"]
    b_input.type.tensorType.dimensions[1].constant.size = 4
    spec.description.input[1].type.multiArrayType.shape[1] = 4
    import coremltools as ct

    edited = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    with pytest.raises(mlc.MLCParametersError, match=r"'stack_\d+' \(stack\): its values must all have the same shape.*"
                       r"\(2, 3\) \('a'\), \(2, 4\) \('b'\)"):
        mlc.load(edited)


def test_identity():
    x = rand(2, 3)
    out, = run_mil(lambda x: mb.identity(x=x), {"x": x})
    same(out, x)


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_select_broadcasts(target):
    cond = RNG.random((3, 1, 4)) > 0.5
    a, b = rand(2, 4), rand(3, 2, 1)
    out, ints = run_mil(
        lambda c, a, b: (mb.select(cond=c, a=a, b=b), mb.select(cond=c, a=np.int32(1), b=np.int32(-1))),
        {"c": cond, "a": a, "b": b},
        target=target,
    )
    same(out, np.where(cond, a, b))
    same(ints, np.where(cond, 1, -1).astype(np.int32))
