import logging
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' conversion progress bars

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "allow")
logging.getLogger("coremltools").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def ct():
    from mlc._proto import import_coremltools

    return import_coremltools()
