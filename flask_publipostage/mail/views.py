"""Routes of "Envoyer par mail": confirmation with a preview, a sample to oneself,
the campaign's live progress and report, past campaigns."""

from __future__ import annotations

import dataclasses
import secrets
import smtplib
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify, redirect, render_template, request, stream_with_context, url_for

from .. import audit, renewal
from ..access import (
    PRINT,
    RENEW,
    SEND,
    authenticated_recently,
    current_scope,
    has_capability,
    require,
    require_recent_authentication,
    step_up_url,
)
from ..csv_export import stamped_name
from ..i18n import gettext as _
from ..recipients import EXPIRED, Recipient
from ..recipients import page as recipients_page
from ..runs import core
from ..runs.models import Run
from ..selection import Selection, SelectionError, check_size, count
from ..state import state
from ..views import PostForm, current_selection, form_error
from . import campaign as campaigns
from .message import MailConfigError, MailSettings, MessageFactory, address_problem, ensure_mail, render
from .sender import (
    KIND,
    SmtpConfigError,
    SmtpUnavailable,
    close_quietly,
    configuration_problem,
    describe,
    open_connection,
)

#: The message preview is the email itself, styled inline for mail clients (no
#: stylesheet reaches them): it is served apart, in the page's sandboxed frame,
#: under a policy of its own: no script, nothing fetched, framed by the page only.
PREVIEW_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
#: The activation code of "m'envoyer un exemple": plainly not one of the ENT's.
SAMPLE_CODE = "EXEMPLE-0000"
#: Failures and skips listed on the report page (all of them are in the CSV).
REPORT_ROWS = 500
CAMPAIGNS_PER_PAGE = 50


def mail_context() -> dict[str, Any]:
    """Lazy helpers for ``_mail_action.html``."""

    def recent() -> list[tuple[Run, campaigns.CampaignStatus]]:
        runs = list(state().session.execute(core.visible(KIND, current_scope()).limit(3)).scalars())
        return [(run, campaigns.status(run)) for run in runs]

    return {
        "mail_can_send": lambda: has_capability(SEND),
        "mail_recent_campaigns": recent,
        "mail_state_label": campaigns.state_label,
        "mail_delivery_label": campaigns.item_state_label,
    }


def _selection_args(selection: Selection) -> dict[str, Any]:
    return selection.to_args().to_dict(flat=False)


#: Accounts read to find one whose message goes out (an expired code is not sent).
FIRST_ROWS = 20


def first_recipient(selection: Selection) -> Recipient | None:
    """The first account of the selection whose message goes out: an address, a
    code not expired (for the preview and the sample)."""
    if selection.email == "without":
        return None
    rows = recipients_page(selection.with_values(email="with"), 1, FIRST_ROWS)
    return next((r for r in rows if r.content != EXPIRED), None)


def shown_to_admin(recipient: Recipient) -> Recipient:
    """The recipient as the preview shows it: the code itself only to an admin who
    may see codes anyway (print) and authenticated recently enough, else hidden."""
    if recipient.activation_code and not (has_capability(PRINT) and authenticated_recently()):
        return dataclasses.replace(recipient, activation_code="•" * len(recipient.activation_code))
    return recipient


def renew_expired_url(args: dict[str, Any]) -> str | None:
    """The page with the accounts whose code expired, ready for new codes in a
    PDF; None when the host issues none or the admin may not ask for them."""
    if not (renewal.available() and has_capability(PRINT) and has_capability(RENEW)):
        return None
    return url_for("publipostage.index", **{**args, "code": ["expired"]}, _anchor="pp-pdf")


