"""The conformance suites: which of coremltools' shipped tests run against mlc, and how.

Shared by ``scripts/conformance.py`` (the full census) and ``tests/test_conformance_sample.py``
(CI's slice), so both run each case with the same command line and environment.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

PLUGIN = "mlc.testing.coremltools_plugin"


@dataclasses.dataclass(frozen=True)
class Part:
    """A folder of coremltools' tests (inside the package), the files of it that belong to the
    suite (all ``test_*.py`` if empty), and the environment coremltools' test settings read."""

    folder: str
    env: dict
    files: tuple[str, ...] = ()

    def owns(self, nodeid: str) -> bool:
        if not nodeid.startswith(self.folder + "/"):
            return False
        return not self.files or nodeid[len(self.folder) + 1 :].split("::")[0] in self.files


SUITES: dict[str, tuple[Part, ...]] = {
    "mil": (
        Part("converters/mil/mil/ops/tests", {"INCLUDE_MIL_FP32_UNIT_TESTS": "1", "PYMIL_TEST_TARGETS": "mlprogram"}),
    ),
    "nn": (
        Part("test/neural_network", {}, ("test_numpy_nn_layers.py", "test_nn_builder.py", "test_model.py")),
        # The MIL op tests whose programs also convert to NeuralNetwork layers (iOS14, the only
        # opset the NeuralNetwork backend takes), on that backend alone.
        Part("converters/mil/mil/ops/tests/iOS14", {"PYMIL_TEST_TARGETS": "neuralnetwork"}),
    ),
    # Classic models: coremltools' scikit-learn, XGBoost (and LibSVM) converter tests, which
    # compare Core ML's predictions with the source library's, and the pipeline tests.
    "classic": (
        Part("test/sklearn_tests", {}),
        Part("test/xgboost_tests", {}),
        Part("test/pipeline", {}),
    ),
    # coremltools' torch frontend tests: each case traces a torch model, converts it and compares
    # mlc's prediction with torch's output. Apple's default backends (ML Program fp16 and
    # NeuralNetwork fp32; the fp32 ML Program backend is the mil suite's), pinned so that a stray
    # variable in the caller's environment cannot change the cases; and the TorchScript frontend
    # alone: on x86_64 coremltools drops the torch.export-based frontends itself (rdar://135842397),
    # on arm64 it would add them, so pinning it keeps the same node ids on every machine.
    # test_torch_quantization_ops.py imports torchvision at module level; where it is not
    # installed the plugin's stand-in lets the file collect and skips the cases that use it.
    "torch": (
        Part(
            "converters/mil/frontend/torch/test",
            {"PYMIL_TEST_TARGETS": "mlprogram,neuralnetwork", "INCLUDE_MIL_FP32_UNIT_TESTS": "0", "TORCH_FRONTENDS": "TORCHSCRIPT"},
            ("test_torch_ops.py", "test_torch_stateful_model.py", "test_torch_quantization_ops.py"),
        ),
    ),
    # Post-training compression (coremltools.optimize.coreml): each case compresses a model's
    # weights (palettization, linear quantization, pruning; the constexpr_* ops) and compares the
    # compressed model's predictions with those of coremltools' own decompression of it. Run as
    # on an Apple-silicon Mac: on x86_64 109 of its cases xfail themselves before they run
    # (rdar://137153993, Apple's x86_64 CI Macs; see the plugin's MLC_PLATFORM_MACHINE).
    "optimize": (Part("test/optimize/coreml", {"MLC_PLATFORM_MACHINE": "arm64"}),),
}


def coremltools_dir() -> Path:
    spec = importlib.util.find_spec("coremltools")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("coremltools is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations)))


def part_of(suite: str, nodeid: str) -> Part:
    for part in SUITES[suite]:
        if part.owns(nodeid):
            return part
    raise KeyError(f"{nodeid} belongs to no part of suite {suite!r}")


def pytest_command(part: Part) -> tuple[list[str], dict, str]:
    """``(command up to the targets, environment, working directory)`` for cases of ``part``."""
    root = coremltools_dir().parent
    cmd = [
        sys.executable, "-m", "pytest", "-p", PLUGIN, "-p", "no:cacheprovider", "-q",
        "--rootdir", str(root), "-o", "addopts=", "-o", "testpaths=",
    ]
    return cmd, {**os.environ, **part.env, "TQDM_DISABLE": "1"}, str(root)


def part_files(part: Part) -> list[Path]:
    base = coremltools_dir() / part.folder
    if part.files:
        return [base / f for f in part.files]
    return sorted(base.rglob("test_*.py"))
