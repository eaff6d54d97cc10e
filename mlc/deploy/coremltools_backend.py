"""Make ``coremltools.models.MLModel.predict`` work on Linux by running it through mlc.

    import mlc.deploy.coremltools_backend
    mlc.deploy.coremltools_backend.install()
    import coremltools as ct
    ct.models.MLModel("Model.mlpackage").predict({"x": x})   # runs on JAX

``install`` replaces ``MLModel.predict`` and ``MLModel.make_state`` (only those) and keeps the
originals for ``uninstall``. Each MLModel compiles once, on its first prediction; the compiled
model is cached on the instance. ``compute_units=CPU_ONLY`` selects JAX's CPU device.

Errors are those coremltools raises on macOS, so code written against it catches them: the
checks ``MLModel.predict`` makes in Python before it calls Core ML raise their ``TypeError``,
``KeyError`` or ``AssertionError``; a model or prediction Core ML refuses raises ``RuntimeError``
(the framework's error). Each is the ``mlc.MLCError`` that says what went wrong (its ``code``
and message), as an instance of a class that is also the exception coremltools raises.
"""

from __future__ import annotations

import contextlib
from typing import Any

from mlc import features as F
from mlc._errors import MLCError, MLCFeatureTypeError, raised_as
from mlc.io.proto import import_coremltools

_ORIGINALS: dict[str, Any] = {}
_CACHE_ATTR = "_mlc_model"


def _mlc_model(mlmodel):
    model = mlmodel.__dict__.get(_CACHE_ATTR)
    if model is None:
        import mlc

        ct = import_coremltools()
        device = "cpu" if getattr(mlmodel, "compute_unit", None) == ct.ComputeUnit.CPU_ONLY else None
        model = mlc.load(mlmodel, device=device, function_name=getattr(mlmodel, "function_name", None))
        mlmodel.__dict__[_CACHE_ATTR] = model
    return model


@contextlib.contextmanager
def _as_runtime_errors():
    """An ``MLCError`` raised inside re-raised as one that is also a ``RuntimeError``: what
    coremltools' proxy raises when Core ML refuses to compile a model or to predict."""
    try:
        yield
    except MLCError as e:
        converted = raised_as(e, RuntimeError)
        if converted is e:
            raise
        raise converted.with_traceback(e.__traceback__) from e.__cause__


def _refused(base: type[Exception], message: str) -> MLCError:
    return raised_as(MLCFeatureTypeError(message), base)


def _check_like_coremltools(model, data, state) -> None:
    """The checks coremltools' ``MLModel.predict`` makes in Python before it calls Core ML, with
    its exception types: ``_check_predict_data`` (``TypeError``: not a dict or a list of dicts),
    ``_get_predictions`` (``AssertionError``: a state with a list), ``_verify_input_name_exists``
    (``KeyError``: an unknown input name), ``_verify_pil_image_modes`` (``TypeError``: an image
    input that is absent, not a PIL image, or in the wrong mode)."""
    if type(data) not in (list, dict):
        raise _refused(TypeError, f'{model.name}: "data" parameter must be either a dict or list of dict, but got {type(data)}.')
    if type(data) is list and not all(type(d) is dict for d in data):
        raise _refused(TypeError, f'{model.name}: "data" list must contain only dictionaries')
    if type(data) is list and state is not None:
        raise _refused(AssertionError, f"{model.name}: State can only be used for unbatched predictions")
    for example in [data] if type(data) is dict else data:
        _check_names_and_images(model, example)


def _check_names_and_images(model, example: dict) -> None:
    """``MLModel._verify_input_dict`` on one example (see ``_check_like_coremltools``)."""
    inputs = model.input_description
    for name in example:
        if name not in inputs:
            raise _refused(
                KeyError,
                f"{model.name}: Provided key {name!r}, in the input dict, does not match any of the model input name(s), which are: {set(inputs)}",
            )
    for name, feature in inputs.items():
        if feature.kind != "image":
            continue
        from PIL import Image

        value = example.get(name)
        if not isinstance(value, Image.Image):
            raise _refused(TypeError, f"{model.name}: Image input, {name!r} must be of type PIL.Image.Image in the input dict")
        mode = F.PIL_MODES[feature.color_space]
        if value.mode != mode:
            raise _refused(
                TypeError, f"{model.name}: {feature.color_space} image input, {name!r}, must be of type PIL.Image.Image with mode=={mode!r}"
            )


def _predict(self, data, state=None):
    """``MLModel.predict`` through mlc: a dict (or list of dicts) in, the same out; errors as
    coremltools raises them (the module's docstring)."""
    with _as_runtime_errors():
        model = _mlc_model(self)
    _check_like_coremltools(model, data, state)
    with _as_runtime_errors():
        return model.predict(data, state=state)


def _make_state(self):
    with _as_runtime_errors():
        return _mlc_model(self).make_state()


def install() -> None:
    """Route ``coremltools.models.MLModel.predict`` (and ``make_state``) to mlc. Idempotent."""
    ct = import_coremltools()
    cls = ct.models.MLModel
    if _ORIGINALS:
        return
    _ORIGINALS["predict"] = cls.predict
    _ORIGINALS["make_state"] = getattr(cls, "make_state", None)
    cls.predict = _predict
    cls.make_state = _make_state


def uninstall() -> None:
    """Restore coremltools' own methods."""
    if not _ORIGINALS:
        return
    cls = import_coremltools().models.MLModel
    cls.predict = _ORIGINALS.pop("predict")
    original = _ORIGINALS.pop("make_state")
    if original is not None:
        cls.make_state = original


def installed() -> bool:
    return bool(_ORIGINALS)
