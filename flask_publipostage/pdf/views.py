"""Routes of "Générer en PDF": a small PDF comes back in the request, a large one
(and a ZIP of one PDF per class) is prepared in the background with a progress
page; all are runs, visible to their creator only."""

from __future__ import annotations

import zipfile
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, RadioField
from wtforms.validators import InputRequired

from .. import renewal
from ..access import PRINT, RENEW, current_scope, has_capability, require, require_recent_authentication
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..i18n import ngettext
from ..runs import core, files
from ..runs.models import DONE, SKIPPED, Run
from ..selection import Selection, SelectionError, check_size, count
from ..state import state
from ..views import PostForm, current_selection, form_error, stalled_label, time_left_label
from . import check, pipeline, render
from .pipeline import KIND


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
    every_class = BooleanField(_l("A bundle per class: each account in each of its classes"))
    zip = BooleanField(_l("One PDF file per class, together in a ZIP file"))
    #: Renewal codes on the letters of activated accounts (offered when the host
    #: issues them and the admin holds ``renew``).
    renew = RadioField(
        _l("Renewal codes"),
        choices=[
            ("", _l("No renewal code")),
            (renewal.WITHOUT_EMAIL, _l("Generate a renewal code for the activated accounts without an email address")),
            (renewal.ACTIVATED, _l("Generate a renewal code for every selected activated account")),
        ],
        default="",
        validate_choice=False,
    )
    renew_expired = BooleanField(_l("Generate a new code for the accounts whose activation code has expired"))
    #: Sent by the button of the check page: print although some names show boxes.
    print_anyway = BooleanField()

    def options(self, selection: Selection) -> render.Options:
        """The options chosen; one that cannot apply is refused, never ignored."""
        options = render.Options(
            template=self.template.data,
            postal=bool(self.postal.data),
            signoff=bool(self.signoff.data),
            every_class=bool(self.every_class.data),
            zip=bool(self.zip.data),
            renew=self.renew.data or "",
            renew_expired=bool(self.renew_expired.data),
        )
        pipeline.check_options(selection, options, may_renew=lambda: has_capability(RENEW))
        return options


def pdf_context() -> dict[str, Any]:
    """Lazy helpers for ``_pdf_action.html``: nothing is queried unless it is used."""

    def recent() -> list[JobView]:
        files.purge()
        return [JobView(run) for run in state().session.execute(core.visible(KIND, current_scope()).limit(5)).scalars()]

    def form(template: str | None = None, every_class: bool = False) -> PdfForm:
        """The form, with the template a preset named, and a bundle for every
        class if the page's address says so, already chosen."""
        data: dict[str, Any] = {"every_class": every_class}
        if template in (render.LETTER, render.CARDS):
            data["template"] = template
        return PdfForm(data=data)

    return {
        "pdf_form": form,
        "pdf_recent_jobs": recent,
        "pdf_postal_available": lambda: state().host.has_postal_address,
        # Renewal codes: the host issues them, the admin may ask for them.
        "pdf_renew_available": lambda: renewal.available() and has_capability(RENEW),
        "pdf_expiry_known": lambda: state().host.maps("code_valid_until"),
        "pdf_view": JobView,
    }


