"""The benchmark's quick mode runs end to end (performance itself is measured by `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import ROOT, THROUGHPUT


@pytest.mark.slow
def test_quick_bench_writes_every_variant_with_positive_rates(tmp_path: Path) -> None:
    """`python -m bench.run --quick` measures every throughput variant and saves them as JSON."""
    subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--results", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    (path,) = tmp_path.glob("*.json")
    rates = json.loads(path.read_text())["summary"]["rates"]
    assert sorted(rates) == sorted(THROUGHPUT)
    assert all(r["median"] > 0 and r["records"] > 0 for r in rates.values())
