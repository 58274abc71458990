"""Assemble chunk PDFs as they come, with flat memory: into one PDF file, or into
a ZIP holding one PDF per bundle.

``pypdf.PdfWriter`` keeps every page in memory until it writes (hundreds of MB
for a region-wide run). Here each chunk's objects are renumbered and written at
once; only the byte offsets and the page numbers stay in memory, and the page
tree, the catalog and the cross-reference table are written at the end (PDF
allows objects in any order). A ZIP (:class:`ZipOfPdfs`, the standard library's
``zipfile``) gets each PDF once it is whole, from disk: one bundle at a time.

Every chunk embeds its own subsets of the fonts, all tagged ``AAAAAA+`` by the
renderer: copied as they are, a 600-page file would hold the same fonts fifteen
times under one name (ISO 32000-1 §9.6.4 wants distinct tags for distinct
subsets). The renderer gives every chunk the same first subsets
(:data:`~.fonts.STABLE_CHARACTERS`), so the merge keeps one copy of each font
object it has already written (same bytes, same references) and gives each
distinct subset a tag of its own; so it does of each image (the logo). The file ends with its description (title,
author, subject, language) and a trailer ``/ID``, as preflights expect.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
import zipfile
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class DocumentInfo:
    """What the file says of itself (its ``/Info`` dictionary and ``/Lang``)."""

    title: str = ""
    author: str = ""
    subject: str = ""
    #: BCP 47 language tag of the text, e.g. ``fr-FR``.
    lang: str = ""
    producer: str = "flask-publipostage"


class StreamingPdfConcatenator:
    """``append(path)`` each chunk in order, then ``close()``."""

    def __init__(self, path: str, *, info: DocumentInfo | None = None) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "wb")
        self._file.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        self._offsets: dict[int, int] = {}
        self._next = PAGES + 1
        self._pages: list[int] = []
        self._info = info or DocumentInfo()
        #: Font objects already written, by content: their number.
        self._fonts: dict[bytes, int] = {}
        #: Subset tag of each font program written (by its descriptor's content).
        self._tags: dict[bytes, bytes] = {}

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
        fonts = _FontGraph(objects)
        numbers: dict[int, int] = {}
        skipped: set[int] = set()
        for old in objects.kept:
            key = fonts.key(old)
            if key is not None and key in self._fonts:
                numbers[old] = self._fonts[key]
                skipped.add(old)
                continue
            numbers[old] = self._allocate()
            if key is not None:
                self._fonts[key] = numbers[old]
        retag = {old: self._tag(fonts, old) for old in fonts.tagged if old not in skipped}

        def renumber(match: re.Match[bytes]) -> bytes:
            number = int(match.group(1))
            if number in objects.pages_nodes:
                return b"%d 0 R" % PAGES
            new = numbers.get(number)
            return b"%d 0 R" % new if new is not None else b"null"

        for old in objects.kept:
            if old in skipped:
                continue
            head, tail = objects.body(old)
            if old in retag:
                head = _SUBSET_TAG.sub(lambda m, tag=retag[old]: m.group(1) + tag + b"+", head)
            new = numbers[old]
            self._offsets[new] = self._file.tell()
            self._file.write(b"%d 0 obj\n" % new)
            self._file.write(_REFERENCE.sub(renumber, head))
            self._file.write(tail)
            self._file.write(b"\nendobj\n")
        for old in objects.page_order:
            self._pages.append(numbers[old])
        return len(objects.page_order)

    def _tag(self, fonts: _FontGraph, number: int) -> bytes:
        """The tag of a font dictionary or descriptor: that of its font program,
        a new one for a program not written yet."""
        program = fonts.program(number)
        tag = self._tags.get(program)
        if tag is None:
            tag = self._tags[program] = _subset_tag(len(self._tags))
        return tag

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
        described = self._info
        lang = f" /Lang {_pdf_string(described.lang)}" if described.lang else ""
        self._write_raw(CATALOG, f"<< /Type /Catalog /Pages {PAGES} 0 R{lang} >>")
        info = self._allocate()
        stamp = datetime.now(UTC).strftime("D:%Y%m%d%H%M%SZ")
        entries = [("Title", described.title), ("Author", described.author), ("Subject", described.subject),
                   ("Producer", described.producer), ("Creator", described.producer)]
        fields = " ".join(f"/{name} {_pdf_string(value)}" for name, value in entries if value)
        self._write_raw(info, f"<< {fields} /CreationDate ({stamp}) /ModDate ({stamp}) >>")
        xref = self._file.tell()
        size = self._next
        lines = [f"xref\n0 {size}\n", "0000000000 65535 f \n"]
        for number in range(1, size):
            offset = self._offsets.get(number)
            lines.append(f"{offset:010d} 00000 n \n" if offset is not None else "0000000000 65535 f \n")
        self._file.write("".join(lines).encode("ascii"))
        file_id = secrets.token_hex(16).upper()
        self._file.write(
            f"trailer\n<< /Size {size} /Root {CATALOG} 0 R /Info {info} 0 R /ID [<{file_id}> <{file_id}>] >>\n"
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

    def __init__(self, path: str, workdir: str | Path, *, info: DocumentInfo | None = None) -> None:
        self.path = path
        self._info = info or DocumentInfo()
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
        self._current = StreamingPdfConcatenator(str(part), info=replace(self._info, title=name))

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
_FONT_DICT = re.compile(rb"/Type\s*/Font(?![A-Za-z])")
_DESCRIPTOR = re.compile(rb"/FontDescriptor\s+(\d+) 0 R")
_IMAGE = re.compile(rb"/Subtype\s*/Image(?![A-Za-z])")
_SUBSET_TAG = re.compile(rb"(/(?:BaseFont|FontName)\s*/)[A-Z]{6}\+")
#: A font dictionary's ``/Name``, obsolete (PDF 1.0): the renderer's name of the
#: font in its document, which differs for one subset between a stamped page's
#: layout and the texts drawn on it. Left out of the comparison.
_FONT_NAME = re.compile(rb"/Name\s*/[^\s/\[\]()<>{}%]+")


def _subset_tag(index: int) -> bytes:
    """The ``index``-th six capital letters: AAAAAA, AAAAAB..."""
    letters = []
    for _ in range(6):
        index, rest = divmod(index, 26)
        letters.append(65 + rest)
    return bytes(reversed(letters))


class _FontGraph:
    """The font objects of one chunk (font dictionaries and what they refer
    to: descriptors, font programs, encodings) and its images (the logo, in
    every chunk), each with a key of its content and of the content of what it
    refers to: two chunks' objects of equal keys are the same object."""

    def __init__(self, objects: _RawObjects) -> None:
        self.objects = objects
        self._keys: dict[int, bytes] = {}
        #: Font dictionaries and descriptors naming a subset (``XXXXXX+Name``).
        self.tagged: set[int] = set()
        self._descriptor_of: dict[int, int] = {}
        fonts = [n for n in objects.kept if _FONT_DICT.search(objects.body(n)[0])]
        self._members: set[int] = set()
        for number in fonts + [n for n in objects.kept if _IMAGE.search(objects.body(n)[0])]:
            self._collect(number, 0)
        for number in fonts:
            head = objects.body(number)[0]
            descriptor = _DESCRIPTOR.search(head)
            if _SUBSET_TAG.search(head) and descriptor is not None and int(descriptor.group(1)) in self._members:
                self.tagged.add(number)
                self._descriptor_of[number] = int(descriptor.group(1))
                self.tagged.add(int(descriptor.group(1)))

    def _collect(self, number: int, depth: int) -> None:
        if number in self._members or number not in self.objects.offsets or depth > 8:
            return
        self._members.add(number)
        for found in _REFERENCE.finditer(self.objects.body(number)[0]):
            self._collect(int(found.group(1)), depth + 1)

    def key(self, number: int, depth: int = 0) -> bytes | None:
        """None for an object outside the fonts (or too deep to compare)."""
        if number not in self._members or depth > 8:
            return None
        if number in self._keys:
            return self._keys[number]
        head, tail = self.objects.body(number)
        head = _FONT_NAME.sub(b"", head)
        digest = hashlib.sha256()
        position = 0
        for found in _REFERENCE.finditer(head):
            digest.update(head[position : found.start()])
            target = self.key(int(found.group(1)), depth + 1)
            if target is None:
                return None
            digest.update(b"<" + target + b">")
            position = found.end()
        digest.update(head[position:])
        digest.update(tail)
        key = self._keys[number] = digest.digest()
        return key

    def program(self, number: int) -> bytes:
        """The key of the descriptor (the font program) behind a tagged object."""
        descriptor = self._descriptor_of.get(number, number)
        return self.key(descriptor) or b"%d" % descriptor


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
