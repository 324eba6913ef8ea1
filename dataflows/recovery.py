"""Recovery folders: create them when missing, refuse a mismatched one, and say what was restored.

Bytewax snapshots every stateful step (our shards, the metrics windows, the sinks' file counters)
and every input position together at each snapshot interval, into SQLite partitions in the
recovery folder. After a crash, the next run with the same folder resumes from the last complete
snapshot; outputs since then are produced again and the sinks make that harmless (see README).

A shard's state (and a partition's admission state) is saved under its Bytewax key, salted to put
it on the worker reading its partition (`state.sharding.routing_key`). A run resumed with another
worker count, or with partitions dealt to workers differently, would pick other keys and never find
that state, so it keeps the saved keys (`saved_keys`); those shards then run wherever their key
lands.

The folder is trusted storage: Bytewax pickles snapshots, so whoever can write it can run code in
the pipeline. Keep it private to the pipeline's user.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from schemas.errors import ConfigError
from state.sharding import shard_name

PARTITION_GLOB = "part-*.sqlite3"


def existing_partitions(folder: Path) -> int:
    """How many recovery partitions a folder holds (0 for a missing or empty folder)."""
    return len(list(folder.glob(PARTITION_GLOB))) if folder.is_dir() else 0


def prepare_recovery(folder: Path, partitions: int,
                     backup_interval_s: float) -> tuple[RecoveryConfig, bool]:
    """Create the partitions if the folder has none; returns the config and whether this run
    resumes."""
    found = existing_partitions(folder)
    if found == 0:
        folder.mkdir(parents=True, exist_ok=True)
        init_db_dir(folder, partitions)
        resuming = False
    elif found != partitions:
        msg = (f"recovery folder {folder} has {found} partitions but --recovery-partitions is "
               f"{partitions}; pass --recovery-partitions {found} to resume from it, "
               "or use a new folder")
        raise ConfigError(msg)
    else:
        resuming = True
    return RecoveryConfig(str(folder), timedelta(seconds=backup_interval_s)), resuming


def saved_keys(folder: Path | None, *step_ids: str) -> list[dict[str, str]]:
    """Per stateful step (its full id, `flow.step`), the key each shard (or partition) was last
    snapshotted under, by name; empty without a folder or snapshots. Reads only the keys (the
    snapshot table's primary-key index), never the snapshots, in one pass over the folder."""
    newest: dict[str, dict[str, tuple[int, str]]] = {step: {} for step in step_ids}
    for part in sorted(folder.glob(PARTITION_GLOB)) if folder and folder.is_dir() else []:
        conn = sqlite3.connect(f"{part.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT step_id, state_key, MAX(snap_epoch) FROM snaps WHERE step_id IN "
                f"({', '.join('?' * len(step_ids))}) GROUP BY step_id, state_key",
                step_ids).fetchall()
        finally:
            conn.close()
        for step, key, epoch in rows:
            name, keys = shard_name(key), newest[step]
            if name not in keys or epoch > keys[name][0]:
                keys[name] = (epoch, key)
    return [{name: key for name, (_, key) in newest[step].items()} for step in step_ids]
