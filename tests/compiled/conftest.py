"""Compiled ``.mlmodelc`` folders from ``../shared/testdata/compiled`` (see its SOURCES.md):
real files compiled by Xcode's ``coremlc``, which no Linux tool writes. Tests that need them
skip, saying why, when the folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILED = ROOT.parent / "shared" / "testdata" / "compiled"


@pytest.fixture(scope="session")
def compiled_testdata() -> Path:
    """The folder of published compiled models, or a skip when this checkout has none."""
    if not COMPILED.is_dir():
        pytest.skip(f"the compiled test models are not here ({COMPILED} is absent; see ../shared/testdata/SOURCES.md)")
    return COMPILED
