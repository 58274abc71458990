"""The files runs produce: where they wait, their one download, their expiry.

A finished file holds activation codes: it is downloaded once (the download is
claimed in the database before a byte leaves), deleted once downloaded, and
refused and deleted ``FILE_EXPIRY`` seconds after it was ready, whether or not a
clean-up ran. Chunk files of a run in progress stay until it ends, so a run taken
over carries on from them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app

from .. import audit
from ..access import Scope
from ..config import config_value
from ..i18n import gettext as _
from ..models import utcnow
from ..selection import SelectionError
from ..state import state
from .core import distributed, engine, perimeter_t, run_t
from .models import ACTIVE_STATES, CANCELLED, DONE, PRINTED, Run

BLOCK = 256 * 1024


def storage_dir(app: Flask | None = None) -> Path:
    """``<STORAGE_DIR>/pdf`` (default ``<instance>/publipostage/pdf``): finished
    files and chunks, nothing else; readable by the server only."""
    app = app or current_app
    configured = config_value("STORAGE_DIR", app)
    base = Path(configured) if configured else Path(app.instance_path) / "publipostage"
    path = base / "pdf"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def final_path(run: Run) -> Path:
    """The finished file, with the extension of its download name (``.pdf``, ``.zip``)."""
    return storage_dir() / f"{run.token}{Path(run.file_name).suffix or '.pdf'}"


def media_type(run: Run) -> str:
    return "application/zip" if Path(run.file_name).suffix == ".zip" else "application/pdf"


def parts_dir(run: Run) -> Path:
    return storage_dir() / f"{run.token}.parts"


def expires_before(now: datetime | None = None) -> datetime:
    """Files finished before this moment have expired."""
    return (now or utcnow()) - timedelta(seconds=int(config_value("FILE_EXPIRY")))


def downloadable(run: Run) -> bool:
    return (
        run.state == DONE
        and run.file_path is not None
        and run.downloaded_at is None
        and run.finished_at is not None
        and run.finished_at >= expires_before()
    )


def gone() -> SelectionError:
    return SelectionError(
        _("This file is no longer available: it is deleted after its download or after a while. Generate it again."),
        status=410,
    )


def claim_download(run: Run, by: Scope) -> Path:
    """Claim the run's one download, atomically, and journal it (who, which file,
    when); 410 when it is gone, expired or being downloaded by another request.
    The caller streams :func:`stream`."""
    now = utcnow()
    c = run_t.c
    with engine().begin() as conn:
        claimed = conn.execute(
            sa.update(run_t)
            .where(c.id == run.id, c.state == DONE, c.file_path.is_not(None), c.downloaded_at.is_(None),
                   c.finished_at >= expires_before(now))
            .values(downloaded_at=now)
            .returning(c.file_path)
        ).first()
        if claimed is not None and Path(claimed[0]).is_file():
            audit.record_run(conn, "download", run, by)
    state().session.expire_all()
    if claimed is None or not Path(claimed[0]).is_file():
        purge(now)  # an expired file goes now, whoever asked for it
        raise gone()
    return Path(claimed[0])


def stream(run_id: int, path: Path, app: Flask) -> Iterator[bytes]:
    """The file's bytes, then :func:`end_download`."""
    complete = False
    try:
        with open(path, "rb") as handle:
            while block := handle.read(BLOCK):
                yield block
        complete = True
    finally:
        with app.app_context():
            end_download(run_id, path, complete=complete)


def end_download(run_id: int, path: Path, *, complete: bool) -> None:
    """After a claimed download (a response streamed, a copy by the command line):
    a file that went out whole is deleted and its sheets count as distributed (the
    history); one cut short gives the claim back (the admin may try again)."""
    with engine().begin() as conn:
        if complete:
            path.unlink(missing_ok=True)
            conn.execute(sa.update(run_t).where(run_t.c.id == run_id).values(file_path=None))
        else:
            conn.execute(sa.update(run_t).where(run_t.c.id == run_id).values(downloaded_at=None))
    if complete:
        distributed(run_id, PRINTED)


def drop_work(run: Run) -> None:
    """Remove the chunk files of a run that is over."""
    shutil.rmtree(parts_dir(run), ignore_errors=True)
    (storage_dir() / f"{run.token}.pdf.part").unlink(missing_ok=True)


def purge(now: datetime | None = None) -> int:
    """Delete expired files, work files of runs that are over and files no run
    points at; forget the perimeters of runs over for an hour. Returns the files
    deleted."""
    now = now or utcnow()
    session = state().session
    removed = 0
    c = run_t.c
    expired = session.execute(
        sa.select(c.id, c.file_path).where(c.file_path.is_not(None), c.finished_at < expires_before(now))
    ).all()
    for run_id, path in expired:
        if path and Path(path).exists():
            Path(path).unlink()
            removed += 1
        session.execute(sa.update(run_t).where(c.id == run_id).values(file_path=None))
    # A run that stopped (a cancel, a failure) may be resumed: its perimeter stays a while.
    over = sa.select(c.id).where(c.state.in_((DONE, CANCELLED)), c.finished_at < now - timedelta(hours=1))
    session.execute(sa.delete(perimeter_t).where(perimeter_t.c.run_id.in_(over)))
    session.commit()
    # Files no active run and no finished file points at (a crash, a cancel).
    tokens: dict[str, Any] = {}
    for entry in storage_dir().iterdir():
        tokens.setdefault(entry.name.split(".", 1)[0], []).append(entry)
    keep = set()
    if tokens:
        for token, run_state, path in session.execute(
            sa.select(c.token, c.state, c.file_path).where(c.token.in_(list(tokens)))
        ):
            keep |= {e for e in tokens[token] if run_state in ACTIVE_STATES or str(e) == path}
    for entries in tokens.values():
        for entry in entries:
            if entry in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
    session.commit()
    return removed
