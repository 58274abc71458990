"""Large PDFs: a background job, cut into chunks rendered in parallel and merged.

When the job starts (in the admin's request) the selected accounts are frozen in
``publipostage_pdf_job_item``, in print order, within the admin's scope. A chunk
is a list of parts (position ranges); any process can render it from the job
alone: the in-process runner feeds a pool of worker processes with the chunks'
HTML, Celery runs one task per chunk and a last one that merges.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from flask_babel import force_locale
from werkzeug.datastructures import MultiDict

from .. import audit, jobs
from ..access import Scope
from ..config import config_value
from ..csv_export import filename
from ..i18n import gettext as _
from ..models import utcnow
from ..recipients import Recipient, iter_batches
from ..selection import Selection, SelectionError
from ..sql import french_fold
from . import render, worker
from .models import (
    ACTIVE_STATES,
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    PdfJob,
    PdfJobItem,
    PdfJobPerimeter,
    active_key,
)

log = logging.getLogger(__name__)

RUN_TASK = "publipostage.pdf.run"
CHUNK_TASK = "publipostage.pdf.chunk"
FINISH_TASK = "publipostage.pdf.finish"
SIGNOFF = "signoff"
ACCOUNTS = "accounts"


class Cancelled(Exception):
    pass


@dataclass(frozen=True)
class Part:
    """Consecutive accounts of one group: positions ``start`` .. ``start+count-1``."""

    kind: str
    start: int
    count: int
    group_start: int
    group_count: int
    grouped: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state() -> Any:
    return current_app.extensions["publipostage"]


def _session() -> Any:
    return _state().db.session


def storage_dir(app: Flask | None = None) -> Path:
    """``<STORAGE_DIR>/pdf``: finished files and chunks, nothing else."""
    app = app or current_app
    configured = config_value("STORAGE_DIR", app)
    base = Path(configured) if configured else Path(app.instance_path) / "publipostage"
    path = base / "pdf"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def parts_dir(job: PdfJob) -> Path:
    return storage_dir() / f"{job.id}.parts"


def chunk_path(job: PdfJob, index: int) -> Path:
    return parts_dir(job) / f"{index:06d}.pdf"


# -- starting a job (in the admin's request) ---------------------------------------


def start(selection: Selection, options: render.Options, count: int) -> PdfJob:
    """Freeze the accounts, record the audit row and queue the job, in one commit.

    The same run already under way (same selection, template and options) is
    returned instead of starting it twice (a double click). Otherwise at most
    ``MAX_RUNNING_JOBS`` jobs of one admin for one selection run at once; one more
    is refused with a message (:class:`SelectionError`, 409).
    """
    cleanup()
    state = _state()
    session = _session()
    host = state.host
    scope = selection.scope
    assert scope is not None
    selection_json = json.dumps(selection.to_dict(), sort_keys=True)
    options_json = json.dumps(options.to_dict(), sort_keys=True)
    limit = max(1, int(config_value("MAX_RUNNING_JOBS")))
    running = _running_jobs(scope, selection_json)
    for job in running:
        if job.template == options.template and job.options == options_json:
            return job  # the same run is already under way: show it
    slots = [active_key(scope.actor, scope.key, selection_json, slot) for slot in range(limit)]
    free = [key for key in slots if key not in {job.active_key for job in running}]
    if len(running) >= limit or not free:
        raise _too_many_jobs()
    scope_classes = None
    if scope.classes is not None:
        ids = session.execute(sa.select(host.class_id).where(scope.classes)).scalars().all()
        scope_classes = json.dumps([str(i) for i in ids])
    job = PdfJob(
        owner=scope.actor,
        scope_key=scope.key,
        school_name=scope.school_name or str(config_value("SCHOOL_NAME") or ""),
        selection=selection_json,
        scope_classes=scope_classes,
        template=options.template,
        options=options_json,
        state=QUEUED,
        active_key=free[0],
        accounts=count,
        file_name=filename(selection, "pdf"),
        scope_users=scope.users is not None,
    )
    session.add(job)
    try:
        session.flush()
    except sa.exc.IntegrityError:
        # Another request of the same admin took the slot at the same moment.
        session.rollback()
        for other in _running_jobs(scope, selection_json):
            if other.template == options.template and other.options == options_json:
                return other
        raise _too_many_jobs() from None
    _freeze_items(job, selection)
    if scope.users is not None:
        session.execute(
            sa.insert(PdfJobPerimeter).from_select(
                ["job_id", "user_id"],
                sa.select(sa.literal(job.id, sa.String), sa.cast(host.user_id, sa.String)).where(scope.users),
            )
        )
    audit.record("pdf", selection, count, template=options.template, result="job")
    session.commit()
    jobs.submit(current_app._get_current_object(), RUN_TASK, job_id=job.id)  # type: ignore[attr-defined]
    return job


def _running_jobs(scope: Scope, selection_json: str) -> list[PdfJob]:
    return list(
        _session()
        .execute(
            sa.select(PdfJob)
            .where(
                PdfJob.owner == scope.actor,
                PdfJob.scope_key == scope.key,
                PdfJob.state.in_(ACTIVE_STATES),
                PdfJob.selection == selection_json,
            )
            .order_by(PdfJob.created_at)
        )
        .scalars()
    )


def _too_many_jobs() -> SelectionError:
    return SelectionError(
        _(
            "A PDF of this selection is already being prepared: wait until it is "
            "ready (or cancel it) before starting another one."
        ),
        status=409,
    )


def _freeze_items(job: PdfJob, selection: Selection) -> None:
    host = _state().host
    sort_class = selection.sort_class_column(host)
    if selection.group_by == "class":
        group_key: Any = french_fold(sort_class)
    elif selection.group_by == "profile":
        group_key = sa.cast(selection.profile_rank(host), sa.String)
    else:
        group_key = sa.null()
    source = sa.select(
        sa.literal(job.id, sa.String),
        sa.func.row_number().over(order_by=selection.order_by(host, sort_class)),
        sa.cast(host.user_id, sa.String),
        group_key,
    ).where(*selection.conditions(host))
    _session().execute(
        sa.insert(PdfJobItem).from_select(["job_id", "position", "user_id", "group_key"], source)
    )


# -- reading a job back ----------------------------------------------------------------


@dataclass(frozen=True)
class JobSelection(Selection):
    """A job's selection: its frozen accounts, read back by position range."""

    only: Any = field(default=None, compare=False, repr=False)

    def conditions(self, host: Any) -> list[Any]:
        conditions = super().conditions(host)
        if self.only is not None:
            conditions.append(self.only)
        return conditions


