"""Bytewax operators wrapping the pure engine: the shard step and the metrics windows."""
