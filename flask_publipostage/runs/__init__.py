"""Runs: the lifecycle every background distribution shares (PDF files, email
campaigns), its tables and its backends. See :mod:`.core`."""

from . import models  # noqa: F401  (the tables join the metadata)
