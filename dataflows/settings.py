"""All configuration, from flags and `FLOWKEEPER_*` environment variables: the one place that reads
the environment, and only when `Settings()` is built (never at import time).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.decode import MAX_TIME_MS, MIN_TIME_MS
from state.definition import AcceptTimes
from state.durations import parse_duration_ms

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DEFINITIONS = REPO_ROOT / "definitions"


def _duration_or_off(value: str) -> str:
    if value != "off":
        parse_duration_ms(value)
    return value


class Settings(BaseSettings):
    """Everything a run needs; `flowkeeper run --help` documents each as a flag."""

    model_config = SettingsConfigDict(env_prefix="FLOWKEEPER_", extra="forbid")

    source: Literal["simulator", "archive", "kafka"] = Field("simulator", description=(
        "where events come from: the embedded simulator, an input archive to replay "
        "(--archive-path), or a Kafka topic (--kafka-topic)"))
    definitions: Path = Field(BUNDLED_DEFINITIONS, description="workflow definition file or folder")
    out: Path = Field(Path("out"), description="output folder (Parquet, DuckDB, ground truth)")
    allowed_lateness: str = Field("5s", description=(
        "how far behind the newest event time an event may arrive and still be applied in order"))
    max_future_skew: str = Field("1h", description=(
        "dead-letter events stamped this far after their arrival ('off' to disable)"))
    accept_times_from: date | None = Field(None, description=(
        "dead-letter events stamped before this date (UTC; default 2000-01-01); a definition's "
        "accept_times overrides it for its events"))
    accept_times_until: date | None = Field(None, description=(
        "dead-letter events stamped on or after this date (UTC; default 2200-01-01)"))
    idle_grace: str = Field("off", description=(
        "live streams: after this much wall time without input, event time follows the wall clock "
        "('off' for replays)"))
    buckets: int = Field(16, ge=1, le=4096, description="shards per input partition")
    drain_at_eof: bool = Field(True, description=(
        "when a bounded input ends, fire every pending deadline"))
    max_event_bytes: int = Field(1_048_576, ge=1024, description=(
        "larger records are dead-lettered unparsed"))
    parquet_batch_rows: int = Field(50_000, ge=1, description="rows per Parquet file at most")
    parquet_writers: int = Field(2, ge=1, le=64, description=(
        "Parquet writer partitions (each writes its own files; fixed for an output folder resumed "
        "with recovery): fewer means fewer, larger files"))
    duckdb_batch_rows: int = Field(50_000, ge=1, description="rows per DuckDB transaction at most")
    flush_seconds: float = Field(5.0, ge=0, description="write buffered rows at least this often")
    duckdb: bool = Field(True, description="also write the DuckDB database")
    workers: int = Field(1, ge=1, le=64, description="Bytewax worker threads in this process")
    metrics_port: int = Field(0, ge=0, le=65535, description=(
        "serve live Prometheus metrics on this port at /metrics (0: off)"))
    log_level: Literal["debug", "info", "warning", "error"] = Field("warning", description=(
        "JSON log lines on stderr from this level; 'info' logs every dead letter, anomaly and "
        "correction with its trace id"))
    recovery_dir: Path | None = Field(None, description=(
        "Bytewax recovery folder: snapshots of state and input positions; a run with an existing "
        "one resumes"))
    recovery_partitions: int = Field(1, ge=1, le=256, description=(
        "SQLite partitions created in a new recovery folder"))
    snapshot_interval: float = Field(10.0, gt=0, description=(
        "seconds between recovery snapshots (and epochs)"))
    backup_interval: float = Field(0.0, ge=0, description=(
        "seconds to keep superseded snapshots, for backups copied with a delay"))
    archive: bool = Field(True, description=(
        "archive every input record as received to Parquet (parquet/archive), for replay"))

    archive_path: Path | None = Field(None, description=(
        "source 'archive': the archive to replay (a run's --out folder, or an import-log folder)"))
    replay_speed: float | None = Field(None, gt=0, description=(
        "archive: replay at this many times the original arrival rate (default: as fast as "
        "possible)"))
    replay_since: AwareDatetime | None = Field(None, description=(
        "archive: only records that arrived at or after this RFC 3339 time"))
    replay_until: AwareDatetime | None = Field(None, description=(
        "archive: only records that arrived before this RFC 3339 time"))
    replay_workflows: str = Field("", description=(
        "archive: only events of these workflow types (comma-separated)"))
    replay_instances: str = Field("", description=(
        "archive: only records with these keys, i.e. instance ids (comma-separated)"))

    kafka_brokers: str = Field("", description=(
        "Kafka bootstrap servers, comma-separated host:port; when set, commands also go to "
        "--commands-topic"))
    kafka_topic: str = Field("", description=(
        "source 'kafka': the one input topic, keyed by instance id"))
    kafka_start: Literal["earliest", "latest"] = Field("earliest", description=(
        "source 'kafka', first run: start each partition at its earliest or latest offset (a "
        "recovered run resumes from its snapshot)"))
    kafka_tail: bool = Field(True, description=(
        "source 'kafka': keep waiting for new records; --no-kafka-tail stops at the end of each "
        "partition (tests, backfills)"))
    kafka_fetch_wait_ms: int = Field(50, ge=0, le=60_000, description=(
        "source 'kafka': longest the broker holds a fetch waiting for new records (librdkafka "
        "fetch.wait.max.ms; its default, 500, adds up to half a second of latency on a quiet "
        "topic)"))
    kafka_timeout: float = Field(10.0, gt=0, description=(
        "seconds to wait for the Kafka cluster at start-up before failing"))
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="Kafka SASL mechanism (with a SASL_* protocol)")
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description=(
        "Kafka SASL password (never printed; prefer the environment variable)"))
    kafka_ssl_ca: Path | None = Field(None, description="Kafka TLS: CA certificate file (PEM)")
    kafka_ssl_cert: Path | None = Field(None, description=(
        "Kafka TLS: client certificate file (PEM), for mutual TLS"))
    kafka_ssl_key: Path | None = Field(None, description=(
        "Kafka TLS: client private key file (PEM), for mutual TLS"))
    commands_topic: str = Field("flowkeeper.commands", description=(
        "with --kafka-brokers: topic for commands as CloudEvents ('' to disable)"))
    outcomes_topic: str = Field("", description=(
        "with --kafka-brokers: topic for outcomes as CloudEvents ('' = off)"))
    corrections_topic: str = Field("", description=(
        "with --kafka-brokers: topic for corrections as CloudEvents ('' = off)"))
    dead_letters_topic: str = Field("", description=(
        "with --kafka-brokers: topic for dead letters as CloudEvents ('' = off)"))

    sim_seed: int = Field(7, description="simulator: random seed")
    sim_instances: int = Field(2_000, ge=1, description="simulator: workflow instances")
    sim_partitions: int = Field(4, ge=1, description="simulator: input partitions")
    sim_rate: float = Field(1.0, gt=0, description=(
        "simulator: instances started per second of event time"))
    sim_speed: float | None = Field(None, gt=0, description=(
        "simulator: replay at this many times real time (default: as fast as possible)"))

    _durations = field_validator("allowed_lateness")(lambda v: (parse_duration_ms(v), v)[1])
    _optional_durations = field_validator("max_future_skew", "idle_grace")(_duration_or_off)

    @model_validator(mode="after")
    def _replay_needs_an_archive(self) -> Settings:
        if self.source == "archive" and self.archive_path is None:
            raise ValueError("source 'archive' needs --archive-path (FLOWKEEPER_ARCHIVE_PATH)")
        if self.source == "archive" and self.idle_grace != "off":
            raise ValueError("a replay never follows the wall clock: leave --idle-grace off")
        return self

    @model_validator(mode="after")
    def _kafka_needs_brokers_and_topic(self) -> Settings:
        if self.source == "kafka" and not (self.kafka_brokers and self.kafka_topic):
            raise ValueError("source 'kafka' needs --kafka-brokers and --kafka-topic "
                             "(FLOWKEEPER_KAFKA_BROKERS, FLOWKEEPER_KAFKA_TOPIC)")
        return self

    @property
    def allowed_lateness_ms(self) -> int:
        return parse_duration_ms(self.allowed_lateness)

    @property
    def accept_times_ms(self) -> tuple[int, int]:
        """The run's range of accepted event times, `[from, until)` in UTC ms."""
        return AcceptTimes(since=self.accept_times_from,
                           until=self.accept_times_until).bounds_ms(MIN_TIME_MS, MAX_TIME_MS)

    @property
    def max_future_skew_ms(self) -> int | None:
        return None if self.max_future_skew == "off" else parse_duration_ms(self.max_future_skew)

    @property
    def idle_grace_delta(self) -> timedelta | None:
        if self.idle_grace == "off":
            return None
        return timedelta(milliseconds=parse_duration_ms(self.idle_grace))

    @property
    def parquet_dir(self) -> Path:
        return self.out / "parquet"

    @property
    def duckdb_path(self) -> Path:
        return self.out / "flowkeeper.duckdb"
