"""Starting, stopping and reading campaigns (pages, command line)."""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import abort, current_app
from sqlalchemy.exc import IntegrityError

from .. import audit, jobs
from ..access import Scope
from ..config import config_value
from ..csv_export import safe_cell
from ..i18n import gettext as _
from ..models import utcnow
from ..selection import Selection, SelectionError, count
from . import journal
from .message import MailSettings
from .models import (
    ACTIVE_STATES,
    CANCELLED,
    DELIVERY_FAILED,
    DONE,
    EMAIL_LENGTH,
    FAILED,
    NAME_LENGTH,
    PENDING,
    QUEUED,
    SENDING,
    SENT,
    SKIPPED,
    Campaign,
    CampaignPerimeter,
    Delivery,
    active_key,
)
from .sender import SEND_CAMPAIGN

log = logging.getLogger(__name__)


def selection_json(selection: Selection) -> str:
    return json.dumps(selection.to_dict(), sort_keys=True)


def _session() -> Any:
    return current_app.extensions["publipostage"].db.session


def find_active(selection: Selection) -> Campaign | None:
    """The running campaign of this admin for this very selection, if any."""
    scope = selection.scope
    assert scope is not None
    key = active_key(scope.actor, scope.key, selection_json(selection))
    return _session().execute(sa.select(Campaign).where(Campaign.active_key == key)).scalar_one_or_none()


def create(selection: Selection) -> tuple[Campaign, bool]:
    """Record a campaign for ``selection`` and its deliveries, in one transaction
    with the audit row. Returns ``(campaign, created)``: when the same admin
    already runs the same selection, that campaign and False (double click)."""
    scope = selection.scope
    assert scope is not None
    session = _session()
    existing = find_active(selection)
    if existing is not None:
        return existing, False
    MailSettings.load(scope.school_name)  # refuses to start without a sender
    counters = count(selection)
    limit = config_value("MAX_SELECTION")
    if counters.selected > limit:
        raise SelectionError(
            _(
                "This selection holds %(count)d accounts, more than the %(max)d allowed "
                "at once. Narrow it with the filters (a class, a profile).",
                count=counters.selected,
                max=limit,
            )
        )
    if counters.selected - counters.without_email <= 0:
        raise SelectionError(_("No selected account has an email address: there is nothing to send."))
    as_json = selection_json(selection)
    campaign = Campaign(
        actor=scope.actor,
        scope_key=scope.key,
        school_name=(scope.school_name or config_value("SCHOOL_NAME") or "")[:200],
        selection=as_json,
        active_key=active_key(scope.actor, scope.key, as_json),
        token=secrets.token_hex(8),
        state=QUEUED,
    )
    session.add(campaign)
    try:
        session.flush()
    except IntegrityError:
        # The same click, a moment earlier, in another request.
        session.rollback()
        existing = find_active(selection)
        if existing is None:
            raise
        return existing, False
    _insert_deliveries(campaign, selection)
    _freeze_perimeter(campaign, scope)
    _forget_old_perimeters()
    found = journal.counts(campaign.id, session.connection())
    campaign.total = found[PENDING] + found[SKIPPED]
    campaign.to_send = found[PENDING]
    campaign.skipped = found[SKIPPED]
    audit.record("mail", selection, campaign.to_send, template="mail", result=f"campaign {campaign.id}")
    session.commit()
    log.info(
        "publipostage campaign %d queued by %s: %d to send, %d without email",
        campaign.id,
        scope.actor,
        campaign.to_send,
        campaign.skipped,
    )
    return campaign, True


