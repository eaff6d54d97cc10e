"""The loader fuzzer in CI: a few hundred mutated models (scripts/fuzz_load.py runs 100,000).

Every case must load (and predict) or raise an ``mlc.MLCError``; anything else fails the test,
and hypothesis shrinks the mutation that caused it. The mutators and seeds are
``mlc.testing.fuzz``'s; the committed long run is fuzz/results.md. Compiled .mlmodelc targets
run in tests/compiled/test_compiled_fuzz.py."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlc.testing import fuzz

pytestmark = pytest.mark.hostile

CASES = int(os.environ.get("MLC_FUZZ_CASES", "40"))  # per (seed, target) pair
PAIRS = [(s, t) for s, targets in fuzz.TARGETS.items() if s not in fuzz.COMPILED_SEEDS for t in targets]  # compiled: tests/compiled


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    seeds = fuzz.make_seeds(str(tmp_path_factory.mktemp("fuzz-seeds")), compiled=False)
    return fuzz.Workspace(seeds, str(tmp_path_factory.mktemp("fuzz-work")))


def test_seeds_load_and_predict(workspace):
    for name, seed in workspace.seeds.items():
        assert fuzz.run_case(seed.path, jit=False) == "predicted op by op", name


@pytest.mark.parametrize("seed_name,target", PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS])
def test_mutated_models_load_or_raise_an_mlc_error(workspace, seed_name, target):
    jit_cases = []

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        path, mutated = workspace.mutated_file(seed_name, target, fuzz.hypothesis_draw(data))
        jit = not jit_cases  # the first case compiles; the rest run op by op
        jit_cases.append(jit)
        with workspace.with_file(path, mutated):
            outcome = fuzz.run_case(workspace.seeds[seed_name].path, jit=jit, seconds=120)
        assert outcome in ("predicted", "predicted op by op") or outcome.startswith("mlc:")

    case()
