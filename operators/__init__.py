"""Bytewax operators wrapping the pure engine: the admission and shard steps, the keys that keep
records on their reading worker, and the metrics windows."""
