"""The documented `python -m bytewax.run` route: its own flags decide recovery, snapshots and
workers, the dataflow takes the recovery folder from `-r`, and a FLOWKEEPER_ setting it would not
apply stops the run with one line naming both (`dataflows.bytewax_run`)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crash_kit import parquet_files, parquet_rows, wait_for_progress
from tests.test_archive_replay import REPO
from tests.test_locality import finished, run, verify

SIM = {"FLOWKEEPER_SOURCE__SIM_INSTANCES": "2000", "FLOWKEEPER_SOURCE__SIM_SEED": "23",
       "FLOWKEEPER_SINKS__FLUSH_INTERVAL": "0.05", "FLOWKEEPER_SINKS__PARQUET_BATCH_ROWS": "500",
       "FLOWKEEPER_SINKS__DUCKDB": "false"}
FLOW = "dataflows.bytewax_main:flow()"


def bytewax_run(out: Path, *flags: str, **env: str) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWKEEPER_", "BYTEWAX_"))}
    return subprocess.Popen([sys.executable, "-m", "bytewax.run", FLOW, *flags], cwd=REPO,
                            env={**clean, **SIM, "FLOWKEEPER_OUT": str(out), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_build_flow_raises_the_config_error_and_leaves_exiting_to_the_command(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`build_flow` is a library function: a setting bytewax.run would not apply is a
    `ConfigError` for its caller (the command `dataflows.bytewax_main:flow` exits with it)."""
    from dataflows import pipeline
    from dataflows.settings import Settings
    from schemas.errors import ConfigError

    flags = argparse.Namespace(recovery_directory=None, snapshot_interval=None,
                               backup_interval=None, workers_per_process=2)
    monkeypatch.setattr(pipeline, "bytewax_run_flags", lambda: flags)
    with pytest.raises(ConfigError, match="-w is 2"):
        pipeline.build_flow(Settings.from_flags(out=tmp_path / "out", workers=1))


def init_recovery(folder: Path) -> None:
    """`mkdir DIR && python -m bytewax.recovery DIR 1`, as the README says."""
    folder.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(folder), "1"], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`flowkeeper run` on the same simulation, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "out"
    finished(run("dataflows.cli", "run", "--out", str(out), "--sim-instances", "2000",
                 "--sim-seed", "23", "--no-duckdb"))
    return out


@pytest.mark.parametrize(("flags", "env", "named"), [
    (["-r", "{rec}", "-s", "1", "-b", "0"], {"FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL": "5"},
     ["FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL=5", "-s is 1"]),
    ([], {"FLOWKEEPER_RECOVERY__DIR": "{rec}"}, ["FLOWKEEPER_RECOVERY__DIR=", "has no -r"]),
    (["-r", "{rec}", "-s", "1", "-b", "0"], {"FLOWKEEPER_RECOVERY__DIR": "{other}"},
     ["FLOWKEEPER_RECOVERY__DIR=", "differ"]),
    (["-w", "2"], {"FLOWKEEPER_WORKERS": "1"}, ["FLOWKEEPER_WORKERS=1", "-w is 2"]),
])
def test_a_setting_bytewax_run_would_not_apply_stops_the_run(
        tmp_path: Path, flags: list[str], env: dict[str, str], named: list[str]) -> None:
    """One line naming the setting and the flag, exit status 2, nothing written."""
    rec, other = tmp_path / "rec", tmp_path / "other"
    init_recovery(rec)
    fill = {"rec": rec, "other": other}
    proc = bytewax_run(tmp_path / "out", *(f.format(**fill) for f in flags),
                       **{k: v.format(**fill) for k, v in env.items()})
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 2, output[-2000:]
    line = next(line for line in output.splitlines() if line.startswith("flowkeeper: error:"))
    assert all(part in line for part in named), line
    assert not parquet_files(tmp_path / "out")


@pytest.mark.slow
def test_kill_9_under_bytewax_run_then_run_again_gives_identical_outputs(
        reference: Path, tmp_path: Path) -> None:
    """The README's route (`bytewax.recovery`, then `bytewax.run -r -s -b`, no
    FLOWKEEPER_RECOVERY__DIR), killed mid-run before its first snapshot (`-s 3600`; the resume
    from a snapshot is the same as `flowkeeper run`'s, tests/test_recovery.py) and run again: the
    outputs equal an uninterrupted run's with no row twice, because the Parquet writers learnt
    the recovery folder from `-r` and replace the killed attempt's files (without that, 18,529
    ledger rows for 9,762 records)."""
    out, rec = tmp_path / "out", tmp_path / "rec"
    init_recovery(rec)
    flags = ("-r", str(rec), "-s", "3600", "-b", "0")
    proc = bytewax_run(out, *flags)
    wait_for_progress(proc, out, rec, round(len(parquet_files(reference)) * 0.4), snapshot=False)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    again = bytewax_run(out, *flags)
    output = again.communicate(timeout=300)[0].decode()
    assert again.returncode == 0, output[-3000:]
    ledger = parquet_rows(out, "ledger")
    assert len(ledger) == len({row[0] for row in ledger})
    verify(out, reference)
