"""Build one-op (or few-op) ML Programs with coremltools' MIL builder, for tests.

    from coremltools.converters.mil import Builder as mb
    model = mil_model(lambda x: mb.relu(x=x), {"x": (2, 3)}, target="iOS17")
    out = model.predict({"x": np.ones((2, 3), np.float32)})

The program is converted with an empty pass pipeline, so the ops written are the ops run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mlc.io.proto import import_coremltools

_DTYPES = {"fp32": "fp32", "fp16": "fp16", "int32": "int32", "bool": "bool"}


def mil_mlmodel(
    body: Callable,
    inputs: dict[str, tuple | tuple[tuple, str]],
    *,
    target: str = "iOS17",
    precision: str = "fp32",
    passes: bool = False,
):
    """A coremltools ``MLModel`` whose program is ``body(**inputs)``.

    ``inputs`` maps names to a shape, or to ``(shape, dtype)`` with dtype a MIL name
    (fp32, fp16, int32, bool). ``body`` returns one output or a tuple/list of outputs.
    """
    ct = import_coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    specs = []
    for name, spec in inputs.items():
        shape, dtype = spec if (len(spec) == 2 and isinstance(spec[1], str)) else (spec, "fp32")
        specs.append(mb.TensorSpec(shape=tuple(shape), dtype=getattr(types, dtype)))
    names = list(inputs)
    opset = getattr(ct.target, target)

    prog_body = _named_function(names, body)
    prog = mb.program(input_specs=specs, opset_version=opset)(prog_body)
    return ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=opset,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        pass_pipeline=None if passes else ct.PassPipeline.EMPTY,
    )


def _named_function(names: list[str], body: Callable) -> Callable:
    """A function with positional parameters ``names`` (the MIL builder reads its code object)."""
    for n in names:
        if not n.isidentifier():
            raise ValueError(f"input name {n!r} must be a Python identifier")
    args = ", ".join(names)
    namespace = {"_body": body}
    exec(f"def program_body({args}):\n    return _body({', '.join(f'{n}={n}' for n in names)})", namespace)
    return namespace["program_body"]


def mil_model(body: Callable, inputs: dict, *, target: str = "iOS17", precision: str = "fp32", passes: bool = False, **load_kwargs):
    """Like ``mil_mlmodel``, then loaded with ``mlc.load``."""
    import mlc

    return mlc.load(mil_mlmodel(body, inputs, target=target, precision=precision, passes=passes), **load_kwargs)


def run_mil(body: Callable, feeds: dict[str, np.ndarray], *, target: str = "iOS17", **kwargs) -> list[np.ndarray]:
    """Build a program over ``feeds``' shapes and dtypes, run it with mlc, return outputs in order."""
    inputs = {n: (tuple(a.shape), _mil_dtype(a.dtype)) for n, a in feeds.items()}
    model = mil_model(body, inputs, target=target, **kwargs)
    out = model.predict(feeds)
    return [out[name] for name in model.output_description]


def _mil_dtype(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "fp32"
    if dtype == np.float16:
        return "fp16"
    if dtype == np.int32:
        return "int32"
    if dtype == np.bool_:
        return "bool"
    raise ValueError(f"no MIL input type for {dtype}")


def assert_outputs(outs, refs, names, **tol) -> None:
    """Each output has its reference's shape and dtype, and its values within ``tol``."""
    assert len(outs) == len(refs)
    for out, ref, name in zip(outs, refs, names):
        ref = np.asarray(ref)
        assert out.shape == ref.shape, (name, out.shape, ref.shape)
        assert out.dtype == ref.dtype, (name, out.dtype, ref.dtype)
        np.testing.assert_allclose(out, ref, err_msg=name, **tol)
