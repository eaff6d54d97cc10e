"""mlc.frontends.registry.Registry, and the front-end registries built on it (MIL ops,
NeuralNetwork layers, classic model types, custom-layer bindings)."""

import threading
import time

import pytest

import mlc
from mlc.frontends.registry import DuplicateEntryError, Registry


def test_register_find_names_contains():
    r = Registry("widget")
    assert r.find("a") is None and "a" not in r and r.names() == [] and len(r) == 0
    entry = object()
    assert r.register("b", entry) is entry
    r.register("a", 1)
    assert r.find("b") is entry and r.find("a") == 1 and r.find("c") is None
    assert "a" in r and "c" not in r
    assert r.names() == ["a", "b"] and list(r) == ["a", "b"] and len(r) == 2
    assert r.items() == [("a", 1), ("b", entry)]
    assert r.unregister("a") == 1 and r.unregister("a") is None
    assert r.names() == ["b"]


def test_duplicate_is_refused_unless_replacing():
    r = Registry("widget")
    r.register("a", 1)
    with pytest.raises(DuplicateEntryError, match="widget 'a' is already registered"):
        r.register("a", 2)
    assert r.find("a") == 1
    # a ValueError and a RuntimeError, as the registries it replaces raised
    assert issubclass(DuplicateEntryError, ValueError) and issubclass(DuplicateEntryError, RuntimeError)
    r.register("a", 3, replace=True)
    assert r.find("a") == 3


def test_setdefault_collects_without_loading():
    calls = []
    r = Registry("op", lambda: calls.append(1))
    r.setdefault("x", []).append(1)
    r.setdefault("x", []).append(2)
    assert calls == []
    assert r.find("x") == [1, 2] and calls == [1]


def test_require_names_the_thing_where_and_what_is_supported():
    r = Registry("widget")
    r.register("b", 2)
    r.register("a", 1)
    assert r.require("a") == 1
    with pytest.raises(mlc.MLCUnsupportedError) as info:
        r.require("zzz", where="model.mlmodel", detail="layer 'l1'", hint="see the docs")
    assert str(info.value) == (
        "model.mlmodel: widget 'zzz' (layer 'l1') is not supported by mlc yet; see the docs. Supported: a, b"
    )
    assert info.value.code == "unsupported"
    with pytest.raises(mlc.MLCUnsupportedError) as info:
        r.require("zzz", list_supported=False)
    assert str(info.value) == "widget 'zzz' is not supported by mlc yet"
    assert str(Registry("widget").unsupported("q")) == "widget 'q' is not supported by mlc yet. Supported: none"


def test_loader_runs_once_on_first_lookup_not_on_register():
    calls = []

    def load():
        calls.append(1)
        r.register("loaded", "L")
        assert r.find("loaded") == "L"  # a lookup while loading sees the entries so far, without recursing

    r = Registry("widget", load)
    r.register("early", "E")
    assert calls == []
    assert "Registry('widget', not loaded)" == repr(r)
    assert r.find("loaded") == "L" and calls == [1]
    assert r.names() == ["early", "loaded"] and "loaded" in r and len(r) == 2 and r.require("early") == "E"
    assert calls == [1]


@pytest.mark.parametrize("first", ["find", "require", "names", "contains", "len", "items"])
def test_every_lookup_loads(first):
    r = Registry("widget", lambda: r.register("x", 1))
    {
        "find": lambda: r.find("x"),
        "require": lambda: r.require("x"),
        "names": r.names,
        "contains": lambda: "x" in r,
        "len": lambda: len(r),
        "items": r.items,
    }[first]()
    assert r.find("x") == 1


