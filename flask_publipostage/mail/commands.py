"""``flask publipostage send | resume | status | cancel``: campaigns from the shell."""

from __future__ import annotations

import time
from typing import Any

import click
import sqlalchemy as sa
from flask.cli import with_appcontext
from flask_babel import force_locale

from .. import audit
from ..commands import follow, selection_from_options, selection_options
from ..config import config_value
from ..host import parse_key
from ..i18n import gettext as _
from ..i18n import ngettext
from ..models import when
from ..runs import backends, core
from ..runs.models import ACTIVE_STATES, RESUMABLE_STATES, SUSPENDED, Run
from ..selection import Selection, SelectionError, count
from ..state import state
from . import bounces
from . import campaign as campaigns
from .message import MailConfigError, MailSettings, render
from .sender import KIND
from .views import first_recipient


def _counts_line(progress: core.Progress) -> str:
    status = campaigns.CampaignStatus(progress)
    return ", ".join(
        [
            ngettext("%(num)d sent", "%(num)d sent", status.sent),
            ngettext("%(num)d failed", "%(num)d failed", status.failed),
            ngettext("%(num)d skipped", "%(num)d skipped", status.skipped),
            ngettext("%(num)d remaining", "%(num)d remaining", status.remaining),
        ]
    )


def _duplicates_line(count: int) -> str:
    return ngettext(
        "%(num)d message possibly duplicated (sent again after an interruption).",
        "%(num)d messages possibly duplicated (sent again after an interruption).",
        count,
    )


def _campaign(campaign_id: int) -> Run:
    key = parse_key(Run.__table__.c.id, str(campaign_id))
    run = core.get(key) if key is not None else None
    if run is None or run.kind != KIND.name:
        raise click.ClickException(_("No campaign %(id)d.", id=campaign_id))
    return run


def _follow(campaign_id: int) -> None:
    """The campaign's progress until it ends (at once with a runner that works
    in the caller), then its summary; Celery workers are only handed it."""
    if backends.runner().distributed:
        click.echo(_("Handed to the Celery workers; follow it with: flask publipostage status %(id)d", id=campaign_id))
        return
    status = campaigns.CampaignStatus(follow(campaign_id, _counts_line, _("Sending")))
    click.echo(_("Campaign %(id)d: %(state)s.", id=campaign_id, state=campaigns.state_label(status.state)))
    if status.duplicates:
        click.echo(_duplicates_line(status.duplicates))
    if status.state == SUSPENDED:
        # The settings must change before anything else is sent: say so, and fail.
        raise click.ClickException(
            _("Campaign %(id)d is suspended: %(error)s Then: flask publipostage resume %(id)d",
              id=campaign_id, error=status.last_error or "")
        )
    if status.last_error and status.state != "done":
        click.echo(_("Last error: %(error)s", error=status.last_error))


