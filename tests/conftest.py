import logging
import os

import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' conversion progress bars
os.environ.setdefault("MLC_CACHE_DIR", tempfile.mkdtemp(prefix="mlc-test-cache-"))  # never the user's cache

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "allow")
logging.getLogger("coremltools").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def ct():
    from mlc.io.proto import import_coremltools

    return import_coremltools()
