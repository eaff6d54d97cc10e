"""Core ML protobuf classes, without importing all of coremltools.

``import coremltools`` takes seconds (it imports torch when present) and logs
"Failed to load _MLModelProxy" on Linux. The generated ``*_pb2`` modules need neither,
so they are imported under an alias package whose ``__path__`` is coremltools' ``proto``
folder. Their descriptors land in protobuf's default pool, so the message classes are the
very ones ``coremltools.proto`` exposes: a spec made by either can be passed to the other.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import types

_ALIAS = "mlc._coreml_proto"


def _alias_package() -> types.ModuleType:
    pkg = sys.modules.get(_ALIAS)
    if pkg is None:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or spec.origin is None:
            from mlc._errors import MLCUnsupportedError

            raise MLCUnsupportedError("mlc needs the coremltools package for Core ML's protobuf classes: pip install coremltools")
        pkg = types.ModuleType(_ALIAS)
        pkg.__path__ = [os.path.join(os.path.dirname(spec.origin), "proto")]
        sys.modules[_ALIAS] = pkg
    return pkg


def proto(name: str) -> types.ModuleType:
    """Return the generated module ``<name>_pb2``, e.g. ``proto("Model")``."""
    _alias_package()
    return importlib.import_module(f"{_ALIAS}.{name}_pb2")


@contextlib.contextmanager
def quiet_coremltools():
    """Silence coremltools' import-time warnings (missing macOS proxies, untested torch)."""
    loggers = [logging.getLogger("coremltools"), logging.getLogger()]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def import_coremltools():
    """Import coremltools (slow, lazily) with its Linux noise silenced."""
    if "coremltools" not in sys.modules:
        with quiet_coremltools():
            import coremltools  # noqa: F401
    return sys.modules["coremltools"]