@require(SEND)
def mail_confirm() -> Response:
    selection = current_selection(extra_params=("page", "sample"))
    counters = count(selection)
    check_size(counters)
    scope = current_scope()
    # Who receives what: counted among the recipients (accounts with an address).
    recipients = count(selection.with_values(email="with")) if selection.email != "without" else None
    # An expired code is never sent: those accounts are skipped.
    to_send = recipients.selected - recipients.expired if recipients else 0
    # Before sending again: who already got their credentials by email.
    already = 0
    if to_send and selection.get("emailed") == "all":
        already = count(selection.with_values(email="with", emailed="yes")).selected
    recipient = first_recipient(selection)
    settings_error = None
    preview = settings = None
    try:
        settings = MailSettings.load(scope.school_name)
    except MailConfigError as exc:
        settings_error = str(exc)
    if settings is not None and recipient is not None:
        preview = render(shown_to_admin(recipient), settings)
    args = _selection_args(selection)
    page = render_template(
        "publipostage/mail_confirm.html",
        selection=selection,
        counters=counters,
        to_send=to_send,
        codes=recipients.codes if recipients else 0,
        federated=recipients.federated if recipients else 0,
        expired=recipients.expired if recipients else 0,
        already=already,
        leave_out_url=url_for("publipostage.mail_confirm", **{**_selection_args(selection), "emailed": ["never"]}),
        recipient=recipient,
        recipient_problem=address_problem(recipient.email) if recipient else None,
        preview=preview,
        settings=settings,
        settings_error=settings_error,
        suppressed=bool(ensure_mail().suppress),
        active=campaigns.find_active(selection),
        form=PostForm(),
        actor_email=scope.actor_email,
        sample=request.args.get("sample"),
        args=args,
        without_email_url=url_for("publipostage.index", **{**args, "email": ["without"]}),
        renew_expired_url=renew_expired_url(args) if recipients and recipients.expired else None,
        preview_url=url_for("publipostage.mail_preview", **args),
        # Sending asks for a recent authentication: said before the button.
        step_up_url=step_up_url(url_for("publipostage.mail_confirm", **args)),
    )
    # The preview shows a real activation code: never kept by a cache.
    return Response(page, headers={"Cache-Control": "no-store"})


@require(SEND)
def mail_preview() -> Response:
    """The HTML message of the confirmation's preview, alone (its frame's document)."""
    selection = current_selection(extra_params=())
    recipient = first_recipient(selection)
    if recipient is None:
        raise SelectionError(_("No selected account has an email address: there is nothing to send."), status=404)
    try:
        settings = MailSettings.load(current_scope().school_name)
    except MailConfigError as exc:
        raise SelectionError(str(exc)) from None
    html = render(shown_to_admin(recipient), settings).html
    return Response(html, headers={"Cache-Control": "no-store", "Content-Security-Policy": PREVIEW_POLICY})


@require(SEND)
def mail_send() -> Any:
    selection = current_selection(extra_params=())
    form = PostForm()
    if not form.validate_on_submit():
        raise form_error(form)
    require_recent_authentication(url_for("publipostage.mail_confirm", **_selection_args(selection)))
    try:
        campaign, _created = campaigns.start(selection)
    except MailConfigError as exc:
        raise SelectionError(str(exc)) from None
    return redirect(url_for("publipostage.mail_campaign", campaign_id=campaign.id), code=303)


@require(SEND)
def mail_sample() -> Any:
    """One real message, built for the first recipient, sent to the admin only."""
    selection = current_selection(extra_params=())
    form = PostForm()
    if not form.validate_on_submit():
        raise form_error(form)
    require_recent_authentication(url_for("publipostage.mail_confirm", **_selection_args(selection)))
    scope = current_scope()
    to = (scope.actor_email or "").strip()
    if not to:
        raise SelectionError(_("Your account has no email address: the sample cannot be sent to you."))
    problem = address_problem(to)
    if problem:
        raise SelectionError(problem)
    recipient = first_recipient(selection)
    if recipient is None:
        raise SelectionError(_("No selected account has an email address: there is nothing to send."))
    try:
        settings = MailSettings.load(scope.school_name)
    except MailConfigError as exc:
        raise SelectionError(str(exc)) from None
    factory = MessageFactory(settings)
    # A mailbox is no place for a live code: the sample carries a fake one.
    if recipient.activation_code:
        recipient = dataclasses.replace(recipient, activation_code=SAMPLE_CODE)
    rendered = render(recipient, settings)
    rendered = dataclasses.replace(rendered, subject=_("[Sample] %(subject)s", subject=rendered.subject))
    message = factory.from_rendered(
        rendered, "", to, factory.message_id("sample", secrets.token_hex(8))
    )
    connection = None
    try:
        connection = open_connection()
        connection.send(message, envelope_from=settings.sender[1])
    except SmtpUnavailable as exc:
        raise SelectionError(_("The sample could not be sent: %(reason)s", reason=exc.reason), status=503) from None
    except SmtpConfigError as exc:  # the settings, not the server: 502 and what to fix
        raise SelectionError(_("The sample could not be sent: %(reason)s", reason=exc.reason), status=502) from None
    except (smtplib.SMTPException, OSError) as exc:  # the server refused it: say why, not a 500
        reason = configuration_problem(exc) or describe(exc)
        raise SelectionError(_("The sample could not be sent: %(reason)s", reason=reason), status=502) from None
    finally:
        close_quietly(connection)
    # Filed where the recipient's admins read it too: the sample shows their account.
    audit.record("mail_sample", selection, 1, template="mail", result="sample",
                 accounts=sa.select(sa.literal(str(recipient.id))))
    state().session.commit()
    return redirect(url_for("publipostage.mail_confirm", **_selection_args(selection), sample="sent"), code=303)


