"""The page (steps 1 and 2), its live preview fragment (each account with its
distribution history), the CSV export and the journal; and what every route of
the extension shares (the current selection, forms, French errors)."""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    jsonify,
    make_response,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_wtf import FlaskForm

from . import audit, csv_export, history, renewal
from .access import (
    PRINT,
    RENEW,
    TEACHER,
    VIEW,
    current_scope,
    has_capability,
    require,
    require_recent_authentication,
    step_up_url,
)
from .config import config_value
from .host import parse_key
from .i18n import gettext as _
from .models import local, school_midnight, utcnow, when
from .profiles import PROFILE_ORDER, Profile
from .recipients import Related, last_page, page_next_to
from .recipients import page as recipients_page
from .selection import (
    FILTERS,
    Selection,
    SelectionError,
    available_filters,
    check_size,
    count,
    count_sheets,
    describe,
    perimeter_schools,
    read_date,
)
from .state import state

MAX_PAGE = 100_000
#: Rows skipped from which page links use their cursor rather than OFFSET
#: (measured: below, OFFSET is as fast or faster).
KEYSET_FROM = 5_000
#: Parameters of the page besides the selection: the preview page (a number and
#: where it starts), the PDF template a preset link may preselect, and the PDF
#: option "a bundle for every class" (step 3 reads them; the selection ignores them).
PAGE_PARAMS = ("page", "after", "before", "last", "template", "every_class")
_TEMPLATE_NAME = re.compile(r"[a-z0-9_-]{1,20}")


def current_selection(extra_params: tuple[str, ...] = ("page",)) -> Selection:
    """The selection of the current request's query string, in the admin's scope."""
    return Selection.from_args(request.args, current_scope(), extra_params=extra_params)


class PostForm(FlaskForm):
    """A button that changes something: CSRF only (the selection is in the URL)."""


def form_error(form: FlaskForm) -> SelectionError:
    if "csrf_token" in form.errors:
        return SelectionError(_("The form has expired: reload the page and try again."))
    return SelectionError(_("Invalid form."))


def stalled_label(progress: Any) -> str:
    """What the admin reads when the process doing a run's work stopped."""
    if progress.stalled_since is None or progress.takeover_by is None:
        return ""
    return _(
        "No sign of life since %(since)s: the process doing this work stopped. "
        "Another one takes it over from where it was by %(by)s.",
        since=clock(progress.stalled_since),
        by=clock(progress.takeover_by),
    )


