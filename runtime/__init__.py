"""Process concerns shared by every layer: the progress counters, fatal exits, GC tuning and the
fault-injection points of the crash tests."""
