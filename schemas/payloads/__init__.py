"""Payload models of the bundled workflows, versioned, with upcasters (see `registry`)."""
