"""All configuration, from flags and `FLOWKEEPER_*` environment variables: the one place that reads
the environment, and only when `Settings()` is built (never at import time).

Settings come in groups (`settings.kafka.brokers`), set by `FLOWKEEPER_<GROUP>__<FIELD>` variables
(`FLOWKEEPER_KAFKA__BROKERS`); the command-line flags keep their flat names (`--kafka-brokers`).
Every duration is a `timedelta`, written "250ms", "5s", "15m", "1h", "3d" or as seconds ("0.5").
The variables from before the groups (`FLOWKEEPER_KAFKA_BROKERS`) still work for one release,
with a deprecation warning naming the new one.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas.decode import MAX_TIME_MS, MIN_TIME_MS
from schemas.errors import ConfigError
from state.definition import AcceptTimes
from state.durations import format_duration, parse_duration_ms, to_ms

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DEFINITIONS = REPO_ROOT / "definitions"
PREFIX = "FLOWKEEPER_"

_log = logging.getLogger("flowkeeper.settings")


def _duration(value: Any) -> Any:
    """A duration with a unit ("250ms", "5s") or a number of seconds, as a `timedelta`."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value
    text = str(value).strip()
    try:
        return timedelta(milliseconds=parse_duration_ms(text))
    except ValueError:
        pass
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a duration; write 250ms, 5s, 15m, 1h, 3d, or seconds "
                         "(0.5)")
    return timedelta(seconds=seconds)


def _duration_or_off(value: Any) -> Any:
    return None if value == "off" else _duration(value)


_OR_OFF = BeforeValidator(_duration_or_off)
Duration = Annotated[timedelta, BeforeValidator(_duration)]
OptionalDuration = Annotated[timedelta | None, _OR_OFF]  # None: "off"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSettings(_Group):
    """Where events come from, and the source-specific settings of each kind."""

    kind: Literal["simulator", "archive", "kafka", "file"] = Field("simulator", description=(
        "where events come from: the embedded simulator, an input archive to replay "
        "(--archive-path), a Kafka topic (--kafka-topic), or event files (run --source file "
        "PATH...)"))
    max_event_bytes: int = Field(1_048_576, ge=1024, description=(
        "larger records are dead-lettered unparsed"))

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

    files: list[Path] = Field([], description=(
        "source 'file': CloudEvents files, .jsonl/.ndjson (optionally .gz, .zst, .bz2), .csv or "
        ".parquet with a column per attribute; read in name order (the variable takes a JSON "
        "list)"))
    file_partitions: int = Field(4, ge=1, le=1024, description=(
        "file: virtual input partitions the records are spread over by instance id (Kafka's "
        "default partitioner), the unit of order and of work per worker"))
    arrival_field: str | None = Field(None, description=(
        "file: the attribute or column holding each record's arrival time (RFC 3339 or epoch "
        "ms; default: the event time)"))

    format: str = Field("cloudevents", min_length=1, description=(
        "how input records are written: cloudevents, debezium-outbox, or a name under "
        "'formats:' in --formats; per file or topic as a comma-separated list of PATTERN=NAME "
        "(a glob of file or topic names) and one default NAME, e.g. "
        "'shop-*.jsonl=shop,cloudevents' (README: Your own event format)"))
    formats: Path | None = Field(None, description=(
        "the YAML file of 'formats:' (default: formats.yaml in the --definitions folder, "
        "if there is one)"))
    schema_registry_url: str = Field("", description=(
        "a format with 'encoding: avro': the schema registry serving GET /schemas/ids/{id} "
        "(Confluent's REST API; Redpanda and Apicurio serve it too)"))
    schema_registry_username: str | None = Field(None, description=(
        "schema registry: basic-auth user"))
    schema_registry_password: SecretStr | None = Field(None, description=(
        "schema registry: basic-auth password"))
    schema_registry_ca: Path | None = Field(None, description=(
        "schema registry: CA certificate file (PEM) to trust for https"))
    avro_schemas: Path | None = Field(None, description=(
        "a format with 'encoding: avro', instead of a registry: a folder of <schema id>.avsc "
        "files"))

    sim_seed: int = Field(7, description="simulator: random seed")
    sim_instances: int = Field(2_000, ge=1, description="simulator: workflow instances")
    sim_partitions: int = Field(4, ge=1, description="simulator: input partitions")
    sim_rate: float = Field(1.0, gt=0, description=(
        "simulator: instances started per second of event time"))
    sim_speed: float | None = Field(None, gt=0, description=(
        "simulator: replay at this many times real time (default: as fast as possible)"))


