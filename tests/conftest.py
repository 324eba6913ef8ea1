"""Fixtures shared by test modules."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from analysis.outputs import open_outputs
from tests.demo_kit import demo_run
from tests.kafka_broker import broker  # noqa: F401  # a fixture: pytest finds it by name here


@pytest.fixture(scope="session")
def out() -> Path:
    """The `--out` folder of the small demo run the analysis tests read (`tests.demo_kit`)."""
    return demo_run()


@pytest.fixture(scope="session")
def conn(out: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the demo run, with every view."""
    return open_outputs(out)
