"""File paths as text: any name a filesystem can hold, written to CSV, Parquet, JSON and HTML.

Python holds an undecodable file name byte as a lone surrogate (``b"\\xff"`` becomes
``"\\udcff"``, see :func:`os.fsdecode`); ``open()`` accepts that string, but UTF-8 writers (CSV,
Parquet, JSON readers in other languages) refuse it. :func:`path_to_text` turns every path into
valid UTF-8 text that :func:`text_to_path` turns back exactly. Ordinary names are stored as they
are; a name that is not valid UTF-8 (or starts with a double quote) is stored in double quotes
with backslash escapes, as git quotes such names: ``"bad_\\xff.jpg"``. :func:`display_path` is
for people only (reports, messages): readable, but not reversible.
"""

from __future__ import annotations

import os
import re

__all__ = ["display_path", "path_to_text", "text_to_path"]

PathLike = str | bytes | os.PathLike

_QUOTE = '"'
_ESCAPE = re.compile(r'\\(\\|"|x[0-9a-f]{2})')
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def path_to_text(path: PathLike) -> str:
    """Valid UTF-8 text for ``path``: the path itself, or its quoted form when it must be."""
    raw = os.fsencode(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not text.startswith(_QUOTE):
        return text
    escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return _QUOTE + escaped.decode("utf-8", "backslashreplace") + _QUOTE


def text_to_path(text: str) -> str:
    """The path that :func:`path_to_text` wrote as ``text``, as a string ``open()`` accepts."""
    if not (len(text) >= 2 and text.startswith(_QUOTE) and text.endswith(_QUOTE)):
        return text
    pieces = []
    position = 0
    inner = text[1:-1]
    for match in _ESCAPE.finditer(inner):
        pieces.append(inner[position : match.start()].encode("utf-8"))
        code = match.group(1)
        pieces.append(bytes([int(code[1:], 16)]) if code.startswith("x") else code.encode())
        position = match.end()
    pieces.append(inner[position:].encode("utf-8"))
    return os.fsdecode(b"".join(pieces))


def display_path(path: PathLike) -> str:
    """``path`` for people: undecodable bytes as ``\\xff``, control characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)
