"""Tensor transformation ops (iOS15-iOS18 tensor_transformation.py) against numpy / torch.

These ops only move data, so results must match exactly. ``_static`` builds the op on int32
constants only, so mlc evaluates it at compile time, and adds it to a traced input.
"""

import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb

import mlc
from mlc.testing.mil_program import mil_model, run_mil

TARGETS = ["iOS15", "iOS17"]
rng = np.random.default_rng(0)


def _alternating(cases):
    """Each case once, on iOS15 and iOS17 in turn (these ops did not change semantics there)."""
    return [(*case, TARGETS[i % 2]) for i, case in enumerate(cases)]


def _rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _check(body, x, expected, target):
    out, = run_mil(body, {"x": x}, target=target)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


def _static(op_on_consts, expected, target):
    """Run ``op_on_consts()`` (all inputs int32 constants) + a traced zero input of its shape."""
    z = np.zeros(expected.shape, np.int32)
    out, = run_mil(lambda z: mb.add(x=z, y=op_on_consts()), {"z": z}, target=target)
    np.testing.assert_array_equal(out, expected)


# -- reshape family ------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", [[4, -1], [0, -1, 2], [1, 2, 1, 12], [0, 0, -1]])
def test_reshape(target, shape):
    x = _rand(2, 3, 4)
    numpy_shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]  # 0 keeps x's dim (len == rank)
    _check(lambda x: mb.reshape(x=x, shape=np.array(shape, np.int32)), x, x.reshape(numpy_shape), target)


@pytest.mark.parametrize(
    "x_shape, shape, out_shape",
    [
        ((2, 50), [1, 0, -1, 0], (1, 1, 2, 50)),  # coremltools' docstring example: 0s align right
        ((2, 3, 4), [-1, 0], (6, 4)),
        ((2, 3, 4), [1, 0, -1, 0], (1, 2, 3, 4)),
    ],
)
def test_reshape_ios17_zeros_align_right(x_shape, shape, out_shape):
    x = _rand(*x_shape)
    _check(lambda x: mb.reshape(x=x, shape=np.array(shape, np.int32)), x, x.reshape(out_shape), "iOS17")


@pytest.mark.parametrize("target", TARGETS)
def test_reshape_static(target):
    a = np.arange(24, dtype=np.int32)
    _static(lambda: mb.reshape(x=a, shape=np.array([2, -1, 4], np.int32)), a.reshape(2, 3, 4), target)


def test_reshape_shape_computed_at_trace_time():
    """The shape comes from another (static) op, as in programs that compute shapes."""
    x = _rand(2, 3, 4)

    def body(x):
        shape = mb.slice_by_index(x=np.array([6, -1, 99], np.int32), begin=np.array([0], np.int32), end=np.array([2], np.int32))
        return mb.reshape(x=x, shape=shape)

    _check(body, x, x.reshape(6, 4), "iOS17")


def test_reshape_data_dependent_shape_runs_op_by_op():
    """A shape computed from input values: predict runs the model eagerly; jit of the pure function refuses."""
    x, s = _rand(2, 3, 4), np.array([6, 4], np.int32)
    _check_data_dependent(lambda x, s: mb.reshape(x=x, shape=s), {"x": x, "s": s}, x.reshape(6, 4))


def _check_data_dependent(body, feeds, expected):
    import jax

    model = mil_model(body, {n: (a.shape, "int32" if a.dtype == np.int32 else "fp32") for n, a in feeds.items()}, target="iOS17")
    (out,) = model.predict(feeds).values()
    np.testing.assert_array_equal(out, expected)
    fn, params = model.jax_function()
    with pytest.raises(mlc.MLCUnsupportedError, match="output shape depends on data"):
        jax.jit(fn)(params, feeds)


@pytest.mark.parametrize("target", ["iOS16", "iOS17"])
def test_reshape_like(target):
    """Output shape: ref0.shape[0:2] + ref1.shape[1:] (end_mask), the example in coremltools' docstring."""
    x, r = _rand(6, 30), _rand(2, 3, 4)

    def body(x, r):
        ref1 = mb.const(val=np.zeros((1, 5, 6), np.int32))
        return mb.reshape_like(x=x, ref_tensors=(r, ref1), begins=(0, 1), ends=(2, 0), end_masks=(False, True))

    out, = run_mil(body, {"x": x, "r": r}, target=target)
    np.testing.assert_array_equal(out, x.reshape(2, 3, 5, 6))


