"""Debian tools some tests run (dovecot, qpdf, pdffonts).

Where one is absent its tests skip with the reason, except when
``PUBLIPOSTAGE_REQUIRE_TOOLS`` is set (CI): then they fail, so a missing tool can
never pass unnoticed.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    """The path of the program ``name`` (searched in PATH and /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    reason = f"{name} not found (Debian package '{package}')"
    if os.environ.get("PUBLIPOSTAGE_REQUIRE_TOOLS"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
