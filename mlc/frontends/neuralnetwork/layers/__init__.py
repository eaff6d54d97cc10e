"""Layer families; importing this package registers every layer lowering (each module of this
folder registers its family with ``@layer``)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