def frozen_selection(job: PdfJob, start: int, stop: int) -> Selection:
    """The job's accounts at positions ``start <= p < stop``, in print order, seen
    through the owner's scope as it was when the job started."""
    host = _state().host
    user_id = sa.cast(host.user_id, sa.String)
    items = sa.select(PdfJobItem.user_id).where(
        PdfJobItem.job_id == job.id, PdfJobItem.position >= start, PdfJobItem.position < stop
    )
    users = None
    if job.scope_users:
        users = user_id.in_(sa.select(PdfJobPerimeter.user_id).where(PdfJobPerimeter.job_id == job.id))
    classes = None
    if job.scope_classes is not None:
        python_type = host.class_id.type.python_type
        classes = host.class_id.in_([python_type(i) for i in json.loads(job.scope_classes)])
    scope = Scope(actor=job.owner, users=users, classes=classes, key=job.scope_key, school_name=job.school_name)
    original = job.selection_args
    # The frozen items already hold every filter; the chosen classes still decide
    # which class an account is printed under, and the sort its order.
    args = MultiDict([(k, v) for k in ("class", "sort", "then") for v in original.get(k, [])])
    parsed = Selection.from_args(args, scope, extra_params=())
    values = {f.name: getattr(parsed, f.name) for f in fields(Selection)}
    return JobSelection(**values, only=user_id.in_(items))


def group_by_of(job: PdfJob) -> str | None:
    sort = job.selection_args.get("sort") or []
    return sort[0] if sort else None


