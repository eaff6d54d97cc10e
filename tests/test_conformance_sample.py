"""CI's slice of the conformance suites: coremltools' own tests, run against mlc.

``conformance/<suite>_sample.tsv`` (written by ``scripts/conformance.py``) holds one case of
every test class and precision (the quickest that passed) with the outcome of the full run.
Here those cases run again from the installed coremltools wheel through ``mlc.testing.coremltools_plugin``, with the command
line and environment of ``mlc.testing.suites`` (one pytest session per part of the suite); every
case that passed in the full run must still pass.

The torch suite's sample is one case per test class (not per precision), at most 60 of them
(``SAMPLE_POLICY`` in ``scripts/conformance.py``): each case converts a torch model, and the
suite has about 160 classes.
"""

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mlc.testing.coremltools_plugin import FP16_AT_FP32_TOLERANCE, junit_nodeid
from mlc.testing.suites import SUITES, coremltools_dir, pytest_command

ROOT = Path(__file__).resolve().parent.parent


def _sample_path(suite: str) -> Path:
    return ROOT / "conformance" / f"{suite}_sample.tsv"


def _sample(suite: str) -> dict[str, str]:
    rows = (line.split("\t") for line in _sample_path(suite).read_text().splitlines() if line.strip())
    return {nodeid: outcome for nodeid, outcome in rows}


def _outcomes(junit: Path) -> dict[str, str]:
    """Outcome by test name (file::class::test) from a junit file written with rootdir = site-packages.

    A case the plugin marks xfail as FP16_AT_FP32_TOLERANCE (fp16 program, fp32 tolerance; it
    passed at fp16 tolerance) counts as passed: with unseeded random data such a case can land
    on either side of the fp32 tolerance from one run to the next.
    """
    out = {}
    for tc in ET.parse(junit).iter("testcase"):
        nodeid = junit_nodeid(tc.get("classname", ""), tc.get("name", ""))
        failed = any(child.tag in ("failure", "error") for child in tc)
        skips = [child for child in tc if child.tag == "skipped"]
        fp16 = any(FP16_AT_FP32_TOLERANCE in (child.get("message") or "") for child in skips)
        out[nodeid] = "failed" if failed else "skipped" if skips and not fp16 else "passed"
    return out


def _run_part(part, cases: list[str], tmp_path: Path) -> tuple[dict[str, str], str]:
    select = tmp_path / "cases.txt"
    select.write_text("".join(f"{n}\n" for n in cases))
    package = coremltools_dir()
    files = sorted({str(package / n.split("::")[0]) for n in cases})
    junit = tmp_path / "junit.xml"
    cmd, env, cwd = pytest_command(part)
    env["MLC_CONFORMANCE_SELECT"] = str(select)
    proc = subprocess.run([*cmd, f"--junitxml={junit}", *files], env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return _outcomes(junit), proc.stdout[-4000:]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_conformance_sample(suite, tmp_path):
    if not _sample_path(suite).exists():
        pytest.skip(f"no conformance sample for {suite}: run scripts/conformance.py --suite {suite}")
    sample = _sample(suite)
    expected_pass = sorted(n for n, outcome in sample.items() if outcome == "passed")
    assert expected_pass, "the sample has no passing case"
    for i, part in enumerate(SUITES[suite]):
        cases = [n for n in expected_pass if part.owns(n)]
        if not cases:
            continue
        (tmp_path / str(i)).mkdir()
        got, log = _run_part(part, cases, tmp_path / str(i))
        missing = [n for n in cases if n not in got]
        regressed = [n for n in cases if got.get(n) not in (None, "passed")]
        assert not missing, f"{len(missing)} sample cases did not run, e.g. {missing[:3]}"
        assert not regressed, (
            f"{len(regressed)} of {len(cases)} cases that pass in conformance/{suite}.md fail now: "
            + "; ".join(regressed[:5]) + "\n" + log
        )
