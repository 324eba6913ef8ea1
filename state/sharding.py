"""Which shard holds an instance: its input partition plus a stable hash of the record key; and
which Bytewax key to give a shard so its state lives on the worker that reads its partition.

Records of one instance share a key (the instance id on keyed topics) and so a partition; the
bucket spreads a partition's instances over several shards. Stable across processes and runs
(crc32, not Python's salted `hash`), so a replay puts every instance in the same shard.

Bytewax sends a stateful step's str key to worker `SipHash-1-3(utf-8 bytes + 0xFF) % workers`
(Rust's `DefaultHasher` with zero keys hashing a `String`). Picking the key so that this lands on
the reading worker keeps every record on the worker, and the process, that read it. Pure Python,
no Bytewax import: the hash is Rust's, checked against values Rust printed (tests/test_locality.py).
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache

_MASK = (1 << 64) - 1


def shard_of(partition: int, key: bytes | None, buckets: int) -> str:
    """The shard name `"{partition}/{bucket}"`; records without a key share bucket 0."""
    return partition_shards(partition, buckets)[bucket_of(key, buckets)]


def bucket_of(key: bytes | None, buckets: int) -> int:
    """The bucket of a record key within its partition (`shard_of`)."""
    return zlib.crc32(key) % buckets if key else 0


@lru_cache(maxsize=1024)
def partition_shards(partition: int, buckets: int) -> tuple[str, ...]:
    """The names of every shard of a partition (`shard_of` gives each record one of them)."""
    return tuple(f"{partition}/{bucket}" for bucket in range(buckets))


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def _sip_round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _MASK
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _MASK
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _MASK
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with both keys zero, as Rust's `DefaultHasher::default()` computes it."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573
    end = len(data) - len(data) % 8
    for (word,) in struct.iter_unpack("<Q", data[:end]):
        v3 ^= word
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= word
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def worker_of(key: str, workers: int) -> int:
    """The worker Bytewax (0.21) runs a stateful step's logic for `key` on."""
    return siphash13(key.encode() + b"\xff") % workers


@lru_cache(maxsize=65_536)
def routing_key(shard: str, worker: int, workers: int) -> str:
    """The Bytewax key that puts `shard` on `worker`: the shard name itself when it lands there
    (always with one worker, so keys stay as they were), else the name plus `~n`, smallest n >= 1.
    Shard names never contain `~`, so `shard_name` gets the name back."""
    key, salt = shard, 0
    while worker_of(key, workers) != worker:
        salt += 1
        key = f"{shard}~{salt}"
    return key


def shard_name(key: str) -> str:
    """The shard a Bytewax key belongs to (the key without its `~n`)."""
    return key.split("~", 1)[0]
