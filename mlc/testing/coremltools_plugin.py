"""A pytest plugin that runs coremltools' own test suites against mlc.

    python -m pytest -p mlc.testing.coremltools_plugin --pyargs \\
        coremltools.converters.mil.mil.ops.tests.iOS17.test_activation

coremltools ships its op tests inside the wheel. On macOS each case converts a program and
compares Core ML's prediction with the expected values Apple wrote; elsewhere the comparison is
skipped (``_IS_MACOS`` is false and ``MLModel.predict`` raises). This plugin makes the suite
behave as on a Mac whose Core ML is mlc. It patches exactly these, before any test module is
imported, and nothing in the test files:

- ``coremltools._deps._IS_MACOS`` and ``coremltools.converters.mil.testing_utils._IS_MACOS``
  are True, so ``compare_backend`` / ``compare_shapes`` run the prediction. (coremltools' library
  code that read ``_IS_MACOS`` at its own import keeps the real value.)
- ``coremltools.models.utils._macos_version`` reports macOS ``MACOS_VERSION`` (15.0, the release
  that runs iOS18 programs), so no case is skipped as "needs a newer macOS", and
  ``coremltools.models.utils._is_macos`` is true (the NeuralNetwork tests import it by name at
  their import, after this plugin). Library modules that imported ``_is_macos`` by name at their
  own import (``MLModel``) keep the original; those that imported ``_macos_version`` get ours.
- ``MLModel.predict`` and ``MLModel.make_state`` run through mlc (``mlc.deploy.coremltools_backend``);
  the state is an ``mlc.State``, whose ``read_state`` / ``write_state`` match ``MLState``'s.
  ``compute_units=CPU_ONLY`` selects JAX's CPU device; other compute units use JAX's default.

- ``compare_backend`` (as the op tests' ``testing_utils`` imported it) is wrapped for one case
  no runtime can pass: a program whose tensors are typed fp16, run on an fp32 backend, is held to
  fp32 tolerance (atol 1e-4) against an expected value computed in fp32, while its fp16 result
  alone is rounded by up to 4.9e-4 near 1.0. Apple's default test run has no fp32 backend
  (``INCLUDE_MIL_FP32_UNIT_TESTS`` is opt-in), so Apple never meets these. When such a case fails
  at fp32 tolerance it is checked again at the tolerance coremltools applies to every fp16
  computation, and reported as xfail (``FP16_AT_FP32_TOLERANCE``) if that passes; otherwise it
  stays a failure.

- ``torchvision``, where it is not installed (the registry has no CPU build for torch 2.13: its
  0.28 wheel links libtorch_cuda), is registered as a stand-in module whose every public
  attribute skips the test that touches it (``TORCHVISION_ABSENT``). coremltools' torch
  quantization tests and the compression tests (through ``test_torch_conversion_api``) import it
  at module level but only two cases use it; without the stand-in none of their cases would be
  collected. ``coremltools._deps._HAS_TORCH_VISION`` keeps its real value (False).
- With ``MLC_PLATFORM_MACHINE=arm64`` in the environment, ``platform.machine()`` reports that
  machine. coremltools' compression tests call ``pytest.xfail`` before doing anything on x86_64
  (rdar://137153993: Core ML on Apple's native x86_64 CI Macs); the optimize suite sets it so
  that those cases run, as on an Apple-silicon Mac, instead of never reaching mlc.
- ``coremltools.test.utils.load_boston``, which downloads the Boston housing table from
  lib.stat.cmu.edu (nothing may be downloaded at run time), reads the same 506 x 13 table from the
  copy that the ``mlxtend`` package ships (``mlxtend/data/data/boston_housing.csv``), its
  feature names as a list (xgboost 2 refuses an array of them).
- The LibSVM tests ``import svmutil`` / ``from svm import ...``, the layout of libsvm's source
  tree with its ``python/`` folder on ``sys.path``; the ``libsvm-official`` package installs the
  same modules as ``libsvm.svmutil`` / ``libsvm.svm`` (which coremltools' converter itself uses),
  so those names are registered as aliases of them (``svmutil`` with ``svm``'s names too), and
  ``libsvm.__version__`` (which the converter records) is set from the package metadata.

Each test's report records, as the junit property ``mlc_ops``, the MIL op types of the programs
it ran (``scripts/conformance.py`` counts results per op with it).

With ``MLC_CONFORMANCE_LOG=path``, each case's outcome is appended to that file as one JSON
line the moment it is known (by the xdist controller, or the single process), so an interrupted
run keeps everything it finished (``scripts/conformance.py`` resumes from it). A test file that
fails to import (or skips itself at module level) is logged the same way, as one case named by
the file (run with ``--continue-on-collection-errors`` so that the other files still run).

With ``MLC_CONFORMANCE_SELECT=path`` (a file of node ids relative to the coremltools package,
one per line) only those cases of the collected files run: thousands of cases, without thousands
of node ids on the command line. (Collect each opset folder in its own session: a file that
re-exports an earlier opset's test class, collected with that class's own file, yields
``[NOTSET]`` skips instead of the cases.)

Environment variables coremltools reads keep their meaning: ``INCLUDE_MIL_FP32_UNIT_TESTS=1``
adds the fp32 mlprogram backends, ``PYMIL_TEST_TARGETS=mlprogram`` drops the neuralnetwork one.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import types

import pytest

MACOS_VERSION = (15, 0)
FP16_AT_FP32_TOLERANCE = (
    "fp16-typed program held to fp32 tolerance: fp16 rounding exceeds atol 1e-4 on any runtime; "
    "passes at coremltools' fp16 tolerance"
)

TORCHVISION_ABSENT = "torchvision is not installed (no CPU wheel for this torch in the registry)"

_PATCHED: dict[tuple[object, str], object] = {}
_OPS_RUN: set[str] = set()  # op types of the programs the current test ran


def _patch(owner, name: str, value) -> None:
    _PATCHED.setdefault((owner, name), getattr(owner, name))
    setattr(owner, name, value)


def _macos_version():
    return MACOS_VERSION


def _is_macos():
    return True


def install() -> None:
    """Apply the patches (idempotent)."""
    if _PATCHED:
        return
    os.environ.setdefault("TQDM_DISABLE", "1")  # conversion progress bars
    from mlc.deploy import coremltools_backend
    from mlc.io.proto import import_coremltools

    import_coremltools()
    import coremltools._deps as deps
    import coremltools.converters.mil.testing_utils as testing_utils
    import coremltools.converters.mil.mil.ops.tests.testing_utils as op_testing_utils
    import coremltools.models.utils as model_utils

    _patch(deps, "_IS_MACOS", True)
    _patch(testing_utils, "_IS_MACOS", True)
    original_version = model_utils._macos_version
    _patch(model_utils, "_macos_version", _macos_version)
    _patch(model_utils, "_is_macos", _is_macos)
    # Library modules that imported ``_macos_version`` by name (quantization_utils) would call the
    # original, which now believes it is on macOS and runs ``sw_vers``: give them ours too.
    for name, module in list(sys.modules.items()):
        if name.startswith("coremltools") and getattr(module, "_macos_version", None) is original_version:
            _patch(module, "_macos_version", _macos_version)
    _patch(op_testing_utils, "compare_backend", _fp16_aware(op_testing_utils.compare_backend))
    _patch(coremltools_backend, "_mlc_model", _recording(coremltools_backend._mlc_model))
    coremltools_backend.install()
    _patch_boston()
    _alias_libsvm()
    _stand_in_torchvision()
    machine = os.environ.get("MLC_PLATFORM_MACHINE")
    if machine:
        import platform

        _patch(platform, "machine", lambda: machine)


class _AbsentModule(types.ModuleType):
    """A module that is not installed: importing it works, using it skips the test."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # introspection (inspect, pickle, pytest) sees a plain module
            raise AttributeError(name)
        pytest.skip(f"{TORCHVISION_ABSENT}: uses {self.__name__}.{name}")


