"""CI's slice of the conformance suite: coremltools' own op tests, run against mlc.

``conformance/mil_sample.tsv`` (written by ``scripts/conformance.py``) holds the first case of
every test class and precision with the outcome of the full run. Here those cases run again
from the installed coremltools wheel through ``mlc.testing.coremltools_plugin``; every case
that passed in the full run must still pass.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mlc.testing.coremltools_plugin import FP16_AT_FP32_TOLERANCE, junit_nodeid

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "conformance" / "mil_sample.tsv"


def _sample() -> dict[str, str]:
    rows = (line.split("\t") for line in SAMPLE.read_text().splitlines() if line.strip())
    return {nodeid: outcome for nodeid, outcome in rows}


def _coremltools_dir() -> Path:
    import importlib.util

    return Path(next(iter(importlib.util.find_spec("coremltools").submodule_search_locations)))


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


@pytest.mark.skipif(not SAMPLE.exists(), reason="no conformance sample: run scripts/conformance.py")
def test_conformance_sample(tmp_path):
    sample = _sample()
    expected_pass = sorted(n for n, outcome in sample.items() if outcome == "passed")
    assert expected_pass, "the sample has no passing case"
    select = tmp_path / "cases.txt"
    select.write_text("".join(f"{n}\n" for n in expected_pass))
    package = _coremltools_dir()
    files = sorted({str(package / n.split("::")[0]) for n in expected_pass})
    junit = tmp_path / "junit.xml"
    env = {
        **os.environ, "INCLUDE_MIL_FP32_UNIT_TESTS": "1", "PYMIL_TEST_TARGETS": "mlprogram", "TQDM_DISABLE": "1",
        "MLC_CONFORMANCE_SELECT": str(select),
    }
    cmd = [
        sys.executable, "-m", "pytest", "-p", "mlc.testing.coremltools_plugin", "-p", "no:cacheprovider",
        "-q", "--rootdir", str(package.parent), "-o", "addopts=", "-o", "testpaths=",
        f"--junitxml={junit}", *files,
    ]
    proc = subprocess.run(cmd, env=env, cwd=str(package.parent), capture_output=True, text=True, timeout=1800)
    assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    got = _outcomes(junit)
    missing = [n for n in expected_pass if n not in got]
    regressed = [n for n in expected_pass if got.get(n) not in (None, "passed")]
    assert not missing, f"{len(missing)} sample cases did not run, e.g. {missing[:3]}"
    assert not regressed, f"{len(regressed)} of {len(expected_pass)} cases that pass in conformance/mil.md fail now: " + "; ".join(regressed[:5]) + "\n" + proc.stdout[-4000:]
