"""``WeightParams`` (NeuralNetwork.proto) -> float32 numpy arrays.

A weight is stored one of four ways: ``floatValue`` (fp32), ``float16Value`` (fp16 bytes,
little-endian), ``rawValue`` (quantized, ``numberOfBits`` 1-8 per value, packed most significant
bit first, as coremltools writes them) or ``int8RawValue`` (int8, for layers flagged
``int8DynamicQuantize``). Quantized values are dequantized here, once, at load:

* ``linearQuantization``: ``w = q * scale + bias`` with one scale/bias, or one per output
  channel. The output channel is the first axis of the weight, except for deconvolution
  weights ``[C_in, C_out/groups, kH, kW]``, whose output channel is the second.
* ``lookupTableQuantization``: ``w = lut[q]``, a table of ``2**numberOfBits`` floats.
"""

from __future__ import annotations

import numpy as np

from mlc._errors import MLCParametersError


def is_set(wp) -> bool:
    """Whether a WeightParams message holds any value."""
    return bool(len(wp.floatValue) or wp.float16Value or wp.rawValue or wp.int8RawValue)


def storage(wp) -> str:
    """How a set WeightParams stores its values: ``"fp32"`` (floatValue), ``"fp16"``
    (float16Value) or ``"compressed"`` (rawValue / int8RawValue, quantized)."""
    if len(wp.floatValue):
        return "fp32"
    if wp.float16Value:
        return "fp16"
    return "compressed"


def encode(wp, values: np.ndarray, where: str) -> None:
    """Write ``values`` into ``wp`` in the storage it already has (fp32 or fp16).

    Quantized weights cannot be written back: the quantization would have to be redone."""
    kind = storage(wp) if is_set(wp) else "fp32"
    flat = np.asarray(values).reshape(-1)
    if kind == "compressed":
        raise MLCParametersError(f"{where}: the weight is quantized; mlc cannot write new values into quantized weights")
    updatable = wp.isUpdatable
    wp.Clear()
    wp.isUpdatable = updatable
    if kind == "fp16":
        wp.float16Value = flat.astype("<f2").tobytes()
    else:
        wp.floatValue.extend(flat.astype(np.float32).tolist())


def unpack_bits(data: bytes, nbits: int, count: int, where: str) -> np.ndarray:
    """``count`` unsigned ``nbits``-bit values packed most significant bit first."""
    if not 1 <= nbits <= 8:
        raise MLCParametersError(f"{where}: numberOfBits must be 1-8, got {nbits}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if nbits == 8:
        values = raw
    else:
        bits = np.unpackbits(raw)  # MSB first
        if bits.size < count * nbits:
            raise MLCParametersError(f"{where}: {len(data)} bytes hold fewer than {count} values of {nbits} bits")
        bits = bits[: count * nbits].reshape(count, nbits)
        values = (bits.astype(np.uint16) << np.arange(nbits - 1, -1, -1, dtype=np.uint16)).sum(axis=1)
    if values.size < count:
        raise MLCParametersError(f"{where}: {len(data)} bytes hold fewer than {count} values of {nbits} bits")
    return values[:count].astype(np.int32)


def _linear(q: np.ndarray, lin, where: str, channel_axis: int, shape: tuple[int, ...] | None) -> np.ndarray:
    scale = np.asarray(lin.scale, np.float32)
    bias = np.asarray(lin.bias, np.float32) if len(lin.bias) else np.zeros_like(scale)
    if scale.size == 0:
        raise MLCParametersError(f"{where}: linear quantization has no scale")
    if bias.size != scale.size:
        raise MLCParametersError(f"{where}: linear quantization has {scale.size} scales but {bias.size} biases")
    w = q.astype(np.float32)
    if scale.size == 1:
        return w * scale[0] + bias[0]
    c = scale.size
    if channel_axis == 1 and shape is not None and len(shape) >= 2:
        outer = shape[0]
        if w.size % (outer * c):
            raise MLCParametersError(f"{where}: {w.size} values do not split into {outer} x {c} channels")
        w = w.reshape(outer, c, -1)
        return (w * scale[None, :, None] + bias[None, :, None]).reshape(-1)
    if w.size % c:
        raise MLCParametersError(f"{where}: {w.size} values do not split into {c} quantization channels")
    w = w.reshape(c, -1)
    return (w * scale[:, None] + bias[:, None]).reshape(-1)


def decode(wp, where: str, *, count: int | None = None, channel_axis: int = 0, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The values of ``wp`` as a flat float32 array.

    ``count`` is the number of values the layer expects (needed to unpack sub-byte quantized
    data; checked otherwise). ``channel_axis``/``shape`` place per-channel quantization scales.
    """
    if len(wp.floatValue):
        out = np.asarray(wp.floatValue, dtype=np.float32)
    elif wp.float16Value:
        if len(wp.float16Value) % 2:
            raise MLCParametersError(f"{where}: float16Value has an odd number of bytes ({len(wp.float16Value)})")
        out = np.frombuffer(wp.float16Value, dtype="<f2").astype(np.float32)
    elif wp.rawValue or wp.int8RawValue:
        out = _dequantize(wp, where, count, channel_axis, shape)
    else:
        out = np.zeros((0,), np.float32)
    if count is not None and out.size != count:
        raise MLCParametersError(f"{where}: holds {out.size} values, the layer needs {count}")
    return out


def _dequantize(wp, where: str, count: int | None, channel_axis: int, shape) -> np.ndarray:
    q = wp.quantization
    kind = q.WhichOneof("QuantizationType")
    if wp.int8RawValue:
        values = np.frombuffer(wp.int8RawValue, dtype=np.int8).astype(np.int32)
        if kind != "linearQuantization":
            raise MLCParametersError(f"{where}: int8RawValue needs linear quantization parameters")
        return _linear(values, q.linearQuantization, where, channel_axis, shape)
    nbits = int(q.numberOfBits)
    if kind is None:
        raise MLCParametersError(f"{where}: rawValue is set but the weight has no quantization parameters")
    if count is None:
        if nbits != 8 and (len(wp.rawValue) * 8) % nbits:
            raise MLCParametersError(f"{where}: cannot tell how many {nbits}-bit values {len(wp.rawValue)} bytes hold")
        count = len(wp.rawValue) * 8 // nbits
    values = unpack_bits(wp.rawValue, nbits, count, where)
    if kind == "linearQuantization":
        return _linear(values, q.linearQuantization, where, channel_axis, shape)
    lut = np.asarray(q.lookupTableQuantization.floatValue, np.float32)
    if lut.size != 2**nbits:
        raise MLCParametersError(f"{where}: lookup table has {lut.size} entries, {nbits}-bit quantization needs {2**nbits}")
    return lut[values]
