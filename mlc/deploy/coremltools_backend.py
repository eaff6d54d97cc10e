"""Make ``coremltools.models.MLModel.predict`` work on Linux by running it through mlc.

    import mlc.deploy.coremltools_backend
    mlc.deploy.coremltools_backend.install()
    import coremltools as ct
    ct.models.MLModel("Model.mlpackage").predict({"x": x})   # runs on JAX

``install`` replaces ``MLModel.predict`` and ``MLModel.make_state`` (only those) and keeps the
originals for ``uninstall``. Each MLModel compiles once, on its first prediction; the compiled
model is cached on the instance. ``compute_units=CPU_ONLY`` selects JAX's CPU device.
"""

from __future__ import annotations

from typing import Any

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


def _predict(self, data, state=None):
    """``MLModel.predict`` through mlc: a dict (or list of dicts) in, the same out."""
    return _mlc_model(self).predict(data, state=state)


def _make_state(self):
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