def groups(job: PdfJob) -> list[tuple[str | None, int, int]]:
    """``(group_key, first position, count)`` in print order: one GROUP BY."""
    first = sa.func.min(PdfJobItem.position)
    rows = _session().execute(
        sa.select(PdfJobItem.group_key, first, sa.func.count())
        .where(PdfJobItem.job_id == job.id)
        .group_by(PdfJobItem.group_key)
        .order_by(first)
    ).all()
    return [(key, int(start), int(count)) for key, start, count in rows]


def plan(
    group_rows: Sequence[tuple[str | None, int, int]],
    options: render.Options,
    group_by: str | None,
    chunk_size: int,
    *,
    small_first: int = 0,
) -> list[list[Part]]:
    """Cut the run into chunks of about ``chunk_size`` accounts.

    Inside a group, cuts fall on whole pages (multiples of 8 for cards), so no
    page is left half empty; a chunk may hold the end of a group and the start
    of the next (each group starts on a new sheet anyway). With ``small_first``,
    the first chunk is one page and the next ``small_first`` ones are smaller, so
    progress shows early and the workers start together.
    """
    unit = options.unit
    size = max(unit, math.ceil(chunk_size / unit) * unit)
    small = max(unit, math.ceil(max(1, size // 4) / unit) * unit)
    chunks: list[list[Part]] = []
    current: list[Part] = []
    weight = 0

    def limit() -> int:
        if small_first and not chunks:
            return unit  # one page first: progress shows at once
        return small if len(chunks) <= small_first else size

    def flush() -> None:
        nonlocal current, weight
        if current:
            chunks.append(current)
        current, weight = [], 0

    for key, start, count in group_rows:
        grouped = group_by is not None
        if options.signoff and group_by == "class" and key is not None:
            current.append(Part(SIGNOFF, start, count, start, count, grouped))
            weight += max(1, count // 4)
        done = 0
        while done < count:
            room = limit() - weight
            take = count - done
            if take > room:
                take = room - room % unit
                if take <= 0:
                    flush()
                    continue
            current.append(Part(ACCOUNTS, start + done, take, start, count, grouped))
            weight += take
            done += take
            if weight >= limit():
                flush()
    flush()
    return chunks


def part_pages(part: Part, options: render.Options, settings: render.Settings) -> int:
    if part.kind == SIGNOFF:
        return render.signoff_pages(part.count, settings)
    return render.pages_for(part.count, options)


class AccountStream:
    """The job's accounts by position, read in ranges of ``BATCH_SIZE`` positions.

    Short queries only (no cursor held open), so progress can be committed in
    between; a buffer keeps what the next parts need and forgets the rest.
    """

    def __init__(self, job: PdfJob, batch_size: int | None = None) -> None:
        self.job = job
        self.batch_size = batch_size or int(config_value("BATCH_SIZE"))
        self.buffer: dict[int, Recipient] = {}
        self.read_to = 0  # every position below it was read

    def _read(self, start: int, stop: int) -> None:
        positions = dict(
            _session().execute(
                sa.select(PdfJobItem.user_id, PdfJobItem.position).where(
                    PdfJobItem.job_id == self.job.id,
                    PdfJobItem.position >= start,
                    PdfJobItem.position < stop,
                )
            ).all()
        )
        for batch in iter_batches(frozen_selection(self.job, start, stop)):
            for recipient in batch:
                position = positions.get(str(recipient.id))
                if position is not None:
                    self.buffer[position] = recipient

    def take(self, start: int, count: int) -> list[Recipient]:
        """Accounts at positions ``start .. start+count-1`` (an account deleted
        since the job started is skipped)."""
        stop = start + count
        if start < self.read_to and any(p not in self.buffer for p in range(start, min(stop, self.read_to))):
            self.read_to = start  # forgotten already: read again
        self.read_to = max(self.read_to, start)
        while self.read_to < stop:
            upto = max(stop, self.read_to + self.batch_size)
            self._read(self.read_to, upto)
            self.read_to = upto
        return [self.buffer[p] for p in range(start, stop) if p in self.buffer]

    def forget_before(self, position: int) -> None:
        for key in [k for k in self.buffer if k < position]:
            del self.buffer[key]


def chunk_html(
    job: PdfJob,
    parts: Sequence[Part],
    options: render.Options,
    settings: render.Settings,
    stream: AccountStream | None = None,
) -> tuple[str, list[list[str]]]:
    """The HTML of one chunk, and its accounts without a postal address."""
    stream = stream or AccountStream(job, batch_size=max(p.start + p.count for p in parts) - min(p.start for p in parts))
    group_by = group_by_of(job)
    sheets: list[render.Sheet] = []
    missing: list[list[str]] = []
    for part in parts:
        recipients = stream.take(part.start, part.count)
        if not recipients:
            continue
        group = None
        if part.grouped and group_by:
            name = render.group_label(recipients[0].group, group_by)
            group = render.Group(name, part.group_count, part.start - part.group_start + 1)
        if part.kind == SIGNOFF:
            assert group is not None
            sheets += render.signoff_sheets(recipients, group, settings)
            continue
        sheets += render.account_sheets(recipients, options, settings, group)
        if options.postal:
            missing += [render.missing_row(r, group_by) for r in recipients if not r.postal_address]
    stream.forget_before(max(p.start + p.count for p in parts if p.kind == ACCOUNTS) if any(p.kind == ACCOUNTS for p in parts) else 0)
    if not sheets:
        return "", missing
    return render.render_document(sheets, options, settings), missing


# -- running a job -----------------------------------------------------------------------


def _job(job_id: str) -> PdfJob | None:
    session = _session()
    return session.get(PdfJob, job_id, populate_existing=True)


def _current_state(job_id: str) -> str | None:
    return _session().execute(sa.select(PdfJob.state).where(PdfJob.id == job_id)).scalar_one_or_none()


def _job_settings(job: PdfJob) -> tuple[render.Options, render.Settings]:
    return render.Options.from_dict(job.options_dict), render.Settings.from_config(job.school_name)


def _in_pdf_locale(function: Any) -> Any:
    """Letters speak the configured language (``PDF_LOCALE``), whoever runs them."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with force_locale(config_value("PDF_LOCALE")):
            return function(*args, **kwargs)

    return wrapper


@jobs.task(RUN_TASK)
@_in_pdf_locale
def run(job_id: str) -> None:
    """Plan the chunks, then render them here (pool) or hand them to Celery."""
    session = _session()
    now = utcnow()
    # Conditional: a cancel arriving meanwhile must not be overwritten.
    started = session.execute(
        sa.update(PdfJob)
        .where(PdfJob.id == job_id, PdfJob.state == QUEUED)
        .values(state=RUNNING, started_at=now, heartbeat_at=now)
    ).rowcount
    session.commit()
    job = _job(job_id)
    if job is None:
        return
    if not started:
        if job.state == CANCELLED:
            _drop_work(job)  # cancelled while still queued: nobody else cleans up
        return
    try:
        options, settings = _job_settings(job)
        workers = max(1, int(config_value("PDF_WORKERS")))
        chunks = plan(
            groups(job),
            options,
            group_by_of(job),
            int(config_value("PDF_CHUNK_SIZE")),
            small_first=workers,
        )
        job.chunks_total = len(chunks)
        job.pages_total = sum(part_pages(p, options, settings) for c in chunks for p in c)
        session.commit()
        parts_dir(job).mkdir(parents=True, exist_ok=True)
        if config_value("JOB_BACKEND") == "celery":
            # Hold no transaction while the chunks run elsewhere (SQLite locks).
            session.close()
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            for index, parts in enumerate(chunks):
                jobs.submit(app, CHUNK_TASK, job_id=job_id, index=index, parts=[p.to_dict() for p in parts])
            if not chunks:
                jobs.submit(app, FINISH_TASK, job_id=job_id)
            return
        _run_in_pool(job, chunks, options, settings, workers)
    except Cancelled:
        _discard(job)
    except Exception as exc:
        log.exception("publipostage PDF job failed")
        _fail(job_id, exc)


def _run_in_pool(
    job: PdfJob,
    chunks: list[list[Part]],
    options: render.Options,
    settings: render.Settings,
    workers: int,
) -> None:
    import multiprocessing

    session = _session()
    context = multiprocessing.get_context(config_value("PDF_START_METHOD"))
    output = _output(job)
    done_pages: dict[int, int] = {}
    futures: dict[Future[str], int] = {}
    ready: set[int] = set()
    next_merge = 0
    missing_count = 0
    pool: Any = ProcessPoolExecutor(max_workers=workers, mp_context=context) if len(chunks) > 2 else _InlinePool()
    try:
        # Start the workers (and their imports) while the first chunk is read.
        warm = [pool.submit(worker.warm_up) for _ in range(workers)]

        def collect(block: bool) -> None:
            nonlocal next_merge
            if not futures:
                return
            finished, _pending = wait(list(futures), timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for future in finished:
                index = futures.pop(future)
                future.result()  # a worker's error fails the job
                ready.add(index)
                _progress(job.id, done_pages.pop(index), chunks_done=1)
            while next_merge in ready:
                path = chunk_path(job, next_merge)
                if path.exists():
                    output.append(str(path))
                    path.unlink()
                ready.discard(next_merge)
                next_merge += 1
            if _current_state(job.id) == CANCELLED:
                raise Cancelled

        stream = AccountStream(job)
        for index, parts in enumerate(chunks):
            while len(futures) >= workers * 2:
                collect(block=True)
            collect(block=False)
            html, missing = chunk_html(job, parts, options, settings, stream)
            missing_count += _save_missing(job, index, missing)
            done_pages[index] = sum(part_pages(p, options, settings) for p in parts)
            if not html:
                ready.add(index)
                _progress(job.id, done_pages.pop(index), chunks_done=1)
                continue
            session.commit()  # end the read transaction: no snapshot held for the whole run
            if index == 0 and not isinstance(pool, _InlinePool):
                # The first (small) chunk is rendered here while the workers
                # start: the admin sees progress within a second or two.
                first: Future[str] = Future()
                first.set_result(worker.render_file(html, str(chunk_path(job, index)), settings.roots))
                futures[first] = index
                continue
            futures[pool.submit(worker.render_file, html, str(chunk_path(job, index)), settings.roots)] = index
        while futures:
            collect(block=True)
        collect(block=False)
        for future in warm:
            future.cancel()
        _append_missing(job, output, options, settings, len(chunks), missing_count)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        output.abort()
        raise
    pool.shutdown(wait=True)
    _complete(job, output)


class _InlinePool:
    """Two chunks or fewer: starting worker processes would cost more than it saves."""

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _output(job: PdfJob) -> Any:
    from .merge import StreamingPdfConcatenator

    target = storage_dir() / f"{job.id}.pdf.part"
    return StreamingPdfConcatenator(str(target), title=job.school_name or job.file_name)


def _save_missing(job: PdfJob, index: int, missing: list[list[str]]) -> int:
    if missing:
        path = chunk_path(job, index).with_suffix(".missing.json")
        path.write_text(json.dumps(missing), encoding="utf-8")
    return len(missing)


def _iter_missing(job: PdfJob, chunks_total: int) -> Iterator[list[str]]:
    for index in range(chunks_total):
        path = chunk_path(job, index).with_suffix(".missing.json")
        if path.exists():
            yield from json.loads(path.read_text(encoding="utf-8"))


def _append_missing(
    job: PdfJob,
    output: Any,
    options: render.Options,
    settings: render.Settings,
    chunks_total: int,
    count: int | None = None,
) -> None:
    """Postal letters end with the list of the accounts that had no address."""
    if not options.postal:
        return
    rows = list(_iter_missing(job, chunks_total))
    if not rows:
        return
    pages = render.missing_pages(len(rows))
    _session().execute(
        sa.update(PdfJob).where(PdfJob.id == job.id).values(pages_total=PdfJob.pages_total + pages)
    )
    _session().commit()
    html = render.render_document(render.missing_sheets(rows), options, settings)
    path = parts_dir(job) / "missing.pdf"
    worker.render_file(html, str(path), settings.roots)
    output.append(str(path))
    path.unlink()
    _progress(job.id, pages)


def _progress(job_id: str, pages: int, chunks_done: int = 0) -> tuple[int, int]:
    """Add done pages and chunks; return ``(chunks_done, chunks_total)`` after it."""
    session = _session()
    row = session.execute(
        sa.update(PdfJob)
        .where(PdfJob.id == job_id)
        .values(
            pages_done=PdfJob.pages_done + pages,
            chunks_done=PdfJob.chunks_done + chunks_done,
            heartbeat_at=utcnow(),
        )
        .returning(PdfJob.chunks_done, PdfJob.chunks_total)
    ).one()
    session.commit()
    return int(row[0]), int(row[1])


def _complete(job: PdfJob, output: Any) -> None:
    output.close()
    final = storage_dir() / f"{job.id}.pdf"
    os.replace(output.path, final)
    session = _session()
    now = utcnow()
    done = session.execute(
        sa.update(PdfJob)
        .where(PdfJob.id == job.id, PdfJob.state == RUNNING)
        .values(
            state=DONE,
            active_key=None,
            file_path=str(final),
            pages_done=output.page_count,
            pages_total=output.page_count,
            finished_at=now,
            heartbeat_at=now,
        )
    ).rowcount
    session.commit()
    if not done:  # cancelled (or failed) meanwhile
        final.unlink(missing_ok=True)
        _discard(job)
        return
    _drop_work(job)


def _fail(job_id: str, exc: BaseException) -> None:
    session = _session()
    session.rollback()
    session.execute(
        sa.update(PdfJob)
        .where(PdfJob.id == job_id, PdfJob.state.in_(ACTIVE_STATES))
        .values(state=FAILED, active_key=None, error=type(exc).__name__[:200], finished_at=utcnow())
    )
    session.commit()
    job = _job(job_id)
    if job is not None:
        _drop_work(job)


def _discard(job: PdfJob) -> None:
    session = _session()
    session.rollback()
    job_id = job.id
    session.execute(
        sa.update(PdfJob)
        .where(PdfJob.id == job_id, PdfJob.state.in_(ACTIVE_STATES))
        .values(state=CANCELLED, active_key=None, finished_at=utcnow())
    )
    session.commit()
    _drop_work(job)
    (storage_dir() / f"{job_id}.pdf.part").unlink(missing_ok=True)


def _drop_work(job: PdfJob) -> None:
    """Remove the chunk files and the frozen accounts of a finished job."""
    shutil.rmtree(parts_dir(job), ignore_errors=True)
    session = _session()
    session.execute(sa.delete(PdfJobItem).where(PdfJobItem.job_id == job.id))
    session.execute(sa.delete(PdfJobPerimeter).where(PdfJobPerimeter.job_id == job.id))
    session.commit()


# -- Celery: one task per chunk, the last one to finish merges ------------------------------


@jobs.task(CHUNK_TASK)
@_in_pdf_locale
def render_chunk(job_id: str, index: int, parts: list[dict[str, Any]]) -> None:
    job = _job(job_id)
    if job is None or job.state != RUNNING:
        return
    try:
        options, settings = _job_settings(job)
        chunk = [Part(**p) for p in parts]
        html, missing = chunk_html(job, chunk, options, settings)
        _save_missing(job, index, missing)
        if html:
            worker.render_file(html, str(chunk_path(job, index)), settings.roots)
        pages = sum(part_pages(p, options, settings) for p in chunk)
    except Exception as exc:
        log.exception("publipostage PDF chunk failed")
        _fail(job_id, exc)
        return
    done, total = _progress(job_id, pages, chunks_done=1)
    if done == total:
        jobs.submit(current_app._get_current_object(), FINISH_TASK, job_id=job_id)  # type: ignore[attr-defined]


@jobs.task(FINISH_TASK)
@_in_pdf_locale
def finish(job_id: str) -> None:
    job = _job(job_id)
    if job is None or job.state != RUNNING:
        if job is not None and job.state == CANCELLED:
            _discard(job)
        return
    options, settings = _job_settings(job)
    output = _output(job)
    try:
        for index in range(job.chunks_total):
            path = chunk_path(job, index)
            if path.exists():
                output.append(str(path))
        _append_missing(job, output, options, settings, job.chunks_total)
    except Exception as exc:
        output.abort()
        log.exception("publipostage PDF merge failed")
        _fail(job_id, exc)
        return
    _complete(job, output)


# -- owner's view, cancel, download, clean-up ----------------------------------------------


def visible_job(job_id: str, scope: Scope) -> PdfJob | None:
    """The job when ``scope``'s admin created it; ``None`` for anyone else."""
    if not job_id or len(job_id) > 64:
        return None
    job = _session().get(PdfJob, job_id)
    if job is None or job.owner != scope.actor or job.scope_key != scope.key:
        return None
    return job


def recent_jobs(scope: Scope, limit: int = 5) -> list[PdfJob]:
    cleanup()
    return list(
        _session()
        .execute(
            sa.select(PdfJob)
            .where(PdfJob.owner == scope.actor, PdfJob.scope_key == scope.key)
            .order_by(PdfJob.created_at.desc())
            .limit(limit)
        )
        .scalars()
    )


def cancel(job: PdfJob) -> None:
    session = _session()
    cancelled = session.execute(
        sa.update(PdfJob)
        .where(PdfJob.id == job.id, PdfJob.state.in_(ACTIVE_STATES))
        .values(state=CANCELLED, active_key=None, finished_at=utcnow())
    ).rowcount
    session.commit()
    if cancelled and config_value("JOB_BACKEND") == "celery":
        # No worker process of ours will notice: clean up now.
        _drop_work(job)


def mark_downloaded(job_id: str, app: Flask) -> None:
    """After the download: the file goes (credentials should not linger on disk)."""
    with app.app_context():
        job = _job(job_id)
        if job is None:
            return
        if job.file_path:
            Path(job.file_path).unlink(missing_ok=True)
        job.file_path = None
        job.downloaded_at = utcnow()
        _session().commit()


def cleanup(now: Any = None) -> int:
    """Delete expired files, fail stale jobs, remove leftovers; return files removed."""
    session = _session()
    now = now or utcnow()
    removed = 0
    expiry = timedelta(seconds=int(config_value("FILE_EXPIRY")))
    expired = session.execute(
        sa.select(PdfJob).where(
            PdfJob.file_path.is_not(None),
            PdfJob.finished_at.is_not(None),
            PdfJob.finished_at < now - expiry,
        )
    ).scalars().all()
    for job in expired:
        if job.file_path and Path(job.file_path).exists():
            Path(job.file_path).unlink()
            removed += 1
        job.file_path = None
    stale = now - timedelta(seconds=int(config_value("PDF_STALE_AFTER")))
    for job in session.execute(
        sa.select(PdfJob).where(
            PdfJob.state.in_(ACTIVE_STATES),
            sa.func.coalesce(PdfJob.heartbeat_at, PdfJob.created_at) < stale,
        )
    ).scalars():
        job.state = FAILED
        job.active_key = None
        job.error = "interrupted"
        job.finished_at = now
        shutil.rmtree(parts_dir(job), ignore_errors=True)
        session.execute(sa.delete(PdfJobItem).where(PdfJobItem.job_id == job.id))
        session.execute(sa.delete(PdfJobPerimeter).where(PdfJobPerimeter.job_id == job.id))
    session.commit()
    # Files no job points at any more (a crash between writing and recording).
    for entry in storage_dir().iterdir():
        job_id = entry.name.split(".", 1)[0]
        row = session.execute(sa.select(PdfJob.state, PdfJob.file_path).where(PdfJob.id == job_id)).first()
        if row is not None and (row.state in ACTIVE_STATES or row.file_path == str(entry)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    session.commit()
    return removed
