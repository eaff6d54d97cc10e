"""mlc.load on broken, malicious and valid ``.mlpackage`` folders and ``.mlmodel`` files.

Every failure must be an ``mlc.MLCIOError`` whose message names the file. Escapes are
tried with a valid model or weight file waiting outside the package, so that only the
containment check can stop them.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import mlc

WEIGHT = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


@pytest.fixture(scope="module")
def saved(ct, tmp_path_factory):
    """A coremltools-saved .mlpackage computing ``x + WEIGHT`` (WEIGHT in weights/weight.bin)."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing.mil_program import mil_mlmodel

    path = tmp_path_factory.mktemp("saved") / "add.mlpackage"
    mil_mlmodel(lambda x: mb.add(x=x, y=WEIGHT), {"x": (3, 4)}, target="iOS17").save(str(path))
    return path


@pytest.fixture
def package(saved, tmp_path):
    """A private copy of the saved package, to break."""
    path = tmp_path / "model.mlpackage"
    shutil.copytree(saved, path)
    return path


def _manifest(package) -> dict:
    return json.loads((package / "Manifest.json").read_text())


def _root_entry(manifest: dict) -> dict:
    return manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]


def _write_manifest(package, manifest):
    (package / "Manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))


def _model_file(package):
    return package / "Data" / _root_entry(_manifest(package))["path"]


def _fails(source, *fragments, names=None):
    """``mlc.load(source)`` raises MLCIOError naming ``names`` (default: ``source``) and every fragment."""
    with pytest.raises(mlc.MLCIOError) as info:
        mlc.load(source)
    message = str(info.value)
    assert str(source if names is None else names) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _check_runs(source):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    out = mlc.load(source).predict({"x": x})
    np.testing.assert_array_equal(next(iter(out.values())), x + WEIGHT)


# -- valid inputs ----------------------------------------------------------------------------------
def test_valid_package(package):
    _check_runs(package)
    _check_runs(str(package))


def test_valid_package_through_a_symlink(package, tmp_path):
    """A link to the package itself is fine: containment is checked against where it really is."""
    link = tmp_path / "link.mlpackage"
    link.symlink_to(package, target_is_directory=True)
    _check_runs(link)


def test_symlink_that_stays_inside_the_package(package):
    model = _model_file(package)
    os.rename(model, model.parent / "real.mlmodel")
    model.symlink_to("real.mlmodel")
    _check_runs(package)


# -- the manifest ----------------------------------------------------------------------------------
@pytest.mark.hostile
def test_missing_manifest(package):
    os.remove(package / "Manifest.json")
    _fails(package, "no Manifest.json")


@pytest.mark.hostile
def test_not_a_package_folder(tmp_path):
    _fails(tmp_path, "no Manifest.json")


@pytest.mark.hostile
@pytest.mark.parametrize("data", [b"{not json", b"", b'{"rootModelIdentifier": ', b'{"a": "\xff\xfe"}'])
def test_malformed_manifest_json(package, data):
    (package / "Manifest.json").write_bytes(data)
    _fails(package, "Manifest.json", "malformed manifest")


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda m: m.pop("rootModelIdentifier"), "rootModelIdentifier"),
        (lambda m: m.update(rootModelIdentifier=7), "rootModelIdentifier"),
        (lambda m: m.update(rootModelIdentifier="no-such-item"), "no-such-item"),
        (lambda m: m.pop("itemInfoEntries"), "itemInfoEntries"),
        (lambda m: m.update(itemInfoEntries=["a"]), "itemInfoEntries"),
        (lambda m: _root_entry(m).pop("path"), "path"),
        (lambda m: _root_entry(m).update(path=3), "path"),
        (lambda m: _root_entry(m).update(path=""), "path"),
    ],
)
@pytest.mark.hostile
def test_manifest_missing_fields(package, edit, problem):
    manifest = _manifest(package)
    edit(manifest)
    _write_manifest(package, manifest)
    _fails(package, "Manifest.json", "malformed manifest", problem)


@pytest.mark.hostile
@pytest.mark.parametrize("manifest", [[], "a string", None, 3])
def test_manifest_not_an_object(package, manifest):
    _write_manifest(package, json.dumps(manifest))
    _fails(package, "Manifest.json", "malformed manifest")


