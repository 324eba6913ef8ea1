"""Instances in a shard snapshot are restored by field name (`state.snapshot`): a snapshot
written with the fields in another order, without a field, or with one this code lacks, restores
exactly, takes the default, or stops with a clear error; never a value in the wrong field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import SnapshotError
from state.catalog import Catalog
from state.shard import Shard
from tests.engine_kit import CASES, ORDER_V1, Harness, write_catalog
from tests.snapshot_kit import LATENESS_MS, PREFIX

Snapshot = dict[str, Any]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return write_catalog(tmp_path, ORDER_V1, CASES)


@pytest.fixture
def harness(catalog: Catalog) -> Harness:
    """A shard with open orders (one compensating) and an open case."""
    return Harness(catalog, LATENESS_MS).feed(*PREFIX)


def relaid(data: Snapshot, kind: str, layout: Callable[[list[str]], list[str]],
           value: Callable[[str, dict[str, Any]], Any] = lambda name, row: row[name]) -> Snapshot:
    """`data` as code with the fields of `kind` in the order `layout` gives would have written
    it; `value(name, fields)` is the saved value of each field."""
    out = copy.deepcopy(data)
    names = list(data["layouts"][kind])
    new_names = layout(names)
    out["layouts"][kind] = tuple(new_names)
    for key, row in data["instances"].items():
        if row[0] == kind:
            fields = dict(zip(names, row[3:], strict=True))
            out["instances"][key] = (*row[:3], *(value(name, fields) for name in new_names))
    return out


def restore(harness: Harness, data: Snapshot) -> Shard:
    shard = harness.shard
    return Shard.restore(data, shard.catalog, shard.rules, shard.config)


@pytest.mark.parametrize("kind", ["machine", "case"])
def test_fields_saved_in_another_order_restore_by_name(harness: Harness, kind: str) -> None:
    """Fields written in reverse order (a dataclass reordered between versions) come back into
    the right fields: the restored shard snapshots to exactly the original."""
    data = harness.shard.snapshot()
    reversed_data = relaid(data, kind, lambda names: names[::-1])
    assert reversed_data["instances"] != data["instances"]  # positional restore would corrupt
    assert restore(harness, reversed_data).snapshot() == data


def test_a_field_the_snapshot_lacks_takes_its_default(harness: Harness) -> None:
    """A snapshot from before a field existed restores it with the field's default."""
    data = harness.shard.snapshot()
    without = relaid(data, "machine", lambda names: [n for n in names if n != "timed_out_step"])
    defaulted = relaid(data, "machine", lambda names: names,
                       lambda name, fields: None if name == "timed_out_step" else fields[name])
    assert restore(harness, without).snapshot() == defaulted


def test_a_saved_field_this_code_lacks_stops_the_restore(harness: Harness) -> None:
    """A field unknown to this code is an error naming it, never silently dropped."""
    data = harness.shard.snapshot()
    extra = relaid(data, "machine", lambda names: [*names, "colour"],
                   lambda name, fields: fields.get(name, "red"))
    with pytest.raises(SnapshotError, match="colour"):
        restore(harness, extra)
