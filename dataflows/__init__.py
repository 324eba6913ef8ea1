"""Dataflow factories, settings and the `flowkeeper` command line."""
