"""The shipped DejaVu fonts, the resource policy, and text fitting.

Only the extension's asset folder and the configured logo file may be read by the
renderer: the policy below is also the security boundary (a name written as
``<img src="file:///etc/passwd">`` is escaped anyway, but nothing else could be read).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..i18n import resource_dir

ASSETS_DIR = Path(resource_dir("assets")).resolve()
FONTS_DIR = ASSETS_DIR / "fonts"

#: Family name -> (regular file, bold file), as the templates' ``@font-face`` use them.
FONT_FILES = {
    "PPSans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    "PPMono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
}

ELLIPSIS = "…"


def font_path(family: str, bold: bool = False) -> str:
    return str(FONTS_DIR / FONT_FILES[family][1 if bold else 0])


def allowed_roots(logo_path: str | None) -> tuple[str, ...]:
    """The only places the renderer may read: the assets folder and the logo file."""
    roots = [str(ASSETS_DIR)]
    if logo_path:
        roots.append(str(Path(logo_path).resolve()))
    return tuple(roots)


def resource_policy(roots: Iterable[str]) -> object:
    """No network, no working directory: local reads only inside ``roots``.

    Not ``ResourceAccessPolicy.server()``: its time and size limits would stop a
    large run, and the HTML is ours (user data is escaped by the templates).
    """
    from xhtml2pdf.config.resources import ResourceAccessPolicy

    return ResourceAccessPolicy(
        allow_remote=False,
        base_dir=None,
        extra_roots=tuple(Path(r) for r in roots),
    )


@functools.cache
def _metrics_font(family: str, bold: bool) -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    name = f"pp-metrics-{family}-{'bold' if bold else 'regular'}"
    pdfmetrics.registerFont(TTFont(name, font_path(family, bold)))
    return name


def text_width(text: str, size: float, *, family: str = "PPSans", bold: bool = False) -> float:
    """Width in points of ``text`` set in the shipped font."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    return float(stringWidth(text, _metrics_font(family, bold), size))


def mm(value: float) -> float:
    return value * 72.0 / 25.4


def fit_lines(
    text: str,
    width_mm: float,
    size: float,
    *,
    lines: int = 1,
    bold: bool = False,
    family: str = "PPSans",
) -> list[str]:
    """Wrap ``text`` into at most ``lines`` lines of ``width_mm``; the last one ends
    with an ellipsis when something was cut. Words longer than a line are split."""
    text = " ".join((text or "").split())
    if not text:
        return []
    limit = mm(width_mm) * 0.97  # a little slack for the renderer's rounding

    def width(candidate: str) -> float:
        return text_width(candidate, size, family=family, bold=bold)

    if width(text) <= limit:
        return [text]  # the common case: one measure
    space = width(" ")
    result: list[str] = []
    words = text.split(" ")
    current, current_width = "", 0.0
    index = 0
    while index < len(words):
        word = words[index]
        word_width = width(word)
        added = word_width if not current else current_width + space + word_width
        if added <= limit:
            current = f"{current} {word}" if current else word
            current_width = added
            index += 1
            continue
        if not current:
            # A single word wider than the line: cut it where it stops fitting.
            cut = _longest_prefix(word, lambda part: width(part) <= limit)
            current, words[index] = word[:cut], word[cut:]
        result.append(current)
        current, current_width = "", 0.0
        if len(result) == lines:
            break
    else:
        if current:
            result.append(current)
        return result
    # Something is left: end the last line with an ellipsis.
    last = result[-1]
    while last and width(last.rstrip() + ELLIPSIS) > limit:
        last = last[:-1]
    result[-1] = last.rstrip() + ELLIPSIS
    return result


def fit(text: str, width_mm: float, size: float, *, bold: bool = False, family: str = "PPSans") -> str:
    """One line of ``width_mm`` at most, with an ellipsis when cut."""
    found = fit_lines(text, width_mm, size, lines=1, bold=bold, family=family)
    return found[0] if found else ""


def _longest_prefix(word: str, fits: Callable[[str], bool]) -> int:
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(word[:middle]):
            low = middle
        else:
            high = middle - 1
    return max(low, 1)


def font_face_css() -> str:
    """``@font-face`` rules for the shipped fonts (absolute paths inside the assets)."""
    rules = []
    for family, files in FONT_FILES.items():
        for bold, filename in ((False, files[0]), (True, files[1])):
            path = (FONTS_DIR / filename).as_posix()
            weight = "bold" if bold else "normal"
            rules.append(
                f'@font-face {{ font-family: "{family}"; src: url("{path}"); font-weight: {weight}; }}'
            )
    return "\n".join(rules)


def logo_usable(path: str | None) -> bool:
    return bool(path) and os.path.isfile(str(path))
