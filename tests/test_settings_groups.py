"""Grouped settings (`dataflows.settings`): `FLOWKEEPER_<GROUP>__<FIELD>` variables, one duration
type, the variables from before the groups (deprecated, still read), and flags as they were."""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from dataflows.bytewax_run import reconcile
from dataflows.cli import parser
from dataflows.run_command import settings_from
from dataflows.settings import FLAGS, NEWER_FLAGS, OLD_VARIABLES, Settings, variable
from schemas.errors import ConfigError

# The flags as they were before the groups: their names must not change.
FLAG_NAMES = [
    "source", "definitions", "out", "allowed_lateness", "max_future_skew", "accept_times_from",
    "accept_times_until", "idle_grace", "buckets", "drain_at_eof", "max_event_bytes",
    "parquet_batch_rows", "parquet_writers", "duckdb_batch_rows", "flush_seconds", "duckdb",
    "workers", "processes", "metrics_port", "log_level", "recovery_dir", "recovery_partitions",
    "snapshot_interval", "backup_interval", "archive", "archive_path", "replay_speed",
    "replay_since", "replay_until", "replay_workflows", "replay_instances", "kafka_brokers",
    "kafka_topic", "kafka_start", "kafka_tail", "kafka_fetch_wait_ms", "kafka_timeout",
    "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username",
    "kafka_sasl_password", "kafka_ssl_ca", "kafka_ssl_cert", "kafka_ssl_key", "commands_topic",
    "outcomes_topic", "corrections_topic", "dead_letters_topic", "sim_seed", "sim_instances",
    "sim_partitions", "sim_rate", "sim_speed",
]

