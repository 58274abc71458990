"""A PDF run: its accounts cut into chunks, rendered in parallel, merged in order.

The run's items are its sheets in print order (an account's, or with a bundle for
every class, an account's in one of its classes). Every group of every sort level
starts a new sheet; the groups of the first level are the run's *bundles* (a
class's, sorted by class first), each opened by its sign-off sheet if asked.
Planning gives each item a chunk (whole pages inside a group: multiples of 8 for
cards) and a weight (the pages it adds), so progress is counted from the items. A
chunk becomes a PDF file of its own, its items ``rendered``; the assembled file
makes them ``printed``: the chunks merged into one PDF, or, for a ZIP, each
bundle's chunks (a chunk never spans two bundles then) into a PDF of its own.
Chunk files stay until the end: a run taken over after a crash renders only the
chunks not yet on disk.

Where chunks render: a run of ``PDF_SYNC_LIMIT`` accounts or fewer is one chunk,
rendered by whoever drives it (the admin's request); a larger one in a pool of
``PDF_WORKERS`` processes next to its driver, or, on a distributed runner
(Celery), one task per chunk and a last one that merges.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import multiprocessing
import os
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from flask_babel import force_locale

from .. import renewal
from ..access import Scope
from ..config import config_value
from ..csv_export import filename
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..models import utcnow
from ..recipients import EXPIRED, Recipient, Related
from ..runs import backends, core, files
from ..runs.models import DONE, FAILED, ITEM_FAILED, PENDING, PRINTED, RENDERED, SKIPPED, Run, RunItem
from ..selection import Selection, SelectionError, count_sheets
from ..state import state
from . import render, worker

log = logging.getLogger(__name__)

CHUNK_TASK = "publipostage.pdf.chunk"
FINISH_TASK = "publipostage.pdf.finish"
SIGNOFF = "signoff"
ACCOUNTS = "accounts"
#: Chunks whose stamped letters' layouts the driver makes in one xhtml2pdf call
#: (the first chunk's alone: the file starts at once).
STAMP_AHEAD = 8

item_t = cast(sa.Table, RunItem.__table__)


class Cancelled(Exception):
    pass


@dataclass(frozen=True)
class Part:
    """Consecutive accounts of one group in a chunk: positions ``start`` ..
    ``start+count-1`` (or the sign-off sheet of the bundle the group opens, before
    its first account: then ``group_*`` are the bundle's)."""

    kind: str
    start: int
    count: int
    group_key: str | None
    group_start: int
    group_count: int


@dataclass(frozen=True)
class Group:
    """Items of one group (every sort level): positions ``start`` .. ``start+count-1``."""

    key: str | None
    start: int
    count: int


@dataclass(frozen=True)
class Bundle:
    """Consecutive groups of one group of the first sort level: a class's bundle
    when sorted by class first (``has_class``: not the accounts without one)."""

    key: str | None
    start: int
    count: int
    has_class: bool


# -- starting -------------------------------------------------------------------------------


def start(selection: Selection, options: render.Options, *, inline: bool = False) -> tuple[Run, bool]:
    """Freeze the accounts and queue the run (``inline``: the caller drives it now)."""
    files.purge()
    return core.start(
        KIND,
        selection,
        options.to_dict(),
        item_kind="card" if options.template == render.CARDS else "letter",
        columns=lambda rows: {"group_key": rows.c.group_key},
        every_class=options.every_class,
        file_name=filename(selection, options.extension, content=options.file_words()),
        audit_action="pdf",
        audit_template=options.template,
        inline=inline,
    )


def is_small(sheets: int) -> bool:
    """A small run is one chunk, rendered in the admin's request."""
    return sheets <= int(config_value("PDF_SYNC_LIMIT"))


def check_options(selection: Selection, options: render.Options, may_renew: Callable[[], bool] = lambda: True) -> None:
    """Refuse an option that cannot apply, never ignore it: the rules of the
    page's form and of ``flask publipostage pdf`` alike. ``may_renew``: whether
    the admin may have renewal codes issued (the page asks for the capability
    ``renew``; the command line, run on the server, may)."""
    if options.renew not in ("", *renewal.CHOICES):
        raise SelectionError(_("Invalid choice of renewal codes."), field="renew")
    if options.renews:
        # Asking the host for codes changes accounts: its own capability.
        if not renewal.available():
            raise SelectionError(_("This console does not issue renewal codes."), field="renew")
        if not may_renew():
            raise SelectionError(_("You may not generate renewal codes."), status=403, field="renew")
        if options.renew_expired and not state().host.maps("code_valid_until"):
            raise SelectionError(_("This console does not say when activation codes expire."), field="renew_expired")
    if options.postal and options.template != render.LETTER:
        raise SelectionError(_("Postal mail needs the template “1 per page”."), field="postal")
    if options.postal and not state().host.has_postal_address:
        raise SelectionError(
            _("Postal letters need postal addresses, which this console does not provide."), field="postal"
        )
    if options.signoff and selection.group_by != "class":
        raise SelectionError(_("The sign-off sheet needs the accounts sorted by class first."), field="signoff")
    if options.every_class and not selection.by_class:
        raise SelectionError(
            _("A bundle per class needs the accounts sorted by class (“Sort by” or “Then by”)."), field="every_class"
        )
    if options.zip and selection.group_by != "class":
        raise SelectionError(_("One PDF file per class needs the accounts sorted by class first."), field="zip")


def launch(selection: Selection, options: render.Options, selected: int) -> tuple[Run, bool]:
    """Start the PDF of ``selection`` (``selected`` accounts) as the page and the
    command line do: a small one (not a ZIP) is rendered here and now, a larger
    one goes to the runner. Returns the run and whether it was driven here (it is
    then over, whatever the runner: its one chunk was rendered here)."""
    sheets = count_sheets(selection) if options.every_class else selected
    # A ZIP is always prepared in the background: its page lists what it holds.
    inline = is_small(sheets) and not options.zip
    run, _created = start(selection, options, inline=inline)
    if inline:
        core.drive(run.id)
        found = core.get(run.id)
        assert found is not None
        run = found
    return run, inline


def failure(run: Run) -> SelectionError | None:
    """Why a run that is over left no file, as the admin is told; None when its
    file is ready."""
    if run.last_error == renewal.FAILED:
        return SelectionError(renewal.failed_message(), status=502)
    if run.state != DONE:
        return SelectionError(
            _("The PDF could not be generated. Try again; if it fails again, contact your administrator."),
            status=500 if run.state == FAILED else 409,
        )
    return None


# -- planning ---------------------------------------------------------------------------------


def groups(run_id: int) -> list[Group]:
    """The run's groups in print order: one GROUP BY."""
    c = item_t.c
    first = sa.func.min(c.position)
    with core.engine().connect() as conn:
        rows = conn.execute(
            sa.select(c.group_key, first, sa.func.count()).where(c.run_id == run_id).group_by(c.group_key).order_by(first)
        ).all()
    return [Group(key, int(start), int(count)) for key, start, count in rows]


def bundles(group_rows: Sequence[Group], selection: Selection) -> list[Bundle]:
    """The run's bundles: its groups gathered by their group of the first sort level."""
    found: list[Bundle] = []
    for group in group_rows:
        key = selection.first_level_of(group.key)
        if found and found[-1].key == key:
            found[-1] = replace(found[-1], count=found[-1].count + group.count)
        else:
            has_class = selection.group_by == "class" and selection.class_key_of(group.key) is not None
            found.append(Bundle(key, group.start, group.count, has_class))
    return found


def signoffs(bundle_rows: Sequence[Bundle], options: render.Options) -> dict[int, int]:
    """Where sign-off sheets go: the first position of each class bundle -> its accounts."""
    return {b.start: b.count for b in bundle_rows if b.has_class} if options.signoff else {}


def cut(
    group_rows: Sequence[Group],
    options: render.Options,
    chunk_size: int,
    *,
    small_first: int = 0,
    signoff_at: Mapping[int, int] | None = None,
    breaks: Collection[int] = (),
) -> list[tuple[int, int]]:
    """The chunks of a run as position ranges ``(first, last)``, about
    ``chunk_size`` accounts each.

    Inside a group, cuts fall on whole pages (multiples of 8 for cards), so no
    page is left half empty; a chunk may hold the end of a group and the start of
    the next (each group starts on a new sheet anyway), except at ``breaks`` (the
    bundles of a ZIP, each a file). With ``small_first``, the first chunk is one
    page and the next ``small_first`` ones are smaller, so progress shows early and
    the workers start together. ``signoff_at``: the sign-off sheets (first
    position -> accounts listed), which weigh on their chunk.
    """
    unit = options.unit
    size = max(unit, math.ceil(chunk_size / unit) * unit)
    small = max(unit, math.ceil(max(1, size // 4) / unit) * unit)
    chunks: list[tuple[int, int]] = []
    first: int | None = None
    last = 0
    weight = 0

    def limit() -> int:
        if small_first and not chunks:
            return unit  # one page first: progress shows at once
        return small if len(chunks) <= small_first else size

    def flush() -> None:
        nonlocal first, weight
        if first is not None:
            chunks.append((first, last))
        first, weight = None, 0

    for group in group_rows:
        if group.start in breaks:
            flush()
        if signoff_at and group.start in signoff_at:
            weight += max(1, signoff_at[group.start] // 4)
        done = 0
        while done < group.count:
            room = limit() - weight
            take = group.count - done
            if take > room:
                take = room - room % unit
                if take <= 0:
                    flush()
                    continue
            first = group.start + done if first is None else first
            last = group.start + done + take - 1
            weight += take
            done += take
            if weight >= limit():
                flush()
    flush()
    return chunks


def parts_of(span: tuple[int, int], group_rows: Sequence[Group], signoff_at: Mapping[int, int]) -> list[Part]:
    """The parts of the chunk ``span``: a bundle's sign-off sheet goes with its first account."""
    lo, hi = span
    parts = []
    for group in group_rows:
        end = group.start + group.count - 1
        if end < lo or group.start > hi:
            continue
        if group.start in signoff_at and lo <= group.start <= hi:
            listed = signoff_at[group.start]
            parts.append(Part(SIGNOFF, group.start, listed, group.key, group.start, listed))
        start = max(lo, group.start)
        parts.append(Part(ACCOUNTS, start, min(hi, end) - start + 1, group.key, group.start, group.count))
    return parts


def plan(run: Run, selection: Selection, options: render.Options, settings: render.Settings) -> list[tuple[int, int]]:
    """The run's chunks, cut once and kept on its items (chunk, weight): a run
    taken over finds the same chunks."""
    c = item_t.c
    with core.engine().connect() as conn:
        spans = conn.execute(
            sa.select(sa.func.min(c.position), sa.func.max(c.position))
            .where(c.run_id == run.id, c.chunk.is_not(None)).group_by(c.chunk).order_by(c.chunk)
        ).all()
    if spans:
        return [(int(lo), int(hi)) for lo, hi in spans]
    group_rows = groups(run.id)
    bundle_rows = bundles(group_rows, selection)
    signoff_at = signoffs(bundle_rows, options)
    total = sum(g.count for g in group_rows)
    if is_small(total) and not options.zip:
        chunks = [(1, total)] if total else []
    else:
        workers = 0 if is_small(total) else max(1, int(config_value("PDF_WORKERS")))
        breaks = {b.start for b in bundle_rows} if options.zip else ()
        chunks = cut(group_rows, options, int(config_value("PDF_CHUNK_SIZE")), small_first=workers,
                     signoff_at=signoff_at, breaks=breaks)
    with core.engine().begin() as conn:
        where = [c.run_id == run.id]
        for index, (lo, hi) in enumerate(chunks):
            conn.execute(sa.update(item_t).where(*where, c.position.between(lo, hi)).values(chunk=index))
        for group in group_rows:
            in_group = c.position.between(group.start, group.start + group.count - 1)
            if options.template == render.CARDS:
                first_on_sheet = (c.position - group.start) % render.CARDS_PER_PAGE == 0
                conn.execute(sa.update(item_t).where(*where, in_group).values(
                    weight=sa.case((first_on_sheet, 1), else_=0)))
        for first, listed in signoff_at.items():
            conn.execute(sa.update(item_t).where(*where, c.position == first).values(
                weight=c.weight + render.signoff_pages(listed, settings)))
    return chunks


# -- one chunk ----------------------------------------------------------------------------------


def chunk_path(run: Run, index: int) -> Path:
    return files.parts_dir(run) / f"{index:06d}.pdf"


def label_path(run: Run, index: int) -> Path:
    """The name of the bundle a chunk belongs to, written with the chunk (a ZIP names its files after them)."""
    return chunk_path(run, index).with_suffix(".label")


def chunk_done(run: Run, index: int) -> None:
    """The chunk's file is on disk: its items are rendered (progress counts them)."""
    with core.engine().begin() as conn:
        conn.execute(
            sa.update(item_t).where(item_t.c.run_id == run.id, item_t.c.chunk == index, item_t.c.state == PENDING)
            .values(state=RENDERED)
        )
    core.heartbeat(run.id, force=True)


def chunks_on_disk(run: Run, chunks: Sequence[tuple[int, int]]) -> set[int]:
    """Chunks rendered already: no item left pending, and their file on disk, or
    none needed (not one of their accounts got a page: each was deleted, or had
    an expired code)."""
    c = item_t.c
    with core.engine().connect() as conn:
        pending = set(conn.execute(
            sa.select(c.chunk).where(c.run_id == run.id, c.state == PENDING).distinct()
        ).scalars())
        printed = set(conn.execute(
            sa.select(c.chunk).where(c.run_id == run.id, c.state.in_((RENDERED, PRINTED))).distinct()
        ).scalars())
    return {
        i for i in range(len(chunks)) if i not in pending and (i not in printed or chunk_path(run, i).exists())
    }


# -- driving --------------------------------------------------------------------------------------


class Job:
    """What every chunk of one run needs, read once; the accounts are read
    ``ahead`` positions at a time when chunks are rendered one after the other."""

    def __init__(self, run: Run, scope: Scope, ahead: int = 0) -> None:
        self.run = run
        self.selection = core.selection_of(run, scope)
        self.options = render.Options.from_dict(run.options_dict)
        self.settings = render.Settings.from_config(run.school_name)
        self.chunks = plan(run, self.selection, self.options, self.settings)
        self.groups = groups(run.id)
        self.bundles = bundles(self.groups, self.selection)
        self.signoff_at = signoffs(self.bundles, self.options)
        self.ahead = ahead
        self.related = Related(state().host, self.selection)
        self._read: dict[int, Recipient] = {}
        self._items: dict[int, int] = {}  # position -> item id, of _read
        self._span = (0, -1)  # the positions in _read
        self._read_ahead: dict[int, list[render.Sheet]] = {}  # chunk -> its sheets, read ahead (work)

    def accounts(self, lo: int, hi: int) -> dict[int, Recipient]:
        """The accounts at positions ``lo`` .. ``hi`` that still exist, by position."""
        if not self._span[0] <= lo <= hi <= self._span[1]:
            stop = max(hi, lo + self.ahead - 1)
            items = core.item_rows(self.run.id, item_t.c.position.between(lo, stop))
            found = core.accounts(self.selection, items, self.related)
            gone = [item.id for item, recipient in found if recipient is None]
            if gone:
                with core.engine().begin() as conn:
                    conn.execute(sa.update(item_t).where(item_t.c.id.in_(gone)).values(
                        state=ITEM_FAILED, reason=_("The account no longer exists (or left the perimeter).")))
            self._read = {item.position: recipient for item, recipient in found if recipient is not None}
            self._items = {item.position: item.id for item, recipient in found if recipient is not None}
            self._span = (lo, stop)
        return {p: r for p, r in self._read.items() if lo <= p <= hi}

    @functools.cached_property
    def several_schools(self) -> bool:
        """The accounts belong to several schools: a ZIP's files then name theirs."""
        host = state().host
        if not host.has_schools:
            return False
        stmt = sa.select(sa.func.count(sa.distinct(host.school_of_user()))).where(*self.selection.conditions(host))
        return int(state().session.execute(stmt).scalar_one()) > 1

    def bundle_of(self, index: int) -> int:
        """The bundle (its rank) of chunk ``index``'s first account."""
        return bisect_right([b.start for b in self.bundles], self.chunks[index][0]) - 1

    def printed(self, by_position: dict[int, Recipient], lo: int, hi: int) -> list[Recipient]:
        """The accounts at positions ``lo`` .. ``hi`` as their letters print.

        Renewal codes are asked of the host now, for these accounts only
        (:mod:`~flask_publipostage.renewal`): the codes stay in memory until the
        chunk is rendered, their items record when. An expired code is never
        printed: its account gets no letter, its item is skipped with the reason.
        """
        found = [(p, by_position[p]) for p in range(lo, hi + 1) if p in by_position]
        recipients, renewed = renewal.issue(
            [r for _p, r in found], self.options.renew, self.options.renew_expired, self.selection.scope
        )
        # By position: with a bundle for every class, an account has a sheet (an
        # item) in each of its classes, all with the one code issued.
        items = [self._items[p] for p, _r in found]
        got = {str(i) for i in renewed}
        renewed_items = [item for item, r in zip(items, recipients) if str(r.id) in got]
        expired = [item for item, r in zip(items, recipients) if r.content == EXPIRED]
        c = item_t.c
        if renewed_items or expired:
            with core.engine().begin() as conn:
                if renewed_items:
                    conn.execute(sa.update(item_t).where(c.id.in_(renewed_items)).values(renewal_issued_at=utcnow()))
                if expired:
                    conn.execute(sa.update(item_t).where(c.id.in_(expired), c.state == PENDING).values(
                        state=SKIPPED, reason=_("The activation code has expired: no letter was printed.")))
        return [r for r in recipients if r.content != EXPIRED]

    @functools.cached_property
    def stamper(self) -> Any:
        """The run's letter or card stamps (:mod:`.stamp`), or None: ``PDF_STAMP``
        off, or a host template that does not take part."""
        if not config_value("PDF_STAMP"):
            return None
        from flask import current_app

        from .stamp import Stamper, template_takes_part

        if not template_takes_part(current_app.jinja_env, "cards" if self.options.template == render.CARDS else "letter"):
            return None
        return Stamper(self.options, self.settings, files.parts_dir(self.run) / "stamps", worker.render_file)

    def work(self, index: int, ahead: Sequence[int] = ()) -> str | Any:
        """What a worker makes chunk ``index`` from (:func:`.worker.render_file`):
        its stamped letters' plan, or its HTML; "" when none of its accounts
        exists any more. ``ahead``: chunks to come (not on disk yet); with stamped
        letters, their sheets are read now, and their letters' layouts made with
        its own (:meth:`.stamp.Stamper.prepare`); they are kept for their turn."""
        sheets = self._read_ahead.pop(index, None)
        read_now = sheets is None
        if sheets is None:
            sheets = self.sheets(index)
        if self.stamper is not None and read_now and ahead:
            for following in ahead:
                self._read_ahead[following] = self.sheets(following)
            self.stamper.prepare([sheets, *self._read_ahead.values()])
        if not sheets:
            return ""
        if self.stamper is not None:
            plan = self.stamper.plan(sheets)
            if plan is not None:
                return plan
        return render.render_document(sheets, self.options, self.settings)

    def html(self, index: int) -> str:
        """The HTML of one chunk (empty when none of its accounts exists any more)."""
        sheets = self.sheets(index)
        return render.render_document(sheets, self.options, self.settings) if sheets else ""

    def sheets(self, index: int) -> list[render.Sheet]:
        """The sheets of one chunk; its accounts without a postal address are
        noted beside it, and for a ZIP the name of its bundle."""
        run, span, grouped = self.run, self.chunks[index], bool(self.selection.sort)
        parts = parts_of(span, self.groups, self.signoff_at)
        if not parts:
            return []
        # A sign-off sheet lists its whole bundle, beyond the chunk.
        by_position = self.accounts(span[0], max(p.start + p.count - 1 for p in parts))
        sheets: list[render.Sheet] = []
        missing: list[list[str]] = []
        bundle, school = "", ""  # the label of the chunk's first bundle, and its school
        for part in parts:
            last = part.start + part.count - 1
            if part.kind == SIGNOFF:
                # Whoever gets a letter signs for it: not an account whose code expired.
                recipients = [by_position[p] for p in range(part.start, last + 1) if p in by_position
                              and (by_position[p].content != EXPIRED or self.options.renew_expired)]
            else:
                recipients = self.printed(by_position, part.start, last)
            if not recipients:
                continue
            if grouped and not bundle:
                bundle, school = recipients[0].groups[0], recipients[0].school
            if part.kind == SIGNOFF:
                listed = render.Group(recipients[0].groups[0], part.group_count)
                sheets += render.signoff_sheets(recipients, listed, self.settings)
                continue
            group = render.Group(recipients[0].group, part.group_count, part.start - part.group_start + 1) if grouped else None
            sheets += render.account_sheets(recipients, self.options, self.settings, group)
            if self.options.postal:
                missing += [render.missing_row(r) for r in recipients if not r.postal_address]
        if missing:
            chunk_path(run, index).with_suffix(".missing.json").write_text(json.dumps(missing), encoding="utf-8")
        if self.options.zip and bundle:
            if school and school not in bundle and self.several_schools:
                bundle = f"{bundle} ({school})"  # "CM2 (École Marie Curie).pdf"
            label_path(run, index).write_text(bundle, encoding="utf-8")
        return sheets


def in_pdf_locale(function: Any) -> Any:
    """Letters speak the configured language (``PDF_LOCALE``), whoever renders them."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with force_locale(config_value("PDF_LOCALE")):
            return function(*args, **kwargs)

    return wrapper


@in_pdf_locale
def drive(run: Run, scope: Scope) -> None:
    """Plan the chunks, then render them here or hand them to the workers: on a
    distributed runner, a run of several chunks is one task per chunk; a run of
    one (a small PDF, driven in the admin's request) is rendered by its driver,
    so the request answers with the file, on Celery as on threads."""
    try:
        job = Job(run, scope, ahead=int(config_value("BATCH_SIZE")))
        files.parts_dir(run).mkdir(parents=True, exist_ok=True)
        done = chunks_on_disk(run, job.chunks)
        if backends.runner().distributed and len(job.chunks) > 1:
            # Hold no transaction while the chunks run elsewhere (SQLite locks).
            state().session.close()
            for index in range(len(job.chunks)):
                if index not in done:
                    backends.submit(CHUNK_TASK, run_id=run.id, index=index)
            if len(done) == len(job.chunks) and claim_merge(run):
                backends.submit(FINISH_TASK, run_id=run.id)
            return
        _render_here(job, done)
    except Cancelled:
        _discard(run)
    except Exception as exc:
        log.exception("publipostage PDF run failed")
        core.fail(run.id, exc)
        files.drop_work(run)


def _render_here(job: Job, done: set[int]) -> None:
    """Render the chunks in worker processes (the first one here, while they
    start), add each to the file in order as it comes."""
    run = job.run
    workers = max(1, int(config_value("PDF_WORKERS")))
    todo = [i for i in range(len(job.chunks)) if i not in done]
    pool: ProcessPoolExecutor | None = None
    if len(todo) > 2:
        context = multiprocessing.get_context(config_value("PDF_START_METHOD"))
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    output = Assembly(job)
    futures: dict[Future[str], int] = {}
    ready = set(done)
    merged = 0
    try:
        if pool is not None:
            # Start the workers (and their imports) while the first chunk is read.
            for _ in range(workers):
                pool.submit(worker.warm_up)

        def collect(block: bool) -> None:
            nonlocal merged
            if futures:
                finished, _pending = wait(list(futures), timeout=core.heartbeat_every() if block else 0,
                                          return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # a worker's error fails the run
                    index = futures.pop(future)
                    ready.add(index)
                    chunk_done(run, index)
            core.heartbeat(run.id)
            while merged in ready:
                output.add(merged)
                merged += 1
            if not core.is_active(run.id):
                raise Cancelled

        for position, index in enumerate(todo):
            while len(futures) >= workers * 2:
                collect(block=True)
            collect(block=False)
            # The first chunk alone (it starts the file at once), the next ones
            # read and laid out several at a time.
            html = job.work(index, ahead=todo[position + 1 : position + 1 + STAMP_AHEAD] if position else ())
            state().session.commit()  # end the read transaction: no snapshot held for the whole run
            if not html:
                ready.add(index)
                chunk_done(run, index)
            elif pool is None or index == todo[0]:
                # Here: a small run, and the first (small) chunk while the workers start.
                worker.render_file(html, str(chunk_path(run, index)), job.settings.roots)
                ready.add(index)
                chunk_done(run, index)
            else:
                futures[pool.submit(worker.render_file, html, str(chunk_path(run, index)), job.settings.roots)] = index
        while futures:
            collect(block=True)
        collect(block=False)
        output.add_missing()
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        output.abort()
        raise
    if pool is not None:
        pool.shutdown(wait=True)
    _complete(run, output)


class Assembly:
    """The run's file, from its chunk files in order: one PDF, or (``zip``) a ZIP
    holding a PDF per bundle, named after it."""

    def __init__(self, job: Job) -> None:
        # pypdf is loaded by processes that merge, not by every web process.
        from .merge import StreamingPdfConcatenator, ZipOfPdfs

        self.job = job
        run = job.run
        # Named per driver: two drivers of one run (a take-over) never write one file.
        target = str(files.storage_dir() / f"{run.token}.{job.options.extension}.{os.getpid()}.part")
        self.output: Any
        if job.options.zip:
            self.output = ZipOfPdfs(target, files.parts_dir(run), info=document_info(run))
        else:
            self.output = StreamingPdfConcatenator(target, info=document_info(run))
        self._bundle = -1

    @property
    def path(self) -> str:
        return str(self.output.path)

    @property
    def page_count(self) -> int:
        return int(self.output.page_count)

    def add(self, index: int) -> None:
        """Chunk ``index`` (nothing when none of its accounts existed any more)."""
        run = self.job.run
        path = chunk_path(run, index)
        if not path.exists():
            return
        if self.job.options.zip and self.job.bundle_of(index) != self._bundle:
            self._bundle = self.job.bundle_of(index)
            self.output.start_file(label_path(run, index).read_text(encoding="utf-8"))
        self.output.append(str(path))

    def add_missing(self) -> None:
        """Postal letters end with the list of the accounts that had no address
        (in a ZIP: a file of its own)."""
        job = self.job
        if not job.options.postal:
            return
        rows = list(_missing_rows(job))
        if rows:
            path = files.parts_dir(job.run) / "missing.pdf"
            sheets = render.missing_sheets(rows, job.settings)
            worker.render_file(render.render_document(sheets, job.options, job.settings), str(path), job.settings.roots)
            if job.options.zip:
                self.output.start_file(_("Accounts without a postal address"))
            self.output.append(str(path))

    def close(self) -> None:
        self.output.close()

    def abort(self) -> None:
        self.output.abort()


def document_info(run: Run) -> Any:
    """Title, author (the ENT), subject and language of every file, in the
    letters' language: the same whether made in the request or in the background."""
    from babel import Locale
    from babel.core import get_global

    from .merge import DocumentInfo

    ent = str(config_value("ENT_NAME") or "")
    title = _("Account mail merge")
    locale = Locale.parse(str(config_value("PDF_LOCALE")))
    territory = locale.territory or Locale.parse(get_global("likely_subtags").get(locale.language, "")).territory
    return DocumentInfo(
        title=f"{title} – {run.school_name}" if run.school_name else title,
        author=ent,
        subject=_("Logins and activation codes of the %(ent)s accounts", ent=ent),
        lang=f"{locale.language}-{territory}" if territory else locale.language,
    )


def _missing_rows(job: Job) -> Iterable[list[str]]:
    for index in range(len(job.chunks)):
        path = chunk_path(job.run, index).with_suffix(".missing.json")
        if path.exists():
            yield from json.loads(path.read_text(encoding="utf-8"))


def _complete(run: Run, output: Assembly) -> None:
    output.close()
    final = files.final_path(run)
    os.replace(output.path, final)
    if core.finish(run.id, promote=(RENDERED, PRINTED), file_path=str(final), pages=output.page_count):
        files.drop_work(run)
    elif core.current_state(run.id) != DONE:  # cancelled (or failed) meanwhile
        final.unlink(missing_ok=True)
        _discard(run)


def _discard(run: Run) -> None:
    state().session.rollback()
    files.drop_work(run)


# -- Celery: one task per chunk, the last one to finish merges ------------------------------------


@backends.task(CHUNK_TASK)
@in_pdf_locale
def chunk_task(run_id: int, index: int) -> None:
    run = core.get(run_id)
    if run is None or not run.is_active:
        return
    try:
        job = Job(run, core.frozen_scope(run))
        if index not in chunks_on_disk(run, job.chunks):  # not a task sent again after a take-over
            html = job.work(index)
            if html:
                worker.render_file(html, str(chunk_path(run, index)), job.settings.roots)
            chunk_done(run, index)
    except Exception as exc:
        log.exception("publipostage PDF chunk failed")
        core.fail(run_id, exc)
        files.drop_work(run)
        return
    if len(chunks_on_disk(run, job.chunks)) == len(job.chunks) and claim_merge(run):
        backends.submit(FINISH_TASK, run_id=run_id)


def claim_merge(run: Run) -> bool:
    """True for the one task that has the chunks merged: two chunks finishing
    together on two workers each find them all on disk. The claim is a file made
    exclusively in the run's work folder, which the workers share; one per take-over
    (a run taken over after an interruption is merged again)."""
    claim = files.parts_dir(run) / f"merge.{run.takeovers}"
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


@backends.task(FINISH_TASK)
@in_pdf_locale
def finish_task(run_id: int) -> None:
    run = core.get(run_id)
    if run is None or not run.is_active:
        if run is not None:
            _discard(run)
        return
    job = Job(run, core.frozen_scope(run))
    output = Assembly(job)
    try:
        for index in range(len(job.chunks)):
            output.add(index)
        output.add_missing()
    except Exception as exc:
        output.abort()
        log.exception("publipostage PDF merge failed")
        core.fail(run_id, exc)
        return
    _complete(run, output)


KIND = core.register(
    core.Kind(
        name="pdf",
        drive=drive,
        visibility=core.OWNER,
        url_key="token",
        busy=_l(
            "You already have as many PDF files being prepared as allowed: wait until one is ready (or cancel it) "
            "before starting another one."
        ),
    )
)