@click.command("send")
@with_appcontext
@selection_options
@click.option("--dry-run", is_flag=True, help="Print the counts and one sample (code hidden); send nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def send_command(dry_run: bool, yes: bool, **options: Any) -> None:
    """Send the credential email to the selected accounts."""
    with force_locale("fr"):
        selection, scope = selection_from_options(options)
        counters = count(selection)
        to_send = campaigns.sendable(selection, counters)
        click.echo(
            _(
                "%(accounts)s: %(emails)s, %(skipped)s.",
                accounts=ngettext("%(num)d account selected", "%(num)d accounts selected", counters.selected),
                emails=ngettext("%(num)d email to send", "%(num)d emails to send", to_send),
                skipped=ngettext(
                    "%(num)d account without an address (skipped)",
                    "%(num)d accounts without an address (skipped)",
                    counters.without_email,
                ),
            )
        )
        if counters.expired:
            click.echo(ngettext("%(num)d activation code has expired: never sent.",
                                "%(num)d activation codes have expired: never sent.", counters.expired))
        if scope.key != "*" and not selection.class_ids and not callable(state().extras.get("cli_scope")):
            click.echo(
                _(
                    "Note: --scope-key only files the campaign under that perimeter; "
                    "the filters alone choose the accounts."
                )
            )
        if dry_run:
            _print_sample(selection)
            return
        if to_send <= 0:
            raise click.ClickException(_("No selected account has an email address: there is nothing to send."))
        if not yes and not click.confirm(ngettext("Send %(num)d email?", "Send %(num)d emails?", to_send), default=False):
            raise click.Abort()
        try:
            campaign, created = campaigns.start(selection)
        except (SelectionError, MailConfigError) as exc:
            raise click.ClickException(str(getattr(exc, "message", exc))) from None
        if not created:
            click.echo(_("Campaign %(id)d already runs for this selection.", id=campaign.id))
            return
        click.echo(_("Campaign %(id)d created.", id=campaign.id))
        _follow(campaign.id)


def _print_sample(selection: Selection) -> None:
    recipient = first_recipient(selection)
    if recipient is None:
        click.echo(_("No selected account has an email address: there is nothing to send."))
        return
    try:
        settings = MailSettings.load(selection.scope.school_name if selection.scope else "")
    except MailConfigError as exc:
        raise click.ClickException(str(exc)) from None
    rendered = render(recipient, settings)
    text = rendered.text
    if recipient.activation_code:
        # A terminal is often logged: the code stays on the admin's screen only.
        text = text.replace(recipient.activation_code, "•" * len(recipient.activation_code))
    click.echo("")
    click.echo(_("Sample (first recipient, activation code hidden):"))
    click.echo(f"To: {recipient.full_name} <{recipient.email}>")
    click.echo(f"Subject: {rendered.subject}")
    click.echo("")
    click.echo(text)


@click.command("resume")
@with_appcontext
@click.argument("campaign_id", type=int)
@click.option("--force", is_flag=True, help="Take over now, even if another process seems to be sending it.")
@click.option("--no-wait", is_flag=True, help="Give up instead of waiting for a silent sender to go stale.")
def resume_command(campaign_id: int, force: bool, no_wait: bool) -> None:
    """Send what an interrupted campaign left unsent (where the journal says)."""
    with force_locale("fr"):
        campaign = _campaign(campaign_id)
        if campaign.state not in (*ACTIVE_STATES, *RESUMABLE_STATES):
            click.echo(_("Campaign %(id)d is %(state)s: nothing to resume.", id=campaign_id,
                         state=campaigns.state_label(campaign.state)))
            return
        states = (*ACTIVE_STATES, *RESUMABLE_STATES)
        while not core.acquire(campaign_id, force=force, states=states, by=audit.COMMAND_LINE):
            state().session.expire_all()
            if core.current_state(campaign_id) not in states:
                click.echo(_("Campaign %(id)d is no longer running.", id=campaign_id))
                return
            if no_wait:
                raise click.ClickException(
                    _("Campaign %(id)d is being sent by another process (use --force if it is dead).", id=campaign_id)
                )
            stale_after = float(config_value("STALE_AFTER"))
            click.echo(_("Another process gave a sign of life less than %(s)d s ago; waiting (or use --force).",
                         s=int(stale_after)))
            time.sleep(min(10.0, max(0.5, stale_after / 5)))
        click.echo(_("Resuming campaign %(id)d.", id=campaign_id))
        state().session.expire_all()
        core.drive_now(_campaign(campaign_id))
        _follow(campaign_id)


@click.command("status")
@with_appcontext
@click.argument("campaign_id", type=int, required=False)
@click.option("--failures", is_flag=True, help="List the failed and skipped accounts.")
def status_command(campaign_id: int | None, failures: bool) -> None:
    """List recent campaigns, or show one."""
    with force_locale("fr"):
        session = state().session
        if campaign_id is None:
            rows = session.execute(sa.select(Run).where(Run.kind == KIND.name).order_by(Run.id.desc()).limit(20)).scalars().all()
            if not rows:
                click.echo(_("No email campaign yet."))
                return
            live = core.counts([c.id for c in rows])
            for c in rows:
                status = campaigns.CampaignStatus(core.Progress(c.state, live[c.id], None, None, None, None))
                click.echo(
                    f"{c.id:>6}  {when(c.created_at)}  {campaigns.state_label(c.state):<28}  "
                    + _counts_line(status.progress)
                    + f"  [{c.who} · {c.scope_key}]"
                )
            return
        campaign = _campaign(campaign_id)
        status = campaigns.status(campaign)
        click.echo(_("Campaign %(id)d: %(state)s.", id=campaign.id, state=campaigns.state_label(status.state)))
        click.echo(_("Started by %(actor)s (%(scope)s) on %(date)s.", actor=campaign.who, scope=campaign.scope_key,
                     date=when(campaign.created_at)))
        click.echo(_counts_line(status.progress))
        if status.duplicates:
            click.echo(_duplicates_line(status.duplicates))
        if status.last_error:
            click.echo(_("Last error: %(error)s", error=status.last_error))
        if campaign.is_active and core.is_stale(campaign):
            click.echo(_("No sign of life for a while: run “flask publipostage resume %(id)d”.", id=campaign.id))
        if failures:
            for item in session.execute(campaigns.problems(campaign)).all():
                click.echo(
                    f"{campaigns.item_state_label(item.state)}\t{item.name}\t{item.login or ''}"
                    f"\t{item.email or ''}\t{item.reason or ''}"
                )


@click.command("cancel")
@with_appcontext
@click.argument("campaign_id", type=int)
def cancel_command(campaign_id: int) -> None:
    """Stop a campaign; what was sent stays sent."""
    with force_locale("fr"):
        if core.cancel(_campaign(campaign_id), audit.COMMAND_LINE):
            click.echo(_("Campaign %(id)d cancelled.", id=campaign_id))
        else:
            click.echo(_("Campaign %(id)d is not running.", id=campaign_id))


@click.command("bounces")
@with_appcontext
def bounces_command() -> None:
    """Read the bounce mailbox once; mark the deliveries it reports failed."""
    with force_locale("fr"):
        try:
            report = bounces.collect()
        except bounces.BounceSourceError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            _(
                "%(read)s, %(marked)s.",
                read=ngettext("%(num)d delivery-status notification read",
                              "%(num)d delivery-status notifications read", report.read),
                marked=ngettext("%(num)d delivery marked failed", "%(num)d deliveries marked failed", report.marked),
            )
        )
        if report.later:
            click.echo(
                ngettext(
                    "%(num)d notification left for the next time: its message is still being sent.",
                    "%(num)d notifications left for the next time: their messages are still being sent.",
                    report.later,
                )
            )


COMMANDS = (send_command, resume_command, status_command, cancel_command, bounces_command)
