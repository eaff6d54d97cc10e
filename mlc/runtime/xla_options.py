"""The XLA compiler options mlc compiles with, per platform.

XLA:CPU hands convolutions and matrix products to its YNNPACK library. By default (jaxlib
0.10.2) it also fuses whole chains of them, with the elementwise work between, into one large
YNNPACK subgraph; on convolutional networks that subgraph runs at about half the speed of the
same convolutions called one by one (ResNet-18 on 2 cores: 134 ms of CPU time per image
against 65 ms; ViT and LSTM gain a third). mlc asks for individual convolution and dot calls
and lets XLA fuse the elementwise work itself; a program with convolutions leaves its matrix
products to XLA's own emitter (``compiler_options(device, jaxpr)``). ``MLC_XLA_DEFAULTS=1`` compiles with XLA's
defaults instead (to compare).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax

_CPU = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


# Programs with convolutions leave their matrix products to XLA's own dot emitter: measured on
# 2 cores (bench/experiments.md, "Matrix products beside convolutions"), ResNet-18 at batch 1
# -17% wall time (its Winograd layers' batched products), MobileNetV2 -7% at batch 1 and 32,
# ViT -8%; without convolutions YNNPACK's products stay faster (the GPT decoder +10% and the
# LSTM +27 to +60% with XLA's).
_CPU_CONVOLUTIONAL = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
}


def compiler_options(device: jax.Device | None = None, jaxpr=None) -> dict[str, str] | None:
    """Options for ``jax.jit(..., compiler_options=)`` on ``device`` (default: JAX's default);
    ``jaxpr``, the program to compile where known, picks the CPU variant for it."""
    if os.environ.get("MLC_XLA_DEFAULTS", "").strip() == "1":
        return None
    platform = (device or jax.devices()[0]).platform
    if platform != "cpu":
        return None
    return dict(_CPU_CONVOLUTIONAL) if jaxpr is not None and has_convolution(jaxpr) else dict(_CPU)


# The name scope mlc.kernels.convolution gives every convolution it lowers: a convolution computed
# as matrix products (Winograd, 1x1, patches) or a loop (depthwise) still makes the program one
# "with convolutions" here.
CONVOLUTION_SCOPE = "mlc_convolution"


def has_convolution(jaxpr) -> bool:
    """Whether ``jaxpr`` (or a jaxpr inside it: a nested jit, a scan's or a branch's body)
    computes a convolution: an XLA ``conv_general_dilated``, or equations that
    ``mlc.kernels.convolution`` lowered from one (``CONVOLUTION_SCOPE`` in their name stack)."""
    return contains(jaxpr, lambda eqn: eqn.primitive.name == "conv_general_dilated" or _in_convolution_scope(eqn))


def contains(jaxpr, found: Callable[[Any], bool]) -> bool:
    """Whether an equation of ``jaxpr``, or of a jaxpr inside it (a nested jit, a scan's or a
    branch's body), is ``found``."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's own
    for eqn in jaxpr.eqns:
        if found(eqn):
            return True
        for value in eqn.params.values():
            for inner in value if isinstance(value, (list, tuple)) else (value,):
                if _is_jaxpr(inner) and contains(inner, found):
                    return True
    return False


def _in_convolution_scope(eqn) -> bool:
    stack = getattr(getattr(eqn, "source_info", None), "name_stack", None)
    return stack is not None and CONVOLUTION_SCOPE in str(stack).split("/")


def _is_jaxpr(value) -> bool:
    return hasattr(value, "eqns") or hasattr(getattr(value, "jaxpr", None), "eqns")


ASYNC_DISPATCH_ENV = "MLC_CPU_ASYNC_DISPATCH"


def run_cpu_calls_inline() -> bool:
    """Ask JAX's CPU client to run each call in the calling thread (``jax_cpu_enable_async_dispatch``
    off); returns whether the setting was made.

    With JAX's default (asynchronous dispatch) every CPU call is queued to a worker thread and
    ``predict``'s wait for the result is a thread hand-off: on a small model that hand-off is
    most of the call (the VAD step of ``scripts/bench.py``: 278 µs a call through ``jax.jit``
    with it, 127 µs without; onnxruntime 117 µs). ``predict`` always waits for its result, so
    nothing is lost by running inline; the call releases the GIL while XLA computes, and
    XLA's intra-op threads are used as before. The setting is read when JAX creates its CPU
    client, so it applies when ``mlc`` is imported before JAX's first computation. It is left
    alone where the user chose: ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` set, or
    ``MLC_CPU_ASYNC_DISPATCH=1`` (keep JAX's default).
    """
    if os.environ.get(ASYNC_DISPATCH_ENV, "").strip() == "1" or "JAX_CPU_ENABLE_ASYNC_DISPATCH" in os.environ:
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False  # the CPU client exists already: the setting would not reach it
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