@pytest.mark.parametrize(
    "x_shape, axes, target",
    _alternating([((3,), [0]), ((3,), [-1]), ((2, 3), [0, -1]), ((2, 3, 4), [1, 3]), ((2, 3), [-4, 1])]),
)
def test_expand_dims(x_shape, axes, target):
    x = _rand(*x_shape)
    _check(lambda x: mb.expand_dims(x=x, axes=axes), x, np.expand_dims(x, axes), target)


@pytest.mark.parametrize("target", TARGETS)
def test_expand_dims_static(target):
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    _static(lambda: mb.expand_dims(x=a, axes=[-1, 0]), a[None, :, :, None], target)


@pytest.mark.parametrize(
    "x_shape, axes, out_shape, target",
    _alternating([
        ((1, 3, 1, 4), None, (3, 4)),
        ((1, 3, 1, 4), [0], (3, 1, 4)),
        ((1, 3, 1, 4), [-2, 0], (3, 4)),
        ((2, 1, 3), [0, 1], (2, 3)),  # like torch: a listed axis whose size is not 1 stays
    ]),
)
def test_squeeze(x_shape, axes, out_shape, target):
    x = _rand(*x_shape)
    kwargs = {} if axes is None else {"axes": axes}
    _check(lambda x: mb.squeeze(x=x, **kwargs), x, x.reshape(out_shape), target)


@pytest.mark.parametrize("target", TARGETS)
def test_squeeze_static(target):
    a = np.arange(6, dtype=np.int32).reshape(1, 2, 1, 3)
    _static(lambda: mb.squeeze(x=a), a.reshape(2, 3), target)


@pytest.mark.parametrize(
    "x_shape, perm, target",
    _alternating([((3, 4), [1, 0]), ((2, 3, 4), [2, 0, 1]), ((2, 3, 4, 5), [-1, 0, -2, 1])]),
)
def test_transpose(x_shape, perm, target):
    x = _rand(*x_shape)
    _check(lambda x: mb.transpose(x=x, perm=perm), x, np.transpose(x, perm), target)


@pytest.mark.parametrize("target", TARGETS)
def test_transpose_static_int(target):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    _static(lambda: mb.transpose(x=a, perm=[1, 2, 0]), a.transpose(1, 2, 0), target)


# -- reverse -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x_shape, axes, target",
    _alternating([((5,), [0]), ((2, 3, 4), None), ((2, 3, 4), [0, -1])]),
)
def test_reverse(x_shape, axes, target):
    x = _rand(*x_shape)
    kwargs = {} if axes is None else {"axes": axes}
    _check(lambda x: mb.reverse(x=x, **kwargs), x, np.flip(x, axes), target)


@pytest.mark.parametrize("target", TARGETS)
def test_reverse_static(target):
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    _static(lambda: mb.reverse(x=a, axes=[-1]), a[:, ::-1], target)


def _reverse_sequence(x, lengths, seq_axis, batch_axis):
    """For each batch index b, reverse the first lengths[b] entries along seq_axis."""
    out = x.copy()
    seq_in_slice = seq_axis - (seq_axis > batch_axis)
    for b, n in enumerate(lengths):
        at = tuple(b if i == batch_axis else slice(None) for i in range(x.ndim))
        dst = np.moveaxis(out[at], seq_in_slice, 0)  # a view of out
        dst[:n] = np.moveaxis(x[at], seq_in_slice, 0)[:n][::-1]
    return out


def test_reverse_sequence_coremltools_example():
    x = np.array([[1, 2, 3, 4, 5, 0, 0, 0], [1, 2, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8]], np.float32)
    expected = np.array(
        [[0, 0, 5, 4, 3, 2, 1, 0], [2, 1, 0, 0, 0, 0, 0, 0], [3, 2, 1, 4, 0, 0, 0, 0], [5, 4, 3, 2, 1, 6, 7, 8]], np.float32
    )
    lengths = np.array([7, 2, 3, 5], np.int32)
    _check(lambda x: mb.reverse_sequence(x=x, lengths=lengths, seq_axis=1, batch_axis=0), x, expected, "iOS15")


@pytest.mark.parametrize(
    "x_shape, seq_axis, batch_axis, target",
    _alternating([((3, 6, 2), 1, 0), ((5, 3, 2), 0, 1), ((2, 4, 3, 5), -1, 2)]),
)
def test_reverse_sequence_traced_lengths(x_shape, seq_axis, batch_axis, target):
    x = _rand(*x_shape)
    s, b = seq_axis % x.ndim, batch_axis % x.ndim
    lengths = rng.integers(0, x_shape[s] + 1, x_shape[b]).astype(np.int32)
    out, = run_mil(
        lambda x, n: mb.reverse_sequence(x=x, lengths=n, seq_axis=seq_axis, batch_axis=batch_axis),
        {"x": x, "n": lengths},
        target=target,
    )
    np.testing.assert_array_equal(out, _reverse_sequence(x, lengths, s, b))