class KafkaSettings(_Group):
    """The Kafka cluster: connection, the input topic, and the output topics."""

    brokers: str = Field("", description=(
        "Kafka bootstrap servers, comma-separated host:port; when set, commands also go to "
        "--commands-topic"))
    topic: str = Field("", description="source 'kafka': the one input topic, keyed by instance id")
    start: Literal["earliest", "latest"] = Field("earliest", description=(
        "source 'kafka', first run: start each partition at its earliest or latest offset (a "
        "recovered run resumes from its snapshot)"))
    tail: bool = Field(True, description=(
        "source 'kafka': keep waiting for new records; --no-kafka-tail stops at the end of each "
        "partition (tests, backfills)"))
    fetch_wait: Duration = Field(
        timedelta(milliseconds=50), ge=timedelta(0), le=timedelta(minutes=1), description=(
            "source 'kafka': longest the broker holds a fetch waiting for new records (librdkafka "
            "fetch.wait.max.ms; its default, 500ms, adds up to half a second of latency on a "
            "quiet topic; a bare number on --kafka-fetch-wait-ms is milliseconds)"))
    timeout: Duration = Field(timedelta(seconds=10), gt=timedelta(0), description=(
        "how long to wait for the Kafka cluster at start-up before failing"))
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="Kafka SASL mechanism (with a SASL_* protocol)")
    sasl_username: str | None = Field(None, description="Kafka SASL user name")
    sasl_password: SecretStr | None = Field(None, description=(
        "Kafka SASL password (never printed; prefer the environment variable)"))
    ssl_ca: Path | None = Field(None, description="Kafka TLS: CA certificate file (PEM)")
    ssl_cert: Path | None = Field(None, description=(
        "Kafka TLS: client certificate file (PEM), for mutual TLS"))
    ssl_key: Path | None = Field(None, description=(
        "Kafka TLS: client private key file (PEM), for mutual TLS"))
    commands_topic: str = Field("flowkeeper.commands", description=(
        "with --kafka-brokers: topic for commands as CloudEvents ('' to disable)"))
    outcomes_topic: str = Field("", description=(
        "with --kafka-brokers: topic for outcomes as CloudEvents ('' = off)"))
    corrections_topic: str = Field("", description=(
        "with --kafka-brokers: topic for corrections as CloudEvents ('' = off)"))
    dead_letters_topic: str = Field("", description=(
        "with --kafka-brokers: topic for dead letters as CloudEvents ('' = off)"))


class TimeSettings(_Group):
    """Event time: lateness, the accepted range of timestamps, and when deadlines fire."""

    allowed_lateness: Duration = Field(timedelta(seconds=5), ge=timedelta(0), description=(
        "how far behind the newest event time an event may arrive and still be applied in order"))
    max_future_skew: OptionalDuration = Field(timedelta(hours=1), ge=timedelta(0), description=(
        "dead-letter events stamped this far after their arrival ('off' to disable)"))
    accept_times_from: date | None = Field(None, description=(
        "dead-letter events stamped before this date (UTC; default 2000-01-01); a definition's "
        "accept_times overrides it for its events"))
    accept_times_until: date | None = Field(None, description=(
        "dead-letter events stamped on or after this date (UTC; default 2200-01-01)"))
    idle_grace: OptionalDuration = Field(None, ge=timedelta(0), description=(
        "live streams: after this much wall time without input, event time follows the wall clock "
        "('off' for replays)"))
    drain_at_eof: bool = Field(True, description=(
        "when a bounded input ends, fire every pending deadline"))

    @property
    def accept_times_ms(self) -> tuple[int, int]:
        """The run's range of accepted event times, `[from, until)` in UTC ms."""
        return AcceptTimes(since=self.accept_times_from,
                           until=self.accept_times_until).bounds_ms(MIN_TIME_MS, MAX_TIME_MS)

    @property
    def max_future_skew_ms(self) -> int | None:
        """The skew bound as the decoder takes it (None: no bound)."""
        return None if self.max_future_skew is None else to_ms(self.max_future_skew)


