"""``flask publipostage pdf``: the page's "Générer en PDF" from the shell.

The command is the page's PDF, not a second one: the same selection (every
filter of the table is an option), the same options and their rules
(:func:`~.pipeline.check_options`), the same run started the same way
(:func:`~.pipeline.launch`: its items, its perimeter, its journal row), the same
file name. What the page sends in its response, the command copies to
``--output`` through the same claim of the one download (journalled, the run's
sheets then count as distributed), so the history and the journal cannot tell
them apart except by who acted: the ``--as-actor`` given.

``--output`` a folder (an existing one, or a path ending with ``/``) gets a PDF
per class: the run is the page's ZIP of one PDF per class, unpacked there;
``--output`` a ``.zip`` gets that ZIP as it is. A file is written beside its
target first, readable by its owner only, and renamed at the end: a command
that fails leaves no file, and refuses bad options before any run starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext
from flask_babel import force_locale

from .. import renewal
from ..access import Scope
from ..commands import follow, selection_from_options, selection_options
from ..i18n import gettext as _
from ..i18n import ngettext
from ..runs import core, files
from ..runs.models import Run
from ..selection import Selection, SelectionError, check_size, count
from ..views import time_left_label
from . import check, pipeline, render

#: Accounts whose names cannot print listed on the terminal, at most.
LISTED = 20


@dataclass(frozen=True)
class Output:
    """Where the file goes: ``path`` (None: the page's file name, in the current
    folder), a folder for a PDF per class, or a ZIP of them."""

    path: Path | None
    folder: bool = False

    @property
    def zip(self) -> bool:
        return self.folder or (self.path is not None and self.path.suffix.lower() == ".zip")

    @classmethod
    def parse(cls, value: str | None) -> Output:
        """The output ``value`` names, refused (French) where it cannot be written."""
        if not value:
            _writable(Path.cwd(), Path.cwd())
            return cls(None)
        path = Path(value).expanduser()
        if value.endswith(("/", os.sep)) or path.is_dir():
            if path.exists() and not path.is_dir():
                raise click.ClickException(_("“%(path)s” is a file, not a folder.", path=value))
            _writable(path if path.is_dir() else path.parent, path)
            return cls(path, folder=True)
        _writable(path.parent, path)
        return cls(path)


def _writable(folder: Path, target: Path) -> None:
    if not folder.is_dir():
        raise click.ClickException(_("Cannot write “%(path)s”: its folder does not exist.", path=str(target)))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.ClickException(_("Cannot write “%(path)s”: permission denied.", path=str(target)))


@click.command("pdf")
@with_appcontext
@selection_options
@click.option("--template", metavar="[letter|cards]", default=render.LETTER, show_default=True,
              help="letter: 1 per page; cards: 8 per page.")
@click.option("--output", "-o", "output_value", metavar="FILE|FOLDER/",
              help="The PDF file (default: the page's file name, here); a .zip: one PDF per class in a ZIP; "
                   "a folder (existing, or ending with '/'): one PDF per class in it (sorted by class if no --sort).")
@click.option("--postal", is_flag=True, help="Postal mail: the address in the window of a DL envelope (letter only).")
@click.option("--signoff", is_flag=True, help="A sign-off sheet at the head of each class (sorted by class first).")
@click.option("--every-class", is_flag=True, help="A bundle per class: each account in each of its classes.")
@click.option("--renew", metavar="[" + "|".join(renewal.CHOICES) + "]",
              help="Renewal codes for the activated accounts without an email address, or for all of them.")
@click.option("--renew-expired", is_flag=True, help="A new code for the accounts whose activation code has expired.")
@click.option("--print-anyway", is_flag=True, help="Print even if some names hold characters the fonts cannot draw.")
def pdf_command(template: str, output_value: str | None, postal: bool, signoff: bool, every_class: bool,
                renew: str | None, renew_expired: bool, print_anyway: bool, **selected: Any) -> None:
    """Generate the PDF of the selected accounts' credentials, as the page's "Générer en PDF"."""
    with force_locale("fr"):
        selection, scope = selection_from_options(selected)
        if template not in (render.LETTER, render.CARDS):
            raise click.ClickException(
                _("Invalid template “%(value)s”: choose letter (1 per page) or cards (8 per page).", value=template[:40])
            )
        output = Output.parse(output_value)
        if output.folder and not selection.sort:
            selection = selection.with_values(sort="class")
        options = render.Options(template=template, postal=postal, signoff=signoff, every_class=every_class,
                                 zip=output.zip, renew=renew or "", renew_expired=renew_expired)
        try:
            run = _prepare(selection, options, print_anyway)
        except SelectionError as exc:
            raise click.ClickException(exc.message) from None
        written = _deliver(run, scope, output)
        _summary(run, output, written)


def _prepare(selection: Selection, options: render.Options, print_anyway: bool) -> Run:
    """The page's checks, then its run, followed until its file is ready."""
    pipeline.check_options(selection, options)
    counters = count(selection)
    check_size(counters)
    if counters.selected == 0:
        raise SelectionError(_("No account matches these filters: there is nothing to print."))
    if not print_anyway:
        _refuse_unprintable(selection)
    run, inline = pipeline.launch(selection, options, counters.selected)
    # Prepared by the runner (on Celery, handed to its workers even when small).
    if not inline or run.is_active:
        try:
            follow(run.id, _pages_line, _("Preparing the PDF"), every=0.5)
        except KeyboardInterrupt:
            # Nobody would download it: stop it rather than leave it running.
            assert selection.scope is not None
            core.cancel(run, selection.scope)
            raise click.Abort() from None
        found = core.get(run.id)
        assert found is not None
        run = found
    error = pipeline.failure(run)
    if error is not None:
        raise error
    return run


