"""Nothing lost (issue 9): a writer killed or interrupted midway leaves the old file as it was.

Every kind of file mlc writes (``Model.save`` to an ``.mlpackage`` and to an ``.mlmodel``,
``Model.compile`` to ``.mlc``, a feature-cache entry, ``mlc.deploy.batch.write_results``' ``.npz``,
``mlc predict --save``) goes through ``mlc.io.atomic.atomic_write``. Each case here first puts a
good old version at the target path, then writes a new version through a hook that fires midway:

- killed: a subprocess (``sys.executable``) writes the new version; at the hook it prints
  ``MIDWAY`` and sleeps, and the parent sends SIGKILL. The old file must be byte-for-byte intact
  (a model still loads and predicts the old values), the only traces are hidden
  ``.<name>.*`` entries beside it (a killed process cannot clean up), and a later write works;
- interrupted: the same write in this process, the hook raising ``KeyboardInterrupt``: the old
  file is intact and no temporary entry is left.

Hooks: the chunk generator of ``BlobWriter`` (a package killed halfway through its weight file),
``mlc.io.atomic._swap`` (a complete, synced package killed just before it is renamed in), or the
writing module's ``open`` returning a file that writes half of its n-th write, flushes it to disk,
then fires. Oracles: numpy computes every model's expected outputs from its weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Callable
from unittest import mock

import numpy as np
import pytest

import mlc
from mlc.io import atomic as _atomic

pytestmark = [
    pytest.mark.hostile,
    pytest.mark.skipif(os.name != "posix", reason="kills its writers with SIGKILL"),
]

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
OLD, NEW = 2.0, 3.0  # the old and new version of a file: weights (or inputs) scaled by this
OUT = 64  # a 64x8 weight: large enough to live in the package's weight file
RNG = np.random.default_rng(0)
W = RNG.standard_normal((OUT, 8)).astype(np.float32)
B = RNG.standard_normal(OUT).astype(np.float32)
X = RNG.standard_normal((3, 1, 8)).astype(np.float32)  # 3 examples for batch scoring; X[0] for one
FINGERPRINT, KEY = "extractor", "ab" + "0" * 62


@dataclasses.dataclass
class Paths:
    program: str  # an ML Program (.mlpackage): y = x W^T + b
    network: str  # a NeuralNetwork (.mlmodel): y = x W^T + b
    inputs: str  # X[0] as an .npy, for `mlc predict --input`
    folder: str  # the target's folder, nothing else in it
    target: str


# -- hooks: call ``midway`` partway through a write -------------------------------------------------
class TornFile:
    """A writable file that writes half of its ``at``-th write, flushes that to disk, calls
    ``midway`` and, if that returns, writes the rest."""

    def __init__(self, f, at: int, midway: Callable[[], None]):
        self._f, self._at, self._midway, self._n = f, at, midway, 0

    def write(self, data):
        self._n += 1
        if self._n == self._at:
            view = memoryview(data).cast("B")
            self._f.write(view[: len(view) // 2])
            self._f.flush()
            os.fsync(self._f.fileno())
            self._midway()
            return self._f.write(view[len(view) // 2 :]) + len(view) // 2
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


@contextlib.contextmanager
def tearing_open(module, at: int, midway: Callable[[], None]):
    """``module``'s files opened for writing are ``TornFile``s while the block runs."""
    import builtins

    def torn_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return TornFile(f, at, midway) if "w" in mode else f

    with mock.patch.object(module, "open", torn_open, create=True):
        yield


@contextlib.contextmanager
def midway_through_weights(midway: Callable[[], None], after: int = 2):
    """``BlobWriter`` calls ``midway`` once ``after`` chunks of the weight file are out."""
    from mlc.io.blob import BlobWriter

    chunks = BlobWriter._chunks

    def hooked(self):
        for i, chunk in enumerate(chunks(self)):
            if i == after:
                midway()
            yield chunk

    with mock.patch.object(BlobWriter, "_chunks", hooked):
        yield


@contextlib.contextmanager
def before_the_swap(midway: Callable[[], None]):
    """``atomic_write`` calls ``midway`` with the new package complete and synced, not yet renamed."""
    swap = _atomic._swap

    def hooked(a, b):
        midway()
        return swap(a, b)

    with mock.patch.object(_atomic, "_swap", hooked):
        yield


# -- the writers ----------------------------------------------------------------------------------------
def _scaled(model, k: float):
    return model.with_params({name: np.asarray(value) * k for name, value in model.params.items()})


def _linear(x, k: float) -> np.ndarray:
    return (x.reshape(-1, 8) @ (k * W).T + k * B).reshape(-1)


