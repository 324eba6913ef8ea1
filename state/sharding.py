"""Which shard holds an instance: its input partition plus a stable hash of the record key.

Records of one instance share a key (the instance id on keyed topics) and so a partition; the
bucket spreads a partition's instances over several shards. Stable across processes and runs
(crc32, not Python's salted `hash`), so a replay puts every instance in the same shard.
"""

from __future__ import annotations

import zlib


def shard_of(partition: int, key: bytes | None, buckets: int) -> str:
    """The shard name `"{partition}/{bucket}"`; records without a key share bucket 0."""
    bucket = zlib.crc32(key) % buckets if key else 0
    return f"{partition}/{bucket}"