def time_left_label(seconds: int | None) -> str:
    """A run's time left, in words ("environ 12 min")."""
    if seconds is None:
        return ""
    if seconds < 60:
        return _("less than a minute")
    minutes = round(seconds / 60)
    if minutes < 60:
        return _("about %(n)d min", n=minutes)
    return _("about %(h)d h %(m)02d", h=minutes // 60, m=minutes % 60)


def clock(moment: datetime) -> str:
    return local(moment).strftime("%H:%M:%S")


def selection_error(error: SelectionError) -> tuple[Any, int]:
    if request.endpoint == "publipostage.preview_json":
        return jsonify({"error": error.message, "field": error.field}), error.status
    template = "publipostage/_error.html" if _wants_fragment() else "publipostage/error.html"
    return render_template(template, message=error.message), error.status


def _wants_fragment() -> bool:
    return request.headers.get("X-Requested-With") == "fetch" or request.endpoint == "publipostage.preview"


def filter_options() -> dict[str, Any]:
    """Profiles, schools and classes present in the admin's scope, for the filter form."""
    host = state().host
    scope = current_scope()
    session = state().session
    profile_stmt = sa.select(host.profile_column()).distinct()
    if scope.users is not None:
        profile_stmt = profile_stmt.where(scope.users)
    present = {host.canonical_profile(v) for v in session.execute(profile_stmt).scalars()}
    columns = [host.class_id, host.class_name_column()]
    if host.qualifies_classes:
        columns.append(host.school_of_class())
    class_stmt = sa.select(*columns).order_by(host.class_sort_key())
    if scope.classes is not None:
        class_stmt = class_stmt.where(scope.classes)
    rows = session.execute(class_stmt).all()
    related = Related(host, Selection(scope=scope))
    if host.qualifies_classes:
        related.school_names(session, {row[2] for row in rows})
    schools = perimeter_schools(scope)
    sort_choices = [c for c in FILTERS["sort"].choices if c[0] != "school" or len(schools) > 1]
    filters = available_filters(host)
    return {
        "profiles": [p for p in PROFILE_ORDER if p in present],
        "classes": [(str(row[0]), related.label(row[1], row[2] if len(row) > 2 else None)) for row in rows],
        "schools": [(str(key), name) for key, name in schools] if len(schools) > 1 else [],
        "sort_choices": sort_choices,
        "filters": filters,
        "defaults": {param: f.default for param, f in filters.items() if f.choices},
        "school_year_start": school_year_start(),
        "reminder_day": history.reminder_day(),
    }


def restrictions(selection: Selection) -> list[tuple[str, list[str], str, str]]:
    """``(parameter, values, banner, address without it)`` of each output's
    restriction in force."""
    found = []
    for param, value in selection.values.items():
        banner = FILTERS[param].banner
        if banner is not None:
            kept = {k: v for k, v in request.args.lists() if k != param and k not in PAGE_PARAMS[:4]}
            found.append((param, FILTERS[param].write(value), banner(selection, value), url_for("publipostage.index", **kept)))
    return found


def school_year_start(today: date | None = None) -> date:
    """1 September of the current school year, in the school's time zone."""
    today = today or local(utcnow()).date()
    return date(today.year if today.month >= 9 else today.year - 1, 9, 1)


def template_name(values: list[str]) -> str | None:
    """The PDF template one value names (a short name: the PDF form preselects it
    when it is one of its templates), or None."""
    if len(values) == 1 and _TEMPLATE_NAME.fullmatch(values[0]):
        return values[0]
    return None


def chosen_template() -> str | None:
    """The PDF template named in the URL (a preset link), or None; never an error."""
    return template_name(request.args.getlist("template"))


def every_class_chosen() -> bool:
    """The PDF option "a bundle for every class" is ticked (``every_class=y`` in the URL)."""
    return request.args.getlist("every_class") == ["y"]


def preview_context(selection: Selection, endpoint: str = "publipostage.index") -> dict[str, Any]:
    """Counters and one page. Page links carry the account next to them (``after``,
    ``before``) or ``last``: keyset pages, as fast deep in a territory as at the
    top; a bare ``page`` number (a hand-typed URL) uses OFFSET.

    Sorted by class, the sheets of a bundle for every class are counted for the
    PDF form: on the whole page (it works without the page's script), and in the
    live list only while the option is ticked (a territory's count costs about
    as much as its list)."""
    page_size = config_value("PAGE_SIZE")
    raw_page = request.args.get("page", "1").strip() or "1"
    if (
        len(request.args.getlist("page")) > 1
        or not (raw_page.isascii() and raw_page.isdigit())
        or len(raw_page) > 6
        or not 1 <= int(raw_page) <= MAX_PAGE
    ):
        raise SelectionError(_("Invalid page number."), field="page")
    cursor = _page_cursor()
    counters = count(selection)
    can_print = has_capability(PRINT)
    wanted = request.endpoint == "publipostage.index" or every_class_chosen()
    class_sheets = count_sheets(selection) if can_print and selection.by_class and wanted else None
    pages = max(1, math.ceil(counters.selected / page_size))
    number = min(int(raw_page), pages)
    rows: list[Any] | None = None
    if counters.selected == 0:
        rows = []
    elif (number - 1) * page_size < KEYSET_FROM:
        pass  # near the top, OFFSET costs less than finding the cursor's place
    elif cursor == ("last", None) and number == pages:
        rows = last_page(selection, counters.selected, page_size)
    elif cursor is not None and cursor[0] in ("after", "before"):
        rows = page_next_to(selection, cursor[1], page_size, before=cursor[0] == "before") or None
    if rows is None:
        rows = recipients_page(selection, number, page_size)
    template = chosen_template()
    query: dict[str, Any] = dict(selection.to_args().to_dict(flat=False))
    if template:
        query["template"] = template
    if every_class_chosen():
        query["every_class"] = "y"

    def page_url(n: int, **where: Any) -> str:
        return url_for(endpoint, **query, page=n, **where)

    can_print = has_capability(PRINT)
    # Codes show to those who may print them, once their authentication is recent.
    step_up = step_up_url(url_for("publipostage.index", **query)) if can_print else None

    links: dict[str, str] = {}
    if rows and number > 1:
        links["first"] = page_url(1)
        links["previous"] = page_url(1) if number == 2 else page_url(number - 1, before=rows[0].id)
    if rows and number < pages:
        links["next"] = page_url(number + 1, after=rows[-1].id)
        links["last"] = page_url(pages, last=1)
    return {
        "selection": selection,
        "counters": counters,
        "class_sheets": class_sheets,
        "rows": rows,
        "histories": history.for_accounts(selection, rows),
        "page": number,
        "pages": pages,
        "page_size": page_size,
        "first_row": (number - 1) * page_size + 1,
        "can_print": can_print,
        "can_renew": renewal.available() and can_print and has_capability(RENEW),
        "show_codes": can_print and step_up is None,
        "step_up_url": step_up,
        "several_schools": len(perimeter_schools(selection.scope)) > 1,
        "template": template,
        "every_class": every_class_chosen(),
        "page_url": page_url,
        "page_links": links,
    }


def _page_cursor() -> tuple[str, Any] | None:
    """``("after"|"before", account id)``, ``("last", None)`` or None; 400 if malformed."""
    given = [k for k in ("after", "before", "last") if k in request.args]
    if not given:
        return None
    key = given[0]
    values = request.args.getlist(key)
    if len(given) > 1 or len(values) != 1:
        raise SelectionError(_("Invalid page number."), field="page")
    if key == "last":
        if values[0] != "1":
            raise SelectionError(_("Invalid page number."), field="page")
        return ("last", None)
    value = parse_key(state().host.user_id, values[0])
    if value is None:
        raise SelectionError(_("Invalid page number."), field="page")
    return (key, value)


def _private(body: Any) -> Response:
    """Activation codes are on the page: keep it out of shared and disk caches."""
    response = make_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@require(VIEW)
def index() -> Response:
    selection = current_selection(PAGE_PARAMS)
    return _private(
        render_template(
            "publipostage/page.html",
            # The advice and the ready-made selections speak to this user.
            for_teacher=current_scope().audience == TEACHER,
            options=filter_options(),
            restrictions=restrictions(selection),
            profiles_enum=Profile,
            **preview_context(selection),
        )
    )


@require(VIEW)
def preview() -> Response:
    selection = current_selection(PAGE_PARAMS)
    return _private(render_template("publipostage/_preview.html", **preview_context(selection)))


@require(VIEW)
def preview_json() -> Response:
    """The preview as JSON, for scripts: the same selection, the same pages."""
    context = preview_context(current_selection(PAGE_PARAMS), "publipostage.preview_json")
    counters, show_codes = context["counters"], context["show_codes"]
    # The account states' keys exist when the host maps them.
    states = [name for name in STATE_KEYS if state().host.maps(name)]
    response = jsonify(
        {
            "counters": {
                "selected": counters.selected,
                "without_email": counters.without_email,
                "not_activated": counters.not_activated,
                **{key: getattr(counters, key) for name in states for key in STATE_KEYS[name][0]},
            },
            "page": context["page"],
            "pages": context["pages"],
            "links": context["page_links"],
            "accounts": [_account_json(r, show_codes, states, context["histories"][r.id]) for r in context["rows"]],
            # Set when the codes wait for the admin to authenticate again, there.
            "step_up_url": context["step_up_url"],
        }
    )
    return _private(response)


#: Optional field -> (its counters, its keys of an account) in ``/preview.json``.
STATE_KEYS = {
    "federated": (("federated",), ("federated",)),
    "code_valid_until": (("expired",), ("code_valid_until", "code_expired")),
    "blocked": (("blocked", "blocked_left_out"), ("blocked",)),
}


def _account_json(r: Any, show_codes: bool, states: list[str], past: history.History) -> dict[str, Any]:
    values = {
        "federated": r.federated,
        "code_valid_until": r.code_valid_until_day.isoformat() if r.code_valid_until_day else None,
        "code_expired": r.code_expired,
        "blocked": r.blocked,
    }
    return {
        "id": r.id,
        "login": r.login,
        "last_name": r.last_name,
        "first_name": r.first_name,
        "profile": r.profile.value if r.profile else None,
        "email": r.email,
        "activated": r.activated,
        # Shown to those who may print it, as on the page (never an expired one).
        "activation_code": r.activation_code if show_codes else None,
        "classes": list(r.classes),
        "children": [{"first_name": c.first_name, "last_name": c.last_name, "classes": list(c.classes)} for c in r.children],
        "created_on": r.created_on.isoformat() if r.created_on else None,
        "group": r.group,
        "school": r.school or None,
        **{key: values[key] for name in states for key in STATE_KEYS[name][1]},
        "distribution": {
            "summary": past.summary,
            "stale": past.stale or None,
            "history": [
                {"kind": e.kind, "state": e.state, "at": e.at.isoformat() + "Z", "distributed": e.distributed,
                 "label": e.label, "by": e.who, "bundle": e.bundle or None, "reason": e.reason or None}
                for e in past.events
            ],
        },
    }


def _check_same_site() -> None:
    """403 for a request another site made the admin's browser send.

    ``Sec-Fetch-Site`` is set by the browser itself (every current one): only
    ``same-origin`` (the page's link) and ``none`` (typed, a bookmark) pass; a
    sibling subdomain (``same-site``) is another site too. Without it (an older
    browser), an ``Origin`` must be this host's. A request carrying neither (a
    script with the admin's credentials) passes.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        allowed = fetch_site in ("same-origin", "none")
    else:
        origin = request.headers.get("Origin")
        allowed = origin is None or urlsplit(origin).netloc == request.host
    if not allowed:
        raise SelectionError(
            _(
                "The export can only be started from the page “Account mail merge”: "
                "open the page and use its link."
            ),
            status=403,
        )


@require(PRINT)
def export_csv() -> Response:
    """The selection as CSV. Its audit row says a file went out: not written for a
    HEAD (the headers alone), and the export cannot be started from another site
    (:func:`_check_same_site`)."""
    _check_same_site()
    selection = current_selection(extra_params=())
    require_recent_authentication(url_for("publipostage.index", **selection.to_args().to_dict(flat=False)))
    counters = count(selection)
    check_size(counters)
    filename = csv_export.filename(selection)
    headers = {"Content-Disposition": f"attachment; filename=\"{filename}\"", "Cache-Control": "no-store"}
    mimetype = "text/csv"  # Werkzeug adds "; charset=utf-8" to text types
    if request.method == "HEAD":
        return Response(mimetype=mimetype, headers=headers)
    run = csv_export.record(selection, filename, counters.selected)
    return Response(stream_with_context(csv_export.stream(selection, run)), mimetype=mimetype, headers=headers)


JOURNAL_PAGE = 50


@dataclass(frozen=True)
class JournalQuery:
    """The journal's own filters: an output, a first and a last day, a page."""

    output: str = ""
    since: date | None = None
    until: date | None = None
    page: int = 1

    @classmethod
    def from_args(cls) -> "JournalQuery":
        args = request.args
        for key in args:
            if key not in ("output", "since", "until", "page"):
                raise SelectionError(_("Unknown parameter “%(name)s”.", name=key[:40]))
        output = args.get("output", "")
        if output and output not in audit.ACTIONS:
            raise SelectionError(_("Invalid value “%(value)s” for the field “%(name)s”.", value=output[:40], name=_("Output")))
        days = {key: read_date(args[key], _("From") if key == "since" else _("Until"), key) if args.get(key) else None
                for key in ("since", "until")}
        raw_page = args.get("page", "1")
        if not (raw_page.isascii() and raw_page.isdigit()) or not 1 <= int(raw_page) <= MAX_PAGE:
            raise SelectionError(_("Invalid page number."), field="page")
        return cls(output, days["since"], days["until"], int(raw_page))

    def statement(self) -> sa.Select[Any]:
        """The rows, the days counted in the school's time zone (both inclusive)."""
        since = school_midnight(self.since) if self.since else None
        until = school_midnight(self.until + timedelta(days=1)) if self.until else None
        return audit.visible_entries(current_scope(), action=self.output or None, since=since, until=until)

    def args(self, **changes: Any) -> dict[str, Any]:
        found = {"output": self.output, "since": self.since and self.since.isoformat(),
                 "until": self.until and self.until.isoformat(), "page": self.page, **changes}
        return {k: v for k, v in found.items() if v and not (k == "page" and v == 1)}


def names_of(entries: Any) -> dict[str, dict[str, str]]:
    """Names of the classes and schools, and logins of the accounts, the journal's
    rows name (a query each), those of the admin's perimeter only: a row of
    another perimeter (a super admin's) may name classes of other schools, which
    stay ids."""
    host = state().host
    scope = current_scope()
    found: dict[str, dict[str, str]] = {}
    models = [
        ("class", host.class_id, host.class_name_column(), scope.classes),
        ("account", host.user_id, host.user_column("login"), scope.users),
    ]
    if host.has_schools:
        schools = None if scope.is_global else host.school_id.in_([key for key, _ in perimeter_schools(scope)])
        models.append(("school", host.school_id, host.school_name_column(), schools))
    for param, key_column, name, within in models:
        ids = {v for e in entries for v in e.selection_args.get(param, [])}
        keys = [k for k in (parse_key(key_column, v) for v in ids) if k is not None]
        if keys:
            stmt = sa.select(key_column, name).where(key_column.in_(keys))
            if within is not None:
                stmt = stmt.where(within)
            found[param] = {str(key): value for key, value in state().session.execute(stmt)}
    return found


def by_whom(entry: audit.AuditEntry, viewer: Any) -> str:
    """Who did it, marked when the row comes from another perimeter."""
    mark = entry.mark(viewer)
    return f"{entry.who} ({mark})" if mark else entry.who


@require(VIEW)
def audit_log() -> str:
    query = JournalQuery.from_args()
    session = state().session
    stmt = query.statement()
    total = session.execute(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    pages = max(1, math.ceil(total / JOURNAL_PAGE))
    entries = session.execute(stmt.limit(JOURNAL_PAGE).offset((min(query.page, pages) - 1) * JOURNAL_PAGE)).scalars().all()
    return render_template(
        "publipostage/audit.html",
        entries=entries,
        query=query,
        total=total,
        pages=pages,
        names=names_of(entries),
        describe=describe,
        outputs=audit.ACTIONS,
        viewer=current_scope(),
    )


@require(VIEW)
def audit_csv() -> Response:
    """The journal's rows, all of them (filters applied), as CSV."""
    query = JournalQuery.from_args()

    def rows() -> Any:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
        writer.writerow([_("Date"), _("By"), _("Output"), _("Selection"), _("Accounts"), _("Result")])
        viewer = current_scope()
        yield "\ufeff" + buffer.getvalue()
        result = state().session.execute(query.statement().execution_options(yield_per=500))
        for batch in result.scalars().partitions(500):
            names = names_of(batch)
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(
                [csv_export.safe_cell(v) for v in (when(e.created_at), by_whom(e, viewer), e.output,
                                                   describe(e.selection_args, names), str(e.count), e.outcome)]
                for e in batch
            )
            yield buffer.getvalue()

    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",  # Werkzeug adds "; charset=utf-8" to text types
        headers={"Content-Disposition": 'attachment; filename="journal_publipostage.csv"', "Cache-Control": "no-store"},
    )


def register(bp: Blueprint) -> None:
    bp.register_error_handler(SelectionError, selection_error)
    bp.add_url_rule("/", view_func=index)
    bp.add_url_rule("/preview", view_func=preview)
    bp.add_url_rule("/preview.json", view_func=preview_json)
    bp.add_url_rule("/export.csv", view_func=export_csv)
    bp.add_url_rule("/journal", view_func=audit_log)
    bp.add_url_rule("/journal.csv", view_func=audit_csv)