def test_reverse_sequence_static():
    a = np.arange(24, dtype=np.int32).reshape(4, 6)
    lengths = np.array([6, 0, 1, 3], np.int32)
    expected = _reverse_sequence(a, lengths, 1, 0)
    _static(lambda: mb.reverse_sequence(x=a, lengths=lengths, seq_axis=1, batch_axis=0), expected, "iOS17")


# -- slicing -------------------------------------------------------------------------------

# (begin, end, stride, begin_mask, end_mask, squeeze_mask) on x of shape (4, 5, 6), and the numpy index.
_SLICES = [
    ([0, 1, 2], [4, 4, 6], None, None, None, None, np.s_[0:4, 1:4, 2:6]),
    ([1, 0, 0], [3, 5, 6], [1, 2, 3], None, None, None, np.s_[1:3, 0:5:2, 0:6:3]),
    ([-3, -4, 0], [-1, 100, -2], None, None, None, None, np.s_[-3:-1, -4:100, 0:-2]),
    ([3, 4, 5], [0, 0, 0], [-1, -2, -1], None, None, None, np.s_[3:0:-1, 4:0:-2, 5:0:-1]),
    ([-1, -2, 0], [-4, -5, 0], [-1, -1, -1], None, [False, False, True], None, np.s_[-1:-4:-1, -2:-5:-1, 0::-1]),
    ([2, 9, 9], [0, 3, 9], [1, 1, -2], [False, True, True], [True, False, True], None, np.s_[2:, :3, ::-2]),
    ([1, 0, -1], [0, 5, 0], None, None, None, [True, False, True], np.s_[1, 0:5, -1]),
    ([0, -2, 3], [0, 0, 0], [1, -1, 1], None, [False, True, False], [True, False, True], np.s_[0, -2::-1, 3]),
    # A negative end below -size with a negative stride clamps to 0 (coremltools' shape inference), unlike numpy.
    ([2, 0, 0], [-10, 5, 6], [-1, 1, 1], None, None, None, np.s_[2:0:-1, 0:5, 0:6]),
]


def _slice_kwargs(begin, end, stride, begin_mask, end_mask, squeeze_mask):
    kwargs = {"begin": np.array(begin, np.int32), "end": np.array(end, np.int32)}
    if stride is not None:
        kwargs["stride"] = np.array(stride, np.int32)
    for name, mask in (("begin_mask", begin_mask), ("end_mask", end_mask), ("squeeze_mask", squeeze_mask)):
        if mask is not None:
            kwargs[name] = np.array(mask, bool)
    return kwargs


@pytest.mark.parametrize("case, target", _alternating((c,) for c in _SLICES), ids=range(len(_SLICES)))
def test_slice_by_index(case, target):
    x, kwargs = _rand(4, 5, 6), _slice_kwargs(*case[:6])
    _check(lambda x: mb.slice_by_index(x=x, **kwargs), x, x[case[6]], target)


@pytest.mark.parametrize("target", TARGETS)
def test_slice_by_index_static(target):
    a = np.arange(120, dtype=np.int32).reshape(4, 5, 6)
    case = _SLICES[7]
    _static(lambda: mb.slice_by_index(x=a, **_slice_kwargs(*case[:6])), a[case[6]], target)


def test_slice_by_index_data_dependent_begin_runs_op_by_op():
    x, b = _rand(4, 5), np.array([1, 0], np.int32)
    _check_data_dependent(lambda x, b: mb.slice_by_index(x=x, begin=b, end=np.array([3, 5], np.int32)), {"x": x, "b": b}, x[1:3, 0:5])


@pytest.mark.parametrize(
    "begin, size, index, target",
    _alternating([
        ([1, 0, 2], [2, -1, 3], np.s_[1:3, 0:, 2:5]),
        ([-2, -5, 0], [-1, 2, 6], np.s_[-2:, -5:-3, 0:6]),
        ([0, 0, 0], [4, 5, 6], np.s_[:, :, :]),
    ]),
)
def test_slice_by_size(begin, size, index, target):
    x = _rand(4, 5, 6)
    _check(lambda x: mb.slice_by_size(x=x, begin=np.array(begin, np.int32), size=np.array(size, np.int32)), x, x[index], target)


