"""Kafka's default partitioner, the one placement of keyed records every source here shares: the
simulator, event files and `produce` put an instance's records in the partition a Kafka producer
with default settings would, so a run on any of them splits the partitions (and their event-time
clocks) the same way."""

from __future__ import annotations

from functools import lru_cache

from kafka.partitioner.default import murmur2


@lru_cache(maxsize=65_536)
def partition_of(key: bytes | None, partitions: int) -> int:
    """Kafka's default partitioner (the Java client's, and kafka-python's) for a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions if key is not None else 0