# One value other than the default for every grouped setting: as written, and as read.
SAMPLES: dict[str, tuple[str, Any]] = {
    "source": ("archive", "archive"),
    "max_event_bytes": ("2048", 2048),
    "archive_path": ("some/archive", Path("some/archive")),
    "replay_speed": ("2.5", 2.5),
    "replay_since": ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=UTC)),
    "replay_until": ("2026-01-02T00:00:00Z", datetime(2026, 1, 2, tzinfo=UTC)),
    "replay_workflows": ("a,b", "a,b"),
    "replay_instances": ("i-1", "i-1"),
    "sim_seed": ("3", 3),
    "sim_instances": ("10", 10),
    "sim_partitions": ("2", 2),
    "sim_rate": ("0.5", 0.5),
    "sim_speed": ("60", 60.0),
    "kafka_brokers": ("localhost:9092", "localhost:9092"),
    "kafka_topic": ("orders", "orders"),
    "kafka_start": ("latest", "latest"),
    "kafka_tail": ("false", False),
    "kafka_fetch_wait_ms": ("100ms", timedelta(milliseconds=100)),  # bare "100": see below
    "kafka_timeout": ("2.5", timedelta(seconds=2.5)),
    "kafka_security_protocol": ("SASL_SSL", "SASL_SSL"),
    "kafka_sasl_mechanism": ("PLAIN", "PLAIN"),
    "kafka_sasl_username": ("flowkeeper", "flowkeeper"),
    "kafka_sasl_password": ("hunter2", SecretStr("hunter2")),
    "kafka_ssl_ca": ("ca.pem", Path("ca.pem")),
    "kafka_ssl_cert": ("cert.pem", Path("cert.pem")),
    "kafka_ssl_key": ("key.pem", Path("key.pem")),
    "commands_topic": ("", ""),
    "outcomes_topic": ("outcomes", "outcomes"),
    "corrections_topic": ("corrections", "corrections"),
    "dead_letters_topic": ("dlq", "dlq"),
    "allowed_lateness": ("15m", timedelta(minutes=15)),
    "max_future_skew": ("off", None),
    "accept_times_from": ("1990-01-01", date(1990, 1, 1)),
    "accept_times_until": ("2100-01-01", date(2100, 1, 1)),
    "idle_grace": ("1s", timedelta(seconds=1)),
    "drain_at_eof": ("false", False),
    "parquet_batch_rows": ("500", 500),
    "parquet_writers": ("4", 4),
    "duckdb_batch_rows": ("700", 700),
    "flush_seconds": ("0.05", timedelta(milliseconds=50)),
    "duckdb": ("false", False),
    "archive": ("false", False),
    "recovery_dir": ("state", Path("state")),
    "recovery_partitions": ("3", 3),
    "snapshot_interval": ("0.2", timedelta(milliseconds=200)),
    "backup_interval": ("30", timedelta(seconds=30)),
    "metrics_port": ("9100", 9100),
    "log_level": ("info", "info"),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `FLOWKEEPER_*` variable from the outside reaches these tests."""
    for name in os.environ:
        if name.startswith("FLOWKEEPER_"):
            monkeypatch.delenv(name)


def value_of(settings: Settings, flag: str) -> Any:
    group, field = FLAGS[flag]
    return getattr(getattr(settings, group) if group else settings, field)


def test_the_flags_keep_their_names_and_every_grouped_one_has_a_sample() -> None:
    assert sorted(FLAGS) == sorted([*FLAG_NAMES, *NEWER_FLAGS])
    assert sorted(SAMPLES) == sorted(OLD_VARIABLES[f"FLOWKEEPER_{f.upper()}"][1]
                                     for f in FLAGS if FLAGS[f][0] and f not in NEWER_FLAGS)


def test_grouped_variables_set_their_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKEEPER_TIME__ALLOWED_LATENESS", "30s")
    monkeypatch.setenv("FLOWKEEPER_KAFKA__FETCH_WAIT", "100ms")
    monkeypatch.setenv("FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL", "1m")
    monkeypatch.setenv("FLOWKEEPER_SINKS__DUCKDB", "false")
    monkeypatch.setenv("FLOWKEEPER_SOURCE__KIND", "simulator")
    monkeypatch.setenv("FLOWKEEPER_TELEMETRY__LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.time.allowed_lateness == timedelta(seconds=30)
    assert settings.kafka.fetch_wait == timedelta(milliseconds=100)
    assert settings.recovery.snapshot_interval == timedelta(minutes=1)
    assert settings.sinks.duckdb is False
    assert settings.telemetry.log_level == "debug"
    assert settings.recovery.model_fields_set == {"snapshot_interval"}


def test_the_file_source_settings_come_from_their_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings added since the groups have only grouped variables; the file list is JSON."""
    monkeypatch.setenv("FLOWKEEPER_SOURCE__KIND", "file")
    monkeypatch.setenv("FLOWKEEPER_SOURCE__FILES", '["a.jsonl", "b.csv.gz"]')
    monkeypatch.setenv("FLOWKEEPER_SOURCE__FILE_PARTITIONS", "8")
    monkeypatch.setenv("FLOWKEEPER_SOURCE__ARRIVAL_FIELD", "arrivedat")
    source = Settings().source
    assert (source.files, source.file_partitions, source.arrival_field) == (
        [Path("a.jsonl"), Path("b.csv.gz")], 8, "arrivedat")
    assert not NEWER_FLAGS & {flag for _, flag in OLD_VARIABLES.values()}


@pytest.mark.parametrize("flag", sorted(SAMPLES))
def test_each_old_variable_still_sets_its_field_and_warns(monkeypatch: pytest.MonkeyPatch,
                                                          flag: str) -> None:
    text, expected = SAMPLES[flag]
    others = {"source": {"archive_path": "a"}} if flag == "source" else {}  # archive needs it
    old, new = f"FLOWKEEPER_{flag.upper()}", variable(flag)
    assert value_of(Settings(**others), flag) != expected
    monkeypatch.setenv(old, text)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*set {new}"):
        from_old = Settings(**others)
    monkeypatch.delenv(old)
    monkeypatch.setenv(new, text)
    from_new = Settings(**others)
    assert value_of(from_old, flag) == value_of(from_new, flag) == expected


