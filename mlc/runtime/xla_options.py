"""The XLA compiler options mlc compiles with, per platform.

XLA:CPU hands convolutions and matrix products to its YNNPACK library. By default (jaxlib
0.10.2) it also fuses whole chains of them, with the elementwise work between, into one large
YNNPACK subgraph; on convolutional networks that subgraph runs at about half the speed of the
same convolutions called one by one (ResNet-18 on 2 cores: 134 ms of CPU time per image
against 65 ms; ViT and LSTM gain a third). mlc asks for individual convolution and dot calls
and lets XLA fuse the elementwise work itself. ``MLC_XLA_DEFAULTS=1`` compiles with XLA's
defaults instead (to compare).
"""

from __future__ import annotations

import os

import jax

_CPU = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


def compiler_options(device: jax.Device | None = None) -> dict[str, str] | None:
    """Options for ``jax.jit(..., compiler_options=)`` on ``device`` (default: JAX's default)."""
    if os.environ.get("MLC_XLA_DEFAULTS", "").strip() == "1":
        return None
    platform = (device or jax.devices()[0]).platform
    return dict(_CPU) if platform == "cpu" else None
