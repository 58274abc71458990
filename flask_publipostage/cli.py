"""The ``flask publipostage`` command group."""

from __future__ import annotations

from flask.cli import AppGroup

publipostage_cli = AppGroup("publipostage", help="Publipostage des comptes.")
