"""The pure workflow engine: definitions, instance state, event-time shards, snapshots.
No Bytewax."""