@require(SEND)
def mail_campaigns() -> str:
    scope = current_scope()
    raw_page = request.args.get("page", "1")
    if not raw_page.isdigit() or not 1 <= int(raw_page) <= 100_000:
        raise SelectionError(_("Invalid page number."), field="page")
    number = int(raw_page)
    session = state().session
    stmt = core.visible(KIND, scope)
    total = session.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()
    rows = list(session.execute(stmt.limit(CAMPAIGNS_PER_PAGE).offset((number - 1) * CAMPAIGNS_PER_PAGE)).scalars())
    return render_template(
        "publipostage/mail_campaigns.html",
        campaigns=rows,
        live=core.counts([c.id for c in rows]),
        page=number,
        pages=max(1, -(-total // CAMPAIGNS_PER_PAGE)),
        scope=scope,
    )


def _visible(campaign_id: str) -> Run:
    return core.get_visible(KIND, campaign_id, current_scope())


@require(SEND)
def mail_campaign(campaign_id: str) -> str:
    campaign = _visible(campaign_id)
    status = campaigns.status(campaign)
    problems = [] if not status.finished else state().session.execute(campaigns.problems(campaign, REPORT_ROWS)).all()
    return render_template(
        "publipostage/mail_campaign.html",
        campaign=campaign,
        status=status,
        problems=problems,
        report_limit=REPORT_ROWS,
        form=PostForm(),
        selection_args=campaign.selection_args,
        unreached_url=url_for("publipostage.index", campaign=campaign.id, _anchor="pp-pdf"),
    )


@require(SEND)
def mail_campaign_status(campaign_id: str) -> Response:
    response = jsonify(campaigns.status(_visible(campaign_id)).as_json())
    response.headers["Cache-Control"] = "no-store"
    return response


@require(SEND)
def mail_campaign_csv(campaign_id: str) -> Response:
    campaign = _visible(campaign_id)
    name = stamped_name(current_scope(), [f"mail {campaign.id}"], "csv")
    return Response(
        stream_with_context(campaigns.problems_csv(campaign)),
        mimetype="text/csv",  # Werkzeug adds "; charset=utf-8" to text types
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@require(SEND)
def mail_campaign_cancel(campaign_id: str) -> Any:
    campaign = _visible(campaign_id)
    form = PostForm()
    if not form.validate_on_submit():
        raise form_error(form)
    core.cancel(campaign, current_scope())
    return redirect(url_for("publipostage.mail_campaign", campaign_id=campaign.id), code=303)


@require(SEND)
def mail_campaign_resume(campaign_id: str) -> Any:
    campaign = _visible(campaign_id)
    form = PostForm()
    if not form.validate_on_submit():
        raise form_error(form)
    require_recent_authentication(url_for("publipostage.mail_campaign", campaign_id=campaign.id))
    if not core.resume(campaign, current_scope()):
        raise SelectionError(_("Only a stopped campaign can be resumed."))
    return redirect(url_for("publipostage.mail_campaign", campaign_id=campaign.id), code=303)


def register(bp: Blueprint) -> None:
    bp.context_processor(mail_context)
    bp.add_url_rule("/mail", view_func=mail_confirm)
    bp.add_url_rule("/mail/preview", view_func=mail_preview)
    bp.add_url_rule("/mail/send", view_func=mail_send, methods=["POST"])
    bp.add_url_rule("/mail/sample", view_func=mail_sample, methods=["POST"])
    bp.add_url_rule("/mail/campaigns", view_func=mail_campaigns)
    bp.add_url_rule("/mail/campaigns/<campaign_id>", view_func=mail_campaign)
    bp.add_url_rule("/mail/campaigns/<campaign_id>/status", view_func=mail_campaign_status)
    bp.add_url_rule("/mail/campaigns/<campaign_id>/report.csv", view_func=mail_campaign_csv)
    bp.add_url_rule("/mail/campaigns/<campaign_id>/cancel", view_func=mail_campaign_cancel, methods=["POST"])
    bp.add_url_rule("/mail/campaigns/<campaign_id>/resume", view_func=mail_campaign_resume, methods=["POST"])