def _refuse_unprintable(selection: Selection) -> None:
    """Names the fonts cannot draw: listed, and nothing printed unless asked."""
    problems, total = check.unprintable(selection, render.Settings.from_config().typesetter)
    if not total:
        return
    click.echo(
        ngettext(
            "%(num)d selected account has a name with characters the fonts of the PDF cannot draw: "
            "they would print as empty boxes.",
            "%(num)d selected accounts have a name with characters the fonts of the PDF cannot draw: "
            "they would print as empty boxes.",
            total,
        ),
        err=True,
    )
    for problem in problems[:LISTED]:
        codes = ", ".join(f"{char} ({code})" for char, code in problem.codes)
        click.echo(f"  {problem.last_name} {problem.first_name} ({problem.login}) : {problem.text} : {codes}", err=True)
    if total > LISTED:
        click.echo("  " + _("Only the first %(num)d are listed.", num=LISTED), err=True)
    raise SelectionError(_("Nothing was printed: correct these names, or print anyway with --print-anyway."))


def _pages_line(progress: core.Progress) -> str:
    counts = progress.counts
    line = ngettext("%(num)d page of %(total)d", "%(num)d pages of %(total)d", counts.weight_done,
                    total=counts.weight_total)
    left = time_left_label(progress.seconds_left)
    return f"{line} ({left})" if left else line


def _deliver(run: Run, scope: Scope, output: Output) -> list[Path]:
    """The run's one download, to ``output``: claimed (journalled as the page's
    download is), copied, then the stored file deleted and its sheets marked
    distributed; on a failure the claim is given back and nothing is left."""
    try:
        stored = files.claim_download(run, scope)
    except SelectionError as exc:
        raise click.ClickException(exc.message) from None
    complete = False
    try:
        if output.folder:
            assert output.path is not None
            written = _unpack(stored, output.path)
        else:
            target = output.path or Path.cwd() / run.file_name
            with stored.open("rb") as source, _replacing(target) as handle:
                shutil.copyfileobj(source, handle)
            written = [target]
        complete = True
        return written
    except OSError as exc:
        raise click.ClickException(
            _("Cannot write “%(path)s”: %(error)s", path=str(output.path or run.file_name), error=exc.strerror or exc)
        ) from None
    finally:
        files.end_download(run.id, stored, complete=complete)


@contextmanager
def _replacing(target: Path) -> Iterator[Any]:
    """A file written beside ``target`` (readable by its owner only: it holds
    codes), renamed over it once whole; removed if anything fails."""
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False)
    try:
        with handle:
            yield handle
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _unpack(archive_path: Path, folder: Path) -> list[Path]:
    """The PDFs of the run's ZIP, each into ``folder`` (made if missing); all or none."""
    made = not folder.exists()
    folder.mkdir(exist_ok=True)
    written: list[Path] = []
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for name in archive.namelist():
                # The names are the bundles' labels, made safe by the ZIP's writer; a path is never followed.
                target = folder / Path(name).name
                with archive.open(name) as source, _replacing(target) as handle:
                    shutil.copyfileobj(source, handle)
                written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return written


def _summary(run: Run, output: Output, written: list[Path]) -> None:
    accounts = core.count_accounts([run.id])[run.id]
    pages = ngettext("%(num)d page", "%(num)d pages", run.pages or 0)
    holds = ngettext("%(num)d account", "%(num)d accounts", accounts)
    if output.folder:
        assert output.path is not None
        click.echo(
            ngettext("%(num)d PDF file written in %(path)s (%(pages)s, %(accounts)s):",
                     "%(num)d PDF files written in %(path)s (%(pages)s, %(accounts)s):",
                     len(written), path=str(output.path), pages=pages, accounts=holds)
        )
        for path in written:
            click.echo(f"  {path.name}")
        return
    click.echo(_("File written: %(path)s (%(pages)s, %(accounts)s).", path=str(written[0]), pages=pages, accounts=holds))


COMMANDS = (pdf_command,)