def _insert_deliveries(campaign: Campaign, selection: Selection) -> None:
    """One INSERT … SELECT over the selection: memory stays flat at any size."""
    host = current_app.extensions["publipostage"].host
    email = host.user_column("email")
    has_email = sa.and_(email.is_not(None), email != "")
    first = sa.func.coalesce(host.user_column("first_name"), "")
    last = sa.func.coalesce(host.user_column("last_name"), "")
    name = sa.func.substr(sa.func.trim(first.concat(" ").concat(last)), 1, NAME_LENGTH)
    rows = (
        sa.select(
            sa.literal(campaign.id, sa.Integer),
            sa.cast(host.user_id, sa.String),
            sa.case((has_email, sa.func.substr(email, 1, EMAIL_LENGTH)), else_=sa.null()),
            name,
            sa.case((has_email, sa.literal(PENDING)), else_=sa.literal(SKIPPED)),
            sa.case((has_email, sa.null()), else_=sa.literal(_("No email address."))),
            sa.literal(0, sa.Integer),
            sa.literal(False, sa.Boolean),
        )
        .where(*selection.conditions(host))
        .order_by(host.user_id)
    )
    d = Delivery.__table__.c
    _session().execute(
        sa.insert(Delivery).from_select(
            [d.campaign_id, d.user_id, d.email, d.name, d.state, d.reason, d.attempts, d.possibly_duplicate],
            rows,
        )
    )


def _freeze_perimeter(campaign: Campaign, scope: Scope) -> None:
    """Keep the owner's perimeter for the senders, which run without a request."""
    state = current_app.extensions["publipostage"]
    host = state.host
    session = _session()
    if scope.users is not None:
        session.execute(
            sa.insert(CampaignPerimeter).from_select(
                ["campaign_id", "user_id"],
                sa.select(sa.literal(campaign.id, sa.Integer), sa.cast(host.user_id, sa.String))
                .select_from(host.user_model)
                .where(scope.users),
            )
        )
        campaign.scope_users = True
    if scope.classes is not None:
        ids = session.execute(sa.select(host.class_id).where(scope.classes)).scalars()
        campaign.scope_classes = json.dumps(sorted(str(i) for i in ids))


def _forget_old_perimeters() -> None:
    """Campaigns over for an hour (a sender that was stopping is gone by then) no
    longer need their copy of the perimeter; a stopped one may still be resumed."""
    over = sa.select(Campaign.id).where(
        Campaign.state.in_((DONE, CANCELLED)), Campaign.finished_at < utcnow() - timedelta(hours=1)
    )
    _session().execute(sa.delete(CampaignPerimeter).where(CampaignPerimeter.campaign_id.in_(over)))


def start(selection: Selection) -> tuple[Campaign, bool]:
    """Create the campaign and hand it to the background runner."""
    campaign, created = create(selection)
    if created:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        jobs.submit(app, SEND_CAMPAIGN, campaign_id=campaign.id)
        _session().expire_all()
    return campaign, created


def cancel(campaign: Campaign) -> bool:
    """Stop sending; what was sent stays sent, the rest stays unsent."""
    session = _session()
    result = session.execute(
        sa.update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.state.in_(ACTIVE_STATES))
        .values(state=CANCELLED, active_key=None, finished_at=utcnow())
    )
    session.commit()
    if result.rowcount:
        journal.store_counts(campaign.id)
        log.info("publipostage campaign %d cancelled", campaign.id)
    session.expire_all()
    return bool(result.rowcount)


def resume(campaign: Campaign) -> bool:
    """Send again what a stopped (failed) campaign left unsent, in the background."""
    if campaign.state != FAILED:
        return False
    session = _session()
    session.execute(
        sa.update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.state == FAILED)
        .values(state=QUEUED, heartbeat_at=None, waiting_since=None, finished_at=None)
    )
    session.commit()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    jobs.submit(app, SEND_CAMPAIGN, campaign_id=campaign.id)
    session.expire_all()
    return True


# -- reading ------------------------------------------------------------------------


def visible(scope: Scope) -> sa.Select[Any]:
    stmt = sa.select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc())
    if not scope.is_global:
        stmt = stmt.where(Campaign.scope_key == scope.key)
    return stmt


def get_visible(campaign_id: int, scope: Scope) -> Campaign:
    """The campaign, or 404 when it does not exist or belongs to another perimeter."""
    campaign = _session().get(Campaign, campaign_id)
    if campaign is None or not (scope.is_global or campaign.scope_key == scope.key):
        abort(404)
    return campaign


