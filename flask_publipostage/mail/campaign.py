"""Starting a campaign and reading it back (pages, report, command line).

A campaign is a run of the ``mail`` kind (:mod:`.sender`); its items are its
recipients: one per selected account, ``skipped`` at once for those without an
address. Everything counted here is counted from the items.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..csv_export import safe_cell
from ..host import parse_key
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..models import when
from ..runs import core
from ..runs.models import (
    EMAIL_LENGTH,
    ITEM_FAILED,
    PENDING,
    SENDING,
    SENT,
    SKIPPED,
    Run,
    RunItem,
)
from ..selection import Counters, Filter, Selection, SelectionError, check_size, count, register
from ..sql import name_order
from ..state import state
from ..views import stalled_label, time_left_label
from .message import MailSettings
from .sender import KIND


def start(selection: Selection) -> tuple[Run, bool]:
    """Record a campaign for ``selection`` with its recipients and audit row, and
    hand it to the runner. ``(campaign, False)`` when the same admin already sends
    the same selection (a double click)."""
    assert selection.scope is not None
    MailSettings.load(selection.scope.school_name)  # refuses to start without a sender
    counters = count(selection)
    check_size(counters)
    if counters.selected - counters.without_email <= 0:
        raise SelectionError(_("No selected account has an email address: there is nothing to send."))
    to_send = sendable(selection, counters)
    if to_send <= 0:
        raise SelectionError(_("The activation code of every selected account with an email address has "
                               "expired: there is nothing to send."))

    def columns(rows: Any) -> dict[str, Any]:
        has_email = rows.c.email.is_not(None)
        return {
            "email": sa.func.substr(rows.c.email, 1, EMAIL_LENGTH),
            "state": sa.case((has_email, sa.literal(PENDING)), else_=sa.literal(SKIPPED)),
            "reason": sa.case((has_email, sa.null()), else_=sa.literal(_("No email address."))),
            "weight": sa.case((has_email, 1), else_=0),
        }

    return core.start(
        KIND, selection, {}, item_kind="email", columns=columns,
        audit_action="mail", audit_template="mail", audit_count=to_send,
    )


def sendable(selection: Selection, counters: Counters) -> int:
    """The messages a campaign of ``selection`` sends: one per account with an
    address, but none for an expired code (each is skipped, with the reason,
    when its turn comes)."""
    to_send = counters.selected - counters.without_email
    if counters.expired:
        to_send -= count(selection.with_values(email="with")).expired
    return to_send


def find_active(selection: Selection) -> Run | None:
    """The admin's campaign under way for this very selection, if any."""
    assert selection.scope is not None
    for run in core.active_runs(KIND, selection.scope):
        if run.selection_args == selection.to_dict():
            return run
    return None


# -- the accounts a campaign did not reach, as a filter of the page ---------------------------


def _read_campaign(values: list[str]) -> int:
    run_id = parse_key(Run.__table__.c.id, values[0])
    if run_id is None or run_id <= 0:
        raise SelectionError(_("Invalid campaign."), field="campaign")
    return int(run_id)


def _check_campaign(selection: Selection, run_id: int) -> None:
    """403 for a campaign of another perimeter, or that does not exist."""
    scope = selection.scope
    if scope is None or core.find_visible(KIND, str(run_id), scope) is None:
        raise SelectionError(_("This campaign is outside your scope."), status=403, field="campaign")


def _campaign_banner(selection: Selection, run_id: int) -> str:
    run = core.get(run_id)
    unreached = count(Selection({"campaign": run_id}, selection.scope)).selected
    return _(
        "Accounts not reached by the campaign of %(date)s: %(count)d",
        date=when(run.created_at) if run else "", count=unreached,
    )


register(
    Filter(
        "campaign",
        _l("Campaign"),
        read=_read_campaign,
        condition=lambda selection, host, run_id: sa.cast(host.user_id, sa.String).in_(
            core.unreached_user_ids(run_id)
        ),
        check=_check_campaign,
        help="Only the accounts campaign ID did not reach.",
        banner=_campaign_banner,
    )
)


# -- the accounts an earlier campaign already reached ------------------------------------------


