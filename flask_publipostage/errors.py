"""French error pages for the extension's routes (the host's own pages stay its own)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .i18n import lazy_gettext as _l

MESSAGES: dict[int, Any] = {
    400: _l("The request is invalid."),
    401: _l("Please log in to use this page."),
    403: _l("You are not allowed to do this."),
    404: _l("This item does not exist or is no longer available."),
    405: _l("This action is not allowed here."),
    413: _l("The request is too large."),
}
CSRF_MESSAGE = _l("The form has expired or does not come from this page: reload the page and try again.")


def french_message(error: HTTPException) -> str:
    if isinstance(error, CSRFError):
        return str(CSRF_MESSAGE)
    return str(MESSAGES.get(error.code or 400, MESSAGES[400]))


def http_error(error: HTTPException) -> Any:
    status = error.code or 500
    if error.response is not None or status >= 500:
        return error  # a redirect to the host's login page, or the host's own handling
    if request.endpoint == "publipostage.preview_json":
        return jsonify({"error": french_message(error), "field": None}), status
    fragment = request.headers.get("X-Requested-With") == "fetch"
    template = "publipostage/_error.html" if fragment else "publipostage/error.html"
    return render_template(template, message=french_message(error)), status


def register(bp: Blueprint) -> None:
    bp.register_error_handler(HTTPException, http_error)
