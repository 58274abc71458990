"""Classes in school order: TPS … CM2, 6e … 3e, 2de … Tle, then the other names.

A school hands out its bundles level by level, so every list of classes (the
filter form, a person's classes, the class sort, the PDF's bundles) follows the
levels rather than the alphabet, where "CE1" comes before "CP" and "3e" before
"6e". A class name is recognised by its start, in the usual spellings ("6ème B",
"6e2", "6EME", "6°A", "Sixième", "1ère S", "2nde", "Terminale", "Petite
section", "CM1-CM2": a double-level class ranks at its first level); the other
names (ULIS, CLIS, "Atelier théâtre") come after the levels. Inside a level the
rest of the name follows in natural order: "6e B" < "6e C", "CM1 2" < "CM1 10".

The order is one text compared byte-wise, computed in SQL: :class:`school_order`
gives the level and the rest of the name, and :meth:`~.host.HostModels.class_sort_key`
puts the host's own order (``class_order``: :class:`host_rank` of an integer,
:func:`text_rank` of a text) before it and the class's id after it. SQLite gets the Python functions of this module (registered
by ``init_app``, like the name fold); PostgreSQL gets plain SQL, so the extension
never creates a function in the host's database. Both spell the same rule from
:data:`LEVELS`, and the tests compare them on every spelling.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from .sql import fold_for_sort, french_fold, name_key

#: A level's short name, then its spellings as a regular expression over the
#: folded name (lower case, accents dropped), in school order. The expressions
#: use only what Python's ``re`` and PostgreSQL's regular expressions read alike:
#: where several spellings may start a name, the longest comes first (Python takes
#: the first that matches, PostgreSQL the longest), and a spelling ends where no
#: letter (or no digit, after a number) follows.
LEVELS: tuple[tuple[str, str], ...] = (
    ("TPS", r"(?:tps|(?:toute|tres)[ -]+petite[ -]+section)(?![a-z])"),
    ("PS", r"(?:ps|petite[ -]+section)(?![a-z])"),
    ("MS", r"(?:ms|moyenne[ -]+section)(?![a-z])"),
    ("GS", r"(?:gs|grande[ -]+section)(?![a-z])"),
    ("CP", r"cp(?![a-z])"),
    ("CE1", r"ce[ -]*1(?![0-9])"),
    ("CE2", r"ce[ -]*2(?![0-9])"),
    ("CM1", r"cm[ -]*1(?![0-9])"),
    ("CM2", r"cm[ -]*2(?![0-9])"),
    ("6e", r"6(?![0-9])(?: *(?:ieme|eme|em|e)(?![a-z])|°)?|sixieme(?![a-z])"),
    ("5e", r"5(?![0-9])(?: *(?:ieme|eme|em|e)(?![a-z])|°)?|cinquieme(?![a-z])"),
    ("4e", r"4(?![0-9])(?: *(?:ieme|eme|em|e)(?![a-z])|°)?|quatrieme(?![a-z])"),
    ("3e", r"3(?![0-9])(?: *(?:ieme|eme|em|e)(?![a-z])|°)?|troisieme(?![a-z])"),
    ("2de", r"2(?![0-9])(?: *(?:nde|nd|de|eme|e)(?![a-z])|°)?|seconde(?![a-z])"),
    ("1re", r"1(?![0-9])(?: *(?:ere|er|re|e)(?![a-z])|°)?|premiere(?![a-z])"),
    ("Tle", r"(?:terminale|term|tale|tle)(?![a-z])"),
)
#: The rank of a name that is no level: after every level.
OTHER_RANK = len(LEVELS) + 1
#: One expression for every level: group 1 is the level's spelling, group 1 + n
#: is set when it is the n-th level.
LEVEL_PATTERN = "^(" + "|".join(f"({spelling})" for _short, spelling in LEVELS) + ")"
_LEVEL_RE = re.compile(LEVEL_PATTERN)
#: What separates a level from the rest of the name ("CM1-CM2", "6e 2", "CP / A").
SEPARATORS = " -_./,:;"
#: Natural order: each run of digits becomes its length (one character) then the
#: digits without their leading zeros, so "2" < "10" byte by byte.
_DIGITS = re.compile(r"[0-9]+")
#: The rest of a name kept in the key (characters): the whole key fits the run
#: items' ``group_key`` (400) with the host's order and the class's id.
REST_LENGTH = 250
#: Ends the name's part of the key: it sorts before any character of a name, so
#: the class's id after it only parts classes of the same name.
END = "\x01"


def _natural(text: str) -> str:
    def number(match: re.Match[str]) -> str:
        digits = match[0].lstrip("0")
        return chr(48 + len(digits)) + digits

    return _DIGITS.sub(number, text)


@functools.lru_cache(maxsize=8192)
def school_order_text(name: str | None) -> str:
    """The level (two digits) and the rest of the name in natural order, then
    :data:`END`: what :class:`school_order` gives in SQL (SQLite calls it)."""
    folded = fold_for_sort(name) or ""
    match = _LEVEL_RE.match(folded)
    if match is None:
        rank, rest = OTHER_RANK, folded
    else:
        rank = next(i for i in range(2, len(LEVELS) + 2) if match[i] is not None) - 1
        rest = folded[len(match[1]) :]
    return f"{rank:02d}{_natural(rest.lstrip(SEPARATORS))[:REST_LENGTH]}{END}"


def rank_text(value: Any) -> str:
    """An integer as a text in the same order byte by byte, NULL last: the length
    of its digits then the digits ("1" + "7" < "2" + "10"); a negative number
    "-", then 20 less its length and its digits' complements to 9 (SQLite calls
    it; :class:`host_rank` is the same in SQL)."""
    if value is None:
        return "~"
    number = int(value)
    digits = str(abs(number))
    if number >= 0:
        return chr(48 + len(digits)) + digits
    return "-" + chr(68 - len(digits)) + digits.translate(_COMPLEMENT)


_COMPLEMENT = str.maketrans("0123456789", "9876543210")


# -- in SQL ---------------------------------------------------------------------------


class school_order(FunctionElement[str]):
    """:func:`school_order_text` of a class name, in SQL.

    PostgreSQL reads :data:`LEVEL_PATTERN` once per name (``regexp_match``, 10+)
    and cuts the digits of the rest only when it has some: a correlated
    subquery, the name folded and matched once, read several times. About 15 µs
    a class; computed per class, never per account (see
    :meth:`~flask_publipostage.selection.Selection.class_key`).
    """

    type = sa.String()
    inherit_cache = True
    name = "school_order"


@compiles(school_order)
def _school_order_default(element: Any, compiler: Any, **kw: Any) -> str:
    folded = compiler.process(french_fold(*element.clauses), **kw)
    return f"('{OTHER_RANK:02d}' || coalesce({folded}, ''))"


@compiles(school_order, "sqlite")
def _school_order_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"publipostage_school_order({compiler.process(element.clauses, **kw)})"


@compiles(school_order, "postgresql")
def _school_order_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    folded = compiler.process(name_key(*element.clauses), **kw)
    ranks = " ".join(f"WHEN m[{i + 2}] IS NOT NULL THEN '{i + 1:02d}'" for i in range(len(LEVELS)))
    rest = f"ltrim(substr(f, coalesce(char_length(m[1]), 0) + 1), '{SEPARATORS}')"
    number = "chr(48 + char_length(ltrim(t[1], '0'))) || ltrim(t[1], '0')"
    natural = (
        f"CASE WHEN r ~ '[0-9]' THEN (SELECT string_agg(CASE WHEN t[1] ~ '^[0-9]' THEN {number} ELSE t[1] END, ''"
        f" ORDER BY n) FROM regexp_matches(r, '[0-9]+|[^0-9]+', 'g') WITH ORDINALITY AS pp_t(t, n)) ELSE r END"
    )
    # OFFSET 0 keeps PostgreSQL from pulling the subquery up, which would
    # evaluate regexp_match once per reference to m: 10 times slower.
    return (
        f"(SELECT CASE WHEN m IS NULL THEN '{OTHER_RANK:02d}' {ranks} END || left({natural}, {REST_LENGTH}) || chr(1)"
        f" FROM (SELECT m, {rest} AS r FROM (SELECT f, regexp_match(f, '{LEVEL_PATTERN}') AS m"
        f" FROM (SELECT coalesce({folded}, '') AS f) AS pp_f OFFSET 0) AS pp_m) AS pp_r)"
    )


class host_rank(FunctionElement[str]):
    """:func:`rank_text` of an integer, in SQL."""

    type = sa.String()
    inherit_cache = True
    name = "host_rank"


@compiles(host_rank)
def _host_rank_default(element: Any, compiler: Any, **kw: Any) -> str:
    return f"publipostage_rank({compiler.process(element.clauses, **kw)})"


@compiles(host_rank, "postgresql")
def _host_rank_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    number = compiler.process(element.clauses, **kw)
    digits = f"ltrim(CAST({number} AS TEXT), '-')"
    return (
        f"(CASE WHEN {number} IS NULL THEN '~' WHEN {number} >= 0 THEN chr(48 + char_length({digits})) || {digits}"
        f" ELSE '-' || chr(68 - char_length({digits})) || translate({digits}, '0123456789', '9876543210') END)"
    )


#: The host's text order kept in the key (characters).
TEXT_RANK_LENGTH = 60


def text_rank(value: Any) -> Any:
    """A text of the host's order, in SQL: its first :data:`TEXT_RANK_LENGTH`
    characters then :data:`END`, NULL last."""
    kept = sa.func.substr(value, 1, TEXT_RANK_LENGTH)
    return sa.case((value.is_(None), sa.literal_column("'2'")), else_=sa.literal_column("'1'").concat(kept).concat(end()))


class end(FunctionElement[str]):
    """:data:`END` in SQL."""

    type = sa.String()
    inherit_cache = True
    name = "end"


@compiles(end)
def _end_default(element: Any, compiler: Any, **kw: Any) -> str:
    return "char(1)"


@compiles(end, "postgresql")
def _end_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return "chr(1)"
