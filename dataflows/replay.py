"""Settings to replay source: `source = "archive"` feeds an input archive through the same flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.archive_source import ArchiveSource, ReplayFilter
from dataflows.formats import with_format
from dataflows.settings import Settings
from schemas.errors import ConfigError
from schemas.payloads.registry import PayloadRegistry
from state.catalog import Catalog

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def replay_source(settings: Settings, catalog: Catalog) -> ArchiveSource:
    """The archive source of `settings.source.archive_path` with the replay filters and speed."""
    if settings.source.archive_path is None:
        raise ConfigError("source 'archive' needs --archive-path: the archive folder to replay")
    workflows = frozenset(_names(settings.source.replay_workflows))
    unknown = sorted(workflows - set(catalog.definitions))
    if unknown:
        msg = (f"--replay-workflows names {', '.join(unknown)}, which no loaded definition "
               f"defines; choose from: {', '.join(sorted(catalog.definitions))}")
        raise ConfigError(msg)
    replay_filter = ReplayFilter(
        since_ms=_ms(settings.source.replay_since), until_ms=_ms(settings.source.replay_until),
        workflows=workflows, instances=frozenset(_names(settings.source.replay_instances)),
        rules=(with_format(catalog.decode_rules(PayloadRegistry()), settings, catalog)
               if workflows else None),
    )
    return ArchiveSource(settings.source.archive_path, replay_filter=replay_filter,
                         speed=settings.source.replay_speed)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _ms(moment: datetime | None) -> int | None:
    """UTC milliseconds, in integers (float seconds are a millisecond off for some stamps)."""
    return None if moment is None else (moment - _EPOCH) // _MS
