"""Compressed-weight ops (iOS16 constexpr_*, iOS18 compression ops) and iOS17 quantize/dequantize
against numpy references written from coremltools' op docs.

Each program returns its decompressed constants (added to a zero input, or cast to fp32), so
the whole model runs through mlc. The iOS18 ops are also run directly under ``jax.jit``, where
their data are traced, as they are inside a jitted model.
"""

import itertools

import jax
import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

import mlc
from mlc.frontends.mil.registry import find
from mlc.testing.mil_program import mil_mlmodel, run_mil

RNG = np.random.default_rng(7)
UINT = {n: types.nptype_from_builtin(types.string_to_builtin(f"uint{n}")) for n in (1, 2, 3, 4, 6, 8)}
INT4 = types.np_int4_dtype
ZERO = {"z": np.zeros((1,), np.float32)}


def _run(consts, target, **kwargs):
    """Run a program whose outputs are ``consts()`` (a list of MIL values), as fp32."""

    def body(z):
        return [mb.add(x=c if c.dtype == types.fp32 else mb.cast(x=c, dtype="fp32"), y=z) for c in consts()]

    return run_mil(body, ZERO, target=target, **kwargs)


def _check(outs, refs, **tol):
    assert len(outs) == len(refs)
    for i, (out, ref) in enumerate(zip(outs, refs)):
        ref = np.asarray(ref, np.float32)
        assert out.shape == ref.shape, (i, out.shape, ref.shape)
        np.testing.assert_allclose(out, ref, err_msg=f"case {i}", **tol)


def _pack(values, nbits):
    """Unsigned ``nbits`` values packed LSB first into bytes, as the iOS16 ops store them."""
    bits = (np.asarray(values, np.int64).reshape(-1, 1) >> np.arange(nbits)) & 1
    return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="little")


def _jit(name, cases, static=()):
    """The registered iOS18 lowering of ``name`` run on each case in one jax.jit: data traced, ``static`` inputs not."""
    fn = find(name, "CoreML8").fn
    traced = [{k: v for k, v in c.items() if k not in static} for c in cases]
    fixed = [{k: v for k, v in c.items() if k in static} for c in cases]
    outs = jax.jit(lambda cs: [fn(**c, **f) for c, f in zip(cs, fixed)])(traced)
    return jax.tree_util.tree_map(np.asarray, outs)


# -- numpy references ----------------------------------------------------------------------


