"""The one exception root of flowkeeper.

    FlowkeeperError
    ├── DefinitionError   a workflow definition file is invalid (names the file and the path in it)
    ├── ConfigError       a setting is invalid (says what to set instead)
    └── SnapshotError     a state snapshot cannot be restored (version or shape)

Bad *input events* never raise: they become dead-letter records (see `schemas.decode`).
"""


class FlowkeeperError(Exception):
    """Root of every error flowkeeper raises on purpose."""


class DefinitionError(FlowkeeperError):
    """A workflow definition is invalid; the message names the file, the path and the fix."""


class ConfigError(FlowkeeperError):
    """A setting is invalid; the message says which one and what to do."""


class SnapshotError(FlowkeeperError):
    """A snapshot cannot be restored by this code version."""