class SinkSettings(_Group):
    """The outputs written under --out: Parquet, DuckDB and the input archive."""

    parquet_batch_rows: int = Field(50_000, ge=1, description="rows per Parquet file at most")
    parquet_writers: int = Field(2, ge=1, le=64, description=(
        "Parquet writer partitions (each writes its own files; fixed for an output folder resumed "
        "with recovery): fewer means fewer, larger files"))
    duckdb_batch_rows: int = Field(50_000, ge=1, description=(
        "unused since DuckDB is loaded from whole committed Parquet files (kept so that scripts "
        "setting it still run)"))
    flush_interval: Duration = Field(timedelta(seconds=5), ge=timedelta(0), description=(
        "write buffered rows at least this often"))
    duckdb: bool = Field(True, description=(
        "also load the DuckDB database from the committed Parquet files, beside the run"))
    archive: bool = Field(True, description=(
        "archive every input record as received to Parquet (parquet/archive), for replay"))


class RecoverySettings(_Group):
    """Bytewax recovery: where snapshots go and how often."""

    dir: Path | None = Field(None, description=(
        "Bytewax recovery folder: snapshots of state and input positions; a run with an existing "
        "one resumes"))
    partitions: int = Field(1, ge=1, le=256, description=(
        "SQLite partitions created in a new recovery folder"))
    snapshot_interval: Duration = Field(timedelta(seconds=10), gt=timedelta(0), description=(
        "time between recovery snapshots (and epochs)"))
    backup_interval: Duration = Field(timedelta(0), ge=timedelta(0), description=(
        "how long to keep superseded snapshots, for backups copied with a delay"))


class TelemetrySettings(_Group):
    """What the run tells while it runs: metrics and logs."""

    metrics_port: int = Field(0, ge=0, le=65535, description=(
        "serve live Prometheus metrics on this port at /metrics (0: off); with --processes N, "
        "process i serves on this port + i"))
    log_level: Literal["debug", "info", "warning", "error"] = Field("warning", description=(
        "JSON log lines on stderr from this level; 'info' logs every dead letter, anomaly and "
        "correction with its trace id"))


class Settings(BaseSettings):
    """Everything a run needs; `flowkeeper run --help` documents each as a flag."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__",
                                      extra="forbid")

    definitions: Path = Field(BUNDLED_DEFINITIONS, description="workflow definition file or folder")
    calendars: Path | None = Field(None, description=(
        "folder of business calendars (default: calendars/ beside --definitions); another folder "
        "in a replay shows what a new holiday list would change"))
    out: Path = Field(Path("out"), description="output folder (Parquet, DuckDB, ground truth)")
    workers: int = Field(1, ge=1, le=64, description=(
        "Bytewax worker threads per process; they share one core (Python's GIL): use --processes "
        "for more cores"))
    processes: int = Field(1, ge=1, le=64, description=(
        "local Bytewax processes the command starts and stops, each with --workers threads: the "
        "flag that puts more cores to work"))
    buckets: int = Field(16, ge=1, le=4096, description="shards per input partition")
    source: SourceSettings = Field(default_factory=SourceSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    time: TimeSettings = Field(default_factory=TimeSettings)
    sinks: SinkSettings = Field(default_factory=SinkSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _EnvWithOldNames(settings_cls), dotenv_settings, file_secret_settings

    @classmethod
    def from_flags(cls, **values: Any) -> Settings:
        """Settings from values by flag name (`kafka_brokers="..."`), then the environment, then
        defaults: how the command line builds them."""
        return cls(**_nest(values))

    def with_flags(self, **values: Any) -> Settings:
        """A copy with the values given by flag name changed (validated, the rest kept as set)."""
        changes = _nest(values)
        update = {name: value for name, value in changes.items() if name not in GROUPS}
        for group, fields in changes.items():
            if group in GROUPS:
                current = getattr(self, group)
                update[group] = type(current).model_validate(
                    {**current.model_dump(exclude_unset=True), **fields})
        return self.model_copy(update=update)

    @model_validator(mode="after")
    def _replays_need_their_input(self) -> Settings:
        if self.source.kind == "archive" and self.source.archive_path is None:
            raise ValueError("source 'archive' needs --archive-path "
                             f"({variable('archive_path')})")
        if self.source.kind == "file" and not self.source.files:
            raise ValueError("source 'file' needs files: flowkeeper run --source file "
                             f"events.jsonl ... ({variable('files')} takes a JSON list)")
        if self.source.kind != "file" and self.source.files:
            raise ValueError(f"files are given but the source is {self.source.kind!r}: add "
                             "--source file to read them")
        if self.source.kind in ("archive", "file") and self.time.idle_grace is not None:
            raise ValueError("a replay never follows the wall clock: leave --idle-grace off")
        return self

    @model_validator(mode="after")
    def _kafka_needs_brokers_and_topic(self) -> Settings:
        if self.source.kind == "kafka" and not (self.kafka.brokers and self.kafka.topic):
            raise ValueError("source 'kafka' needs --kafka-brokers and --kafka-topic "
                             f"({variable('kafka_brokers')}, {variable('kafka_topic')})")
        return self

    @property
    def parquet_dir(self) -> Path:
        return self.out / "parquet"

    @property
    def duckdb_path(self) -> Path:
        return self.out / "flowkeeper.duckdb"


GROUPS: dict[str, type[_Group]] = {
    name: info.annotation for name, info in Settings.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, _Group)}

# Flag names (and the variables before the groups) that are not the field's own name in its group.
_FLAG_NAMES = {
    ("source", "kind"): "source",
    ("kafka", "fetch_wait"): "kafka_fetch_wait_ms",
    ("sinks", "flush_interval"): "flush_seconds",
    ("recovery", "dir"): "recovery_dir",
    ("recovery", "partitions"): "recovery_partitions",
    **{("kafka", field): f"kafka_{field}" for field in KafkaSettings.model_fields
       if field not in ("fetch_wait", "commands_topic", "outcomes_topic", "corrections_topic",
                        "dead_letters_topic")},
}

# Every setting by flag name (`kafka_brokers`): its group (None for the top level) and field.
FLAGS: dict[str, tuple[str | None, str]] = {
    name: (None, name) for name in Settings.model_fields if name not in GROUPS}
FLAGS.update({_FLAG_NAMES.get((group, field), field): (group, field)
              for group, model in GROUPS.items() for field in model.model_fields})


def variable(flag: str) -> str:
    """The environment variable of the setting with this flag name."""
    group, field = FLAGS[flag]
    return f"{PREFIX}{group.upper()}__{field.upper()}" if group else f"{PREFIX}{field.upper()}"


def field_info(flag: str) -> Any:
    """The pydantic `FieldInfo` of the setting with this flag name."""
    group, field = FLAGS[flag]
    return (GROUPS[group] if group else Settings).model_fields[field]


def shown_default(flag: str) -> str:
    """The default of the setting with this flag name, as written on the command line ("5s")."""
    info = field_info(flag)
    if isinstance(info.default, timedelta):
        return format_duration(info.default)
    if info.default is None and _OR_OFF in info.metadata:
        return "off"
    return str(info.default)


def flag_of(loc: tuple[int | str, ...]) -> str | None:
    """The flag name of the setting a validation error's location points at, if one."""
    place = (loc[0], loc[1]) if len(loc) > 1 and loc[0] in GROUPS else (None, loc[0] if loc else "")
    return next((flag for flag, where in FLAGS.items() if where == place), None)


