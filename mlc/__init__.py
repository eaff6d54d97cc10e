"""mlc: run Apple Core ML models anywhere JAX runs."""

from mlc._errors import (
    MLCDataWarning,
    MLCError,
    MLCFeatureTypeError,
    MLCIOError,
    MLCParametersError,
    MLCUnsupportedError,
    MLCPredictionError,
    MLCUpdateError,
)
from mlc.classification import Classification
from mlc.model import Model, load
from mlc.nn.custom import register_custom_layer, unregister_custom_layer
from mlc.train.task import LossHistory, UpdateContext, UpdateResult, UpdateTask
from mlc.train.finetune import finetune
from mlc.train.update import update

__version__ = "0.1.0"

__all__ = [
    "Classification",
    "MLCDataWarning",
    "MLCError",
    "MLCFeatureTypeError",
    "MLCIOError",
    "MLCParametersError",
    "MLCUnsupportedError",
    "MLCPredictionError",
    "MLCUpdateError",
    "Model",
    "load",
    "register_custom_layer",
    "unregister_custom_layer",
    "finetune",
    "update",
    "LossHistory",
    "UpdateContext",
    "UpdateResult",
    "UpdateTask",
    "cost_report",
]


def __getattr__(name: str):
    """``mlc.createml`` imports on first use (it pulls in the training stack), and so do
    ``mlc.cost`` and ``mlc.cost_report``."""
    if name in ("createml", "cost"):
        import importlib

        return importlib.import_module(f"mlc.{name}")
    if name == "cost_report":
        from mlc.cost import cost_report

        return cost_report
    raise AttributeError(f"module 'mlc' has no attribute {name!r}")
