"""Email campaigns with a per-recipient journal."""
