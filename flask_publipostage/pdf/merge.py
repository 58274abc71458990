"""Assemble chunk PDFs as they come, with flat memory: into one PDF file, or into
a ZIP holding one PDF per bundle.

``pypdf.PdfWriter`` keeps every page in memory until it writes (hundreds of MB
for a region-wide run). Here each chunk's objects are renumbered and written at
once; only the byte offsets and the page numbers stay in memory, and the page
tree, the catalog and the cross-reference table are written at the end (PDF
allows objects in any order). A ZIP (:class:`ZipOfPdfs`, the standard library's
``zipfile``) gets each PDF once it is whole, from disk: one bundle at a time.
"""

from __future__ import annotations

import os
import re
import unicodedata
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from pypdf import PdfReader
from pypdf.generic import (
    ArrayObject,
    DictionaryObject,
    IndirectObject,
    NameObject,
    PdfObject,
    StreamObject,
)

CATALOG = 1
PAGES = 2


class StreamingPdfConcatenator:
    """``append(path)`` each chunk in order, then ``close()``."""

    def __init__(self, path: str, *, title: str = "", producer: str = "flask-publipostage") -> None:
        self.path = path
        self._file: BinaryIO = open(path, "wb")
        self._file.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        self._offsets: dict[int, int] = {}
        self._next = PAGES + 1
        self._pages: list[int] = []
        self._title = title
        self._producer = producer

    @property
    def page_count(self) -> int:
        return len(self._pages)

    def _allocate(self) -> int:
        number = self._next
        self._next += 1
        return number

    def _write(self, number: int, obj: PdfObject) -> None:
        self._offsets[number] = self._file.tell()
        self._file.write(f"{number} 0 obj\n".encode("ascii"))
        obj.write_to_stream(self._file)
        self._file.write(b"\nendobj\n")

    def append(self, path: str) -> int:
        """Copy every page of ``path`` (and what they use); return its page count.

        The renderer's own output (classic cross-reference table, direct stream
        lengths) is copied as bytes with its references renumbered, about ten
        times faster than parsing it; anything else goes through pypdf.
        """
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            objects = _raw_objects(data)
        except _NotRaw:
            return self._append_parsed(path)
        return self._append_raw(objects)

    def _append_raw(self, objects: _RawObjects) -> int:
        numbers = {old: self._allocate() for old in objects.kept}

        def renumber(match: re.Match[bytes]) -> bytes:
            number = int(match.group(1))
            if number in objects.pages_nodes:
                return b"%d 0 R" % PAGES
            new = numbers.get(number)
            return b"%d 0 R" % new if new is not None else b"null"

        for old in objects.kept:
            head, tail = objects.body(old)
            new = numbers[old]
            self._offsets[new] = self._file.tell()
            self._file.write(b"%d 0 obj\n" % new)
            self._file.write(_REFERENCE.sub(renumber, head))
            self._file.write(tail)
            self._file.write(b"\nendobj\n")
        for old in objects.page_order:
            self._pages.append(numbers[old])
        return len(objects.page_order)

    def _append_parsed(self, path: str) -> int:
        reader = PdfReader(path)
        numbers: dict[tuple[int, int], int] = {}
        pending: list[tuple[int, int]] = []

        def new_ref(ref: IndirectObject) -> IndirectObject:
            key = (ref.idnum, ref.generation)
            if key not in numbers:
                numbers[key] = self._allocate()
                pending.append(key)
            return IndirectObject(numbers[key], 0, None)

        def remap(obj: Any) -> Any:
            if isinstance(obj, IndirectObject):
                return new_ref(obj)
            if isinstance(obj, DictionaryObject):  # streams too: their data stays
                for key, value in list(dict.items(obj)):
                    dict.__setitem__(obj, key, remap(value))
                return obj
            if isinstance(obj, ArrayObject):
                for index, value in enumerate(list.__iter__(obj)):
                    list.__setitem__(obj, index, remap(value))
                return obj
            return obj

        page_keys = set()
        count = 0
        for page in reader.pages:
            ref = page.indirect_reference
            assert ref is not None
            page_keys.add((ref.idnum, ref.generation))
            self._pages.append(new_ref(ref).idnum)
            count += 1
        while pending:
            key = pending.pop()
            obj = reader.get_object(IndirectObject(key[0], key[1], reader))
            if key in page_keys:
                assert isinstance(obj, DictionaryObject)
                # Inherited attributes were copied onto the page by pypdf; the old
                # parent would drag the chunk's whole page tree along.
                dict.__setitem__(obj, NameObject("/Parent"), IndirectObject(PAGES, 0, None))
                for key_name, value in list(dict.items(obj)):
                    if key_name != "/Parent":
                        dict.__setitem__(obj, key_name, remap(value))
            elif isinstance(obj, (DictionaryObject, ArrayObject, StreamObject)):
                remap(obj)
            self._write(numbers[key], obj)  # type: ignore[arg-type]
        return count

    def close(self) -> None:
        """Write the page tree, the catalog, the info and the cross-reference table."""
        kids = " ".join(f"{n} 0 R" for n in self._pages)
        self._write_raw(PAGES, f"<< /Type /Pages /Kids [ {kids} ] /Count {len(self._pages)} >>")
        self._write_raw(CATALOG, f"<< /Type /Catalog /Pages {PAGES} 0 R >>")
        info = self._allocate()
        stamp = datetime.now(UTC).strftime("D:%Y%m%d%H%M%SZ")
        self._write_raw(
            info,
            f"<< /Producer {_pdf_string(self._producer)} /Title {_pdf_string(self._title)} "
            f"/CreationDate ({stamp}) >>",
        )
        xref = self._file.tell()
        size = self._next
        lines = [f"xref\n0 {size}\n", "0000000000 65535 f \n"]
        for number in range(1, size):
            offset = self._offsets.get(number)
            lines.append(f"{offset:010d} 00000 n \n" if offset is not None else "0000000000 65535 f \n")
        self._file.write("".join(lines).encode("ascii"))
        self._file.write(
            f"trailer\n<< /Size {size} /Root {CATALOG} 0 R /Info {info} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n".encode("ascii")
        )
        self._file.close()

    def abort(self) -> None:
        self._file.close()
        try:
            os.remove(self.path)
        except OSError:
            pass

    def _write_raw(self, number: int, body: str) -> None:
        self._offsets[number] = self._file.tell()
        self._file.write(f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1"))


class ZipOfPdfs:
    """``start_file(name)``, then ``append(path)`` each of its chunks in order; the
    next ``start_file`` or ``close()`` puts the PDF in the ZIP as ``<name>.pdf``.

    Names are the bundles' labels as people read them ("CP de Mme Dumas.pdf"),
    with what a file system refuses replaced and a number added to a name
    already taken ("CP (2).pdf")."""

    def __init__(self, path: str, workdir: str | Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self._workdir = Path(workdir)
        self._current: StreamingPdfConcatenator | None = None
        self._name = ""
        self._names: set[str] = set()
        self._pages = 0
        self.files = 0

    @property
    def page_count(self) -> int:
        return self._pages + (self._current.page_count if self._current else 0)

    def start_file(self, name: str) -> None:
        self._store()
        self._name = self._unique(safe_file_name(name))
        part = self._workdir / f"zip-{self.files:06d}.pdf.{os.getpid()}"
        self._current = StreamingPdfConcatenator(str(part), title=name)

    def append(self, path: str) -> int:
        assert self._current is not None, "start_file() first"
        return self._current.append(path)

    def _store(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        current.close()
        self._zip.write(current.path, arcname=f"{self._name}.pdf")
        os.remove(current.path)
        self._pages += current.page_count
        self.files += 1

    def _unique(self, name: str) -> str:
        candidate, number = name, 1
        while candidate.casefold() in self._names:
            number += 1
            candidate = f"{name} ({number})"
        self._names.add(candidate.casefold())
        return candidate

    def close(self) -> None:
        self._store()
        self._zip.close()

    def abort(self) -> None:
        if self._current is not None:
            self._current.abort()
            self._current = None
        self._zip.close()
        try:
            os.remove(self.path)
        except OSError:
            pass


#: What Windows, macOS or Linux refuse in a file name.
_UNSAFE = re.compile(r'[<>:"/\\|?*]')
FILE_NAME_MAX = 120


def safe_file_name(label: str) -> str:
    """A label as a file name every system takes, still readable ("CP de Mme
    Dumas", "CE1/CE2" -> "CE1-CE2"); at most :data:`FILE_NAME_MAX` characters."""
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in unicodedata.normalize("NFC", label))
    text = " ".join(_UNSAFE.sub("-", text).split())[:FILE_NAME_MAX].strip(" .")
    return text or "_"


_REFERENCE = re.compile(rb"(\d+) 0 R")
_XREF = re.compile(rb"startxref\s+(\d+)\s+%%EOF\s*$")
_ROOT = re.compile(rb"/Root (\d+) 0 R")
_INFO = re.compile(rb"/Info (\d+) 0 R")
_LENGTH = re.compile(rb"/Length (\d+)(?!\s+\d+\s+R)")
_TYPE = re.compile(rb"/Type /(\w+)")


class _NotRaw(Exception):
    """Not the plain layout the byte copy understands."""


class _RawObjects:
    def __init__(self, data: bytes, offsets: dict[int, int]) -> None:
        self.data = data
        self.offsets = offsets
        self.kept: list[int] = []
        self.pages_nodes: set[int] = set()
        self.page_order: list[int] = []

    def body(self, number: int) -> tuple[bytes, bytes]:
        """``(dictionary part, stream part)`` of an object, without ``N 0 obj``."""
        data = self.data
        start = self.offsets[number]
        header = re.compile(rb"%d 0 obj\s" % number).match(data, start)
        if header is None:
            raise _NotRaw(number)
        position = header.end()
        stream = re.compile(rb"stream\r?\n").search(data, position)
        end = data.find(b"endobj", position)
        if end < 0:
            raise _NotRaw(number)
        if stream is None or stream.start() > end:
            return data[position:end].rstrip(), b""
        head = data[position : stream.start()]
        length = _LENGTH.search(head)
        if length is None:
            raise _NotRaw(number)
        stop = stream.end() + int(length.group(1))
        tail_end = data.find(b"endstream", stop)
        if tail_end < 0:
            raise _NotRaw(number)
        return head, data[stream.start() : tail_end + len(b"endstream")]


def _raw_objects(data: bytes) -> _RawObjects:
    found = _XREF.search(data[-64:])
    if found is None:
        raise _NotRaw("no startxref")
    xref = int(found.group(1))
    if data[xref : xref + 4] != b"xref":
        raise _NotRaw("cross-reference stream")
    trailer = data.find(b"trailer", xref)
    if trailer < 0:
        raise _NotRaw("no trailer")
    offsets: dict[int, int] = {}
    lines = data[xref + 4 : trailer].split()
    index = 0
    while index < len(lines):
        first, count = int(lines[index]), int(lines[index + 1])
        index += 2
        for number in range(first, first + count):
            offset, _generation, kind = lines[index : index + 3]
            index += 3
            if kind == b"n":
                offsets[number] = int(offset)
    tail = data[trailer:]
    root_match, info_match = _ROOT.search(tail), _INFO.search(tail)
    if root_match is None:
        raise _NotRaw("no root")
    objects = _RawObjects(data, offsets)
    root = int(root_match.group(1))
    skipped = {root}
    if info_match is not None:
        skipped.add(int(info_match.group(1)))
    catalog, _ = objects.body(root)
    pages_ref = re.search(rb"/Pages (\d+) 0 R", catalog)
    if pages_ref is None:
        raise _NotRaw("no page tree")

    def walk(number: int, depth: int = 0) -> None:
        if depth > 50:
            raise _NotRaw("page tree too deep")
        head, _ = objects.body(number)
        kind = _TYPE.search(head)
        if kind is not None and kind.group(1) == b"Pages":
            objects.pages_nodes.add(number)
            kids = re.search(rb"/Kids\s*\[([^\]]*)\]", head)
            if kids is None:
                raise _NotRaw("page tree without kids")
            for kid in _REFERENCE.finditer(kids.group(1)):
                walk(int(kid.group(1)), depth + 1)
        else:
            objects.page_order.append(number)

    walk(int(pages_ref.group(1)))
    for number in offsets:
        if number in skipped or number in objects.pages_nodes:
            continue
        body, _ = objects.body(number)
        found = _TYPE.search(body)
        if found is not None and found.group(1) in (b"Catalog", b"Outlines"):
            continue
        objects.kept.append(number)
    return objects


def _pdf_string(value: str) -> str:
    """A PDF text string: UTF-16BE hex, so any name in a school title survives."""
    return "<FEFF" + value.encode("utf-16-be").hex().upper() + ">"