def test_old_and_new_variable_with_different_values_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKEEPER_SNAPSHOT_INTERVAL", "5")
    monkeypatch.setenv("FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL", "7")
    with (pytest.warns(DeprecationWarning),
          pytest.raises(ConfigError, match="FLOWKEEPER_SNAPSHOT_INTERVAL and "
                        "FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL are both set")):
        Settings()
    monkeypatch.setenv("FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL", "5")
    with pytest.warns(DeprecationWarning):
        assert Settings().recovery.snapshot_interval == timedelta(seconds=5)


def test_the_old_milliseconds_variable_and_flag_count_bare_numbers_in_ms(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKEEPER_KAFKA_FETCH_WAIT_MS", "100")
    monkeypatch.setenv("FLOWKEEPER_KAFKA__FETCH_WAIT", "100ms")
    with pytest.warns(DeprecationWarning):  # the same duration: no conflict
        assert Settings().kafka.fetch_wait == timedelta(milliseconds=100)
    monkeypatch.delenv("FLOWKEEPER_KAFKA_FETCH_WAIT_MS")
    monkeypatch.setenv("FLOWKEEPER_KAFKA__FETCH_WAIT", "0.1")  # new variable: seconds
    assert Settings().kafka.fetch_wait == timedelta(milliseconds=100)
    assert Settings.from_flags(kafka_fetch_wait_ms=250).kafka.fetch_wait.total_seconds() == 0.25


@pytest.mark.parametrize("written", ["90s", "90000ms", " 90s ", "90", "90.0", 90, 90.0,
                                     timedelta(seconds=90)])
def test_a_duration_reads_the_same_in_every_accepted_form(written: Any) -> None:
    settings = Settings.from_flags(allowed_lateness=written, snapshot_interval=written,
                                   kafka_timeout=written, idle_grace=written)
    assert {settings.time.allowed_lateness, settings.recovery.snapshot_interval,
            settings.kafka.timeout, settings.time.idle_grace} == {timedelta(seconds=90)}
    assert Settings.from_flags(allowed_lateness="1m").time.allowed_lateness == timedelta(seconds=60)
    assert Settings.from_flags(max_future_skew="2h").time.max_future_skew == timedelta(hours=2)


@pytest.mark.parametrize(("flag", "written"), [
    ("allowed_lateness", "5x"), ("allowed_lateness", "off"), ("allowed_lateness", "-1s"),
    ("snapshot_interval", "0"), ("snapshot_interval", "nan"), ("flush_seconds", "inf"),
    ("kafka_fetch_wait_ms", "60001"), ("idle_grace", ""),
])
def test_a_wrong_duration_is_refused_naming_its_flag(flag: str, written: str) -> None:
    with pytest.raises(ValidationError):
        Settings.from_flags(**{flag: written})
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')}: "):
        settings_from(argparse.Namespace(**{flag: written}))


def run_args(*argv: str) -> argparse.Namespace:
    main, _ = parser()
    args: argparse.Namespace = main.parse_args(["run", *argv])
    return args


def test_the_flags_accept_the_values_they_did() -> None:
    settings = settings_from(run_args(
        "--allowed-lateness", "5s", "--snapshot-interval", "10", "--backup-interval", "0",
        "--flush-seconds", "0.05", "--kafka-timeout", "1", "--kafka-fetch-wait-ms", "100",
        "--idle-grace", "1s", "--max-future-skew", "off", "--no-duckdb", "--no-kafka-tail",
        "--recovery-dir", "state", "--workers", "2", "--sim-instances", "300",
        "--log-level", "info", "--kafka-start", "latest", "--accept-times-from", "1990-01-01"))
    assert settings.time.allowed_lateness == timedelta(seconds=5)
    assert settings.recovery.snapshot_interval == timedelta(seconds=10)
    assert settings.recovery.backup_interval == timedelta(0)
    assert settings.sinks.flush_interval == timedelta(milliseconds=50)
    assert settings.kafka.timeout == timedelta(seconds=1)
    assert settings.kafka.fetch_wait == timedelta(milliseconds=100)
    assert settings.time.idle_grace == timedelta(seconds=1)
    assert settings.time.max_future_skew is None
    assert (settings.sinks.duckdb, settings.kafka.tail) == (False, False)
    assert (settings.recovery.dir, settings.workers) == (Path("state"), 2)
    assert settings.source.sim_instances == 300
    assert (settings.telemetry.log_level, settings.kafka.start) == ("info", "latest")
    assert settings.time.accept_times_from == date(1990, 1, 1)


def test_flags_win_over_variables_of_the_same_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKEEPER_RECOVERY__DIR", "from-env")
    monkeypatch.setenv("FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL", "3s")
    settings = settings_from(run_args("--snapshot-interval", "7"))
    assert settings.recovery.dir == Path("from-env")
    assert settings.recovery.snapshot_interval == timedelta(seconds=7)


def test_run_help_lists_every_flag_with_its_variable_and_default() -> None:
    main, _ = parser()
    run = next(a for a in main._subparsers._group_actions  # type: ignore[union-attr]
               if isinstance(a, argparse._SubParsersAction)).choices["run"]
    text = " ".join(run.format_help().split())
    for flag in FLAG_NAMES:
        assert f"--{flag.replace('_', '-')}" in text
        assert variable(flag) in text.replace("- ", "-")
    assert "(env FLOWKEEPER_TIME__ALLOWED_LATENESS; default 5s)" in text
    assert "(env FLOWKEEPER_TIME__IDLE_GRACE; default off)" in text
    assert "(env FLOWKEEPER_KAFKA__FETCH_WAIT; default 50ms)" in text


def bytewax_flags(seconds: float) -> argparse.Namespace:
    return argparse.Namespace(recovery_directory=Path("state"), workers_per_process=1,
                              snapshot_interval=timedelta(seconds=seconds),
                              backup_interval=timedelta(0))


def test_a_process_count_bytewax_run_does_not_run_stops_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bytewax.run, FLOWKEEPER_PROCESSES must match the number of -a addresses (it starts
    no processes itself): 2 with two addresses passes, 3 is an error naming both."""
    flags = bytewax_flags(10)
    flags.addresses = "127.0.0.1:1;127.0.0.1:2"
    monkeypatch.setenv("FLOWKEEPER_PROCESSES", "2")
    assert reconcile(Settings(), flags).processes == 2
    monkeypatch.setenv("FLOWKEEPER_PROCESSES", "3")
    with pytest.raises(ConfigError, match=r"FLOWKEEPER_PROCESSES=3 but bytewax.run runs 2 "):
        reconcile(Settings(), flags)
    flags.addresses = None
    with pytest.raises(ConfigError, match=r"runs 1 process \(-a\)"):
        reconcile(Settings(), flags)


@pytest.mark.parametrize("name", ["FLOWKEEPER_SNAPSHOT_INTERVAL",
                                  "FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL"])
def test_bytewax_run_flags_are_checked_against_either_variable(monkeypatch: pytest.MonkeyPatch,
                                                               name: str) -> None:
    monkeypatch.setenv(name, "5")
    with pytest.warns(DeprecationWarning) if "__" not in name else nullcontext():
        settings = Settings()
    with pytest.raises(ConfigError, match=r"FLOWKEEPER_RECOVERY__SNAPSHOT_INTERVAL=5 but "
                       "bytewax\\.run -s is 1"):
        reconcile(settings, bytewax_flags(1))
    assert reconcile(settings, bytewax_flags(5)).recovery.dir == Path("state")


def test_with_flags_validates_and_keeps_what_was_set() -> None:
    settings = Settings.from_flags(duckdb=False).with_flags(archive=False, idle_grace="2s")
    assert settings.sinks.model_fields_set == {"duckdb", "archive"}
    assert settings.time.idle_grace == timedelta(seconds=2)
    with pytest.raises(ValidationError):
        settings.with_flags(snapshot_interval="soon")
