"""Sources and sinks: where events come from and where outputs go."""