def _flag_value(flag: str, value: Any) -> Any:
    """A value as its flag means it: a flag named `..._ms` counts bare numbers in milliseconds."""
    if flag.endswith("_ms") and str(value).strip().isdigit():
        return f"{str(value).strip()}ms"
    return value


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values by flag name as the nested input of `Settings`."""
    nested: dict[str, Any] = {}
    for flag, value in values.items():
        group, field = FLAGS[flag]
        target = nested.setdefault(group, {}) if group else nested
        target[field] = _flag_value(flag, value)
    return nested


# The variables from before the groups, for one release: old name -> (new name, flag name).
# No flat old variable for these:
NEWER_FLAGS = frozenset({"files", "file_partitions", "arrival_field", "format", "formats",
                         "schema_registry_url", "schema_registry_username",
                         "schema_registry_password", "schema_registry_ca", "avro_schemas",
                         "calendars"})
OLD_VARIABLES = {f"{PREFIX}{flag.upper()}": (variable(flag), flag)
                 for flag, (group, _) in FLAGS.items()
                 if group is not None and flag not in NEWER_FLAGS}


class _EnvWithOldNames(EnvSettingsSource):
    """The environment, where each variable from before the groups counts as its new one (with a
    deprecation warning); both set to different values is an error."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = dict(super()._load_env_vars())
        for old, (new, flag) in OLD_VARIABLES.items():
            value = env.pop(old.lower(), None)
            if value is None:
                continue
            message = (f"{old} is deprecated and will be removed in the next release: "
                       f"set {new} instead")
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            _log.warning(message)
            value = _flag_value(flag, value)
            given = env.setdefault(new.lower(), value)
            if given != value:
                raise ConfigError(f"{old} and {new} are both set, to different values: "
                                  f"keep only {new}")
        return env
