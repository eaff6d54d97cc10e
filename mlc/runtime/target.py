"""The platform a program is being traced for, so that a lowering can pick its kernels.

Kernels whose best algorithm depends on the hardware or on how much data one call computes
(``mlc.kernels.convolution`` computes some 3x3 convolutions by Winograd's algorithm on CPU, and
leaves them to XLA's convolution on GPU) ask ``platform()`` and ``vmapped_batch()`` while the
program is traced. The ``Runner`` traces every program it compiles inside
``lowering_for(device.platform, vmapped_batch=...)``: ``predict_batch`` traces one example's
program under ``jax.vmap``, so a kernel sees one example's shapes and would not otherwise know
that each of its values stands for a whole batch. Outside any such block (a program traced by
hand, ``jax.jit(model.program.fn)``), the platform is JAX's default backend and the batch 1.

Like ``mlc.runtime.dtypes.precision``, this is a context variable read at trace time: a
function traced for one platform keeps what it chose. The Runner wraps the program's function
per runner, so that JAX's trace cache never hands one platform's trace to another.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

_platform: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlc_target_platform", default=None)


_vmapped_batch: contextvars.ContextVar[int] = contextvars.ContextVar("mlc_vmapped_batch", default=1)


@contextlib.contextmanager
def lowering_for(platform: str | None, vmapped_batch: int = 1):
    """Within this block, programs are traced for ``platform`` ("cpu", "gpu", "tpu"...), under
    a ``jax.vmap`` of ``vmapped_batch`` examples (1: not vmapped).

    On an accelerator, matrix products and convolutions that leave their precision unset are
    traced at ``jax.default_matmul_precision("highest")``: JAX's default lets a GPU compute an
    fp32 product in TF32 (10-bit mantissa) and a TPU in one bf16 pass, so an fp32 Core ML model
    (or an fp16 one computed as fp32, ``compute_precision="float32"``) would silently lose about
    three decimal digits. fp16 products are unaffected (the precision setting concerns fp32
    operands). On CPU nothing changes: XLA's CPU dots are fp32 already."""
    tokens = _platform.set(platform), _vmapped_batch.set(max(1, int(vmapped_batch)))
    accelerator = platform is not None and platform != "cpu"
    try:
        with jax.default_matmul_precision("highest") if accelerator else contextlib.nullcontext():
            yield
    finally:
        _platform.reset(tokens[0])
        _vmapped_batch.reset(tokens[1])


def vmapped_batch() -> int:
    """How many examples each traced value stands for (``predict_batch``'s batch; else 1)."""
    return _vmapped_batch.get()


def platform() -> str:
    """The platform being traced for: the innermost ``lowering_for``, else JAX's default backend."""
    name = _platform.get()
    return name if name is not None else jax.default_backend()
