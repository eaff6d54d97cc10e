"""mlc: run Apple Core ML models anywhere JAX runs.

The public API is exactly ``__all__``; every other module is mlc's implementation (see
docs/architecture.md). Training (optax, flax), Create ML, the cost report and the batch
scorer load on first use: ``import mlc`` imports neither optax, flax, matplotlib nor
coremltools.
"""

from mlc._errors import (
    MLCDataWarning,
    MLCError,
    MLCFeatureTypeError,
    MLCIOError,
    MLCParametersError,
    MLCPredictionError,
    MLCUnsupportedError,
    MLCUpdateError,
)
from mlc._version import __version__
from mlc.classification import Classification
from mlc.features import Feature, FeatureDescriptions
from mlc.frontends.neuralnetwork.custom import register_custom_layer, unregister_custom_layer
from mlc.model import Model, State, load
from mlc.program.build import describe
from mlc.program.program import Interface, PipelineStage, Program, Summary
from mlc.runtime.runner import Runner
from mlc.runtime import xla_options as _xla_options

_xla_options.run_cpu_calls_inline()  # before JAX's CPU client exists: predict waits for its result anyway

# name -> (module, attribute or None for the module itself), imported on first use
_LAZY = {
    "update": ("mlc.train.update", "update"),
    "finetune": ("mlc.train.finetune", "finetune"),
    "LossHistory": ("mlc.train.task", "LossHistory"),
    "UpdateContext": ("mlc.train.task", "UpdateContext"),
    "UpdateResult": ("mlc.train.task", "UpdateResult"),
    "UpdateTask": ("mlc.train.task", "UpdateTask"),
    "cost_report": ("mlc.deploy.cost", "cost_report"),
    "CostReport": ("mlc.deploy.cost", "CostReport"),
    "CompileReport": ("mlc.deploy.aot", "CompileReport"),
    "BatchPredictor": ("mlc.deploy.batch", "BatchPredictor"),
    "open_inputs": ("mlc.deploy.batch", "open_inputs"),
    "createml": ("mlc.createml", None),
}

__all__ = [
    "BatchPredictor",
    "Classification",
    "CompileReport",
    "CostReport",
    "Feature",
    "FeatureDescriptions",
    "Interface",
    "LossHistory",
    "MLCDataWarning",
    "MLCError",
    "MLCFeatureTypeError",
    "MLCIOError",
    "MLCParametersError",
    "MLCPredictionError",
    "MLCUnsupportedError",
    "MLCUpdateError",
    "Model",
    "PipelineStage",
    "Program",
    "Runner",
    "State",
    "Summary",
    "UpdateContext",
    "UpdateResult",
    "UpdateTask",
    "cost_report",
    "createml",
    "describe",
    "finetune",
    "load",
    "open_inputs",
    "register_custom_layer",
    "unregister_custom_layer",
    "update",
]


def __getattr__(name: str):
    """The names in ``_LAZY``, imported when first used (training loads optax and flax)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'mlc' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attribute is None else getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
