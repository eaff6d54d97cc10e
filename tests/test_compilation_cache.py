"""mlc.runtime.compilation_cache: JAX's persistent compilation cache, checked in fresh processes (JAX
opens its cache once per process), with JAX's own cache-hit events as the evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, os, sys, jax, jax.monitoring, numpy as np
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
import mlc
arg = json.loads(sys.argv[1])
model = mlc.load(arg["model"], **arg["kwargs"])
model.predict({"x": np.ones(model.input_description["x"].shape, np.float32)})
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir, "model_dir": model.cache_dir,
                  "hits": events.count("/jax/compilation_cache/cache_hits")}))
"""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from mlc.testing import torch_models

    module, example = torch_models.build("resnet")
    return torch_models.convert(module, example, target="iOS16", path=tmp_path_factory.mktemp("cc") / "m.mlpackage")


def probe(model_path, env=None, setup="", **kwargs):
    environ = {**os.environ, "MLC_TRACE_CACHE": "0", **(env or {})}  # XLA's cache alone (tests/test_trace_cache.py: mlc's)
    code = setup + PROBE
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps({"model": str(model_path), "kwargs": kwargs})],
        capture_output=True, text=True, env=environ, timeout=300, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_cache(model_path, tmp_path):
    folder = str(tmp_path / "xla")
    first = probe(model_path, cache_dir=folder)
    assert first["dir"] == folder and first["model_dir"] == folder and first["hits"] == 0
    assert os.listdir(folder)
    second = probe(model_path, cache_dir=folder)
    assert second["hits"] >= 1


def test_default_folder_is_under_mlc_cache_dir(model_path, tmp_path):
    got = probe(model_path, env={"MLC_CACHE_DIR": str(tmp_path)})
    assert got["dir"] == os.path.join(str(tmp_path), "xla")
    assert oct(os.stat(got["dir"]).st_mode & 0o777) == oct(0o700)


def test_off_by_argument_and_by_environment(model_path, tmp_path):
    assert probe(model_path, env={"MLC_CACHE_DIR": str(tmp_path)}, cache_dir=False)["dir"] is None
    assert probe(model_path, env={"MLC_CACHE_DIR": str(tmp_path), "MLC_COMPILATION_CACHE": "0"})["dir"] is None
    assert not os.path.exists(tmp_path / "xla")


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_cache_dir_is_refused(model_path, tmp_path, monkeypatch, empty):
    """An empty path would be the current folder: refused, naming the argument; nothing written."""
    import mlc

    monkeypatch.chdir(tmp_path)
    with pytest.raises(mlc.MLCParametersError, match="cache_dir is an empty path"):
        mlc.load(model_path, cache_dir=empty)
    assert list(tmp_path.iterdir()) == []


def test_a_cache_the_user_configured_is_kept(model_path, tmp_path):
    theirs = str(tmp_path / "theirs")
    setup = f"import jax; jax.config.update('jax_compilation_cache_dir', {theirs!r})\n"
    assert probe(model_path, env={"MLC_CACHE_DIR": str(tmp_path)}, setup=setup)["dir"] == theirs


def test_unwritable_folder_warns_and_runs(tmp_path):
    import warnings

    from mlc.runtime import compilation_cache

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compilation_cache.configure(str(blocker / "xla"))
    assert result != str(blocker / "xla")
    assert any("cannot be created" in str(w.message) for w in caught)


@pytest.mark.hostile
def test_a_writer_killed_midway_leaves_no_torn_entry(model_path, tmp_path):
    """JAX writes cache entries in place; mlc renames complete ones into place. A process killed
    while writing its entry leaves a hidden temporary file, never a torn entry, and the next
    process compiles, writes the entry and a third reads it back."""
    import signal

    folder = str(tmp_path / "xla")
    kill_on_rename = (
        "import os, signal\n"
        "_replace = os.replace\n"
        "def replace(src, dst, *a, **k):\n"
        "    if dst.endswith('-cache'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _replace(src, dst, *a, **k)\n"
        "os.replace = replace\n"
    )
    with pytest.raises(subprocess.CalledProcessError) as killed:
        probe(model_path, setup=kill_on_rename, cache_dir=folder)
    assert killed.value.returncode == -signal.SIGKILL
    names = os.listdir(folder)
    assert names and not [n for n in names if n.endswith("-cache")]  # only hidden temporaries
    assert all(n.startswith(".") and n.endswith(".tmp") for n in names)
    assert probe(model_path, cache_dir=folder)["hits"] == 0
    assert [n for n in os.listdir(folder) if n.endswith("-cache")]
    assert probe(model_path, cache_dir=folder)["hits"] >= 1


@pytest.mark.hostile
def test_cache_entries_are_renamed_into_place(tmp_path):
    from jax._src import lru_cache

    from mlc.runtime import compilation_cache

    compilation_cache._atomic_entries()
    for max_size, files in ((-1, ["k-cache"]), (1 << 20, ["k-atime", "k-cache"])):  # without and with eviction
        folder = tmp_path / str(max_size)
        folder.mkdir()
        cache = lru_cache.LRUCache(str(folder), max_size=max_size)
        cache.put("k", b"complete entry")
        cache.put("k", b"another value")  # JAX's rule: an existing key is kept
        assert cache.get("k") == b"complete entry"
        assert sorted(n for n in os.listdir(folder) if n != ".lockfile") == files
