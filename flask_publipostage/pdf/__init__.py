"""PDF letters and cut-out cards."""
