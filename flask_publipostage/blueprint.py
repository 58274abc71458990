"""The blueprint every view module attaches its routes to."""

from __future__ import annotations

from flask import Blueprint

from .i18n import resource_dir

bp = Blueprint(
    "publipostage",
    __name__,
    template_folder=resource_dir("templates"),
    static_folder=resource_dir("assets"),
    static_url_path="/assets",
)

# Route modules register on import.
from . import audit_views, errors, views  # noqa: E402,F401
from .mail import views as mail_views  # noqa: E402,F401
from .pdf import views as pdf_views  # noqa: E402,F401
