"""Which format each source of a run is written in: `--format` as a default and per-file or
per-topic choices.

`--format` takes a comma-separated list: a bare `NAME` is the default, `PATTERN=NAME` chooses the
format of the files or topics whose name matches the glob `PATTERN` (a file's name without its
folder, a topic's name). The first pattern that matches wins; a source no pattern matches reads
the default (`cloudevents` when none is given):

    --format 'orders-*.jsonl=shop,cloudevents'
    --format 'shop.orders=shop,outbox.*=debezium-outbox'

A record carries its source (`file:<name>`, `kafka:<topic>`), and an archive keeps it, so a
replay of the same archive chooses the same format for every record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from schemas.decode import DecodeRules
from schemas.errors import ConfigError
from schemas.mapped import RecordReader

CLOUDEVENTS = "cloudevents"


@dataclass(frozen=True)
class FormatChoice:
    """`--format` parsed (see the module docstring)."""

    default: str
    patterns: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> list[str]:
        """Every format named, the default first, each once."""
        return list(dict.fromkeys([self.default, *(name for _, name in self.patterns)]))

    def name_for(self, source: str) -> str:
        """The format of the records of `source` (`file:<name>`, `kafka:<topic>`, or a bare
        name)."""
        name = source.split(":", 1)[1] if ":" in source else source
        for pattern, format_name in self.patterns:
            if fnmatchcase(name, pattern):
                return format_name
        return self.default

    def unmatched(self, sources: Iterable[str]) -> list[str]:
        """The patterns that choose the format of none of `sources`."""
        names = [s.split(":", 1)[1] if ":" in s else s for s in sources]
        return [pattern for pattern, _ in self.patterns
                if not any(fnmatchcase(name, pattern) for name in names)]

    def text(self) -> str:
        """The `--format` value this choice was parsed from (normalized)."""
        return ",".join([*(f"{p}={n}" for p, n in self.patterns), self.default])


def parse_choice(text: str) -> FormatChoice:
    """`--format`'s value; a `ConfigError` says what is wrong with it in one line."""
    default: str | None = None
    patterns: list[tuple[str, str]] = []
    for entry in (e.strip() for e in text.split(",")):
        pattern, equals, name = entry.rpartition("=")
        pattern, name = pattern.strip(), name.strip()
        if not name or (equals and not pattern):
            raise ConfigError(f"--format {text!r}: entry {entry!r} is neither NAME nor "
                              "PATTERN=NAME (a glob of file or topic names, then a format)")
        if not equals:
            if default is not None:
                raise ConfigError(f"--format {text!r} names two defaults, {default!r} and "
                                  f"{name!r}; give the others as PATTERN=NAME")
            default = name
        elif any(p == pattern for p, _ in patterns):
            raise ConfigError(f"--format {text!r} chooses twice for {pattern!r}; keep one")
        else:
            patterns.append((pattern, name))
    return FormatChoice(default or CLOUDEVENTS, tuple(patterns))


class SourceRules:
    """The decode rules of each source: `base` with the reader of the source's format (None:
    CloudEvents), looked up once per source (`DecodeRules.by_source`)."""

    def __init__(self, base: DecodeRules, choice: FormatChoice,
                 readers: dict[str, RecordReader | None]) -> None:
        self.choice = choice
        self.rules = {name: replace(base, reader=reader, by_source=None)
                      for name, reader in readers.items()}
        self.known: dict[str, DecodeRules] = {}

    def __call__(self, source: str) -> DecodeRules:
        found = self.known.get(source)
        if found is None:
            found = self.known[source] = self.rules[self.choice.name_for(source)]
        return found


def chosen_rules(base: DecodeRules, choice: FormatChoice,
                 reader: Callable[[str], RecordReader | None]) -> DecodeRules:
    """`base` reading each source in its chosen format; one format for all: just its reader."""
    readers = {name: reader(name) for name in choice.names}
    if not choice.patterns:
        found = readers[choice.default]
        return base if found is None else replace(base, reader=found)
    return replace(base, reader=None, by_source=SourceRules(base, choice, readers))
