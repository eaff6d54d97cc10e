"""mlc lowers every op in coremltools' MIL registry (the core ops of iOS15–iOS18)."""

from mlc.io.proto import import_coremltools
from mlc.frontends.mil.registry import find

# Handled by the interpreter itself: constants (``const``) and symbolic shape placeholders.
INTERPRETER = {"const", "_const_symbolic"}


def test_every_core_op_of_coremltools_registry_is_lowered():
    import_coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    names = set(SSAOpRegistry.core_ops) - INTERPRETER
    assert len(names) >= 160, "coremltools' registry looks truncated"
    missing = sorted(n for n in names if find(n, "CoreML8") is None)
    assert not missing, f"MIL ops without a lowering: {missing}"
