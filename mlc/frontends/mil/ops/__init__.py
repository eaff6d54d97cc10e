"""MIL op lowerings, one module per op family (mirroring coremltools' ``ops/defs``).

Importing this package imports every family module in it, which registers its ops.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