def _stand_in_torchvision() -> None:
    import importlib.util

    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    sys.modules["torchvision"] = _AbsentModule("torchvision", TORCHVISION_ABSENT)


def _alias_libsvm() -> None:
    try:
        from libsvm import svm, svmutil
    except ImportError:  # coremltools' tests skip themselves without libsvm
        return
    # In libsvm's own tree svmutil does ``from svm import *`` (C_SVC, NU_SVR, ... through it).
    merged = types.ModuleType("svmutil", svmutil.__doc__)
    merged.__dict__.update({k: v for k, v in vars(svm).items() if not k.startswith("__")})
    merged.__dict__.update({k: v for k, v in vars(svmutil).items() if not k.startswith("__")})
    import libsvm

    if not hasattr(libsvm, "__version__"):  # the converter records it; libsvm-official does not set it
        from importlib.metadata import version

        libsvm.__version__ = version("libsvm-official")
    sys.modules.setdefault("svm", svm)
    sys.modules.setdefault("svmutil", merged)


def _load_boston():
    """coremltools' ``load_boston`` result, from mlxtend's shipped copy of the table."""
    import numpy as np
    from mlxtend.data import boston_housing_data

    data, target = boston_housing_data()
    # A list, where coremltools' loader gives a '<U7' array: xgboost >= 2 (the oldest release that
    # installs beside numpy 2) refuses an array as DMatrix feature names; every test reads it as a sequence.
    names = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT"]
    return {"data": np.ascontiguousarray(data, dtype=np.float64), "target": np.asarray(target, np.float64), "feature_names": names}


