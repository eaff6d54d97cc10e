"""``import mlc`` stays light: the training stack (optax, flax), plotting, coremltools, torch,
scikit-learn and the serving stack (starlette, uvicorn, grpc) load only when first used, while
``mlc.update``, ``mlc.finetune`` and the task types still resolve as attributes of ``mlc`` (PEP 562 ``__getattr__``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("optax", "flax", "matplotlib", "coremltools", "torch", "sklearn", "starlette", "uvicorn", "grpc", "prometheus_client")
TRAINING_NAMES = ("update", "finetune", "LossHistory", "UpdateContext", "UpdateResult", "UpdateTask")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_mlc_loads_no_heavy_package():
    code = f"import mlc, sys; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    assert _run(code) == "[]"


def test_training_loads_optax_on_first_use():
    code = (
        "import sys, mlc; before = 'optax' in sys.modules; f = mlc.update; "
        "print(before, 'optax' in sys.modules, f.__module__)"
    )
    assert _run(code) == "False True mlc.train.update"


@pytest.mark.parametrize("name", TRAINING_NAMES)
def test_training_names_resolve_and_are_listed(name):
    import mlc
    from mlc.train import finetune, task, update

    expected = {
        "update": update.update,
        "finetune": finetune.finetune,
        "LossHistory": task.LossHistory,
        "UpdateContext": task.UpdateContext,
        "UpdateResult": task.UpdateResult,
        "UpdateTask": task.UpdateTask,
    }[name]
    assert getattr(mlc, name) is expected
    assert name in mlc.__all__
    assert name in dir(mlc)


def test_from_import_works():
    from mlc import LossHistory, UpdateTask, finetune, update  # noqa: F401

    assert callable(update) and callable(finetune)


def test_unknown_attribute_is_an_attribute_error():
    import mlc

    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        mlc.not_a_name  # noqa: B018
