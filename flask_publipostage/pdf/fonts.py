"""The fonts of the PDF, the resource policy, and text fitting.

The shipped DejaVu fonts draw Latin, Greek, Cyrillic, Hebrew, Arabic... but no
Chinese, Japanese or Korean. So that a name prints as written, :class:`Typesetter`
first folds what no font draws to its compatibility form (NFKC: the fullwidth
``Ｆｕｌｌ`` becomes ``Full``), then sets what DejaVu lacks in the fallback fonts
(``PDF_FALLBACK_FONTS``, Debian's Droid Sans Fallback by default), as spans of
their own. What no font draws would still print as boxes:
:func:`Typesetter.missing` finds it, and the PDF form lists those accounts before
anything is printed (:mod:`.check`).

Only the extension's asset folder, the configured logo file and the fallback
font files may be read by the renderer: the policy below is also the security
boundary (a name written as ``<img src="file:///etc/passwd">`` is escaped anyway,
but nothing else could be read).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from ..i18n import resource_dir

log = logging.getLogger(__name__)

ASSETS_DIR = Path(resource_dir("assets")).resolve()
FONTS_DIR = ASSETS_DIR / "fonts"

#: Family name -> (regular file, bold file), as the templates' ``@font-face`` use them.
FONT_FILES = {
    "PPSans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    "PPMono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
}
#: CSS family of the fallback font ``i`` (the i-th usable file of ``PDF_FALLBACK_FONTS``).
FALLBACK_FAMILY = "PPFallback{}"

ELLIPSIS = "…"
#: A little slack for the renderer's rounding.
SLACK = 0.97


def font_path(family: str, bold: bool = False) -> str:
    return str(FONTS_DIR / FONT_FILES[family][1 if bold else 0])


def fallback_fonts(setting: str | Sequence[str] | None) -> tuple[str, ...]:
    """The usable files of ``PDF_FALLBACK_FONTS`` (a path or a list of paths):
    the TrueType files that exist, resolved, in the given order."""
    if not setting:
        return ()
    paths = [setting] if isinstance(setting, (str, os.PathLike)) else list(setting)
    found: list[str] = []
    for raw in paths:
        path = Path(raw).resolve()
        if path.is_file() and path.suffix.lower() == ".ttf" and str(path) not in found:
            found.append(str(path))
    return tuple(found)


def allowed_roots(logo_path: str | None, fallbacks: Iterable[str] = ()) -> tuple[str, ...]:
    """The only places the renderer may read: the assets folder, the logo file and
    the fallback font files (each file alone, never its folder)."""
    roots = [str(ASSETS_DIR)]
    if logo_path:
        roots.append(str(Path(logo_path).resolve()))
    roots += [str(Path(path).resolve()) for path in fallbacks]
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


def font_face_css(fallbacks: Iterable[str] = ()) -> str:
    """``@font-face`` rules for the shipped fonts and the given fallback files
    (absolute paths; a fallback has no bold: its one file serves both weights)."""
    rules = []
    for family, files in FONT_FILES.items():
        for bold, filename in ((False, files[0]), (True, files[1])):
            rules.append(_font_face(family, (FONTS_DIR / filename).as_posix(), bold))
    for index, path in enumerate(fallbacks):
        for bold in (False, True):
            rules.append(_font_face(FALLBACK_FAMILY.format(index), Path(path).as_posix(), bold))
    return "\n".join(rules)


def _font_face(family: str, path: str, bold: bool) -> str:
    weight = "bold" if bold else "normal"
    return f'@font-face {{ font-family: "{family}"; src: url("{path}"); font-weight: {weight}; }}'


def fallbacks_used(html: str, fallbacks: Sequence[str]) -> list[str]:
    """The fallback files a rendered document sets text in. Only those are
    declared: a declared font is loaded (0.3 s for Droid Sans Fallback) even unused."""
    return [path for index, path in enumerate(fallbacks) if _span_style(FALLBACK_FAMILY.format(index)) in html]


def logo_usable(path: str | None) -> bool:
    return bool(path) and os.path.isfile(str(path))


def mm(value: float) -> float:
    return value * 72.0 / 25.4


# -- the fonts as reportlab reads them -------------------------------------------------


@dataclass(frozen=True)
class Face:
    """One font file: its CSS family and weight, and where it is."""

    family: str
    bold: bool
    path: str
    fallback: bool = False

    @property
    def cmap(self) -> Mapping[int, int]:
        return _loaded(self.path)[1]

    @property
    def metrics(self) -> str:
        return _loaded(self.path)[0]

    def draws(self, char: str) -> bool:
        return ord(char) in self.cmap


@functools.cache
def _loaded(path: str) -> tuple[str, Mapping[int, int]]:
    """A font registered for measures (reportlab), and its character map. A
    fallback file reportlab cannot read (PostScript outlines) draws nothing.

    reportlab keeps one font object per face: the first registered serves every
    later name of it, xhtml2pdf's included. A shipped font is registered here
    first (:func:`register_stable_fonts`), as a :func:`stable_font_class`."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    name = "pp-metrics-" + hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]
    font_class = stable_font_class() if Path(path).parent == FONTS_DIR else TTFont
    try:
        font = font_class(name, path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one case
        log.warning("publipostage: the font %s cannot be used (%s)", path, exc)
        return _loaded(font_path("PPSans"))[0], {}
    pdfmetrics.registerFont(font)
    return name, font.face.charToGlyph


def _shipped(family: str, bold: bool) -> Face:
    return Face(family, bold, font_path(family, bold))


def _span_style(family: str, weight: str | None = None) -> str:
    return f"font-family: {family}" + (f"; font-weight: {weight}" if weight else "")


def _ignorable(char: str) -> bool:
    """Invisible characters (format controls, variation selectors): dropped when
    no font has them, rather than printed as boxes."""
    return unicodedata.category(char) in ("Cf", "Cc") or 0xFE00 <= ord(char) <= 0xFE0F or 0xE0100 <= ord(char) <= 0xE01EF


# -- the typesetter ------------------------------------------------------------------------


class Typesetter:
    """The shipped DejaVu fonts, then the fallback fonts for what DejaVu lacks:
    what a text becomes (:meth:`printable`), how wide it is, how it wraps, and its
    HTML (fallback runs in spans of their own). One per set of fallback files
    (:func:`typesetter`); the fallback files are read at the first character
    DejaVu lacks."""

    def __init__(self, fallbacks: Sequence[str] = ()) -> None:
        self.fallbacks = tuple(fallbacks)
        self._faces = [Face(FALLBACK_FAMILY.format(i), False, path, fallback=True) for i, path in enumerate(self.fallbacks)]
        self._chains: dict[tuple[str, bool], tuple[Face, ...]] = {}
        #: Per chain, each character seen -> the index of the first face drawing it (-1: none).
        self._seen: dict[tuple[str, bool], dict[str, int]] = {}
        self._own: dict[tuple[str, bool, str], frozenset[str]] = {}

    # -- which font draws what -----------------------------------------------------------

    def chain(self, family: str, bold: bool) -> tuple[Face, ...]:
        """The fonts tried in order for text set in ``family``: the family, its other
        weight, DejaVu Sans (for the mono family), then the fallbacks."""
        key = (family, bold)
        if key not in self._chains:
            faces = [_shipped(family, bold), _shipped(family, not bold)]
            if family != "PPSans":
                faces += [_shipped("PPSans", bold), _shipped("PPSans", not bold)]
            self._chains[key] = (*faces, *self._faces)
        return self._chains[key]

    def _face_index(self, char: str, family: str = "PPSans", bold: bool = False) -> int:
        """Index in :meth:`chain` of the first font drawing ``char``, -1 for none."""
        seen = self._seen.setdefault((family, bold), {})
        found = seen.get(char)
        if found is None:
            found = next((i for i, face in enumerate(self.chain(family, bold)) if face.draws(char)), -1)
            seen[char] = found
        return found

    @functools.cached_property
    def _shipped_chars(self) -> frozenset[str]:
        """What DejaVu Sans draws (regular or bold): most texts are made of nothing else."""
        return frozenset(chr(c) for face in self.chain("PPSans", False)[:2] for c in face.cmap)

    def _own_chars(self, family: str, bold: bool) -> frozenset[str]:
        key = (family, bold, "own")
        found = self._own.get(key)
        if found is None:
            found = self._own[key] = frozenset(chr(c) for c in self.chain(family, bold)[0].cmap)
        return found

    def _shipped_draws(self, char: str) -> bool:
        return 0 <= self._face_index(char) < 2  # DejaVu Sans, regular or bold

    def _any_draws(self, char: str) -> bool:
        return self._face_index(char) >= 0

    def printable(self, text: str) -> str:
        """``text`` as it will print: composed (NFC), each character DejaVu lacks
        replaced by its compatibility form when a font draws that (NFKC), invisible
        controls no font has dropped. What stays undrawable is :meth:`missing`."""
        if text.isascii():
            return text
        text = unicodedata.normalize("NFC", text)
        if self._shipped_chars.issuperset(text):
            return text
        result = []
        for char in text:
            if self._shipped_draws(char):
                result.append(char)
                continue
            folded = unicodedata.normalize("NFKC", char)
            if folded != char and all(self._shipped_draws(c) for c in folded):
                result.append(folded)  # "Ｆ" -> "F": DejaVu draws it
            elif any(face.draws(char) for face in self._faces):
                result.append(char)
            elif folded != char and all(self._any_draws(c) for c in folded):
                result.append(folded)
            elif not _ignorable(char):
                result.append(char)
        return "".join(result)

    def missing(self, text: str) -> list[str]:
        """The characters of ``text`` that no font draws (printed as boxes), once each."""
        printed = self.printable(text)
        if printed.isascii():
            return []
        return list(dict.fromkeys(c for c in printed if not c.isspace() and not self._any_draws(c)))

    def runs(self, text: str, family: str = "PPSans", bold: bool = False) -> list[tuple[Face, str]]:
        """``text`` cut into runs of one font each (undrawable characters stay in
        the family's own font); spaces and combining marks follow their run."""
        chain = self.chain(family, bold)
        if not text:
            return []
        if text.isascii() or self._own_chars(family, bold).issuperset(text):
            return [(chain[0], text)]  # the family draws it all: the common case
        indexes = [max(0, self._face_index(char, family, bold)) for char in text]
        if not any(indexes):
            return [(chain[0], text)]
        runs: list[tuple[Face, str]] = []
        for char, index in zip(text, indexes):
            face = chain[index]
            if runs and face != runs[-1][0] and (char.isspace() or unicodedata.combining(char)):
                if runs[-1][0].draws(char):
                    face = runs[-1][0]  # a space or an accent follows its run
            if runs and runs[-1][0] == face:
                runs[-1] = (face, runs[-1][1] + char)
            else:
                runs.append((face, char))
        return runs

    def width(self, text: str, size: float, *, family: str = "PPSans", bold: bool = False) -> float:
        """Width in points of ``text``, each run in its font."""
        from reportlab.pdfbase.pdfmetrics import stringWidth

        return float(sum(stringWidth(run, face.metrics, size) for face, run in self.runs(text, family, bold)))

    def html(self, text: str, *, family: str = "PPSans", bold: bool = False) -> str:
        """``text`` for a template: as is when the family draws it all (the template
        escapes it), else escaped HTML with each run of another font in a span."""
        runs = self.runs(text, family, bold)
        own = self.chain(family, bold)[0]
        if all(face == own for face, _run in runs):
            return text
        parts = []
        for face, run in runs:
            if face == own:
                parts.append(escape(run))
            elif face.fallback:
                parts.append(Markup('<span style="{}">{}</span>').format(_span_style(face.family), run))
            else:
                weight = None if face.bold == bold else ("bold" if face.bold else "normal")
                parts.append(Markup('<span style="{}">{}</span>').format(_span_style(face.family, weight), run))
        return Markup("").join(parts)

    # -- fitting ------------------------------------------------------------------------------

    def fit_lines(
        self,
        text: str,
        width_mm: float,
        size: float,
        *,
        lines: int | None = 1,
        bold: bool = False,
        family: str = "PPSans",
    ) -> list[str]:
        """``text`` as printed (:meth:`printable`) wrapped into lines of ``width_mm``,
        as HTML (:meth:`html`). With ``lines``, at most that many, the last one
        ending with an ellipsis when something was cut; ``None``: as many as it
        takes, nothing cut. Words longer than a line are split."""
        found = self.wrap(self.printable(text), width_mm, size, lines=lines, bold=bold, family=family)
        return [self.html(line, family=family, bold=bold) for line in found]

    def fit(self, text: str, width_mm: float, size: float, *, bold: bool = False, family: str = "PPSans") -> str:
        """One line of ``width_mm`` at most, with an ellipsis when cut."""
        found = self.fit_lines(text, width_mm, size, lines=1, bold=bold, family=family)
        return found[0] if found else ""

    def fit_block(
        self,
        text: str,
        width_mm: float,
        sizes: Sequence[float],
        *,
        lines: int,
        most: int,
        bold: bool = False,
        family: str = "PPSans",
    ) -> tuple[float, list[str]]:
        """Set ``text`` whole: the first of ``sizes`` at which it takes ``lines``
        lines or fewer, else the last size on as many lines as it takes. Only
        beyond ``most`` lines (hundreds of characters) is it cut. Returns the size
        and the lines."""
        printed = self.printable(text)
        for size in sizes[:-1]:
            found = self.wrap(printed, width_mm, size, lines=None, bold=bold, family=family)
            if len(found) <= lines:
                break
        else:
            size = sizes[-1]
            found = self.wrap(printed, width_mm, size, lines=most, bold=bold, family=family)
        return size, [self.html(line, family=family, bold=bold) for line in found]

    def wrap(
        self,
        text: str,
        width_mm: float,
        size: float,
        *,
        lines: int | None = 1,
        bold: bool = False,
        family: str = "PPSans",
    ) -> list[str]:
        """The plain lines of :meth:`fit_lines` (``text`` already printable)."""
        text = " ".join((text or "").split())
        if not text:
            return []
        limit = mm(width_mm) * SLACK

        def width(candidate: str) -> float:
            return self.width(candidate, size, family=family, bold=bold)

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
                # A single word wider than the line: cut it where it stops fitting,
                # at a separator when there is one.
                cut = _longest_prefix(word, lambda part: width(part) <= limit)
                cut = _at_separator(word, cut, before=family == "PPMono")
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


@functools.cache
def typesetter(fallbacks: tuple[str, ...] = ()) -> Typesetter:
    """The typesetter of a set of fallback files (one per process)."""
    return Typesetter(fallbacks)


#: Where a word too long for a line is best cut: compound names after their hyphen
#: ("Marie-" / "Chantal"); logins before a separator, which then starts the next
#: line (".de-la-tour"), so that no one takes it for a hyphenation.
SEPARATORS = frozenset("-‐.’'_@/")


def _at_separator(word: str, cut: int, *, before: bool) -> int:
    """``cut`` moved back to the last separator of ``word[:cut]`` (not too far back)."""
    if cut >= len(word):
        return cut
    for position in range(cut, max(1, cut // 3), -1):
        if (word[position] if before else word[position - 1]) in SEPARATORS:
            return position
    return cut


def _longest_prefix(word: str, fits: Callable[[str], bool]) -> int:
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(word[:middle]):
            low = middle
        else:
            high = middle - 1
    return max(low, 1)


# -- the same subsets in every chunk -------------------------------------------------------

#: Characters given the same codes in every document, before its text: Latin-1,
#: Latin Extended-A (the names of a French school: Zoé, Łukasz, Şükrü...) and the
#: typography of the letters. Every chunk of a large PDF then carries the same
#: first subsets of each font, byte for byte, and the merge keeps one copy of
#: them (:mod:`.merge`); only a chunk with rarer characters adds a subset of its own.
STABLE_CHARACTERS = (
    "".join(chr(code) for code in range(0xA1, 0x180))
    + "ƒˆ˜–—‘’‚“”„†‡•…‰‹›€™−"
)


@functools.cache
def stable_font_class() -> type:
    """reportlab's ``TTFont``, whose every document starts with
    :data:`STABLE_CHARACTERS` assigned (reportlab gives codes in order of first
    use, so two chunks with different names would get different subsets)."""
    from reportlab.pdfbase.ttfonts import TTFont

    class StableSubsetFont(TTFont):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # The same subsets in chunk after chunk: each font program is made once
            # a process (a third of the time of saving a chunk of stamped letters).
            face = self.face
            made = functools.lru_cache(maxsize=32)(lambda codes: type(face).makeSubset(face, list(codes)))
            face.makeSubset = lambda subset: made(tuple(subset))

        def splitString(self, text: str, doc: object, encoding: str = "utf-8") -> list[tuple[int, bytes]]:
            if doc not in self.state:
                super().splitString(STABLE_CHARACTERS, doc)
            return super().splitString(text, doc, encoding)  # type: ignore[no-any-return]

    return StableSubsetFont


def register_stable_fonts() -> None:
    """Register the shipped fonts (once) before xhtml2pdf does: its
    ``@font-face`` fonts are then these (reportlab keeps the first font object
    of a face)."""
    for files in FONT_FILES.values():
        for filename in files:
            _loaded(str(FONTS_DIR / filename))


def initial_font() -> str:
    """A shipped font for reportlab's canvas to start each page with, instead of
    Helvetica: a standard font the PDF would select without embedding it."""
    return _loaded(font_path("PPSans"))[0]
