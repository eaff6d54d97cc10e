"""Stateful programs (iOS18 states.py, coreml_dialect ``coreml_update_state``).

A state input is bound to a ``StateCell`` while the function is traced; ``read_state``
reads it and ``coreml_update_state`` replaces its value, in program order. The lowered
function returns the final values, so the state stays a pure input -> output of JAX.
"""

from __future__ import annotations

import jax.numpy as jnp

from mlc.frontends.mil.registry import op


class StateCell:
    """The current value of one state while a function is traced."""

    def __init__(self, name: str, value):
        self.name = name
        self.value = value


def _stored(state: StateCell, value):
    """``value`` as Core ML's fp16 state storage holds it (states are fp16 only), in the state's dtype."""
    return jnp.asarray(value).astype(jnp.float16).astype(jnp.result_type(state.value))


@op("read_state", since="CoreML8")
def read_state(input):
    return input.value


@op("coreml_update_state", since="CoreML8")
def coreml_update_state(state, value):
    """Write ``value`` into ``state`` and return it."""
    state.value = _stored(state, value)
    return state.value


@op("write_state", since="CoreML8")
def write_state(input, data):
    """Serialized form of ``coreml_update_state``: store ``data`` in state ``input``; no outputs."""
    input.value = _stored(input, data)