@dataclass(frozen=True)
class Progress:
    state: str
    total: int
    to_send: int
    sent: int
    failed: int
    skipped: int
    remaining: int
    duplicates: int
    seconds_left: int | None
    last_error: str | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES

    @property
    def percent(self) -> int:
        if not self.to_send:
            return 100
        return min(100, round(100 * (self.to_send - self.remaining) / self.to_send))

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "state_label": state_label(self.state),
            "finished": self.finished,
            "total": self.total,
            "to_send": self.to_send,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
            "remaining": self.remaining,
            "duplicates": self.duplicates,
            "percent": self.percent,
            "seconds_left": self.seconds_left,
            "time_left": time_left_label(self.seconds_left),
            "last_error": self.last_error,
        }


def progress(campaign: Campaign) -> Progress:
    found = journal.counts(campaign.id, _session().connection())
    remaining = found[PENDING] + found[SENDING]
    seconds_left = None
    if campaign.state in ACTIVE_STATES and campaign.started_at and remaining:
        done = campaign.to_send - remaining
        elapsed = (utcnow() - campaign.started_at).total_seconds()
        if done > 0 and elapsed > 0:
            seconds_left = int(remaining * elapsed / done) + 1
    return Progress(
        state=campaign.state,
        total=campaign.total,
        to_send=campaign.to_send,
        sent=found[SENT],
        failed=found[DELIVERY_FAILED],
        skipped=found[SKIPPED],
        remaining=remaining,
        duplicates=found["duplicates"],
        seconds_left=seconds_left,
        last_error=campaign.last_error,
        started_at=campaign.started_at,
        finished_at=campaign.finished_at,
    )


def progress_by_id(ids: list[int]) -> dict[int, dict[str, int]]:
    """Live counts of several campaigns in one query (the list of campaigns)."""
    if not ids:
        return {}
    d = Delivery.__table__.c
    rows = _session().execute(
        sa.select(d.campaign_id, d.state, sa.func.count())
        .where(d.campaign_id.in_(ids))
        .group_by(d.campaign_id, d.state)
    )
    found: dict[int, dict[str, int]] = {i: {} for i in ids}
    for campaign_id, state, number in rows:
        found[campaign_id][state] = int(number)
    return found


def problems(campaign: Campaign, limit: int | None = None) -> sa.Select[Any]:
    """Failed and skipped deliveries, failures first, then by name."""
    stmt = (
        sa.select(Delivery)
        .where(Delivery.campaign_id == campaign.id, Delivery.state.in_((DELIVERY_FAILED, SKIPPED)))
        .order_by(sa.case((Delivery.state == DELIVERY_FAILED, 0), else_=1), Delivery.name, Delivery.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


def problems_csv(campaign: Campaign) -> Iterator[str]:
    """The report's failures and skips as CSV (UTF-8 BOM, ``;``), formulas neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([_("Name"), _("Email"), _("Result"), _("Reason"), _("Attempts"), _("Account id")])
    yield "\ufeff" + buffer.getvalue()
    session = _session()
    result = session.execute(problems(campaign).execution_options(yield_per=500))
    for partition in result.scalars().partitions(500):
        buffer.seek(0)
        buffer.truncate()
        for d in partition:
            writer.writerow(
                [
                    safe_cell(d.name or ""),
                    safe_cell(d.email or ""),
                    safe_cell(delivery_state_label(d.state)),
                    safe_cell(d.reason or ""),
                    str(d.attempts),
                    safe_cell(d.user_id),
                ]
            )
        yield buffer.getvalue()


def state_label(state: str) -> str:
    return {
        "queued": _("Queued"),
        "running": _("Sending"),
        "waiting_smtp": _("Waiting for the mail server"),
        "done": _("Finished"),
        "cancelled": _("Cancelled"),
        "failed": _("Stopped"),
    }.get(state, state)


def delivery_state_label(state: str) -> str:
    return {
        PENDING: _("Waiting"),
        SENDING: _("Sending"),
        SENT: _("Sent"),
        DELIVERY_FAILED: _("Failed"),
        SKIPPED: _("No address"),
    }.get(state, state)


def time_left_label(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return _("less than a minute")
    minutes = round(seconds / 60)
    if minutes < 60:
        return _("about %(n)d min", n=minutes)
    return _("about %(h)d h %(m)02d", h=minutes // 60, m=minutes % 60)
