"""Pick the input source named by the settings."""

from __future__ import annotations

from bytewax.inputs import Source

from dataflows.settings import Settings
from schemas.errors import ConfigError
from schemas.event import RawRecord
from state.catalog import Catalog


def make_source(settings: Settings, catalog: Catalog) -> Source[RawRecord]:
    """The source of `settings.source`."""
    msg = f"unknown source {settings.source!r}; choose one of: simulator"
    raise ConfigError(msg)