def _emailed_condition(selection: Selection, host: Any, value: str) -> Any:
    """Sent their credentials by email by a campaign ("yes"), or never ("never")."""
    i = core.item_t.c
    sent = sa.select(i.user_id).where(i.kind == "email", i.state == SENT)
    reached = sa.cast(host.user_id, sa.String).in_(sent)
    return reached if value == "yes" else sa.not_(reached)


register(
    Filter(
        "emailed",
        _l("Credentials already emailed"),
        choices=(("all", _l("All")), ("never", _l("Never emailed")), ("yes", _l("Already emailed"))),
        condition=_emailed_condition,
    )
)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignStatus:
    """A campaign's progress, in the words of its page."""

    progress: core.Progress

    def __getattr__(self, name: str) -> Any:
        return getattr(self.progress, name)

    @property
    def sent(self) -> int:
        return self.progress.counts[SENT]

    @property
    def failed(self) -> int:
        return self.progress.counts[ITEM_FAILED]

    @property
    def skipped(self) -> int:
        return self.progress.counts[SKIPPED]

    @property
    def total(self) -> int:
        return self.progress.counts.total

    @property
    def to_send(self) -> int:
        return self.total - self.skipped

    @property
    def remaining(self) -> int:
        return self.progress.counts.remaining

    @property
    def duplicates(self) -> int:
        return self.progress.counts.duplicates

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
            "stalled": stalled_label(self.progress),
            "last_error": self.last_error,
        }


def status(run: Run) -> CampaignStatus:
    return CampaignStatus(core.progress(run))


def problems(run: Run, limit: int | None = None) -> sa.Select[Any]:
    """Failed and skipped recipients, failures first, then in French name order
    (last name, first name: :func:`~flask_publipostage.sql.name_order`).

    Rows of the item's ``name``, ``email``, ``state``, ``reason``, ``attempts``,
    and the account's ``login``, read from the host (the item keeps the id only),
    joined on the id as text as :func:`~flask_publipostage.runs.core.unreached_user_ids`
    does. An account deleted since stays listed, without a login, sorted by the
    name it had.
    """
    host = state().host
    last, first, login = (host.user_column(name) for name in ("last_name", "first_name", "login"))
    stmt = (
        sa.select(
            RunItem.name, RunItem.email, RunItem.state, RunItem.reason, RunItem.attempts, login.label("login")
        )
        .select_from(RunItem)
        .outerjoin(host.user_model, sa.cast(host.user_id, sa.String) == RunItem.user_id)
        .where(RunItem.run_id == run.id, RunItem.state.in_((ITEM_FAILED, SKIPPED)))
        .order_by(
            sa.case((RunItem.state == ITEM_FAILED, 0), else_=1),
            *name_order(sa.func.coalesce(last, RunItem.name), first, login),
            RunItem.id,
        )
    )
    return stmt.limit(limit) if limit is not None else stmt


def problems_csv(run: Run) -> Iterator[str]:
    """The report's failures and skips as CSV (UTF-8 BOM, ``;``), formulas
    neutralised, in :func:`problems`' order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([_("Name"), _("Login"), _("Email"), _("Result"), _("Reason"), _("Attempts")])
    yield "\ufeff" + buffer.getvalue()
    result = state().session.execute(problems(run).execution_options(yield_per=500))
    for partition in result.partitions(500):
        buffer.seek(0)
        buffer.truncate()
        for item in partition:
            writer.writerow(
                [
                    safe_cell(item.name or ""),
                    safe_cell(item.login or ""),
                    safe_cell(item.email or ""),
                    safe_cell(item_state_label(item.state)),
                    safe_cell(item.reason or ""),
                    str(item.attempts),
                ]
            )
        yield buffer.getvalue()


def state_label(run_state: str) -> str:
    return {
        "queued": _("Queued"),
        "running": _("Sending"),
        "waiting": _("Waiting for the mail server"),
        "done": _("Finished"),
        "cancelled": _("Cancelled"),
        "failed": _("Stopped"),
        "suspended": _("Suspended: settings to fix"),
    }.get(run_state, run_state)


def item_state_label(item_state: str) -> str:
    return {
        PENDING: _("Waiting"),
        SENDING: _("Sending"),
        SENT: _("Sent"),
        ITEM_FAILED: _("Failed"),
        SKIPPED: _("No address"),
    }.get(item_state, item_state)
