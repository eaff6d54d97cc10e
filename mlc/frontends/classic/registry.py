"""The classic model-type registry: ``@model_type("glmRegressor")`` binds a builder.

A builder takes a ``StageContext`` (the stage's spec, features and location) and returns a
``Stage``. Model types that rely on an Apple framework are listed in ``PROPRIETARY`` and
refused by name. The table is a ``mlc.frontends.registry.Registry`` (``MODEL_TYPES``).
"""

from __future__ import annotations

from typing import Callable

from mlc.frontends.registry import Registry


def _load_models() -> None:
    import mlc.frontends.classic.models  # noqa: F401  (registers every builder)


MODEL_TYPES: Registry[Callable] = Registry("Core ML model type", _load_models)

# Model.proto types whose semantics live in an Apple framework, not in the spec.
PROPRIETARY = {
    "visionFeaturePrint": "the Vision framework (VNFeaturePrint)",
    "audioFeaturePrint": "the SoundAnalysis framework",
    "soundAnalysisPreprocessing": "the SoundAnalysis framework",
    "textClassifier": "the Natural Language framework (NLModel)",
    "wordTagger": "the Natural Language framework (NLModel)",
    "gazetteer": "the Natural Language framework (NLGazetteer)",
    "wordEmbedding": "the Natural Language framework (NLEmbedding)",
    "customModel": "an app-provided MLCustomModel class (Objective-C/Swift code, not in the file)",
    "serializedModel": "a private Apple model format (serializedModel)",
}


def model_type(*names: str) -> Callable:
    """Register ``builder(ctx) -> Stage`` for the Model.proto ``Type`` oneof names."""

    def register(builder: Callable) -> Callable:
        for name in names:
            MODEL_TYPES.register(name, builder)
        return builder

    return register


def find(name: str) -> Callable | None:
    return MODEL_TYPES.find(name)


def supported() -> list[str]:
    return MODEL_TYPES.names()
