"""Session fixtures for the torch-model tests: each model is built, traced and converted once
per (target, precision), and loaded by mlc once per (target, precision, compute precision)."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlc.testing import torch_models  # noqa: E402


@pytest.fixture(scope="session")
def torch_model():
    """``torch_model(name) -> (module, example_inputs, reference output)``."""
    cache = {}

    def get(name):
        if name not in cache:
            module, example = torch_models.build(name)
            cache[name] = (module, example, torch_models.reference(module, example))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def converted(tmp_path_factory, torch_model):
    """``converted(name, target, precision) -> path`` of the saved .mlpackage."""
    root = tmp_path_factory.mktemp("torch_models")
    cache = {}

    def get(name, target, precision):
        key = (name, target, precision)
        if key not in cache:
            module, example, _ = torch_model(name)
            path = root / f"{name}_{target}_{precision}.mlpackage"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings, coremltools' version notices
                cache[key] = torch_models.convert(module, example, target, precision, path)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def loaded(converted):
    """``loaded(name, target, precision, compute_precision="auto") -> mlc.Model``."""
    import mlc

    cache = {}

    def get(name, target, precision, compute_precision="auto"):
        key = (name, target, precision, compute_precision)
        if key not in cache:
            cache[key] = mlc.load(converted(name, target, precision), compute_precision=compute_precision)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def feeds(torch_model):
    """``feeds(name) -> {input name: numpy array}`` for the model's example inputs."""

    def get(name):
        _, example, _ = torch_model(name)
        names = torch_models.input_names(example)
        return {n: t.numpy().astype(np.float32 if t.is_floating_point() else np.int32) for n, t in zip(names, example)}

    return get
