"""MIL op lowerings, one module per op family (mirroring coremltools' ``ops/defs``)."""

from mlc.mil.ops import (  # noqa: F401
    activation,
    classify,
    conv,
    elementwise_binary,
    elementwise_unary,
    image_resizing,
    linear,
    normalization,
    pool,
    reduction,
    scatter_gather,
    state,
    tensor_operation,
    tensor_transformation,
    transformers,
)
