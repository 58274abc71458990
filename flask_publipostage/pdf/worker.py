"""HTML to PDF, in whatever process runs it (a pool worker, a Celery worker, the
web process for small runs). No Flask, no database here: only xhtml2pdf, or
for stamped letters reportlab's canvas and pypdf (:mod:`.stamp`)."""

from __future__ import annotations

import gc
import io
import os
from collections.abc import Iterable

import xhtml2pdf.pisa  # noqa: F401 (loaded with the extension: the first PDF after a start no longer waits a third of a second for it)

from .fonts import initial_font, register_stable_fonts, resource_policy
from .stamp import Plan, compose


class RenderError(RuntimeError):
    """xhtml2pdf reported errors; the message never holds document content."""


def render_bytes(html: str, roots: Iterable[str]) -> bytes:
    buffer = io.BytesIO()
    _render(html, buffer, roots)
    return buffer.getvalue()


def render_file(html: str | Plan, path: str, roots: Iterable[str], collect: bool = True) -> str:
    """Render to ``path`` (written whole or not at all); return the path.
    ``html``: a document for xhtml2pdf, or the plan of stamped letters.
    ``collect``: free the layout's objects at once (a chunk's worker); the
    driver's few marked pages leave that to the collector's own pace, as a full
    collection of its heap costs more than their layout."""
    partial = path + ".part"
    try:
        with open(partial, "wb") as out:
            if isinstance(html, Plan):
                compose(html, out)
            else:
                _render(html, out, roots, collect)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def warm_up() -> int:
    """Start a pool process ahead of its first chunk (loading this module loads
    the renderer)."""
    return os.getpid()


def _render(html: str, out: io.BufferedIOBase | io.BytesIO, roots: Iterable[str], collect: bool = True) -> None:
    from reportlab import rl_config
    from xhtml2pdf import pisa

    register_stable_fonts()
    # A chunk's objects all die together at the end: collecting during the
    # layout only costs time (about 10-15 %).
    enabled = gc.isenabled()
    gc.disable()
    # Each page starts with the canvas' initial font: Helvetica, never embedded
    # (preflights flag it), unless it is one of ours. Set for this call only.
    base_font = rl_config.canvas_basefontname
    rl_config.canvas_basefontname = initial_font()
    try:
        status = pisa.CreatePDF(html, dest=out, resource_policy=resource_policy(tuple(roots)))
    finally:
        rl_config.canvas_basefontname = base_font
        if enabled:
            gc.enable()
        if collect:
            gc.collect()
    if status.err:
        raise RenderError(f"xhtml2pdf reported {status.err} error(s)")