def _ref_blocks(p, shape):
    """``p`` with each entry repeated over its block of ``shape``."""
    for axis, size in enumerate(shape):
        p = np.repeat(p, size // p.shape[axis], axis=axis)
    return p


def _ref_lut(indices, lut, vector_axis=None):
    """Element by element: the group's LUT row, its vector laid along vector_axis."""
    groups, vector = lut.shape[:-2], lut.shape[-1]
    shape = list(indices.shape)
    axis = None if vector_axis is None else vector_axis % indices.ndim
    if vector > 1:
        shape[axis] *= vector
    out = np.zeros(shape, lut.dtype)
    for pos in np.ndindex(*indices.shape):
        group = tuple(p // (s // g) for p, s, g in zip(pos, indices.shape, groups))
        entry = lut[group + (int(indices[pos]),)]
        for v in range(vector):
            at = list(pos)
            if vector > 1:
                at[axis] = pos[axis] * vector + v
            out[tuple(at)] = entry[v]
    return out


def _ref_sparse(nonzero, mask):
    out = np.zeros(mask.shape, nonzero.dtype)
    out[mask != 0] = nonzero
    return out


def _sparse(dense_shape, density, dtype=np.float32):
    mask = (RNG.random(dense_shape) < density).astype(UINT[1])
    mask.reshape(-1)[0] = 1
    n = int(mask.sum())
    if np.issubdtype(dtype, np.floating):
        return mask, RNG.standard_normal(n).astype(dtype)
    return mask, RNG.integers(-8, 8, n).astype(dtype)


# -- iOS16 -----------------------------------------------------------------------------------

# (shape, quantized dtype, zero_point: None=scalar / dtype of a vector, vector scale?, axis)
AFFINE = [
    ((6,), np.uint8, None, False, 0),
    ((3, 4), np.int8, np.int8, True, 0),
    ((3, 4), np.uint8, np.uint8, False, -1),
    ((2, 3, 4), np.int8, np.float32, True, -2),
    ((2, 3, 2, 5), np.uint8, np.uint8, True, 1),
]


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_constexpr_affine_dequantize(target):
    cases, refs = [], []
    for shape, qtype, zp_type, vector_scale, axis in AFFINE:
        info = np.iinfo(qtype)
        q = RNG.integers(info.min, info.max + 1, shape).astype(qtype)
        n = shape[axis]
        zp = qtype(3) if zp_type is None else RNG.integers(info.min // 2, info.max // 2, n).astype(zp_type)
        scale = RNG.uniform(0.1, 2, n).astype(np.float32) if vector_scale else np.float32(0.25)
        cases.append(dict(quantized_data=q, zero_point=zp, scale=scale, axis=axis))
        along = [1] * len(shape)
        along[axis] = -1
        refs.append((q.astype(np.float64) - np.reshape(zp, along if zp.ndim else ())) * np.reshape(scale, along if scale.ndim else ()))
    outs = _run(lambda: [mb.constexpr_affine_dequantize(**c) for c in cases], target)
    _check(outs, refs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_constexpr_cast(target):
    src = RNG.standard_normal((3, 5)).astype(np.float16)
    (out,) = _run(lambda: [mb.constexpr_cast(source_val=src, output_dtype="fp32")], target)
    _check([out], [src.astype(np.float32)], rtol=0, atol=0)


@pytest.mark.parametrize("target", ["iOS16", "iOS17"])
def test_constexpr_lut_to_dense_ios16(target):
    cases, refs = [], []
    for nbits, shape, lut_dtype in [
        (1, (13,), np.float32),
        (2, (3, 5), np.float32),
        (4, (2, 3, 3), np.float16),
        (6, (7, 3), np.float32),
        (8, (4, 5), np.int8),
        (2, (1,), np.uint8),
    ]:
        if target == "iOS16" and lut_dtype in (np.int8, np.uint8):
            continue  # an iOS16 program cannot cast int8 to a float output
        idx = RNG.integers(0, 2**nbits, shape)
        if np.issubdtype(lut_dtype, np.floating):
            lut = RNG.standard_normal(2**nbits).astype(lut_dtype)
        else:
            lut = RNG.integers(0, 100, 2**nbits).astype(lut_dtype)
        cases.append(dict(indices=_pack(idx, nbits), lut=lut, shape=np.array(shape, np.uint32)))
        refs.append(lut[idx])
    outs = _run(lambda: [mb.constexpr_lut_to_dense(**c) for c in cases], target)
    _check(outs, refs, rtol=0, atol=0)


@pytest.mark.parametrize("target", ["iOS16", "iOS17"])
def test_constexpr_sparse_to_dense_ios16(target):
    cases, refs = [], []
    for shape, dtype, density in [((11,), np.float32, 0.5), ((3, 4), np.int8, 0.3), ((2, 3, 5), np.float16, 0.7), ((2, 4), np.float32, 0.0)]:
        if target == "iOS16" and dtype == np.int8:
            continue  # an iOS16 program cannot cast int8 to a float output
        mask, data = _sparse(shape, density, dtype)
        cases.append(dict(nonzero_data=data, mask=_pack(mask, 1), shape=np.array(shape, np.uint32)))
        refs.append(_ref_sparse(data, mask))
    outs = _run(lambda: [mb.constexpr_sparse_to_dense(**c) for c in cases], target)
    _check(outs, refs, rtol=0, atol=0)


def test_ios16_data_stay_compressed():
    """Indices and masks are params of their packed uint8 bytes, not the dense weight."""
    idx = RNG.integers(0, 4, (8, 16))
    mask, data = _sparse((8, 16), 0.5)
    lut = np.arange(4, dtype=np.float32)
    model = mlc.load(
        mil_mlmodel(
            lambda z: [
                mb.add(x=mb.constexpr_lut_to_dense(indices=_pack(idx, 2), lut=lut, shape=np.array([8, 16], np.uint32)), y=z),
                mb.add(x=mb.constexpr_sparse_to_dense(nonzero_data=data, mask=_pack(mask, 1), shape=np.array([8, 16], np.uint32)), y=z),
            ],
            {"z": (1,)},
            target="iOS16",
        )
    )
    shapes = {(np.dtype(v.dtype), tuple(v.shape)) for v in model.params.values()}
    assert (np.dtype(np.uint8), (32,)) in shapes and (np.dtype(np.uint8), (16,)) in shapes
    assert not any(s == (8, 16) for _, s in shapes)
    lut_out, sparse_out = model.predict(ZERO).values()
    _check([lut_out, sparse_out], [lut[idx], _ref_sparse(data, mask)], rtol=0, atol=0)


def test_ios16_lut_under_jit():
    """The iOS16 ``shape`` attribute is static: it stays numpy, so the op traces under jit."""
    idx = RNG.integers(0, 4, (2, 8))
    lut = np.arange(4, dtype=np.float32)
    model = mlc.load(
        mil_mlmodel(
            lambda z: mb.add(x=mb.constexpr_lut_to_dense(indices=_pack(idx, 2), lut=lut, shape=np.array([2, 8], np.uint32)), y=z),
            {"z": (1,)},
            target="iOS16",
        )
    )
    fn, params = model.jax_function()
    (out,) = jax.jit(fn)(params, ZERO).values()
    _check([out], [lut[idx]], rtol=0, atol=0)


# -- iOS18 -----------------------------------------------------------------------------------

# (data dtype, data shape, scale shape, offset: None / "same" (data's dtype) / "float")
SHIFT_SCALE = [
    (np.int8, (4, 6), (4, 1), "same"),
    (np.uint8, (4, 6), (1, 3), None),
    (INT4, (2, 4, 6), (2, 2, 3), "same"),
    (UINT[4], (8, 4), (2, 4), "float"),
    (np.int8, (3, 4, 2, 2), (3, 1, 1, 1), "float"),
    (np.float16, (6, 4), (3, 2), "float"),
    (np.float32, (6,), (6,), None),
]


def _shift_scale_case(dtype, shape, scale_shape, offset, scale_dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        data = RNG.standard_normal(shape).astype(dtype)
    else:
        lo, hi = (-8, 8) if dtype == INT4 else (0, 16) if dtype == UINT[4] else (np.iinfo(dtype).min, np.iinfo(dtype).max + 1)
        data = RNG.integers(lo, hi, shape).astype(dtype)
    scale = RNG.uniform(0.1, 2, scale_shape).astype(scale_dtype)
    case = dict(data=data, scale=scale)
    if offset == "same":
        case["offset"] = data.reshape(-1)[: np.prod(scale_shape)].reshape(scale_shape)
    elif offset == "float":
        case["offset"] = RNG.standard_normal(scale_shape).astype(scale_dtype)
    ref = data.astype(np.float64)
    if "offset" in case:
        ref = ref - _ref_blocks(case["offset"].astype(np.float64), shape)
    return case, ref * _ref_blocks(scale.astype(np.float64), shape)


END_TO_END = (0, 2, 5)  # int8 per-channel, int4 blocks on every axis, fp16 data


def test_constexpr_blockwise_shift_scale():
    cases, refs = zip(*(_shift_scale_case(*c) for c in SHIFT_SCALE))
    _check(_jit("constexpr_blockwise_shift_scale", cases), refs, rtol=1e-6, atol=1e-6)
    outs = _run(lambda: [mb.constexpr_blockwise_shift_scale(**cases[i]) for i in END_TO_END], "iOS18")
    _check(outs, [refs[i] for i in END_TO_END], rtol=1e-6, atol=1e-6)


def test_constexpr_blockwise_shift_scale_fp16():
    case, ref = _shift_scale_case(np.int8, (4, 6), (2, 3), "float", scale_dtype=np.float16)
    (out,) = _run(lambda: [mb.constexpr_blockwise_shift_scale(**case)], "iOS18", precision="fp16")
    _check([out], [ref.astype(np.float16)], rtol=2e-3, atol=2e-3)  # fp16 output: half an ulp of rounding


# (nbits, indices shape, LUT groups per axis, vector size, vector_axis, LUT dtype)
LUTS = [
    (1, (4, 6), (1, 1), 1, None, np.float32),
    (2, (6, 2), (2, 1), 1, None, np.float32),
    (3, (4, 6), (2, 3), 1, None, np.float16),
    (4, (2, 4, 3), (1, 2, 1), 1, None, np.int8),
    (6, (8, 3), (4, 1), 1, None, np.float32),
    (8, (2, 3, 2, 2), (2, 1, 1, 1), 1, None, np.uint8),
    (1, (2, 2, 2), (1, 1, 1), 3, 1, np.float32),
    (2, (2, 2, 2), (1, 1, 1), 3, -1, np.float32),
    (2, (4, 3), (2, 1), 2, 0, np.float32),
    (3, (2, 4, 2), (1, 2, 1), 4, -2, np.float16),
]


def _lut_case(nbits, shape, groups, vector, vector_axis, dtype):
    indices = RNG.integers(0, 2**nbits, shape).astype(UINT[nbits])
    lut_shape = groups + (2**nbits, vector)
    lut = RNG.standard_normal(lut_shape).astype(dtype) if np.dtype(dtype).kind == "f" else RNG.integers(0, 100, lut_shape).astype(dtype)
    case = dict(indices=indices, lut=lut)
    if vector_axis is not None:
        case["vector_axis"] = vector_axis
    return case, _ref_lut(indices, lut, vector_axis)


def test_constexpr_lut_to_dense_ios18():
    cases, refs = zip(*(_lut_case(*c) for c in LUTS))
    outs = _jit("constexpr_lut_to_dense", cases, static=("vector_axis",))
    _check(outs, refs, rtol=0, atol=0)
    assert [o.dtype for o in outs] == [c["lut"].dtype for c in cases]
    end_to_end = (2, 5, 9)  # grouped fp16, grouped uint8, vector
    outs = _run(lambda: [mb.constexpr_lut_to_dense(**cases[i]) for i in end_to_end], "iOS18")
    _check(outs, [refs[i] for i in end_to_end], rtol=0, atol=0)


def test_constexpr_sparse_to_dense_ios18():
    cases, refs = [], []
    for shape, dtype, density in [((9,), np.float32, 0.5), ((3, 4), np.int8, 0.3), ((2, 3, 4), INT4, 0.6), ((2, 3), UINT[4], 1.0)]:
        mask, data = _sparse(shape, density, dtype)
        if dtype == UINT[4]:
            data = np.abs(data.astype(np.int8)).astype(dtype)
        cases.append(dict(nonzero_data=data, mask=mask))
        refs.append(_ref_sparse(data, mask))
    def consts():
        dense = [mb.constexpr_sparse_to_dense(**c) for c in cases]
        # 4-bit ints have no cast: they feed a shift_scale, as in pruned + quantized weights
        return [mb.constexpr_blockwise_shift_scale(data=d, scale=np.ones((1,) * d.rank, np.float32)) if d.dtype in (types.int4, types.uint4) else d for d in dense]

    _check(_jit("constexpr_sparse_to_dense", cases), refs, rtol=0, atol=0)
    _check(_run(consts, "iOS18"), refs, rtol=0, atol=0)


def _densify(sparse):
    mask, values = sparse
    return mb.constexpr_sparse_to_dense(nonzero_data=values, mask=mask)


def _lut_to_sparse_case(nbits, shape, groups, vector, vector_axis, dtype):
    dense_case, _ = _lut_case(nbits, shape, groups, vector, vector_axis, dtype)
    mask, _ = _sparse(shape, 0.5)
    case = dict(indices_mask=mask, indices_nonzero_data=dense_case["indices"][mask != 0], lut=dense_case["lut"])
    if vector_axis is not None:
        case["vector_axis"] = vector_axis
    dense = _ref_lut(np.where(mask != 0, dense_case["indices"], 0), dense_case["lut"], vector_axis)
    out_mask = mask if vector == 1 else np.repeat(mask, vector, axis=vector_axis)
    return case, (out_mask, dense[out_mask != 0])


def test_constexpr_lut_to_sparse():
    """Its (mask, nonzero values), densified by constexpr_sparse_to_dense."""
    cases, refs = zip(*(_lut_to_sparse_case(*c) for c in [LUTS[1], LUTS[2], LUTS[6], LUTS[9]]))
    for (got_mask, got_values), (mask, values) in zip(_jit("constexpr_lut_to_sparse", cases, static=("vector_axis",)), refs):
        np.testing.assert_array_equal(got_mask, mask)
        _check([got_values], [values], rtol=0, atol=0)

    end_to_end = (1, 3)  # grouped, vector

    def consts():
        return [_densify(mb.constexpr_lut_to_sparse(**cases[i])) for i in end_to_end]

    _check(_run(consts, "iOS18"), [_ref_sparse(refs[i][1], refs[i][0]) for i in end_to_end], rtol=0, atol=0)


def test_constexpr_sparse_blockwise_shift_scale():
    cases, refs = [], []
    for dtype, shape, scale_shape, offset in [SHIFT_SCALE[0], SHIFT_SCALE[2], SHIFT_SCALE[3], SHIFT_SCALE[1]]:
        dense_case, dense = _shift_scale_case(dtype, shape, scale_shape, offset)
        mask, _ = _sparse(shape, 0.5)
        case = dict(data_mask=mask, nonzero_data=dense_case["data"][mask != 0], scale=dense_case["scale"])
        if "offset" in dense_case:
            case["offset"] = dense_case["offset"]
        cases.append(case)
        refs.append((mask, dense[mask != 0]))
    for (got_mask, got_values), (mask, values) in zip(_jit("constexpr_sparse_blockwise_shift_scale", cases), refs):
        np.testing.assert_array_equal(got_mask, mask)
        _check([got_values], [values], rtol=1e-6, atol=1e-6)

    end_to_end = (1, 2)  # int4 blocks with an offset, uint4 with a float offset

    def consts():
        return [_densify(mb.constexpr_sparse_blockwise_shift_scale(**cases[i])) for i in end_to_end]

    _check(_run(consts, "iOS18"), [_ref_sparse(refs[i][1], refs[i][0]) for i in end_to_end], rtol=1e-6, atol=1e-6)


def test_chained_constexprs():
    """A quantized LUT (shift_scale -> lut_to_dense) and a scaled LUT (lut_to_dense -> shift_scale)."""
    q_lut = RNG.integers(-128, 128, (2, 1, 4, 1)).astype(np.int8)
    lut_scale = np.array([0.5, 0.25], np.float32).reshape(2, 1, 1, 1)
    indices = RNG.integers(0, 4, (4, 3)).astype(UINT[2])
    lut = RNG.standard_normal((1, 1, 8, 1)).astype(np.float32)
    indices3 = RNG.integers(0, 8, (4, 6)).astype(UINT[3])
    channel_scale = RNG.uniform(0.5, 2, (4, 1)).astype(np.float32)

    def consts():
        dequantized_lut = mb.constexpr_blockwise_shift_scale(data=q_lut, scale=lut_scale)
        scaled = mb.constexpr_blockwise_shift_scale(data=mb.constexpr_lut_to_dense(indices=indices3, lut=lut), scale=channel_scale)
        return [mb.constexpr_lut_to_dense(indices=indices, lut=dequantized_lut), scaled]

    outs = _run(consts, "iOS18")
    refs = [_ref_lut(indices, q_lut * lut_scale), _ref_lut(indices3, lut) * channel_scale]
    _check(outs, refs, rtol=1e-6, atol=1e-6)


def test_invalid_lut_raises():
    with pytest.raises(ValueError, match="vector_axis"):
        _jit("constexpr_lut_to_dense", [dict(indices=np.zeros((2, 2), np.uint8), lut=np.zeros((1, 1, 2, 2), np.float32))])


# -- iOS17 quantize / dequantize -----------------------------------------------------------

# (shape, output dtype, scale vector?, zero point: None / scalar / vector, axis)
QUANT = [
    ((2, 5), "int8", False, None, None),
    ((2, 5), "uint8", False, "scalar", None),
    ((3, 4), "int8", True, "vector", 0),
    ((2, 3, 4), "uint8", True, "vector", -1),
    ((2, 3, 2, 2), "int8", True, None, 1),
]


def _quant_case(shape, dtype, vector_scale, zp, axis):
    x = (RNG.standard_normal(shape) * 40).astype(np.float32)
    n = shape[axis] if vector_scale else None
    scale = RNG.uniform(0.2, 0.6, n).astype(np.float32) if vector_scale else np.float32(0.3)
    qtype = np.dtype(dtype).type
    kw = dict(scale=scale)
    if zp == "scalar":
        kw["zero_point"] = qtype(100)
    elif zp == "vector":
        kw["zero_point"] = RNG.integers(-10, 10, n).astype(qtype) + (100 if dtype == "uint8" else 0)
    if axis is not None:
        kw["axis"] = axis
    along = [1] * len(shape)
    if axis is not None:
        along[axis] = -1
    s = np.reshape(scale, along) if vector_scale else scale
    z = np.reshape(kw.get("zero_point", 0), along if zp == "vector" else ()).astype(np.float64)
    info = np.iinfo(qtype)
    q = np.clip(np.round(x / s.astype(np.float32)) + z, info.min, info.max)
    return x, kw, q, (q - z) * s


def test_quantize_dequantize():
    cases = [_quant_case(*c) for c in QUANT]
    feeds = {f"x{i}": x for i, (x, *_) in enumerate(cases)}

    def body(**xs):
        outs = []
        for (_, kw, _, _), (dtype, x) in zip(cases, zip([c[1] for c in QUANT], xs.values())):
            q = mb.quantize(input=x, output_dtype=dtype, **kw)
            outs += [mb.cast(x=q, dtype="fp32"), mb.dequantize(input=q, **kw)]
        return outs

    outs = run_mil(body, feeds, target="iOS17")
    refs = list(itertools.chain.from_iterable((q, deq) for _, _, q, deq in cases))
    _check(outs, refs, rtol=1e-6, atol=1e-5)


def test_dequantize_const_input():
    q = RNG.integers(-128, 128, (3, 4)).astype(np.int8)
    scale = np.array([0.5, 1.5, 2.0], np.float32)
    zp = np.array([-3, 0, 7], np.int8)
    (out,) = _run(lambda: [mb.dequantize(input=q, scale=scale, zero_point=zp, axis=0)], "iOS17")
    _check([out], [(q.astype(np.float64) - zp[:, None]) * scale[:, None]], rtol=1e-6, atol=1e-6)


def test_quantize_dequantize_fp16():
    x = (RNG.standard_normal((2, 6)) * 20).astype(np.float16)
    scale = np.float16(0.25)
    (out,) = run_mil(lambda x: mb.dequantize(input=mb.quantize(input=x, scale=scale, output_dtype="int8"), scale=scale), {"x": x}, target="iOS17", precision="fp16")
    ref = np.clip(np.round(x.astype(np.float32) / 0.25), -128, 127) * 0.25
    _check([out], [ref], rtol=0, atol=0)  # multiples of 1/4 up to 32 are exact in fp16