def _patch_boston() -> None:
    try:
        import coremltools.test.utils as test_utils
    except ImportError:  # pandas or requests missing: the tests that need it fail to import anyway
        return
    _patch(test_utils, "load_boston", _load_boston)


def _recording(mlc_model):
    """Wrap ``coremltools_backend._mlc_model`` to note the op types each prediction runs."""

    def wrapped(mlmodel):
        model = mlc_model(mlmodel)
        _OPS_RUN.update(model.program.op_histogram)
        return model

    return wrapped


def _fp16_aware(compare_backend):
    """Wrap ``compare_backend``: see FP16_AT_FP32_TOLERANCE in the module docstring."""

    def wrapped(mlmodel, input_key_values, expected_outputs, dtype="fp32", *args, **kwargs):
        try:
            return compare_backend(mlmodel, input_key_values, expected_outputs, dtype, *args, **kwargs)
        except AssertionError:
            if dtype != "fp32" or kwargs.get("state") is not None or not _has_fp16_tensors(mlmodel):
                raise
        compare_backend(mlmodel, input_key_values, expected_outputs, "fp16", *args, **kwargs)
        pytest.xfail(FP16_AT_FP32_TOLERANCE)

    return wrapped


def _has_fp16_tensors(mlmodel) -> bool:
    """Whether any input, output or op result of the ML Program is typed fp16."""
    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        return False
    from mlc.io.proto import import_coremltools

    ct = import_coremltools()
    fp16 = ct.proto.MIL_pb2.DataType.FLOAT16
    for function in spec.mlProgram.functions.values():
        if any(v.type.tensorType.dataType == fp16 for v in function.inputs):
            return True
        for block in function.block_specializations.values():
            for operation in block.operations:
                if any(v.type.tensorType.dataType == fp16 for v in operation.outputs):
                    return True
    return False


def uninstall() -> None:
    """Undo every patch."""
    from mlc.deploy import coremltools_backend

    for (owner, name), value in _PATCHED.items():
        setattr(owner, name, value)
    _PATCHED.clear()
    if isinstance(sys.modules.get("torchvision"), _AbsentModule):
        del sys.modules["torchvision"]
    coremltools_backend.uninstall()


_CONFIG = None


def pytest_configure(config) -> None:
    global _CONFIG
    _CONFIG = config
    install()
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")


