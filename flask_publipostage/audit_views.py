"""The audit trail page: every PDF, CSV and campaign in the admin's perimeter."""

from __future__ import annotations

from flask import current_app, render_template

from .access import VIEW, current_scope, require
from .audit import visible_entries
from .blueprint import bp


@bp.route("/journal")
@require(VIEW)
def audit_log() -> str:
    session = current_app.extensions["publipostage"].db.session
    entries = session.execute(visible_entries(current_scope())).scalars().all()
    return render_template("publipostage/audit.html", entries=entries)
