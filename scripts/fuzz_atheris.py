"""An atheris (libFuzzer) target for mlc's loader: coverage-guided, where scripts/fuzz_load.py
is hypothesis-driven. Any outcome but a load (and op-by-op prediction) or an mlc error is a
crash that libFuzzer reports and saves.

    pip install atheris
    python scripts/fuzz_atheris.py -runs=20000                  # structure-aware mutations of the seeds
    python scripts/fuzz_atheris.py --raw fuzz/corpus -runs=20000  # libFuzzer mutates .mlmodel bytes itself

``--raw`` feeds libFuzzer's bytes to ``mlc.load`` as a ``.mlmodel`` (the seed corpus is the
NeuralNetwork and tree ensemble seeds, written into the corpus folder). Without it the bytes
drive ``mlc.testing.fuzz``'s mutators (the same as the hypothesis fuzzer: protobuf bytes and
fields, manifest, weight blob) through a ``FuzzedDataProvider``. Trailing arguments go to
libFuzzer (``-runs``, ``-max_total_time``, ``-jobs``...).
"""

from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ["MLC_COMPILATION_CACHE"] = "0"
os.environ.setdefault("TQDM_DISABLE", "1")

import atheris  # noqa: E402

with atheris.instrument_imports(include=["mlc"]):
    import mlc  # noqa: F401
    from mlc.testing import fuzz

PAIRS = [(s, t) for s, targets in fuzz.TARGETS.items() for t in targets]


def atheris_draw(fdp) -> fuzz.Draw:
    """A ``Draw`` over libFuzzer's bytes."""

    def draw(kind: str, arg):
        if kind == "int":
            return fdp.ConsumeIntInRange(*arg)
        if kind == "choice":
            return arg[fdp.ConsumeIntInRange(0, len(arg) - 1)]
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, arg))

    return draw


def _check(outcome_of):
    try:
        outcome_of()
    except fuzz.Unexpected as e:
        raise RuntimeError(f"unexpected outcome {e.kind}:\n{e.detail}") from None


def main() -> None:
    raw = "--raw" in sys.argv
    argv = [a for a in sys.argv if a != "--raw"]
    scratch = tempfile.mkdtemp(prefix="mlc-atheris-")
    seeds = fuzz.make_seeds(os.path.join(ROOT, "fuzz", ".seeds"))
    work = fuzz.Workspace(seeds, scratch)
    pairs = [(s, t) for s, t in PAIRS if s in work.seeds]  # compiled seeds need ../shared/testdata/compiled
    target_file = os.path.join(scratch, "input.mlmodel")

    if raw:
        corpus = next((a for a in argv[1:] if not a.startswith("-")), None)
        if corpus:
            os.makedirs(corpus, exist_ok=True)
            for name in ("neuralnetwork", "trees"):
                with open(work.seeds[name].spec_file, "rb") as src, open(os.path.join(corpus, f"seed-{name}.mlmodel"), "wb") as dst:
                    dst.write(src.read())

        def one_input(data: bytes) -> None:
            with open(target_file, "wb") as f:
                f.write(data)
            _check(lambda: fuzz.run_case(target_file, jit=False))

    else:

        def one_input(data: bytes) -> None:
            fdp = atheris.FuzzedDataProvider(data)
            seed_name, target = pairs[fdp.ConsumeIntInRange(0, len(pairs) - 1)]
            path, mutated = work.mutated_file(seed_name, target, atheris_draw(fdp))
            with work.with_file(path, mutated):
                _check(lambda: work.run(seed_name, jit=False))

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
