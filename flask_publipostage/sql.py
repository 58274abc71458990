"""SQL helpers that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


@functools.lru_cache(maxsize=65536)
def fold_for_sort(value: str | None) -> str | None:
    """French sort key: accents, ligatures and case ignored ("Élodie" == "elodie").

    Cached and short-cut for ASCII: SQLite calls it once per row when sorting.
    """
    if value is None:
        return None
    if value.isascii():
        return value.lower()
    value = value.replace("œ", "oe").replace("Œ", "oe").replace("æ", "ae").replace("Æ", "ae")
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


class french_fold(FunctionElement[str]):
    """Sort key of a name in French order: accents, ligatures and case ignored.

    SQLite gets the Python function registered by ``init_app``; PostgreSQL folds
    with ``translate`` over the same table, so both orders match Python's.
    """

    type = sa.String()
    inherit_cache = True
    name = "french_fold"


def _translate_table() -> tuple[str, str]:
    sources, targets = [], []
    for code in range(0xC0, 0x250):
        char = chr(code)
        folded = fold_for_sort(char)
        if folded and len(folded) == 1 and folded.isascii() and folded != char:
            sources.append(char)
            targets.append(folded)
    return "".join(sources), "".join(targets)


_SOURCES, _TARGETS = _translate_table()


@compiles(french_fold)
def _fold_default(element: Any, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(french_fold, "sqlite")
def _fold_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"publipostage_fold({compiler.process(element.clauses, **kw)})"


@compiles(french_fold, "postgresql")
def _fold_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    inner = compiler.process(element.clauses, **kw)
    ligatures = f"replace(replace(replace(replace({inner}, 'œ', 'oe'), 'Œ', 'oe'), 'æ', 'ae'), 'Æ', 'ae')"
    return f"lower(translate({ligatures}, '{_SOURCES}', '{_TARGETS}'))"
