"""Which Parquet files are committed: files no resume will ever delete or rewrite.

The Parquet sink (`connectors.parquet_sink`) renames a file to its final name only once it is
whole, but with recovery a final name is not yet final: a resumed run deletes every file its
writer numbered at or after the snapshot it resumes from, and writes that epoch's rows again,
possibly grouped into other files under the same names. A loader that took such a file could hold
rows the resumed run never writes again (a live run judges deadlines by the wall clock), or skip a
rewritten file it thinks it already has. So a file counts as committed when:

- the run has no recovery (`{parquet}/.recovery` absent): the pipeline never deletes a final file;
- with recovery: its number is below its writer's sequence in the snapshot Bytewax would resume
  from now (the writer's state in the latest snapshot older than the resume epoch, read the way
  Bytewax 0.21 reads its SQLite partitions): every later resume starts at or after that number,
  so the file stays as it is;
- the run has ended (`everything=True`, after `flowkeeper run` returns or for `load-duckdb`
  without `--follow`): every final file. Only running the same recovery folder again replaces
  the last epoch's files; the loader then takes the new ones and checks their rows
  (`connectors.duckdb_loader`).

The rule reads a live recovery folder without locking it: exs and frontiers first, then the
snapshots (a frontier passes an epoch only after its snapshots are written, so they are there).
"""

from __future__ import annotations

import pickle
import re
import sqlite3
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

FLOW_ID = "flowkeeper"
PARQUET_STEP = "parquet"
"""The Parquet sink's step id in the dataflow (its snapshots are under `flowkeeper.parquet`)."""

RECOVERY_MARKER = ".recovery"
_PART = re.compile(r"part-p(\d+)-(\d+)\.parquet")


@dataclass(frozen=True)
class PartFile:
    """One final Parquet file of the sink: its table, writer partition and number."""

    path: Path
    table: str
    writer: int
    seq: int


def mark_recovery(parquet_dir: Path, recovery_dir: Path) -> None:
    """Note in the output folder which recovery folder its writers resume from (the loader reads
    it to know which files are committed)."""
    parquet_dir.mkdir(parents=True, exist_ok=True)
    (parquet_dir / RECOVERY_MARKER).write_text(f"{recovery_dir.resolve()}\n")


def recovery_of(parquet_dir: Path) -> Path | None:
    """The recovery folder the output folder's writers resume from; None: a run without."""
    marker = parquet_dir / RECOVERY_MARKER
    return Path(marker.read_text().strip()) if marker.is_file() else None


def part_files(parquet_dir: Path, tables: tuple[str, ...] | list[str]) -> list[PartFile]:
    """The sink's final files of `tables` (temp files and other files left out), sorted by path."""
    found = []
    for table in tables:
        for path in (parquet_dir / table).glob("**/part-p*.parquet"):
            match = _PART.fullmatch(path.name)
            if match:
                found.append(PartFile(path, table, int(match[1]), int(match[2])))
    return sorted(found, key=lambda f: str(f.path))


def committed_files(parquet_dir: Path, tables: tuple[str, ...] | list[str], *,
                    everything: bool) -> list[PartFile] | None:
    """The committed files of `tables` by the module's rule; None when the recovery folder cannot
    be read just now (Bytewax holds a lock): try again later."""
    files = part_files(parquet_dir, tables)
    recovery = recovery_of(parquet_dir)
    if everything or recovery is None:
        return files
    sequences = committed_sequences(recovery)
    if sequences is None:
        return None
    return [f for f in files if f.seq < sequences.get(f.writer, 0)]


def committed_sequences(recovery: Path,
                        step_id: str = f"{FLOW_ID}.{PARQUET_STEP}") -> dict[int, int] | None:
    """Per Parquet writer, the first file number a resume from `recovery` now could delete."""
    parts = sorted(recovery.glob("part-*.sqlite3")) if recovery.is_dir() else []
    try:
        epoch = _resume_epoch(parts)
        if epoch is None:
            return {}
        newest: dict[str, tuple[int, bytes | None]] = {}
        for part in parts:
            for key, snap_epoch, change in _query(part, (
                    "SELECT state_key, snap_epoch, ser_change FROM snaps "
                    "WHERE step_id = ? AND snap_epoch < ?"), (step_id, epoch)):
                if key not in newest or snap_epoch > newest[key][0]:
                    newest[key] = (snap_epoch, change)
    except sqlite3.Error:
        return None
    return {int(key): _next_seq(change) for key, (_, change) in newest.items()}


def _resume_epoch(parts: list[Path]) -> int | None:
    """Bytewax 0.21's resume epoch over every partition: the latest execution's smallest worker
    frontier (a worker with none yet counts at the execution's own resume epoch)."""
    executions = [row for part in parts
                  for row in _query(part, "SELECT ex_num, worker_count, resume_epoch FROM exs")]
    if not executions:
        return None
    ex_num, workers, resume = max(executions)
    frontier: dict[int, int] = dict.fromkeys(range(int(workers)), int(resume))
    for part in parts:
        for worker, front in _query(part, "SELECT worker_index, worker_frontier FROM fronts "
                                          "WHERE ex_num = ?", (ex_num,)):
            frontier[int(worker)] = max(frontier.get(int(worker), int(resume)), int(front))
    return min(frontier.values())


def _query(part: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{part.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class _IntOnly(pickle.Unpickler):
    """A writer's snapshot is a pickled int; refuse anything that would need a class."""

    def find_class(self, module: str, name: str) -> Any:
        msg = f"a Parquet writer snapshot must be an int, not {module}.{name}"
        raise pickle.UnpicklingError(msg)


def _next_seq(change: bytes | None) -> int:
    """The writer's resume point from its snapshot (None: the state was discarded, resume at 0)."""
    if change is None:
        return 0
    value = _IntOnly(BytesIO(change)).load()
    if not isinstance(value, int):
        msg = f"a Parquet writer snapshot must be an int; got a {type(value)!r}"
        raise TypeError(msg)
    return value
