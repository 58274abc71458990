"""``flask publipostage purge-files``: delete expired PDF files now."""

from __future__ import annotations

import click

from ..cli import publipostage_cli
from ..i18n import ngettext


@publipostage_cli.command("purge-files")
def purge_files() -> None:
    """Delete downloaded or expired PDF files and fail interrupted jobs."""
    from .background import cleanup

    removed = cleanup()
    click.echo(ngettext("%(num)d file deleted.", "%(num)d files deleted.", removed))
