"""The loader fuzzer on compiled ``.mlmodelc`` folders, in CI: a few hundred mutated folders
(scripts/fuzz_load.py --targets 'mlmodelc_*' runs tens of thousands; fuzz/compiled.md).

The seeds are copies of ../shared/testdata/compiled; the targets and mutators are
``mlc.testing.fuzz``'s (``COMPILED_SEEDS``): model.mil's text and values, coremldata.bin,
metadata.json, the espresso files, a kNN stage's files and the folder's structure. Every case
must load (and predict, op by op) or raise an ``mlc.MLCError``, and a file the loader reads that
links out of the folder must be refused; anything else fails, and hypothesis shrinks the
mutation that caused it."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlc.testing import fuzz

pytestmark = pytest.mark.hostile

CASES = int(os.environ.get("MLC_COMPILED_FUZZ_CASES", "8"))  # per (seed, target) pair
PAIRS = [(s, t) for s in fuzz.COMPILED_SEEDS for t in fuzz.TARGETS[s]]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    seeds = fuzz.make_compiled_seeds(str(tmp_path_factory.mktemp("compiled-seeds")))
    return fuzz.Workspace(seeds, str(tmp_path_factory.mktemp("compiled-work")))


def _seed(workspace, name: str) -> None:
    reason = fuzz.missing_seed_reason(name)
    if reason:
        pytest.skip(reason)


# seeds that do not load unmutated: Create ML's visionFeaturePrint stage is refused by name, as in its twin
REFUSED = {"mlmodelc_spec": "mlc:unsupported"}


@pytest.mark.parametrize("name", list(fuzz.COMPILED_SEEDS))
def test_seeds_load_and_predict(workspace, name):
    _seed(workspace, name)
    expected = REFUSED.get(name) or ("predicted op by op" if workspace.seeds[name].predict else "loaded")
    assert workspace.run(name, jit=False, seconds=120) == expected


@pytest.mark.parametrize("seed_name,target", PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
def test_mutated_folders_load_or_raise_an_mlc_error(workspace, seed_name, target):
    _seed(workspace, seed_name)

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        path, mutated = workspace.mutated_file(seed_name, target, fuzz.hypothesis_draw(data))
        with workspace.with_file(path, mutated):
            outcome = workspace.run(seed_name, jit=False, seconds=120)
        assert outcome in ("loaded", "predicted op by op") or outcome.startswith("mlc:")

    case()


def test_a_link_out_of_the_folder_that_loads_is_a_finding(workspace, monkeypatch):
    """The folder rule's oracle: with ``inside`` made to let any path through, a metadata.json
    linked out of the folder (to a copy of itself) loads, and the fuzzer reports an escape; a
    link out where the loader never reads (analytics/) is none."""
    import json

    import mlc.io.compiled.folder as folder_module

    _seed(workspace, "mlmodelc_silero")
    path = workspace.target_file("mlmodelc_silero", "structure")
    links = {name: json.dumps({"ops": [{"op": "link_out", "path": name}], "escape": name}).encode()
             for name in ("metadata.json", "analytics/coremldata.bin")}
    with workspace.with_file(path, links["metadata.json"]):
        assert os.path.islink(os.path.join(path, "metadata.json"))
        assert workspace.run("mlmodelc_silero", jit=False) == "mlc:io"  # refused: it leaves the folder
        monkeypatch.setattr(folder_module, "inside", lambda root, relative, what: os.path.join(root, relative))
        with pytest.raises(fuzz.Unexpected, match="escape: metadata.json links out of"):
            workspace.run("mlmodelc_silero", jit=False)
    monkeypatch.undo()
    assert not os.path.islink(os.path.join(path, "metadata.json"))  # the folder is restored
    with workspace.with_file(path, links["analytics/coremldata.bin"]):
        assert workspace.run("mlmodelc_silero", jit=False) == "predicted op by op"