def test_threads_wait_for_the_loader():
    calls = []

    def load():
        calls.append(1)
        time.sleep(0.2)
        r.register("x", 1)

    r = Registry("widget", load)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(r.find("x"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and seen == [1, 1, 1, 1]


def test_a_failing_loader_raises_once():
    calls = []

    def load():
        calls.append(1)
        raise ImportError("broken module")

    r = Registry("widget", load)
    with pytest.raises(ImportError, match="broken module"):
        r.find("x")
    assert r.find("x") is None and calls == [1]


# -- the front-end registries ------------------------------------------------------------------


def test_mil_registry_keeps_its_opset_versions():
    from mlc.frontends.mil import registry as R

    assert isinstance(R.OPS, Registry)
    versions = R.lowerings()["crop_resize"]
    assert [d.since for d in versions] == ["CoreML5", "CoreML7"]
    assert R.find("crop_resize", "CoreML5").since == "CoreML5"
    assert R.find("crop_resize", "CoreML6").since == "CoreML5"
    assert R.find("crop_resize", "CoreML7").since == "CoreML7"
    assert R.find("crop_resize").since == "CoreML7"
    assert R.find("resize", "CoreML6") is None and R.find("resize", "CoreML7").name == "resize"
    assert R.find("no_such_op") is None
    assert R.supported_ops() == R.OPS.names() and "relu" in R.OPS
    with pytest.raises(mlc.MLCUnsupportedError) as info:
        R.lookup("no_such_op", "CoreML7", op_name="op_1", model="m.mlpackage")
    assert str(info.value).startswith(
        "m.mlpackage: MIL op 'no_such_op' (operation 'op_1', opset iOS17) is not supported by mlc yet; "
        "`mlc info MODEL` lists every unsupported op. Supported: abs, "
    )


def test_mil_registry_refuses_a_second_lowering_for_an_opset():
    from mlc.frontends.mil import registry as R

    before = R.lowerings()["relu"]
    with pytest.raises(DuplicateEntryError, match="MIL op 'relu' is already registered for CoreML5"):
        R.op("relu")(lambda x: x)
    with pytest.raises(ValueError, match="unknown opset"):
        R.op("relu", since="CoreML99")
    assert R.lowerings()["relu"] == before


def test_neuralnetwork_registry():
    from mlc.frontends.neuralnetwork import registry as R

    assert isinstance(R.LAYERS, Registry)
    assert R.find("convolution").name == "convolution" and R.find("nope") is None
    assert R.supported_layers() == R.LAYERS.names()
    with pytest.raises(DuplicateEntryError, match="NeuralNetwork layer type 'convolution' is already registered"):
        R.layer("convolution")(lambda ctx, p, x: x)
    with pytest.raises(mlc.MLCUnsupportedError) as info:
        R.lookup("nope", layer_name="l", model="m.mlmodel")
    assert str(info.value) == (
        "m.mlmodel: NeuralNetwork layer type 'nope' (layer 'l') is not supported by mlc yet; "
        "`mlc info MODEL` lists every unsupported layer"
    )


def test_classic_registry():
    from mlc.frontends.classic import registry as R

    assert isinstance(R.MODEL_TYPES, Registry)
    assert callable(R.find("glmRegressor")) and R.find("textClassifier") is None
    assert R.supported() == R.MODEL_TYPES.names() and "glmRegressor" in R.supported()
    with pytest.raises(DuplicateEntryError, match="Core ML model type 'glmRegressor' is already registered"):
        R.model_type("glmRegressor")(lambda ctx: None)


def test_custom_layer_bindings():
    from mlc.frontends.neuralnetwork import custom as C

    assert isinstance(C.CUSTOM_LAYERS, Registry)

    def f(x, *, parameters, weights):
        return x

    def g(x, *, parameters, weights):
        return -x

    try:
        mlc.register_custom_layer("RegistryTestLayer", f)
        assert C.binding("RegistryTestLayer") is f
        mlc.register_custom_layer("RegistryTestLayer", g)  # binding again replaces
        assert C.binding("RegistryTestLayer") is g
    finally:
        mlc.unregister_custom_layer("RegistryTestLayer")
    assert C.binding("RegistryTestLayer") is None
    mlc.unregister_custom_layer("RegistryTestLayer")  # unbinding an unbound class is fine
    with pytest.raises(mlc.MLCParametersError, match="non-empty string"):
        mlc.register_custom_layer("", f)
    with pytest.raises(mlc.MLCParametersError, match="is not callable"):
        mlc.register_custom_layer("RegistryTestLayer", 3)