@pytest.mark.parametrize("begin", [[1, 2, 0], [-3, 1, -6]])
def test_slice_by_size_traced_begin(begin):
    x, b = _rand(4, 5, 6), np.array(begin, np.int32)
    size = np.array([2, 3, 6], np.int32)
    out, = run_mil(lambda x, b: mb.slice_by_size(x=x, begin=b, size=size), {"x": x, "b": b}, target="iOS17")
    start = [v % d for v, d in zip(begin, x.shape)]
    np.testing.assert_array_equal(out, x[start[0] : start[0] + 2, start[1] : start[1] + 3, start[2] :])


def test_slice_by_size_static():
    a = np.arange(30, dtype=np.int32).reshape(5, 6)
    begin, size = np.array([-3, 1], np.int32), np.array([2, -1], np.int32)
    _static(lambda: mb.slice_by_size(x=a, begin=begin, size=size), a[2:4, 1:], "iOS15")


def _sliding_windows(x, axis, size, stride):
    w = np.lib.stride_tricks.sliding_window_view(x, size, axis=axis)  # window axis appended last
    w = np.take(w, np.arange(0, w.shape[axis], stride), axis=axis)
    return np.moveaxis(w, -1, axis + 1)


@pytest.mark.parametrize(
    "x_shape, axis, size, stride, target",
    _alternating([((7,), 0, 3, 1), ((2, 9), -1, 2, 3), ((3, 6, 2), 1, 4, 2), ((5, 2, 3), -3, 5, 1)]),
)
def test_sliding_windows(x_shape, axis, size, stride, target):
    x = _rand(*x_shape)
    expected = _sliding_windows(x, axis % x.ndim, size, stride)
    _check(lambda x: mb.sliding_windows(x=x, axis=axis, size=size, stride=stride), x, expected, target)


def test_sliding_windows_static_default_stride():
    a = np.arange(12, dtype=np.int32).reshape(2, 6)
    _static(lambda: mb.sliding_windows(x=a, axis=1, size=3), _sliding_windows(a, 1, 3, 1), "iOS17")


# slice_update (iOS18): (begin, end, stride, begin_mask, end_mask, squeeze_mask) on x of shape (4, 5), numpy index.
_UPDATES = [
    ([1, 0], [3, 0], [1, 2], None, [False, True], None, np.s_[1:3, ::2]),
    ([3, 1], [0, 0], [-1, 1], None, None, [False, True], np.s_[3:0:-1, 1]),
    ([-2, -3], [0, -1], None, None, [True, False], None, np.s_[-2:, -3:-1]),
]


@pytest.mark.parametrize("runtime_bounds", [False, True], ids=["const-bounds", "input-bounds"])
@pytest.mark.parametrize("case", _UPDATES, ids=range(len(_UPDATES)))
def test_slice_update(case, runtime_bounds):
    """begin/end as constants, or as model inputs (run-time values, as a KV cache's position)."""
    x, index = _rand(4, 5), case[6]
    update = _rand(*x[index].shape)
    expected = x.copy()
    expected[index] = update
    kwargs = _slice_kwargs(*case[:6])
    feeds = {"x": x, "u": update}
    if runtime_bounds:
        feeds["begin"], feeds["end"] = kwargs.pop("begin"), kwargs.pop("end")
    out, = run_mil(lambda x, u, **bounds: mb.slice_update(x=x, update=u, **bounds, **kwargs), feeds, target="iOS18")
    np.testing.assert_array_equal(out, expected)


def test_slice_update_static():
    a, u = np.arange(20, dtype=np.int32).reshape(4, 5), np.array([[-1, -2]], np.int32)
    expected = a.copy()
    expected[-1:, 4:0:-3] = u
    kwargs = _slice_kwargs([-1, 4], [0, 0], [1, -3], None, [True, False], None)
    _static(lambda: mb.slice_update(x=a, update=u, **kwargs), expected, "iOS18")


# -- depth / space / batch -----------------------------------------------------------------