def _nothing():
    return contextlib.nullcontext()


def _flat_outputs(out: dict) -> np.ndarray:
    (value,) = out.values()
    return np.asarray(value, np.float32).reshape(-1)


@dataclasses.dataclass
class Case:
    target: str  # the file name written
    write: Callable[[Paths, float, Callable | None], None]  # write version k, hooked when midway is given
    read: Callable[[str], np.ndarray]  # what the file at the target holds, as numbers
    expected: Callable[[float], np.ndarray]  # what version k holds (numpy)


def _write_package(paths, k, midway, hook):
    model = _scaled(mlc.load(paths.program), k)
    with hook(midway) if midway else _nothing():
        model.save(paths.target)


def _write_mlmodel(paths, k, midway):
    from mlc.io import writer

    model = _scaled(mlc.load(paths.network), k)
    with tearing_open(writer, 1, midway) if midway else _nothing():
        model.save(paths.target)


def _write_mlc(paths, k, midway):
    from mlc.io import mlc_file

    model = _scaled(mlc.load(paths.program), k)
    with tearing_open(mlc_file, 3, midway) if midway else _nothing():  # prefix, header, then a section
        model.compile(paths.target)


def _cache(paths):
    from mlc.createml.cache import FeatureCache

    return FeatureCache(FINGERPRINT, root=paths.folder)


def _write_cache_entry(paths, k, midway):
    from mlc.createml import cache

    with tearing_open(cache, 2, midway) if midway else _nothing():  # .npy header, then the values
        _cache(paths).put(KEY, k * W[0])


def _read_cache_entry(target):
    from mlc.createml.cache import FeatureCache

    root = target.rsplit(os.sep + "features" + os.sep, 1)[0]
    return FeatureCache(FINGERPRINT, root=root).get(KEY)


def _write_batch(paths, k, midway):
    from mlc.deploy import batch

    predictor = batch.BatchPredictor(_scaled(mlc.load(paths.program), k), batch_size=4, workers=1)
    results = predictor.predict(batch.ArraySource(predictor.model, {"x": X}))
    with tearing_open(batch, 2, midway) if midway else _nothing():  # a zip member's header, then its data
        batch.write_results(results, paths.target)


def _npz_output(target: str) -> np.ndarray:
    """The one model output in an .npz of results (``_input``, ``_skipped``... left out)."""
    with np.load(target, allow_pickle=False) as data:
        (key,) = [k for k in data.files if not k.startswith("_")]
        return np.asarray(data[key], np.float32).reshape(-1)


def _write_cli_save(paths, k, midway):
    from mlc import cli

    x = paths.inputs[: -len(".npy")] + f"_{k:g}.npy"
    np.save(x, k * X[0])
    with tearing_open(cli, 2, midway) if midway else _nothing():
        assert cli.main(["predict", paths.program, "--input", f"x={x}", "--save", paths.target]) == 0


def _program_output(target: str) -> np.ndarray:
    return _flat_outputs(mlc.load(target).predict({"x": X[0]}))


CASES = {
    "mlpackage-midway-weights": Case(
        "model.mlpackage", lambda p, k, m: _write_package(p, k, m, midway_through_weights), _program_output, lambda k: _linear(X[0], k)
    ),
    "mlpackage-before-rename": Case(
        "model.mlpackage", lambda p, k, m: _write_package(p, k, m, before_the_swap), _program_output, lambda k: _linear(X[0], k)
    ),
    "mlmodel": Case(
        "net.mlmodel", _write_mlmodel, lambda t: _flat_outputs(mlc.load(t).predict({"x": X[0].reshape(8)})), lambda k: _linear(X[0], k)
    ),
    "mlc": Case("model.mlc", _write_mlc, _program_output, lambda k: _linear(X[0], k)),
    "feature-cache": Case(
        os.path.join("features", FINGERPRINT, KEY[:2], f"{KEY}.npy"), _write_cache_entry, _read_cache_entry, lambda k: k * W[0]
    ),
    "batch-npz": Case("scores.npz", _write_batch, _npz_output, lambda k: _linear(X, k)),
    "predict-save-npz": Case("out.npz", _write_cli_save, _npz_output, lambda k: (k * X[0].reshape(1, 8) @ W.T + B).reshape(-1)),
}


