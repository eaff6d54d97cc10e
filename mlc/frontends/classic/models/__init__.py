"""Every classic model-type builder, one module per model type (or family); importing this
package imports each module, whose ``@model_type`` decorators register the builders."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
