"""Every notebook in notebooks/ runs top to bottom without error, and keeps its files to itself."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    before = sorted(p.name for p in path.parent.iterdir())
    cache = tmp_path / "mlc-cache"  # the kernel's mlc cache: a notebook writes only into its own temporary folder
    cache.mkdir()
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ, "MLC_CACHE_DIR": str(cache)})
    assert sorted(p.name for p in path.parent.iterdir()) == before
    # only XLA's persistent compilation cache (mlc.runtime.compilation_cache) may go to the user's cache
    assert [p.name for p in cache.iterdir()] in ([], ["xla"])
