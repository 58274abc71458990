"""``flask publipostage send | resume | status | cancel``: campaigns from the shell.

``send`` takes the page's filters as options. Without a request there is no
logged-in admin: the campaign runs with a global scope recorded under
``--as-actor`` and ``--scope-key`` (so a school's admins see it in their list),
unless the host registered ``extras["cli_scope"]``, a callable
``(actor, scope_key) -> Scope`` that restricts the accounts as the console would.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale
from werkzeug.datastructures import MultiDict

from .. import jobs
from ..access import Scope
from ..cli import publipostage_cli
from ..config import config_value
from ..i18n import gettext as _
from ..selection import (
    ACTIVATION_CHOICES,
    EMAIL_CHOICES,
    LOCAL_ADMIN_CHOICES,
    Selection,
    SelectionError,
    count,
)
from . import campaign as campaigns
from . import journal
from .message import MailConfigError, MailSettings, render
from .models import ACTIVE_STATES, FAILED, Campaign
from .sender import SEND_CAMPAIGN, run_in_process
from .views import first_recipient


def _state() -> Any:
    return current_app.extensions["publipostage"]


def _scope(actor: str, scope_key: str, school_name: str) -> Scope:
    factory = _state().extras.get("cli_scope")
    if callable(factory):
        scope = factory(actor, scope_key)
        if scope is None:
            raise click.ClickException(_("Unknown perimeter “%(key)s”.", key=scope_key))
        return scope  # type: ignore[no-any-return]
    return Scope(actor=actor, key=scope_key, school_name=school_name)


def _print_progress(found: dict[str, int], *, final: bool = False) -> None:
    line = _(
        "%(sent)d sent, %(failed)d failed, %(skipped)d skipped, %(remaining)d remaining",
        sent=found["sent"],
        failed=found["failed"],
        skipped=found["skipped"],
        remaining=found["pending"] + found["sending"],
    )
    if sys.stdout.isatty() and not final:
        click.echo("\r" + line + "   ", nl=False)
    elif final:
        click.echo(("\r" if sys.stdout.isatty() else "") + line + "   ")


def _run_foreground(campaign_id: int) -> None:
    last = [0.0]

    def progress(found: dict[str, int]) -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            _print_progress(found)

    run_in_process(current_app._get_current_object(), campaign_id, progress=progress)  # type: ignore[attr-defined]
    _print_progress(journal.counts(campaign_id), final=True)
    _print_summary(campaign_id)


def _print_summary(campaign_id: int) -> None:
    session = _state().db.session
    session.expire_all()
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        return
    status = campaigns.progress(campaign)
    click.echo(_("Campaign %(id)d: %(state)s.", id=campaign.id, state=campaigns.state_label(status.state)))
    if status.duplicates:
        click.echo(_("%(n)d message(s) possibly duplicated (sent again after an interruption).", n=status.duplicates))
    if status.last_error and status.state != "done":
        click.echo(_("Last error: %(error)s", error=status.last_error))


@publipostage_cli.command("send")
@click.option("--profile", "profiles", multiple=True, help="Teacher, Student, Relative, Personnel, Guest (repeatable).")
@click.option("--class", "classes", multiple=True, help="Class id (repeatable).")
@click.option("--activation", type=click.Choice(ACTIVATION_CHOICES), default="all", show_default=True)
@click.option("--email", type=click.Choice(EMAIL_CHOICES), default="all", show_default=True)
@click.option("--local-admin", type=click.Choice(LOCAL_ADMIN_CHOICES), default="all", show_default=True)
@click.option("--created-before", metavar="YYYY-MM-DD")
@click.option("--created-since", metavar="YYYY-MM-DD")
@click.option("--campaign", "unreached_of", type=int, help="Only the accounts campaign ID did not reach.")
@click.option("--as-actor", default="cli", show_default=True, help="Who the journal and the audit record.")
@click.option("--scope-key", default="*", show_default=True, help="Perimeter the campaign belongs to ('*': super admins).")
@click.option("--school-name", default="", help="School name used in the messages.")
@click.option("--dry-run", is_flag=True, help="Print the counts and one sample (code hidden); send nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def send_command(
    profiles: tuple[str, ...],
    classes: tuple[str, ...],
    activation: str,
    email: str,
    local_admin: str,
    created_before: str | None,
    created_since: str | None,
    unreached_of: int | None,
    as_actor: str,
    scope_key: str,
    school_name: str,
    dry_run: bool,
    yes: bool,
) -> None:
    """Send the credential email to the selected accounts."""
    with force_locale("fr"):
        args: MultiDict[str, str] = MultiDict(
            [("profile", p) for p in profiles]
            + [("class", c) for c in classes]
            + [("activation", activation), ("email", email), ("local_admin", local_admin)]
        )
        for key, value in (
            ("created_before", created_before),
            ("created_since", created_since),
            ("campaign", str(unreached_of) if unreached_of is not None else None),
        ):
            if value:
                args[key] = value
        scope = _scope(as_actor, scope_key, school_name)
        try:
            selection = Selection.from_args(args, scope, extra_params=())
            counters = count(selection)
        except SelectionError as exc:
            raise click.ClickException(exc.message) from None
        to_send = counters.selected - counters.without_email
        click.echo(
            _(
                "%(selected)d account(s) selected: %(send)d email(s) to send, %(skip)d without an address (skipped).",
                selected=counters.selected,
                send=to_send,
                skip=counters.without_email,
            )
        )
        if scope_key != "*" and not classes and not callable(_state().extras.get("cli_scope")):
            click.echo(
                _(
                    "Note: --scope-key only files the campaign under that perimeter; "
                    "the filters alone choose the accounts."
                )
            )
        if dry_run:
            _print_sample(selection, scope)
            return
        if to_send <= 0:
            raise click.ClickException(_("No selected account has an email address: there is nothing to send."))
        if not yes and not click.confirm(_("Send %(n)d email(s)?", n=to_send), default=False):
            raise click.Abort()
        try:
            campaign, created = campaigns.create(selection)
        except (SelectionError, MailConfigError) as exc:
            raise click.ClickException(str(getattr(exc, "message", exc))) from None
        if not created:
            click.echo(_("Campaign %(id)d already runs for this selection.", id=campaign.id))
            return
        click.echo(_("Campaign %(id)d created.", id=campaign.id))
        if config_value("JOB_BACKEND") == "celery":
            jobs.submit(current_app._get_current_object(), SEND_CAMPAIGN, campaign_id=campaign.id)  # type: ignore[attr-defined]
            click.echo(_("Handed to the Celery workers; follow it with: flask publipostage status %(id)d", id=campaign.id))
            return
        if not journal.acquire(campaign.id):
            raise click.ClickException(_("Campaign %(id)d is already being sent.", id=campaign.id))
        _run_foreground(campaign.id)


def _print_sample(selection: Selection, scope: Scope) -> None:
    recipient = first_recipient(selection)
    if recipient is None:
        click.echo(_("No selected account has an email address: there is nothing to send."))
        return
    try:
        settings = MailSettings.load(scope.school_name)
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


@publipostage_cli.command("resume")
@click.argument("campaign_id", type=int)
@click.option("--force", is_flag=True, help="Take over now, even if another process seems to be sending it.")
@click.option("--no-wait", is_flag=True, help="Give up instead of waiting for a silent sender to go stale.")
def resume_command(campaign_id: int, force: bool, no_wait: bool) -> None:
    """Send what an interrupted campaign left unsent (where the journal says)."""
    with force_locale("fr"):
        session = _state().db.session
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise click.ClickException(_("No campaign %(id)d.", id=campaign_id))
        if campaign.state not in (*ACTIVE_STATES, FAILED):
            click.echo(_("Campaign %(id)d is %(state)s: nothing to resume.", id=campaign_id, state=campaigns.state_label(campaign.state)))
            return
        session.remove()
        states = (*ACTIVE_STATES, FAILED)
        if config_value("JOB_BACKEND") == "celery":
            jobs.submit(current_app._get_current_object(), SEND_CAMPAIGN, campaign_id=campaign_id, force=force, resume=True)  # type: ignore[attr-defined]
            click.echo(_("Handed to the Celery workers; follow it with: flask publipostage status %(id)d", id=campaign_id))
            return
        while not journal.acquire(campaign_id, force=force, states=states):
            info = journal.campaign_info(campaign_id)
            if info is None or info.state not in states:
                click.echo(_("Campaign %(id)d is no longer running.", id=campaign_id))
                return
            if no_wait:
                raise click.ClickException(
                    _("Campaign %(id)d is being sent by another process (use --force if it is dead).", id=campaign_id)
                )
            click.echo(
                _(
                    "Another process gave a sign of life less than %(s)d s ago; waiting (or use --force).",
                    s=int(config_value("MAIL_STALE_AFTER")),
                )
            )
            time.sleep(min(10.0, max(1.0, float(config_value("MAIL_STALE_AFTER")) / 5)))
        click.echo(_("Resuming campaign %(id)d.", id=campaign_id))
        _run_foreground(campaign_id)


@publipostage_cli.command("status")
@click.argument("campaign_id", type=int, required=False)
@click.option("--failures", is_flag=True, help="List the failed and skipped accounts.")
def status_command(campaign_id: int | None, failures: bool) -> None:
    """List recent campaigns, or show one."""
    with force_locale("fr"):
        session = _state().db.session
        if campaign_id is None:
            rows = session.execute(sa.select(Campaign).order_by(Campaign.id.desc()).limit(20)).scalars().all()
            if not rows:
                click.echo(_("No email campaign yet."))
                return
            live = campaigns.progress_by_id([c.id for c in rows])
            for c in rows:
                counts = live.get(c.id, {})
                click.echo(
                    f"{c.id:>6}  {c.created_at:%Y-%m-%d %H:%M}  {campaigns.state_label(c.state):<28}  "
                    + _(
                        "%(sent)d sent, %(failed)d failed, %(skipped)d skipped, %(remaining)d remaining",
                        sent=counts.get("sent", 0),
                        failed=counts.get("failed", 0),
                        skipped=counts.get("skipped", 0),
                        remaining=counts.get("pending", 0) + counts.get("sending", 0),
                    )
                    + f"  [{c.actor} · {c.scope_key}]"
                )
            return
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise click.ClickException(_("No campaign %(id)d.", id=campaign_id))
        status = campaigns.progress(campaign)
        click.echo(_("Campaign %(id)d: %(state)s.", id=campaign.id, state=campaigns.state_label(status.state)))
        click.echo(_("Started by %(actor)s (%(scope)s) on %(date)s.", actor=campaign.actor, scope=campaign.scope_key, date=f"{campaign.created_at:%Y-%m-%d %H:%M}"))
        _print_progress(journal.counts(campaign.id), final=True)
        if status.duplicates:
            click.echo(_("%(n)d message(s) possibly duplicated (sent again after an interruption).", n=status.duplicates))
        if status.last_error:
            click.echo(_("Last error: %(error)s", error=status.last_error))
        if campaign.is_active and journal.is_stale(campaign):
            click.echo(_("No sign of life for a while: run “flask publipostage resume %(id)d”.", id=campaign.id))
        if failures:
            for d in session.execute(campaigns.problems(campaign)).scalars():
                click.echo(f"{campaigns.delivery_state_label(d.state)}\t{d.name}\t{d.email or ''}\t{d.reason or ''}")


@publipostage_cli.command("cancel")
@click.argument("campaign_id", type=int)
def cancel_command(campaign_id: int) -> None:
    """Stop a campaign; what was sent stays sent."""
    with force_locale("fr"):
        campaign = _state().db.session.get(Campaign, campaign_id)
        if campaign is None:
            raise click.ClickException(_("No campaign %(id)d.", id=campaign_id))
        if campaigns.cancel(campaign):
            click.echo(_("Campaign %(id)d cancelled.", id=campaign_id))
        else:
            click.echo(_("Campaign %(id)d is not running.", id=campaign_id))