def _outside_copy_of_model(package, tmp_path):
    """A valid copy of the package's model file outside the package; returns its path."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    target = outside / "model.mlmodel"
    shutil.copy(_model_file(package), target)
    return target


@pytest.mark.parametrize(
    "relative", ["../../etc/passwd", "../../outside/model.mlmodel", "com.apple.CoreML/../../../outside/model.mlmodel"]
)
@pytest.mark.hostile
def test_root_path_leaving_the_package(package, tmp_path, relative):
    _outside_copy_of_model(package, tmp_path)
    manifest = _manifest(package)
    _root_entry(manifest)["path"] = relative
    _write_manifest(package, manifest)
    _fails(package, "Manifest.json", "leaves the package", repr(relative))


@pytest.mark.hostile
def test_root_path_leaving_data(package):
    """The root model lives in Data/; pointing at the manifest is refused too."""
    manifest = _manifest(package)
    _root_entry(manifest)["path"] = "../Manifest.json"
    _write_manifest(package, manifest)
    _fails(package, "Manifest.json", "leaves the package")


@pytest.mark.hostile
@pytest.mark.parametrize("absolute", ["/etc/passwd", "ABS"])
def test_root_path_absolute(package, tmp_path, absolute):
    if absolute == "ABS":
        absolute = str(_outside_copy_of_model(package, tmp_path))
    manifest = _manifest(package)
    _root_entry(manifest)["path"] = absolute
    _write_manifest(package, manifest)
    _fails(package, "Manifest.json", "absolute path")


@pytest.mark.hostile
def test_model_file_symlinked_outside(package, tmp_path):
    outside = _outside_copy_of_model(package, tmp_path)
    model = _model_file(package)
    os.remove(model)
    model.symlink_to(outside)
    _fails(package, "Manifest.json", "leaves the package")


@pytest.mark.hostile
def test_model_folder_symlinked_outside(package, tmp_path):
    folder = package / "Data" / "com.apple.CoreML"
    shutil.move(folder, tmp_path / "elsewhere")
    folder.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _fails(package, "leaves the package")


@pytest.mark.hostile
def test_data_folder_symlinked_outside(package, tmp_path):
    data = package / "Data"
    shutil.move(data, tmp_path / "elsewhere")
    data.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _fails(package, "leaves the package")


@pytest.mark.hostile
def test_manifest_symlinked_outside(package, tmp_path):
    outside = tmp_path / "Manifest.json"
    shutil.move(package / "Manifest.json", outside)
    (package / "Manifest.json").symlink_to(outside)
    _fails(package, "leaves the package")


@pytest.mark.hostile
def test_root_model_missing(package):
    os.remove(_model_file(package))
    _fails(package, "Manifest.json", "missing")


@pytest.mark.hostile
def test_root_model_is_a_folder(package):
    model = _model_file(package)
    os.remove(model)
    model.mkdir()
    _fails(package, "missing")


# -- weight files named by the program ------------------------------------------------------------
def _set_blob_file_names(package, name: str):
    """Rewrite every blob constant's ``fileName`` in the package's spec to ``name``."""
    from mlc.io.proto import proto

    model = _model_file(package)
    spec = proto("Model").Model()
    spec.ParseFromString(model.read_bytes())
    changed = 0
    for fn in spec.mlProgram.functions.values():
        for op in fn.block_specializations[fn.opset].operations:
            if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue":
                op.attributes["val"].blobFileValue.fileName = name
                changed += 1
    assert changed
    model.write_bytes(spec.SerializeToString())


def _weight_file(package):
    return _model_file(package).parent / "weights" / "weight.bin"


def test_weight_reference_inside_the_folder_is_fine(package):
    """The control for the escapes below: a renamed reference that stays inside still loads."""
    os.rename(_weight_file(package), _weight_file(package).parent / "other.bin")
    _set_blob_file_names(package, "@model_path/weights/other.bin")
    _check_runs(package)


@pytest.mark.parametrize(
    "reference, placed",
    [
        ("@model_path/../x", "Data/x"),
        ("@model_path/../../../stolen.bin", "../stolen.bin"),
        ("@model_path/weights/../../../../stolen.bin", "../stolen.bin"),
        ("../../../stolen.bin", "../stolen.bin"),
    ],
)
@pytest.mark.hostile
def test_weight_reference_escaping(package, reference, placed):
    shutil.copy(_weight_file(package), package / placed)  # a valid weight file waits there
    _set_blob_file_names(package, reference)
    _fails(package, "leaves the package", repr(reference.removeprefix("@model_path/")))


@pytest.mark.hostile
@pytest.mark.parametrize("prefix", ["@model_path/", ""])
def test_weight_reference_absolute(package, tmp_path, prefix):
    stolen = tmp_path / "stolen.bin"
    shutil.copy(_weight_file(package), stolen)
    _set_blob_file_names(package, prefix + str(stolen))
    _fails(package, "absolute path")


@pytest.mark.hostile
def test_weight_file_symlinked_outside(package, tmp_path):
    weight = _weight_file(package)
    shutil.move(weight, tmp_path / "stolen.bin")
    weight.symlink_to(tmp_path / "stolen.bin")
    _fails(package, "leaves the package")


# -- .mlmodel files and paths ----------------------------------------------------------------------
@pytest.mark.hostile
def test_empty_mlmodel(tmp_path):
    path = tmp_path / "empty.mlmodel"
    path.write_bytes(b"")
    _fails(path, "empty")


@pytest.mark.hostile
def test_truncated_mlmodel(saved, tmp_path):
    data = _model_file(saved).read_bytes()
    path = tmp_path / "cut.mlmodel"
    cuts = {1, 2, 3, 10, len(data) // 3, len(data) // 2, len(data) - 10, len(data) - 1, *range(97, len(data), 97)}
    for size in sorted(cuts):
        path.write_bytes(data[:size])
        _fails(path, "not a Core ML model")


@pytest.mark.hostile
@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_mlmodel(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "random.mlmodel"
    path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())
    _fails(path, "not a Core ML model")


@pytest.mark.hostile
def test_text_file_as_mlmodel(tmp_path):
    path = tmp_path / "notes.mlmodel"
    path.write_text("this is not a model\n")
    _fails(path, "not a Core ML model")


@pytest.mark.hostile
def test_nonexistent_path(tmp_path):
    _fails(tmp_path / "missing.mlpackage", "no such file")
    _fails(str(tmp_path / "missing.mlmodel"), "no such file")
