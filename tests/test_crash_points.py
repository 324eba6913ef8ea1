"""Fault injection (`runtime.crash_points`): a no-op unless the variable names a point, and a
real SIGKILL at the N-th pass when it does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.test_archive_replay import REPO

PASS_FIVE_TIMES = ("from runtime.crash_points import crash_point\n"
                   "for i in range(5):\n"
                   "    crash_point('elsewhere'); crash_point('here'); print(i, flush=True)\n")


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "FLOWKEEPER_CRASH_AFTER"}
    return subprocess.run([sys.executable, "-c", PASS_FIVE_TIMES], cwd=REPO, text=True,
                          capture_output=True, env={**clean, **env}, timeout=60)


def test_without_the_variable_every_point_is_a_no_op() -> None:
    done = run({})
    assert done.returncode == 0 and done.stdout.split() == ["0", "1", "2", "3", "4"]


def test_the_named_point_kills_the_process_on_its_nth_pass() -> None:
    done = run({"FLOWKEEPER_CRASH_AFTER": "here:3"})
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["0", "1"]  # killed at the third pass, before printing 2
