"""Wire formats: the CloudEvents envelope, payload models with upcasters, and output table
schemas."""