# -- fixtures and checks ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(tmp_path_factory, ct):
    """The ML Program and the NeuralNetwork computing y = x W^T + b, and X[0] as an .npy."""
    from coremltools.converters.mil import Builder as mb

    from mlc.testing import nn_specs
    from mlc.testing.mil_program import mil_mlmodel

    folder = tmp_path_factory.mktemp("sources")
    program = str(folder / "program.mlpackage")
    mil_mlmodel(lambda x: mb.linear(x=x, weight=W, bias=B), {"x": (1, 8)}).save(program)
    builder = nn_specs.network({"x": (8,)}, ["y"], exact=True)
    builder.add_inner_product("fc", W, B, 8, OUT, True, "x", "y")
    network = str(folder / "network.mlmodel")
    with open(network, "wb") as f:
        f.write(builder.spec.SerializeToString())
    inputs = str(folder / "x.npy")
    np.save(inputs, X[0])
    return program, network, inputs


def _paths(sources, tmp_path, case: Case) -> Paths:
    folder = tmp_path / "out"
    folder.mkdir()
    return Paths(*sources, folder=str(folder), target=str(folder / case.target))


def _read(case: Case, target: str) -> np.ndarray:
    return case.read(target)


def _snapshot(path: str) -> dict[str, bytes]:
    """Every file under ``path`` (or ``path`` itself), by relative path, with its bytes."""
    if not os.path.isdir(path):
        with open(path, "rb") as f:
            return {".": f.read()}
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                files[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return files


def _beside(target: str) -> list[str]:
    """What sits beside ``target`` in its folder, other than ``target``."""
    folder, name = os.path.split(target)
    return sorted(n for n in os.listdir(folder) if n != name)


def _write_old(case: Case, paths: Paths) -> tuple[dict, np.ndarray]:
    case.write(paths, OLD, None)
    old = _read(case, paths.target)
    np.testing.assert_allclose(old, case.expected(OLD), rtol=1e-5, atol=1e-5)
    assert _beside(paths.target) == []
    return _snapshot(paths.target), old


def _assert_old_intact(case: Case, paths: Paths, snapshot: dict, old: np.ndarray) -> None:
    assert _snapshot(paths.target) == snapshot, "the old file changed"
    np.testing.assert_array_equal(_read(case, paths.target), old)


def _kill_midway(name: str, paths: Paths, timeout: float = 60.0) -> None:
    """Run ``CASES[name].write(paths, NEW)`` in a subprocess; SIGKILL it once it prints MIDWAY."""
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {TESTS!r})\n"
        "import test_atomic_writes as t\n"
        "def midway():\n"
        "    print('MIDWAY', flush=True)\n"
        "    time.sleep(600)\n"
        f"t.CASES[{name!r}].write(t.Paths(**json.loads(sys.argv[1])), t.NEW, midway)\n"
        "print('FINISHED', flush=True)\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    stderr = os.path.join(os.path.dirname(paths.folder), "child.stderr")
    with open(stderr, "wb") as err:
        argv = [sys.executable, "-c", code, json.dumps(dataclasses.asdict(paths))]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT)
    try:
        deadline, seen = time.monotonic() + timeout, []
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline().decode(errors="replace").strip() if ready else None
            if line == "MIDWAY":
                break
            if line is None or (line == "" and proc.poll() is not None) or line == "FINISHED":
                with open(stderr, errors="replace") as f:
                    pytest.fail(f"the writer never reached its hook (last output {seen[-3:]}); stderr:\n{f.read()[-3000:]}")
            seen.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# -- the tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_killed_writer_leaves_the_old_file(name, sources, tmp_path):
    case = CASES[name]
    paths = _paths(sources, tmp_path, case)
    snapshot, old = _write_old(case, paths)

    _kill_midway(name, paths)

    _assert_old_intact(case, paths, snapshot, old)
    leftovers = _beside(paths.target)
    prefix = "." + os.path.basename(paths.target) + "."
    assert leftovers and all(n.startswith(prefix) for n in leftovers), leftovers  # hidden, beside the target

    case.write(paths, NEW, None)  # a later write replaces the old file, the leftovers notwithstanding
    np.testing.assert_allclose(_read(case, paths.target), case.expected(NEW), rtol=1e-5, atol=1e-5)
    assert _beside(paths.target) == leftovers