def pytest_collection_finish(session) -> None:
    """Move every object alive after collection (jax, torch, coremltools, the test modules) to
    the permanent generation. ``ct.convert`` ends with ``gc.collect()``, which otherwise walks
    that whole heap on every conversion: about 0.4 s of each 0.6 s conversion here."""
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config) -> None:
    uninstall()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _OPS_RUN.clear()
    yield
    item.user_properties.append(("mlc_ops", ",".join(sorted(_OPS_RUN))))


def pytest_collection_modifyitems(config, items) -> None:
    path = os.environ.get("MLC_CONFORMANCE_SELECT")
    if not path:
        return
    with open(path) as f:
        wanted = {line.rstrip("\n") for line in f if line.strip()}
    keep, drop = [], []
    for item in items:
        (keep if item.nodeid.split("coremltools/", 1)[-1] in wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_logreport(report) -> None:
    """Append the case's outcome to ``MLC_CONFORMANCE_LOG`` at its deciding report."""
    path = os.environ.get("MLC_CONFORMANCE_LOG")
    if not path or hasattr(_CONFIG, "workerinput"):  # xdist workers: the controller writes
        return
    record = case_record(report)
    if record is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def pytest_collectreport(report) -> None:
    """Append a test file that failed to import (or skipped itself at module level) to
    ``MLC_CONFORMANCE_LOG`` as one case named by the file: its tests were never collected
    (e.g. coremltools' torch quantization tests import torchvision at module level)."""
    path = os.environ.get("MLC_CONFORMANCE_LOG")
    if not path or report.passed or hasattr(_CONFIG, "workerinput"):
        return
    if report.skipped and isinstance(report.longrepr, tuple):
        outcome, reason = "skipped", str(report.longrepr[2])
    else:
        text = str(report.longrepr)
        errors = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
        outcome, reason = "error", (errors[-1] if errors else text)
    record = {"nodeid": report.nodeid.split("coremltools/", 1)[-1], "outcome": outcome, "reason": reason,
              "ops": [], "seconds": 0.0}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def case_record(report) -> dict | None:
    """``{nodeid, outcome, reason, ops, seconds}`` from the report that decides a case, else None.

    The call phase decides, unless setup did not pass (an error, or a skip); teardown failures
    are not recorded.
    """
    if report.when == "setup" and report.passed:
        return None
    if report.when == "teardown":
        return None
    xfail = getattr(report, "wasxfail", None)
    if report.when == "setup":
        outcome = "skipped" if report.skipped else "error"
        if report.skipped and xfail is not None:
            outcome = "xfailed"
    elif report.skipped:
        outcome = "xfailed" if xfail is not None else "skipped"
    elif report.passed:
        outcome = "xpassed" if xfail is not None else "passed"
    else:
        outcome = "failed"
    if outcome == "xfailed":
        reason = xfail or ""
    elif report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
    else:
        crash = getattr(report.longrepr, "reprcrash", None)
        reason = crash.message if crash is not None else (str(report.longrepr) if report.failed else "")
    ops = dict(report.user_properties).get("mlc_ops", "")
    nodeid = report.nodeid.split("coremltools/", 1)[-1]
    return {"nodeid": nodeid, "outcome": outcome, "reason": reason, "ops": [o for o in ops.split(",") if o],
            "seconds": round(report.duration, 3)}


def junit_nodeid(classname: str, name: str) -> str:
    """The node id, relative to the coremltools package, of a junit ``testcase``.

    With pytest's rootdir at site-packages, a case's junit ``classname`` is the dotted path
    ``coremltools.converters.mil.mil.ops.tests.iOS14.test_activation.TestReLU``.
    """
    parts = classname.split(".")
    modules = [i for i, p in enumerate(parts) if p.startswith("test_")]
    end = modules[-1] if modules else len(parts) - 1
    return "::".join(["/".join(parts[1 : end + 1]) + ".py", *parts[end + 1 :], name])
