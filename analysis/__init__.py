"""Reading a run's outputs for people: the HTML report, one instance's timeline, shared plots."""
