"""The one exception root of flowkeeper, and the whole tree under it.

    FlowkeeperError
    ├── DefinitionError         a workflow definition file is invalid (names the file and the path)
    ├── ConfigError             a setting is invalid (says what to set instead)
    ├── SnapshotError           a state snapshot cannot be restored (version or shape)
    ├── SinkWriteError          an output file cannot be written (connectors.parquet_sink)
    ├── KafkaUnavailableError   the cluster is unreachable or refused a write
    │                           (connectors.kafka_connection)
    ├── EventLogError           an event log cannot be read (connectors.event_logs)
    ├── ProcessFailedError      a process of a local cluster failed (dataflows.local_cluster)
    └── InputError              one input record is unusable; never escapes `schemas.decode`,
        │                       which turns it into a dead letter with the fix in its message
        ├── HeaderError         a binary-mode `ce_*` header is not UTF-8 text
        └── UnknownVersion      the event type is known, its payload version is not

Every message says what to do. Bad *input events* never raise out of the decoder: they become
dead-letter records (see `schemas.decode`).
"""


class FlowkeeperError(Exception):
    """Root of every error flowkeeper raises on purpose; a command that stops on one exits with
    its `exit_status` (2: a usage or configuration error)."""

    exit_status = 2


class DefinitionError(FlowkeeperError):
    """A workflow definition is invalid; the message names the file, the path and the fix."""


class ConfigError(FlowkeeperError):
    """A setting is invalid; the message says which one and what to do."""


class ProcessFailedError(FlowkeeperError):
    """A process of a local cluster failed; the message names it, its exit status and its last
    lines on stderr. The run failed (exit status 1), the command line was fine."""

    exit_status = 1


class SnapshotError(FlowkeeperError):
    """A snapshot cannot be restored by this code version; the message names the migration to
    write."""


class InputError(FlowkeeperError, ValueError):
    """One input record cannot be used; caught inside the decoder and dead-lettered."""


class HeaderError(InputError):
    """A binary-mode `ce_*` header whose value is not UTF-8 text; `header` names it."""

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"header {header!r}: {problem}")
        self.header = header


class UnknownVersion(InputError, LookupError):
    """The type is known but not at this payload version."""
