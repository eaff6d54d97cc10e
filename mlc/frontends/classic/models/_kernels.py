"""SVM kernels (SVM.proto ``Kernel``) and support vectors, shared by the SVM regressor and
classifier.

Kernels, as the proto's formulas (and libsvm's ``Kernel::k_function``) define them:

- ``linearKernel``: ``K(x, v) = x . v``
- ``rbfKernel``: ``K(x, v) = exp(-gamma |x - v|^2)``
- ``polyKernel``: ``K(x, v) = (gamma x . v + c)^degree`` (an integer power; degree 0 gives 1)
- ``sigmoidKernel``: ``K(x, v) = tanh(gamma x . v + c)``

Support vectors are dense (``denseSupportVectors``) or sparse (``sparseSupportVectors``,
1-based indices like libsvm). Sparse ones are laid out densely at load: a missing index is a
zero, which is what libsvm's sparse dot product and distance compute. The kernel parameters
(gamma, c, degree) are constants of the program; the support vectors are a param, stored in
the dtype the classic front end computes in (``FLOAT``).
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from mlc._errors import MLCFeatureTypeError
from mlc.frontends.classic import values
from mlc.frontends.classic.stage import StageContext

# The dtype classic models compute in: double (JAX's 64-bit mode), ``values.FLOAT``.
FLOAT = values.FLOAT

KernelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def kernel_function(ctx: StageContext, kernel) -> KernelFn:
    """``k(x, svs) -> (n_sv,)`` for the ``Kernel`` message; parameters checked as Core ML's
    SVM validator does (gamma >= 0, degree >= 0)."""
    which = kernel.WhichOneof("kernel")
    if which is None:
        ctx.fail("no kernel is set (linearKernel, rbfKernel, polyKernel or sigmoidKernel)")
    params = getattr(kernel, which)
    if which != "linearKernel" and params.gamma < 0:
        ctx.fail(f"{which}.gamma is {params.gamma}; it must be >= 0")
    if which == "linearKernel":
        return _linear
    if which == "rbfKernel":
        return _rbf(float(params.gamma))
    if which == "polyKernel":
        if params.degree < 0:
            ctx.fail(f"polyKernel.degree is {params.degree}; it must be >= 0")
        return _poly(float(params.gamma), float(params.c), int(params.degree))
    return _sigmoid(float(params.gamma), float(params.c))


def _linear(x, svs):
    return svs @ x


def _rbf(gamma: float) -> KernelFn:
    def k(x, svs):
        # The squared distance summed from differences (not |x|^2 - 2 x.v + |v|^2): no
        # cancellation when x is close to a support vector.
        return jnp.exp(-gamma * jnp.sum(jnp.square(svs - x), axis=-1))

    return k


def _poly(gamma: float, c: float, degree: int) -> KernelFn:
    def k(x, svs):
        return (gamma * (svs @ x) + c) ** degree  # integer_pow, as libsvm's powi

    return k


def _sigmoid(gamma: float, c: float) -> KernelFn:
    def k(x, svs):
        return jnp.tanh(gamma * (svs @ x) + c)

    return k


def support_vectors(ctx: StageContext, message) -> tuple[np.ndarray, bool]:
    """The support vectors as a dense (n_sv, width) array, and whether they were
    sparse (a sparse model accepts inputs of any length: what lies beyond is zero)."""
    which = message.WhichOneof("supportVectors")
    if which == "denseSupportVectors":
        rows = [list(v.values) for v in message.denseSupportVectors.vectors]
        if len({len(r) for r in rows}) > 1:
            ctx.fail("the dense support vectors have different lengths")
        width = len(rows[0]) if rows else 0
        return np.asarray(rows, FLOAT).reshape(len(rows), width), False
    if which == "sparseSupportVectors":
        return _sparse_to_dense(ctx, message.sparseSupportVectors.vectors), True
    ctx.fail("no support vectors: set sparseSupportVectors or denseSupportVectors")


def _sparse_to_dense(ctx: StageContext, vectors) -> np.ndarray:
    width = max((node.index for v in vectors for node in v.nodes), default=0)
    dense = np.zeros((len(vectors), width), FLOAT)
    for row, vector in enumerate(vectors):
        seen = set()
        for node in vector.nodes:
            if node.index < 1:
                ctx.fail(f"sparse support vector {row} has index {node.index}; indices are 1-based")
            if node.index in seen:
                ctx.fail(f"sparse support vector {row} repeats index {node.index}")
            seen.add(node.index)
            dense[row, node.index - 1] = node.value
    return dense


def match_width(ctx: StageContext, x, svs, sparse: bool):
    """Bring the input vector and the support vectors to one width. Sparse support vectors
    and inputs are zero beyond their last entry; dense ones must have the input's length."""
    n, width = x.shape[0], svs.shape[1]
    if n == width:
        return x, svs
    if not sparse:
        raise MLCFeatureTypeError(
            f"{ctx.where} ({ctx.kind}): the inputs hold {n} numbers, the support vectors have {width}"
        )
    if n < width:
        return jnp.pad(x, (0, width - n)), svs
    return x, jnp.pad(svs, ((0, 0), (0, n - width)))