def _depth_to_space(x, b):
    """TensorFlow's DepthToSpace (DCR) in NCHW: channel block (i * b + j) fills pixels (i::b, j::b)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c // (b * b), h * b, w * b), x.dtype)
    for i in range(b):
        for j in range(b):
            k = i * b + j
            out[:, :, i::b, j::b] = x[:, k * (c // (b * b)) : (k + 1) * (c // (b * b))]
    return out


def _space_to_depth(x, b):
    """The inverse of _depth_to_space: pixels (i::b, j::b) become channel block i * b + j."""
    return np.concatenate([x[:, :, i::b, j::b] for i in range(b) for j in range(b)], axis=1)


def test_depth_to_space_coremltools_example():
    x = np.array([[[[9.0]], [[5.0]], [[1.0]], [[3.0]]]], np.float32)
    _check(lambda x: mb.depth_to_space(x=x, block_size=2), x, np.array([[[[9.0, 5.0], [1.0, 3.0]]]], np.float32), "iOS15")


@pytest.mark.parametrize(
    "x_shape, block, target",
    _alternating([((1, 8, 2, 3), 2), ((2, 18, 1, 2), 3)]),
)
def test_depth_to_space(x_shape, block, target):
    x = _rand(*x_shape)
    _check(lambda x: mb.depth_to_space(x=x, block_size=block), x, _depth_to_space(x, block), target)


@pytest.mark.parametrize(
    "x_shape, block, target",
    _alternating([((1, 2, 4, 6), 2), ((2, 3, 3, 6), 3)]),
)
def test_space_to_depth(x_shape, block, target):
    x = _rand(*x_shape)
    _check(lambda x: mb.space_to_depth(x=x, block_size=block), x, _space_to_depth(x, block), target)


@pytest.mark.parametrize(
    "x_shape, factor, target",
    _alternating([((1, 8, 2, 3), 2), ((2, 18, 1, 2), 3)]),
)
def test_pixel_shuffle(x_shape, factor, target):
    x = _rand(*x_shape)
    expected = torch.nn.functional.pixel_shuffle(torch.from_numpy(x), factor).numpy()
    _check(lambda x: mb.pixel_shuffle(x=x, upscale_factor=factor), x, expected, target)


@pytest.mark.parametrize("x_shape, factor, target", [((1, 2, 4, 6), 2, "iOS16"), ((2, 3, 3, 6), 3, "iOS17")])
def test_pixel_unshuffle(x_shape, factor, target):
    x = _rand(*x_shape)
    expected = torch.nn.functional.pixel_unshuffle(torch.from_numpy(x), factor).numpy()
    _check(lambda x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(factor)), x, expected, target)


def _space_to_batch(x, block, pads):
    """TensorFlow's SpaceToBatchND in NCHW: block offset (i, j) of image n goes to batch (i * bw + j) * N + n."""
    bh, bw = block
    x = np.pad(x, ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])))
    return np.concatenate([x[:, :, i::bh, j::bw] for i in range(bh) for j in range(bw)], axis=0)


def _batch_to_space(x, block, crops):
    bh, bw = block
    nb, c, h, w = x.shape
    n = nb // (bh * bw)
    out = np.zeros((n, c, h * bh, w * bw), x.dtype)
    for i in range(bh):
        for j in range(bw):
            k = i * bw + j
            out[:, :, i::bh, j::bw] = x[k * n : (k + 1) * n]
    return out[:, :, crops[0][0] : h * bh - crops[0][1], crops[1][0] : w * bw - crops[1][1]]


def test_space_to_batch_coremltools_example():
    x = np.arange(1, 17, dtype=np.float32).reshape(2, 1, 2, 4)
    expected = np.array(
        [[0, 1, 3], [0, 9, 11], [0, 2, 4], [0, 10, 12], [0, 5, 7], [0, 13, 15], [0, 6, 8], [0, 14, 16]], np.float32
    ).reshape(8, 1, 1, 3)
    _check(lambda x: mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 0], [2, 0]]), x, expected, "iOS15")


@pytest.mark.parametrize(
    "x_shape, block, pads, target",
    _alternating([((2, 3, 4, 6), [2, 3], [[0, 0], [0, 0]]), ((1, 2, 3, 2), [2, 2], [[1, 0], [0, 2]])]),
)
def test_space_to_batch(x_shape, block, pads, target):
    x = _rand(*x_shape)
    _check(lambda x: mb.space_to_batch(x=x, block_shape=block, paddings=pads), x, _space_to_batch(x, block, pads), target)


@pytest.mark.parametrize(
    "x_shape, block, crops, target",
    _alternating([((12, 3, 2, 2), [2, 3], [[0, 0], [0, 0]]), ((8, 2, 2, 3), [2, 2], [[1, 0], [2, 1]])]),
)
def test_batch_to_space(x_shape, block, crops, target):
    x = _rand(*x_shape)
    _check(lambda x: mb.batch_to_space(x=x, block_shape=block, crops=crops), x, _batch_to_space(x, block, crops), target)


def test_slice_by_size_to_the_end_from_an_input_begin_runs_op_by_op():
    """size -1 with a run-time begin: the output shape depends on begin, so predict runs eagerly."""
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    for begin in ([1, 2], [3, 0]):
        b = np.array(begin, np.int32)
        (out,) = run_mil(lambda x, b: mb.slice_by_size(x=x, begin=b, size=np.array([-1, 3], np.int32)), {"x": x, "b": b})
        np.testing.assert_array_equal(out, x[begin[0] :, begin[1] : begin[1] + 3])