@pytest.mark.parametrize("name", list(CASES))
def test_interrupted_writer_leaves_the_old_file_and_cleans_up(name, sources, tmp_path):
    case = CASES[name]
    paths = _paths(sources, tmp_path, case)
    snapshot, old = _write_old(case, paths)
    reached = []

    def interrupt():
        reached.append(True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        case.write(paths, NEW, interrupt)
    assert reached
    _assert_old_intact(case, paths, snapshot, old)
    assert _beside(paths.target) == []


@pytest.mark.parametrize("name", ["mlpackage-midway-weights", "mlmodel", "mlc"])
def test_disk_full_midway_is_an_error_and_leaves_the_old_file(name, sources, tmp_path):
    case = CASES[name]
    paths = _paths(sources, tmp_path, case)
    snapshot, old = _write_old(case, paths)

    def disk_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises((mlc.MLCError, OSError), match="No space left"):
        case.write(paths, NEW, disk_full)
    _assert_old_intact(case, paths, snapshot, old)
    assert _beside(paths.target) == []


def test_feature_cache_that_cannot_be_written_keeps_its_old_entry(sources, tmp_path):
    case = CASES["feature-cache"]
    paths = _paths(sources, tmp_path, case)
    snapshot, old = _write_old(case, paths)

    def disk_full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.warns(UserWarning, match="cannot be written"):
        case.write(paths, NEW, disk_full)  # training goes on, caching in memory only
    _assert_old_intact(case, paths, snapshot, old)
    assert _beside(paths.target) == []


def test_written_files_are_synced_before_the_rename(sources, tmp_path, monkeypatch):
    """Every file and folder of a new package is fsynced while the old package is still in
    place, and the containing folder after the rename; an fsync I/O error abandons the write."""
    case = CASES["mlpackage-midway-weights"]
    paths = _paths(sources, tmp_path, case)
    snapshot, old = _write_old(case, paths)
    synced, sync_file, sync_folder = [], _atomic._sync_file, _atomic._sync_folder

    def record(kind, real):
        def sync(path):
            synced.append((kind, path, _snapshot(paths.target) == snapshot))
            real(path)

        return sync

    monkeypatch.setattr(_atomic, "_sync_file", record("file", sync_file))
    monkeypatch.setattr(_atomic, "_sync_folder", record("folder", sync_folder))
    case.write(paths, NEW, None)
    np.testing.assert_allclose(_read(case, paths.target), case.expected(NEW), rtol=1e-5, atol=1e-5)

    files = {p.split(os.sep + "model.mlpackage" + os.sep, 1)[1] for kind, p, _ in synced if kind == "file"}
    assert files == set(_snapshot(paths.target))  # Manifest.json, model.mlmodel, weight.bin
    assert all(before for kind, _, before in synced[:-1])  # all while the old package was in place
    assert synced[-1][:2] == ("folder", paths.folder) and not synced[-1][2]  # then the folder, after the rename

    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    snapshot, old = _snapshot(paths.target), _read(case, paths.target)
    monkeypatch.setattr(_atomic, "_sync_file", sync_file)
    monkeypatch.setattr(os, "fsync", failing_fsync)
    if hasattr(_atomic.fcntl, "F_FULLFSYNC"):  # pragma: no cover - macOS
        monkeypatch.delattr(_atomic.fcntl, "F_FULLFSYNC")
    with pytest.raises(mlc.MLCIOError, match="Input/output error"):
        _scaled(mlc.load(paths.program), OLD).save(paths.target)
    monkeypatch.undo()
    _assert_old_intact(case, paths, snapshot, old)
    assert _beside(paths.target) == []


def test_folder_replace_without_an_atomic_swap(sources, tmp_path, monkeypatch):
    """Where no swap is possible, the old package is renamed aside, the new one renamed in; a
    failure between the two puts the old one back."""
    case = CASES["mlpackage-midway-weights"]
    paths = _paths(sources, tmp_path, case)
    snapshot, old = _write_old(case, paths)
    monkeypatch.setattr(_atomic, "_SWAP", None)

    rename, calls = os.rename, []

    def failing_second_rename(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        rename(a, b)

    monkeypatch.setattr(os, "rename", failing_second_rename)
    with pytest.raises(mlc.MLCIOError):
        case.write(paths, NEW, None)
    monkeypatch.setattr(os, "rename", rename)
    assert calls[0][0] == paths.target and calls[1][1] == paths.target  # aside, then the new one in
    _assert_old_intact(case, paths, snapshot, old)
    assert _beside(paths.target) == []

    case.write(paths, NEW, None)
    np.testing.assert_allclose(_read(case, paths.target), case.expected(NEW), rtol=1e-5, atol=1e-5)
    assert _beside(paths.target) == []


def test_a_file_never_replaces_a_folder(tmp_path):
    folder = tmp_path / "scores.npz"
    (folder / "keep").mkdir(parents=True)
    (folder / "keep" / "data").write_bytes(b"mine")
    with pytest.raises(IsADirectoryError):
        with _atomic.atomic_write(folder) as tmp, open(tmp, "wb") as f:
            f.write(b"new")
    assert (folder / "keep" / "data").read_bytes() == b"mine"
    assert _beside(str(folder)) == []