class JobView:
    """A PDF run as its pages and its JSON status show it."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.progress = core.progress(run)
        counts = self.progress.counts
        self.options = render.Options.from_dict(run.options_dict)
        #: Letters or cards, one per item; accounts, once each (a bundle for every
        #: class prints some accounts several times).
        self.sheets = counts.total
        self.accounts = core.count_accounts([run.id])[run.id] if self.options.every_class else counts.total
        self.pages_total = run.pages if run.state == DONE and run.pages is not None else counts.weight_total
        self.pages_done = self.pages_total if run.state == DONE else counts.weight_done
        self.downloadable = files.downloadable(run)
        self.template = self.options.template
        #: The PDF files of a ZIP ready to download, by name.
        self.zip_files = _zip_names(run) if self.downloadable and self.options.zip else []
        #: Accounts left without a letter (their activation code had expired).
        self.skipped = counts[SKIPPED]
        self.renewal_failed = run.last_error == renewal.FAILED

    @property
    def renewed(self) -> int:
        """Accounts whose letter carries a renewal code issued for this file."""
        if not self.options.renews:
            return 0
        return core.count_items(self.run.id, condition=core.item_t.c.renewal_issued_at.is_not(None))

    def status(self) -> dict[str, Any]:
        run, progress = self.run, self.progress
        return {
            "pages_label": ngettext(
                "%(num)d page of %(total)d", "%(num)d pages of %(total)d", self.pages_done, total=self.pages_total
            ),
            "left_label": time_left_label(progress.seconds_left),
            "stalled_label": stalled_label(progress),
            "state": run.state,
            "pages_done": self.pages_done,
            "pages_total": self.pages_total,
            "percent": 100 if run.state == DONE else progress.percent,
            "seconds_left": progress.seconds_left,
            "accounts": self.accounts,
            "sheets": self.sheets,
            "download_url": url_for("publipostage.pdf_download", job_id=run.token) if self.downloadable else None,
            "downloaded": run.downloaded_at is not None,
        }


def _zip_names(run: Run) -> list[str]:
    """The names in a finished ZIP (its central directory only is read)."""
    try:
        with zipfile.ZipFile(str(run.file_path)) as archive:
            return archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return []


@require(PRINT)
def generate_pdf() -> Any:
    selection = current_selection(extra_params=())
    form = PdfForm()
    if not form.validate_on_submit():
        if "template" in form.errors and "csrf_token" not in form.errors:
            raise SelectionError(_("Invalid PDF template: choose “1 per page” or “8 per page”."), field="template")
        raise form_error(form)
    options = form.options(selection)
    # Back to the same selection and template, at the button, once authenticated again.
    require_recent_authentication(url_for("publipostage.index", **selection.to_args().to_dict(flat=False),
                                          template=options.template, _anchor="pp-pdf"))
    counters = count(selection)
    check_size(counters)
    if counters.selected == 0:
        raise SelectionError(_("No account matches these filters: there is nothing to print."))
    if not form.print_anyway.data:
        problems, total = check.unprintable(selection, render.Settings.from_config().typesetter)
        if total:
            return _check_page(form, selection, problems, total)
    run, inline = pipeline.launch(selection, options, counters.selected)
    if not inline:
        return redirect(url_for("publipostage.pdf_job", job_id=run.token), code=303)
    error = pipeline.failure(run)
    if error is not None:
        raise error
    return _download(run)


def _check_page(form: PdfForm, selection: Selection, problems: list[check.Unprintable], total: int) -> str:
    """Some names would print with boxes: say which, before printing, with the
    same form to post again (every option as sent, and ``print_anyway``)."""
    fields = [(k, v) for k, v in request.form.items(multi=True) if k not in ("csrf_token", "print_anyway")]
    return render_template(
        "publipostage/pdf_check.html",
        form=form,
        fields=fields,
        problems=problems,
        total=total,
        args=selection.to_args().to_dict(flat=False),
    )


def _owned(job_id: str) -> Run:
    return core.get_visible(KIND, job_id, current_scope())


@require(PRINT)
def pdf_jobs() -> str:
    files.purge()
    runs = list(state().session.execute(core.visible(KIND, current_scope()).limit(50)).scalars())
    return render_template("publipostage/pdf_jobs.html", jobs=[JobView(run) for run in runs])


@require(PRINT)
def pdf_job(job_id: str) -> str:
    view = JobView(_owned(job_id))
    return render_template(
        "publipostage/pdf_job.html", job=view, status=view.status(), cancel_form=PostForm(), can_print=has_capability(PRINT),
        renewal_failed_message=renewal.failed_message(),
    )


@require(PRINT)
def pdf_job_status(job_id: str) -> Response:
    response = jsonify(JobView(_owned(job_id)).status())
    response.headers["Cache-Control"] = "no-store"
    return response


@require(PRINT)
def pdf_cancel(job_id: str) -> Any:
    run = _owned(job_id)
    form = PostForm()
    if not form.validate_on_submit():
        raise form_error(form)
    core.cancel(run, current_scope())
    if request.headers.get("X-Requested-With") == "fetch":
        return jsonify(JobView(core.get(run.id) or run).status())
    return redirect(url_for("publipostage.pdf_job", job_id=run.token), code=303)


@require(PRINT)
def pdf_download(job_id: str) -> Any:
    run = _owned(job_id)
    require_recent_authentication(url_for("publipostage.pdf_job", job_id=run.token))
    return _download(run)


def _download(run: Run) -> Response:
    """The file, once: the download is claimed before the first byte."""
    path = files.claim_download(run, current_scope())
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return Response(
        files.stream(run.id, path, app),
        mimetype=files.media_type(run),
        headers={
            "Content-Disposition": f'attachment; filename="{run.file_name}"',
            "Content-Length": str(path.stat().st_size),
            "Cache-Control": "no-store",
        },
    )


def register(bp: Blueprint) -> None:
    bp.context_processor(pdf_context)
    bp.add_url_rule("/pdf", view_func=generate_pdf, methods=["POST"])
    bp.add_url_rule("/pdf/jobs", view_func=pdf_jobs)
    bp.add_url_rule("/pdf/jobs/<job_id>", view_func=pdf_job)
    bp.add_url_rule("/pdf/jobs/<job_id>/status", view_func=pdf_job_status)
    bp.add_url_rule("/pdf/jobs/<job_id>/cancel", view_func=pdf_cancel, methods=["POST"])
    bp.add_url_rule("/pdf/jobs/<job_id>/download", view_func=pdf_download)
