"""The classic model-type registry: ``@model_type("glmRegressor")`` binds a builder.

A builder takes a ``StageContext`` (the stage's spec, features and location) and returns a
``Stage``. Model types that rely on an Apple framework are listed in ``PROPRIETARY`` and
refused by name.
"""

from __future__ import annotations

from typing import Callable

_BUILDERS: dict[str, Callable] = {}

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
            if name in _BUILDERS:
                raise RuntimeError(f"classic model type {name!r} is registered twice")
            _BUILDERS[name] = builder
        return builder

    return register


def find(name: str) -> Callable | None:
    _load_models()
    return _BUILDERS.get(name)


def supported() -> list[str]:
    _load_models()
    return sorted(_BUILDERS)


def _load_models() -> None:
    import mlc.classic.models  # noqa: F401  (registers every builder)
