"""The page (steps 1 and 2), its live preview fragment and the CSV export."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from flask import Response, current_app, render_template, request, stream_with_context, url_for

from . import audit, csv_export
from .access import PRINT, VIEW, current_scope, has_capability, require
from .blueprint import bp
from .config import config_value
from .i18n import gettext as _
from .profiles import PROFILE_ORDER, Profile
from .recipients import page as recipients_page
from .sql import fold_for_sort
from .selection import (
    ACTIVATION_CHOICES,
    EMAIL_CHOICES,
    LOCAL_ADMIN_CHOICES,
    SORT_CHOICES,
    Selection,
    SelectionError,
    count,
)

MAX_PAGE = 100_000


def current_selection(extra_params: tuple[str, ...] = ("page",)) -> Selection:
    """The selection of the current request's query string, in the admin's scope."""
    return Selection.from_args(request.args, current_scope(), extra_params=extra_params)


def check_size(counters_selected: int) -> None:
    limit = config_value("MAX_SELECTION")
    if counters_selected > limit:
        raise SelectionError(
            _(
                "This selection holds %(count)d accounts, more than the %(max)d allowed "
                "at once. Narrow it with the filters (a class, a profile).",
                count=counters_selected,
                max=limit,
            )
        )


@bp.errorhandler(SelectionError)
def selection_error(error: SelectionError) -> tuple[str, int]:
    template = "publipostage/_error.html" if _wants_fragment() else "publipostage/error.html"
    return render_template(template, message=error.message), error.status


def _wants_fragment() -> bool:
    return request.headers.get("X-Requested-With") == "fetch" or request.endpoint == "publipostage.preview"


def filter_options() -> dict[str, Any]:
    """Profiles and classes present in the admin's scope, for the filter form."""
    state = current_app.extensions["publipostage"]
    host = state.host
    scope = current_scope()
    session = state.db.session
    profile_stmt = sa.select(host.profile_column()).distinct()
    if scope.users is not None:
        profile_stmt = profile_stmt.where(scope.users)
    present = {host.canonical_profile(v) for v in session.execute(profile_stmt).scalars()}
    class_stmt = sa.select(host.class_id, host.class_name_column())
    if scope.classes is not None:
        class_stmt = class_stmt.where(scope.classes)
    classes = sorted(session.execute(class_stmt).all(), key=lambda r: fold_for_sort(r[1]) or "")
    return {
        "profiles": [p for p in PROFILE_ORDER if p in present],
        "classes": [(str(cid), name) for cid, name in classes],
        "activation_choices": ACTIVATION_CHOICES,
        "email_choices": EMAIL_CHOICES,
        "local_admin_choices": LOCAL_ADMIN_CHOICES,
        "sort_choices": SORT_CHOICES,
    }


def preview_context(selection: Selection) -> dict[str, Any]:
    page_size = config_value("PAGE_SIZE")
    raw_page = request.args.get("page", "1")
    if len(request.args.getlist("page")) > 1 or not raw_page.isdigit() or not 1 <= int(raw_page) <= MAX_PAGE:
        raise SelectionError(_("Invalid page number."), field="page")
    counters = count(selection)
    pages = max(1, math.ceil(counters.selected / page_size))
    number = min(int(raw_page), pages)
    rows = recipients_page(selection, number, page_size)
    return {
        "selection": selection,
        "counters": counters,
        "rows": rows,
        "page": number,
        "pages": pages,
        "page_size": page_size,
        "can_print": has_capability(PRINT),
        "page_url": lambda n: url_for(
            "publipostage.index", **selection.to_args().to_dict(flat=False), page=n
        ),
    }


@bp.route("/")
@require(VIEW)
def index() -> str:
    selection = current_selection()
    return render_template(
        "publipostage/page.html",
        options=filter_options(),
        profiles_enum=Profile,
        **preview_context(selection),
    )


@bp.route("/preview")
@require(VIEW)
def preview() -> str:
    selection = current_selection()
    return render_template("publipostage/_preview.html", **preview_context(selection))


@bp.route("/export.csv")
@require(PRINT)
def export_csv() -> Response:
    selection = current_selection(extra_params=())
    counters = count(selection)
    check_size(counters.selected)
    audit.record("csv", selection, counters.selected, template="csv")
    current_app.extensions["publipostage"].db.session.commit()
    filename = csv_export.filename(selection)
    return Response(
        stream_with_context(csv_export.stream(selection)),
        mimetype="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f"attachment; filename=\"{filename}\"",
            "Cache-Control": "no-store",
        },
    )
