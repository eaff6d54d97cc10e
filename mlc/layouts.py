"""Operand layouts that XLA's convolution kernels read without a copy.

Core ML stores convolution weights ``(C_out, C_in / groups, *K)`` (OIHW). XLA's CPU backend
computes convolutions channels-last with a spatial-first ``(*K, C_in / groups, C_out)`` (HWIO)
kernel, and inserts a transpose of an OIHW kernel inside the compiled program, where it runs on
every call because weights are arguments. Transposing in the lowered program instead makes it
a weight-only computation, which ``mlc.hoist`` computes once per set of weights.
"""

from __future__ import annotations

import jax.numpy as jnp


def spatial_first_kernel(weight, spatial: int):
    """``weight`` (O, I, *K) as (*K, I, O), and its dimension-number spec (e.g. ``"HWIO"``)."""
    order = tuple(range(2, 2 + spatial)) + (1, 0)
    return jnp.transpose(weight, order), "DHW"[-spatial:] + "IO"
