"""Routes of "Générer en PDF": small runs come back in the request, large ones
become a background job with a progress page, visible to its creator only."""

from __future__ import annotations

import os
from typing import Any

from flask import (
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import force_locale
from flask_wtf import FlaskForm
from wtforms import BooleanField, RadioField
from wtforms.validators import InputRequired

from .. import audit
from ..access import PRINT, current_scope, has_capability, require
from ..blueprint import bp
from ..config import config_value
from ..csv_export import filename
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..i18n import ngettext
from ..recipients import iter_recipients
from ..selection import SelectionError, count
from ..views import check_size, current_selection
from . import background, render, worker
from .models import DONE, PdfJob


class PdfForm(FlaskForm):
    """The options under "Générer en PDF" (the selection is in the query string)."""

    template = RadioField(
        _l("PDF mail merge template"),
        choices=[(render.LETTER, _l("1 per page")), (render.CARDS, _l("8 per page"))],
        default=render.LETTER,
        # Said explicitly by the page's form: a bare POST generates nothing.
        validators=[InputRequired()],
    )
    postal = BooleanField(_l("Postal mail: the address shows in the window of a DL envelope (1 per page)"))
    signoff = BooleanField(_l("Add a sign-off sheet at the head of each class (sorted by class)"))

    def options(self) -> render.Options:
        template = self.template.data
        return render.Options(
            template=template,
            postal=bool(self.postal.data) and template == render.LETTER,
            signoff=bool(self.signoff.data),
        )


class JobForm(FlaskForm):
    """Cancel button (CSRF only)."""


@bp.context_processor
def pdf_context() -> dict[str, Any]:
    """Lazy helpers for ``_pdf_action.html``: nothing is queried unless it is used."""

    def recent() -> list[PdfJob]:
        return background.recent_jobs(current_scope())

    return {
        "pdf_form": PdfForm,
        "pdf_recent_jobs": recent,
        "pdf_postal_available": lambda: current_app.extensions["publipostage"].host.has_postal_address,
    }


def _form_error(form: PdfForm) -> SelectionError:
    if "csrf_token" in form.errors:
        return SelectionError(_("The form has expired: reload the page and try again."))
    if "template" in form.errors:
        return SelectionError(
            _("Invalid PDF template: choose “1 per page” or “8 per page”."), field="template"
        )
    return SelectionError(_("Invalid PDF options."))


@bp.route("/pdf", methods=["POST"])
@require(PRINT)
def generate_pdf() -> Any:
    selection = current_selection(extra_params=())
    form = PdfForm()
    if not form.validate_on_submit():
        raise _form_error(form)
    options = form.options()
    state = current_app.extensions["publipostage"]
    if options.postal and not state.host.has_postal_address:
        raise SelectionError(_("Postal letters need postal addresses, which this console does not provide."), field="postal")
    counters = count(selection)
    check_size(counters.selected)
    if counters.selected == 0:
        raise SelectionError(_("No account matches these filters: there is nothing to print."))
    if counters.selected > int(config_value("PDF_SYNC_LIMIT")):
        job = background.start(selection, options, counters.selected)
        return redirect(url_for("publipostage.pdf_job", job_id=job.id), code=303)

    scope = current_scope()
    with force_locale(config_value("PDF_LOCALE")):
        settings = render.Settings.from_config(scope.school_name)
        sheets, _missing = render.sheets_for_run(list(iter_recipients(selection)), options, settings, selection.group_by)
        html = render.render_document(sheets, options, settings)
    pdf = worker.render_bytes(html, settings.roots)
    audit.record("pdf", selection, counters.selected, template=options.template)
    state.db.session.commit()
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{filename(selection, "pdf")}"',
            "Cache-Control": "no-store",
        },
    )


def _owned_job(job_id: str) -> PdfJob:
    job = background.visible_job(job_id, current_scope())
    if job is None:
        abort(404)
    return job


def _time_left(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 120:
        return _("about %(minutes)d min left", minutes=round(seconds / 60))
    return _("about %(seconds)d s left", seconds=seconds)


def status_payload(job: PdfJob) -> dict[str, Any]:
    seconds_left = job.seconds_left()
    return {
        "pages_label": ngettext(
            "%(num)d page of %(total)d", "%(num)d pages of %(total)d", job.pages_done, total=job.pages_total
        ),
        "left_label": _time_left(seconds_left),
        "state": job.state,
        "pages_done": job.pages_done,
        "pages_total": job.pages_total,
        "percent": int(job.progress * 100),
        "seconds_left": seconds_left,
        "accounts": job.accounts,
        "download_url": url_for("publipostage.pdf_download", job_id=job.id)
        if job.state == DONE and job.file_path
        else None,
        "downloaded": job.downloaded_at is not None,
    }


@bp.route("/pdf/jobs")
@require(PRINT)
def pdf_jobs() -> str:
    jobs = background.recent_jobs(current_scope(), limit=50)
    return render_template("publipostage/pdf_jobs.html", jobs=jobs)


@bp.route("/pdf/jobs/<job_id>")
@require(PRINT)
def pdf_job(job_id: str) -> str:
    job = _owned_job(job_id)
    return render_template(
        "publipostage/pdf_job.html",
        job=job,
        status=status_payload(job),
        cancel_form=JobForm(),
        can_print=has_capability(PRINT),
    )


@bp.route("/pdf/jobs/<job_id>/status")
@require(PRINT)
def pdf_job_status(job_id: str) -> Response:
    response = jsonify(status_payload(_owned_job(job_id)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/pdf/jobs/<job_id>/cancel", methods=["POST"])
@require(PRINT)
def pdf_cancel(job_id: str) -> Any:
    job = _owned_job(job_id)
    form = JobForm()
    if not form.validate_on_submit():
        raise SelectionError(_("The form has expired: reload the page and try again."))
    background.cancel(job)
    if request.headers.get("X-Requested-With") == "fetch":
        return jsonify(status_payload(job))
    return redirect(url_for("publipostage.pdf_job", job_id=job.id), code=303)


@bp.route("/pdf/jobs/<job_id>/download")
@require(PRINT)
def pdf_download(job_id: str) -> Any:
    job = _owned_job(job_id)
    if job.state != DONE or not job.file_path:
        raise SelectionError(
            _("This file is no longer available: it is deleted after its download or after a while. Generate it again."),
            status=410,
        )
    path = job.file_path
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    job_id = job.id

    def stream() -> Any:
        complete = False
        try:
            with open(path, "rb") as handle:
                while block := handle.read(256 * 1024):
                    yield block
            complete = True
        finally:
            # Only a download that went to the end deletes the file.
            if complete:
                background.mark_downloaded(job_id, app)

    return Response(
        stream(),
        mimetype="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{job.file_name}"',
            "Content-Length": str(os.path.getsize(path)),
            "Cache-Control": "no-store",
        },
    )
