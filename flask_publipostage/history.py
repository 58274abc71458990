"""Each account's distribution history, read from the items of runs.

The items of a run outlive it (:mod:`.runs.models`): for each account, what was
done, when, in which run and by whom — a letter or a card printed (and whether
its PDF was downloaded), an email sent, failed with the server's reason or
skipped, a row of a CSV export. Never a code: a sheet or a message that carried
one keeps a keyed hash of it (:func:`code_digest`, an HMAC with the app's secret
key), enough to tell that the host changed the code since ("code modifié depuis
l'impression") and of no use to find the code back.

*Distributed* means the credentials left: an email sent, a CSV exported, a PDF
downloaded whole (the item's ``distributed_at``). The filters ``distributed``,
``distributed_since`` and ``distributed_before`` read it in SQL, registered here
into the table of filters like an output's restriction. Their days are those of
an account's *latest* distribution: a reminder never catches an account whose
sheet was just printed again.

Items are personal data: :func:`purge` removes the runs older than
``HISTORY_DAYS`` (``flask publipostage purge-history``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, cast

import sqlalchemy as sa
from flask import current_app

from .config import config_value
from .host import HostModels
from .i18n import gettext as _
from .i18n import lazy_gettext as _l
from .models import local, utcnow, when
from .runs.models import (
    ACTIVE_STATES,
    CODE_HASH_LENGTH,
    EXPORTED,
    ITEM_FAILED,
    LEFT_STATES,
    PRINTED,
    SENT,
    SKIPPED,
    Run,
    RunItem,
    RunPerimeter,
)
from .selection import Filter, Selection, SelectionError, day_start, read_date, register
from .state import state

item_t = cast(sa.Table, RunItem.__table__)
run_t = cast(sa.Table, Run.__table__)
perimeter_t = cast(sa.Table, RunPerimeter.__table__)

#: Item kinds that carry a sheet of paper.
PRINTED_KINDS = ("letter", "card")


# -- the code's keyed hash ------------------------------------------------------------------


def code_digest(user_id: Any, code: str | None) -> str | None:
    """A keyed hash of the activation code an account was given (HMAC-SHA256 with
    the app's ``SECRET_KEY``, of the account id and the code): equal for the same
    code of the same account, unrelated otherwise, and without the key no guess
    of an 8-character code can be checked against it. None without a code, or
    without a secret key (the stale-code flag is then never raised)."""
    return code_digester()(user_id, code)


def code_digester() -> Callable[[Any, str | None], str | None]:
    """:func:`code_digest` with the key read and set up once: the follow-up of a
    territory hashes tens of thousands of codes."""
    key = current_app.secret_key
    if not key:
        return lambda user_id, code: None
    keyed = hmac.new(key.encode("utf-8") if isinstance(key, str) else bytes(key), digestmod=hashlib.sha256)

    def digest(user_id: Any, code: str | None) -> str | None:
        if not code:
            return None
        found = keyed.copy()
        found.update(f"publipostage-code\0{user_id}\0{code}".encode())
        return found.hexdigest()[:CODE_HASH_LENGTH]

    return digest


def is_stale(user_id: Any, code: str | None, digest: str | None, digester: Any = code_digest) -> bool:
    """The account's code is no longer the one its latest sheet or message carried
    (``digester``: :func:`code_digester`'s, for many accounts)."""
    return digest is not None and digester(user_id, code) not in (None, digest)


def latest_code_item(user_id: Any) -> Any:
    """The id of the account's latest distribution that carried a code (its
    newest item distributed with one), for ``user_id`` (the host's id as text, a
    column of the outer query): the one rule of the stale-code flag, for the
    preview's rows and the follow-up's counts. A correlated subquery: one entry
    of the partial index ``ix_publipostage_run_item_code``, however many items
    without a code (CSV exports) the account has."""
    i = item_t.alias("pp_code_item")
    return (
        sa.select(sa.func.max(i.c.id))
        .where(i.c.user_id == user_id, i.c.code_hmac.is_not(None), i.c.distributed_at.is_not(None))
        .correlate_except(i)
        .scalar_subquery()
    )


def stale_label(kind: str) -> str:
    if kind == "email":
        return _("code changed since it was emailed")
    return _("code changed since it was printed")


# -- the filters ------------------------------------------------------------------------------


def is_distributed(host: HostModels, *conditions: Any) -> Any:
    """The account's credentials left at least once (a condition on the user
    model; ``conditions`` on the items: when).

    An EXISTS, not an IN: negated (``distributed=never``), ``NOT IN (subquery)``
    makes PostgreSQL scan the items once per account when the ids do not fit its
    hash (minutes over a territory); ``NOT EXISTS`` is an anti-join on the index
    ``(user_id, distributed_at)``."""
    i = item_t.c
    return sa.exists().where(i.user_id == sa.cast(host.user_id, sa.String), i.distributed_at.is_not(None), *conditions)


def _distributed_condition(selection: Selection, host: HostModels, value: str) -> Any:
    reached = is_distributed(host)
    return reached if value == "yes" else sa.not_(reached)


def _distributed_since(selection: Selection, host: HostModels, day: date) -> Any:
    """Last distributed on or after ``day`` (once on or after it is enough)."""
    at = item_t.c.distributed_at
    return is_distributed(host, at >= day_start(day, at, timezone.utc))


def _distributed_before(selection: Selection, host: HostModels, day: date) -> Any:
    """Last distributed on or before ``day``: distributed then, and not since.

    Two EXISTS rather than the latest distribution of every account (a grouping
    of all the items, which spills to disk over a territory): a semi-join and an
    anti-join, or a look-up of the index ``(user_id, distributed_at)`` each for a
    page's few accounts: the reminder's count over a territory in half the time."""
    at = item_t.c.distributed_at
    end = day_start(day + timedelta(days=1), at, timezone.utc)
    return sa.and_(is_distributed(host, at < end), sa.not_(is_distributed(host, at >= end)))


def _reader(param: str, label: Any) -> Any:
    return lambda values: read_date(values[0], label, param)


_SINCE_LABEL = _l("Last distributed since")
_BEFORE_LABEL = _l("Last distributed before")

for _filter in (
    Filter(
        "distributed",
        _l("Distribution"),
        choices=(("all", _l("All")), ("never", _l("Never distributed")), ("yes", _l("Already distributed"))),
        condition=_distributed_condition,
        help="Whether the credentials already left (email sent, PDF downloaded, CSV exported).",
    ),
    Filter(
        "distributed_since", _SINCE_LABEL, read=_reader("distributed_since", _SINCE_LABEL),
        write=lambda day: [day.isoformat()], condition=_distributed_since,
        help="YYYY-MM-DD: latest distribution on or after this day.",
    ),
    Filter(
        "distributed_before", _BEFORE_LABEL, read=_reader("distributed_before", _BEFORE_LABEL),
        write=lambda day: [day.isoformat()], condition=_distributed_before, not_before="distributed_since",
        help="YYYY-MM-DD: latest distribution on or before this day.",
    ),
):
    register(_filter)


def reminder_day(today: date | None = None, days: int = 14) -> date:
    """The day of the reminder preset: ``days`` days ago, in the school's time zone."""
    return (today or local(utcnow()).date()) - timedelta(days=days)


# -- one account's history, as the page shows it ------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One item of an account's history."""

    kind: str
    state: str
    #: When it happened: distributed, else done, else the run's start.
    at: datetime
    distributed: bool
    run_id: int
    run_kind: str
    who: str
    #: The class bundle of a PDF sorted by class ("CP de Mme Dumas"), else "".
    bundle: str = ""
    reason: str = ""
    item_id: int = 0

    @property
    def newer(self) -> tuple[datetime, int]:
        """Its place in the history (the newest has the greatest)."""
        return (self.at, self.item_id)

    @property
    def label(self) -> str:
        """In words, with the day ("Courriel envoyé le 03/09")."""
        day = local(self.at).strftime("%d/%m")
        if self.kind == "email":
            if self.state == SENT:
                return _("Email sent on %(day)s", day=day)
            if self.state == ITEM_FAILED:
                return _("Email failed on %(day)s", day=day)
            if self.state == SKIPPED:
                return _("No email address (campaign of %(day)s)", day=day)
            return _("Email being sent")
        if self.kind == "export":
            if self.distributed:
                return _("Exported as CSV on %(day)s", day=day)
            return _("CSV export of %(day)s not downloaded", day=day)
        if self.state == PRINTED:
            words = _("Printed on %(day)s", day=day) if self.distributed else _(
                "PDF of %(day)s not downloaded", day=day
            )
            return self._with_bundle(words)
        if self.state == ITEM_FAILED:
            return _("Not printed on %(day)s", day=day)
        return _("PDF being prepared")

    def _with_bundle(self, words: str) -> str:
        """``words`` and the class bundle the sheet was in ("· liasse CP")."""
        if not self.bundle:
            return words
        return words + " · " + _("bundle %(name)s", name=self.bundle)

    @property
    def detail(self) -> str:
        """The label's day with the time, which run, who did it and the reason of a failure."""
        parts = [when(self.at), self.kind_label, self.label_without_day, self.run_label, _("by %(who)s", who=self.who)]
        if self.reason:
            parts.append(self.reason)
        return " · ".join(p for p in parts if p)

    @property
    def run_label(self) -> str:
        """Which run: "campagne 12", "fichier PDF 40", "export 41"."""
        if self.run_kind == "mail":
            return _("campaign %(id)d", id=self.run_id)
        if self.run_kind == "csv":
            return _("export %(id)d", id=self.run_id)
        return _("PDF file %(id)d", id=self.run_id)

    # The labels translate the one word they show: a catalog lookup costs more than
    # the rest of a line, and the page shows SHOWN lines per account.

    @property
    def kind_label(self) -> str:
        if self.kind == "letter":
            return _("Letter")
        if self.kind == "card":
            return _("Card")
        if self.kind == "email":
            return _("Email")
        if self.kind == "export":
            return _("CSV export")
        return self.kind

    @property
    def label_without_day(self) -> str:
        if self.kind == "email":
            if self.state == SENT:
                return _("sent")
            if self.state == ITEM_FAILED:
                return _("failed")
            return _("no address") if self.state == SKIPPED else _("waiting")
        if self.kind == "export":
            return _("exported") if self.distributed else _("not downloaded")
        if self.state == PRINTED:
            return self._with_bundle(_("printed, downloaded") if self.distributed else _("printed, not downloaded"))
        if self.state == ITEM_FAILED:
            return _("not printed")
        return _("waiting")


#: The newest items of an account the preview lists (its history's length is said too).
SHOWN = 10


@dataclass(frozen=True)
class History:
    """An account's newest items (the :data:`SHOWN` last recorded, newest first),
    how many it has in all, its latest distribution, and whether its code changed
    since."""

    events: tuple[Event, ...] = ()
    #: "code modifié depuis l'impression", or "".
    stale: str = ""
    #: Every item of the account, shown or not.
    total: int = 0
    #: The latest distribution (None: never), among ``events`` or older.
    latest: Event | None = None

    @property
    def earlier(self) -> int:
        """Items older than those shown."""
        return self.total - len(self.events)

    @property
    def since(self) -> list[Event]:
        """What happened after the latest distribution that did not reach the
        account (a failed email, a PDF not downloaded), newest first, among the
        events shown."""
        found = []
        for event in self.events:
            if self.latest is not None and event.newer <= self.latest.newer:
                break
            if event.state in (ITEM_FAILED, PRINTED, EXPORTED) or (event.kind == "email" and event.state in LEFT_STATES):
                found.append(event)
        return found

    @property
    def summary(self) -> str:
        """The "Distribution" column: the latest distribution in words, or "Jamais"."""
        latest = self.latest
        return latest.label if latest is not None else _("Never")


def for_accounts(selection: Selection, rows: Iterable[Any]) -> dict[Any, History]:
    """The history of each account of ``rows`` (recipients: ``id``, ``activation_code``),
    by id: two queries whatever the number of rows, and at most :data:`SHOWN` + 1
    items read per account whatever the length of its history.

    Per account, three look-ups on the index ``(user_id, distributed_at)`` (the id
    is in it: SQLite's rowid) say how many items it has, which is the oldest of
    the :data:`SHOWN` last recorded and which is its latest distribution (latest
    distributed first); only those items are read with their runs, and shown
    newest first. An account printed 140 times costs the page 140 index entries,
    not 140 rows, their runs and 140 lines of history, nor a sort of them. The
    stale-code flag is the follow-up's (:func:`stale_rows`), one look-up per
    account."""
    rows = list(rows)
    if not rows:
        return {}
    by_text = {str(r.id): r for r in rows}
    i, r = item_t.c, run_t.c
    host = state().host
    own = sa.cast(host.user_id, sa.String)
    x = item_t.alias("pp_item").c
    # Correlated on the host's account: each runs once per account of the page.
    total = sa.select(sa.func.count()).where(x.user_id == own).scalar_subquery()
    oldest_shown = (
        sa.select(x.id).where(x.user_id == own).order_by(x.id.desc()).offset(SHOWN - 1).limit(1).scalar_subquery()
    )
    latest = (
        sa.select(x.id)
        .where(x.user_id == own, x.distributed_at.is_not(None))
        .order_by(x.distributed_at.desc(), x.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    # Materialized: the per-account look-ups run once each, not once per item joined.
    accounts = (
        sa.select(own.label("user_id"), total.label("total"), oldest_shown.label("oldest_shown"),
                  latest.label("latest"))
        .select_from(host.user_model)
        .where(host.user_id.in_([row.id for row in rows]))
        .cte("pp_accounts")
        .prefix_with("MATERIALIZED", dialect="sqlite")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    a = accounts.c
    shown = sa.or_(a.oldest_shown.is_(None), i.id >= a.oldest_shown)
    at = sa.func.coalesce(i.distributed_at, i.done_at, r.created_at)
    stmt = (
        sa.select(i.id, i.user_id, i.kind, i.state, at.label("at"), i.distributed_at, i.run_id, i.group_key, i.reason,
                  r.kind.label("run_kind"), r.actor, r.actor_name, r.selection, a.total,
                  shown.label("shown"), (i.id == a.latest).label("is_latest"))
        .select_from(accounts)
        .join(item_t, sa.and_(i.user_id == a.user_id, sa.or_(shown, i.id == a.latest)))
        .join(run_t, r.id == i.run_id)
        .order_by(at.desc(), i.id.desc())
    )
    session = state().session
    found = session.execute(stmt).all()
    bundles = _bundle_names(selection, found)
    events: dict[str, list[Event]] = defaultdict(list)
    latest: dict[str, Event] = {}
    totals: dict[str, int] = {}
    for row in found:
        event = Event(
            kind=row.kind,
            state=row.state,
            at=row.at,
            distributed=row.distributed_at is not None,
            run_id=row.run_id,
            run_kind=row.run_kind,
            who=row.actor_name or row.actor,
            bundle=bundles.get((row.run_id, row.group_key), "") if row.kind in PRINTED_KINDS else "",
            reason=row.reason or "",
            item_id=row.id,
        )
        totals[row.user_id] = row.total
        if row.shown:
            events[row.user_id].append(event)
        if row.is_latest:
            latest[row.user_id] = event
    # The follow-up's rule, from the page's accounts: one index look-up each (an
    # IN on the items would run it once per item, each of an account's items).
    stale = {
        str(row.id): stale_label(row.kind)
        for row in session.execute(
            sa.select(*stale_rows(host, "kind")).where(host.user_id.in_([row.id for row in rows]))
        )
        if is_stale(str(row.id), row.code, row.code_hmac)
    }
    return {
        row.id: History(tuple(events.get(key, ())), stale.get(key, ""), totals.get(key, 0), latest.get(key))
        for key, row in by_text.items()
    }


def _bundle_names(selection: Selection, rows: list[Any]) -> dict[tuple[int, str | None], str]:
    """(run id, group key) -> the name of its class bundle, for PDF runs sorted
    by class; the class keys are looked up once among the classes the admin may see."""
    keys: dict[tuple[int, str | None], str] = {}
    sorts: dict[int, Selection | None] = {}
    for row in rows:
        if row.kind not in PRINTED_KINDS or row.group_key is None:
            continue
        if row.run_id not in sorts:
            sorts[row.run_id] = _stored_selection(row.selection)
        stored = sorts[row.run_id]
        if stored is not None and stored.by_class:
            key = stored.class_key_of(row.group_key)
            if key is not None:
                keys[(row.run_id, row.group_key)] = key
    if not keys:
        return {}
    host = state().host
    stmt = sa.select(host.class_sort_key(), host.class_name_column()).where(
        host.class_sort_key().in_(set(keys.values()))
    )
    if selection.scope is not None and selection.scope.classes is not None:
        stmt = stmt.where(selection.scope.classes)
    names = dict(state().session.execute(stmt).all())
    return {where: names[key] for where, key in keys.items() if key in names}


def _stored_selection(raw: str) -> Selection | None:
    """A run's stored selection (its sort), None when it no longer reads."""
    try:
        return Selection.from_dict(dict(json.loads(raw)), None)
    except (SelectionError, ValueError, TypeError):
        return None


# -- retention --------------------------------------------------------------------------------


def purge(now: datetime | None = None) -> int:
    """Delete the runs over for ``HISTORY_DAYS`` days with their items (and what
    is left of their perimeters); returns the items deleted."""
    now = now or utcnow()
    cutoff = now - timedelta(days=int(config_value("HISTORY_DAYS")))
    r = run_t.c
    old = sa.select(r.id).where(r.state.not_in(ACTIVE_STATES), sa.func.coalesce(r.finished_at, r.created_at) < cutoff)
    with state().db.engine.begin() as conn:
        ids = list(conn.execute(old).scalars())
        removed = 0
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            removed += conn.execute(sa.delete(item_t).where(item_t.c.run_id.in_(batch))).rowcount or 0
            conn.execute(sa.delete(perimeter_t).where(perimeter_t.c.run_id.in_(batch)))
            conn.execute(sa.delete(run_t).where(r.id.in_(batch)))
    return int(removed)


# -- what the follow-up counts ------------------------------------------------------------------


def tally_columns(host: HostModels) -> list[Any]:
    """Accounts, activated, distributed: the sums every row of the follow-up reads."""
    activated = host.user_column("activated")
    return [
        sa.func.count().label("accounts"),
        sa.func.coalesce(sa.func.sum(sa.case((activated, 1), else_=0)), 0).label("activated"),
        sa.func.coalesce(sa.func.sum(sa.case((is_distributed(host), 1), else_=0)), 0).label("distributed"),
    ]


def stale_rows(host: HostModels, *names: str) -> list[Any]:
    """Columns on the user model: the account's id, its current code, and
    ``code_hmac`` (and ``names``) of its latest distribution that carried a code
    (NULL when none did: :func:`is_stale` is then false).

    Correlated subqueries, two index look-ups an account, rather than a join to
    the items on that latest one's id: over a territory the database hashed every
    item (spilling to disk) and ran the look-up twice an account."""
    latest = item_t.alias("pp_latest_code")
    chosen = latest.c.id == latest_code_item(sa.cast(host.user_id, sa.String))
    found = [sa.select(latest.c[name]).where(chosen).scalar_subquery().label(name) for name in ("code_hmac", *names)]
    return [host.user_id.label("id"), host.user_column("activation_code").label("code"), *found]


def count_stale(rows: Iterable[Any], key: Any = None) -> Mapping[Any, int]:
    """Accounts whose code changed since, among ``stale_rows`` results, per
    ``key(row)`` (one total under None without a key)."""
    found: dict[Any, int] = defaultdict(int)
    digester = code_digester()
    for row in rows:
        if is_stale(str(row.id), row.code, row.code_hmac, digester):
            found[key(row) if key else None] += 1
    return found

