"""Ground-truth rows and the simulation that carries them; written as Parquet with explicit schemas.

`instances.parquet`: one row per instance, its scenario and what the engine must conclude.
`records.parquet`: one row per record, keyed like the ledger by (source, partition, offset).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.simulator.config import SimulatorConfig
from schemas.event import RawRecord

INSTANCES = pa.schema([
    ("workflow_type", pa.string()),
    ("instance_id", pa.string()),
    ("scenario", pa.string()),
    ("expected_outcome", pa.string()),
    ("expected_final_state", pa.string()),
    ("expected_commands", pa.list_(pa.string())),
    ("expects_correction", pa.bool_()),
])

RECORDS = pa.schema([
    ("source", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("event_id", pa.string()),
    ("expected_disposition", pa.string()),
    ("expected_reason", pa.string()),
    ("workflow_type", pa.string()),
    ("instance_id", pa.string()),
    ("fault", pa.string()),
])


@dataclass(frozen=True, slots=True)
class TruthInstance:
    """What the engine must conclude about one instance.

    `expected_commands` are idempotency keys in the order the engine emits them;
    `expected_outcome` is None only for an instance that never ends.
    """

    workflow_type: str
    instance_id: str
    scenario: str
    expected_outcome: str | None
    expected_final_state: str
    expected_commands: tuple[str, ...]
    expects_correction: bool


@dataclass(frozen=True, slots=True)
class TruthRecord:
    """The ledger row one record must get; `instance_id` is the instance it was made for (the
    ledger has none for a dead letter), `fault` what the simulator did to it (comma-separated)."""

    source: str
    partition: int
    offset: int
    event_id: str | None
    expected_disposition: str
    expected_reason: str | None
    workflow_type: str
    instance_id: str
    fault: str | None


@dataclass(frozen=True)
class Simulation:
    """Records per partition in arrival order, and the truth about them."""

    config: SimulatorConfig
    partitions: list[list[RawRecord]]
    truth_instances: list[TruthInstance]
    truth_records: list[TruthRecord]

    def records(self) -> list[RawRecord]:
        """Every record, partition by partition."""
        return [r for part in self.partitions for r in part]


def write_ground_truth(sim: Simulation, out_dir: Path) -> tuple[Path, Path]:
    """Write `out_dir/ground_truth/{instances,records}.parquet`; each file appears whole or not."""
    folder = Path(out_dir) / "ground_truth"
    folder.mkdir(parents=True, exist_ok=True)
    instances = folder / "instances.parquet"
    records = folder / "records.parquet"
    _write(instances, INSTANCES, [_instance_row(t) for t in sim.truth_instances])
    _write(records, RECORDS, [asdict(t) for t in sim.truth_records])
    return instances, records


def _instance_row(truth: TruthInstance) -> dict[str, Any]:
    return {**asdict(truth), "expected_commands": list(truth.expected_commands)}


def _write(path: Path, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
    temp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), temp, compression="zstd")
    os.replace(temp, path)
