"""Instances in a shard snapshot, by field name.

A shard may hold millions of instances, so each one is a row (a tuple of plain values: kind,
workflow type, definition version, then its fields), not a dict. The snapshot names the fields
of each kind's rows once (`layouts`), and restoring maps values to fields by those names: adding,
removing or reordering a dataclass field can never put a value into the wrong field. A field the
snapshot lacks takes its default; a saved field this code no longer has stops the restore with a
`SnapshotError` (write a migration step in `state.shard_snapshot.migrate_snapshot`).

The field list is the dataclass itself (`dataclasses.fields`), so it is written in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from operator import attrgetter
from typing import Any

from schemas.errors import SnapshotError
from state.cases import CaseInstance
from state.definition import CaseTracking, StateMachine
from state.machine import MachineInstance

Instance = MachineInstance | CaseInstance
Row = tuple[Any, ...]
Reader = Callable[[str, Row, StateMachine | CaseTracking], Instance]

# Not in a row: the definition is saved as (type, version), the key is the row's dict key, and
# `armed` is always empty between engine calls (the shard takes it at once).
_NOT_SAVED = ("definition", "key", "armed")


class InstanceCodec:
    """Rows of one kind of instance: the fields in declaration order; `mutable` fields are copied
    on the way out and in, so a snapshot never shares a dict or list with a live instance."""

    def __init__(self, kind: str, cls: type[Instance], mutable: Sequence[str]) -> None:
        self.kind, self.cls = kind, cls
        declared = [f for f in fields(cls) if f.name not in _NOT_SAVED]
        self.fields = tuple(f.name for f in declared)
        self._defaults: dict[str, Any] = {
            f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            for f in declared if f.default is not MISSING or f.default_factory is not MISSING}
        self._get = attrgetter(*self.fields)
        self._mutable = tuple(self.fields.index(name) for name in mutable)

    def encode(self, instance: Instance) -> Row:
        values = list(self._get(instance))
        for i in self._mutable:
            values[i] = _fresh(values[i])
        return (self.kind, instance.workflow_type, instance.definition.version, *values)

    def reader(self, saved: Sequence[str]) -> Reader:
        """Restores rows written with the field names `saved`, by name."""
        saved = tuple(saved)
        unknown = [name for name in saved if name not in self.fields]
        if unknown:
            msg = (f"{self.kind} instances in this snapshot have fields {unknown} that this code "
                   "does not know; add a migration step in state.shard_snapshot.migrate_snapshot")
            raise SnapshotError(msg)
        missing = [name for name in self.fields if name not in saved and name not in self._defaults]
        if missing:
            msg = (f"{self.kind} instances in this snapshot lack the fields {missing}, which have "
                   "no default; add a migration step in state.shard_snapshot.migrate_snapshot")
            raise SnapshotError(msg)
        cls, mutable = self.cls, self._mutable
        if saved == self.fields:
            def ordered(row: Row) -> list[Any]:
                return list(row[3:])
        else:
            position = {name: i for i, name in enumerate(saved)}
            defaults = self._defaults

            def ordered(row: Row) -> list[Any]:
                values = row[3:]
                return [values[position[name]] if name in position else defaults[name]
                        for name in self.fields]  # mutable defaults are made fresh below

        def read(key: str, row: Row, definition: StateMachine | CaseTracking) -> Instance:
            values = ordered(row)
            for i in mutable:
                values[i] = _fresh(values[i])
            return cls(definition, key, *values)  # type: ignore[arg-type]

        return read


def _fresh(value: Any) -> Any:
    """A mutable field's value, copied: a fresh dict, or a fresh list (v3 saved lists as tuples);
    None as it is."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    return value


MACHINE = InstanceCodec("machine", MachineInstance, mutable=("pending_acks",))
CASE = InstanceCodec("case", CaseInstance, mutable=("activities", "rule_from", "rule_last_to"))
CODECS = {codec.kind: codec for codec in (MACHINE, CASE)}
_BY_CLASS: dict[type, InstanceCodec] = {MachineInstance: MACHINE, CaseInstance: CASE}


def layouts() -> dict[str, tuple[str, ...]]:
    """The field names of each kind's rows, as a snapshot records them."""
    return {kind: codec.fields for kind, codec in CODECS.items()}


def encode_instance(instance: Instance) -> Row:
    """The row of one instance."""
    return _BY_CLASS[type(instance)].encode(instance)


def readers(saved: dict[str, Sequence[str]]) -> dict[str, Reader]:
    """One reader per kind, for a snapshot whose `layouts()` were `saved`."""
    return {kind: codec.reader(saved.get(kind, codec.fields)) for kind, codec in CODECS.items()}
