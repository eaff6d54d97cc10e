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


@pytest.fixture
def convolution_spy(monkeypatch):
    """Records (algorithm, traced x shape, platform, vmapped batch) per convolution traced
    (``mlc.kernels.convolution.algorithm``'s choices, for the kernel tests)."""
    from mlc.kernels import convolution
    from mlc.runtime import target

    seen = []
    original = convolution.algorithm

    def recording(x, weight, **kw):
        choice = original(x, weight, **kw)
        seen.append((choice, tuple(x.shape), target.platform(), target.vmapped_batch()))
        return choice

    monkeypatch.setattr(convolution, "algorithm", recording)
    return seen
