"""A fast reader for plain block-style YAML, used for data stream ``fields/`` files.

Validation reads every fields file of every data stream, which is most of the
YAML a package holds, and only needs the structure: which entries exist and
their ``name``/``type``. These files are written by tools in one plain style
(block sequences of block mappings, plain or simply quoted scalars, folded
descriptions), which this module reads line by line several times faster
than building PyYAML nodes. Anything outside that style (flow collections,
anchors, tags, escapes, tabs, comments after values, documents markers...)
makes :func:`read` return None, and the caller parses the file with PyYAML.

Scalars come back as their text (quotes removed); block scalars as ``""``.
"""

from __future__ import annotations

import re
from typing import Any

_KEY = re.compile(r"([A-Za-z0-9_@$][A-Za-z0-9_@$.\-/ ]*?):(?: (.*))?")
_BLOCK = re.compile(r"[|>][-+]?[1-9]?[-+]?")
_SPECIAL_START = frozenset("[]{}&*!|>%@`#,?")


class _Outside(Exception):
    """The text uses YAML this reader does not handle."""


def read(text: bytes) -> list[Any] | dict[str, Any] | None:
    """The document if it is in the supported style, else None. Empty documents give None."""
    try:
        lines = _lines(text.decode("utf-8"))
        if not lines:
            return None
        value, end = _block(lines, 0, lines[0][0])
        if end != len(lines):
            return None
        return value
    except (_Outside, UnicodeDecodeError, RecursionError):
        return None


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for raw in text.split("\n"):
        line = raw.rstrip("\r").rstrip(" ")
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        if "\t" in line[: len(line) - len(content) + 1] or content.startswith(("---", "...", "%")):
            raise _Outside
        out.append((len(line) - len(content), content))
    return out


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1] == "-" or lines[i][1].startswith("- "):
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent, None)


def _sequence(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
        rest = lines[i][1][2:].lstrip(" ")
        inner = indent + len(lines[i][1]) - len(rest)
        if _KEY.fullmatch(rest):
            item, i = _mapping(lines, i, inner, rest)
        else:
            item, i = _scalar_value(lines, i, rest, indent)
        items.append(item)
    if i < len(lines) and lines[i][0] > indent:
        raise _Outside
    return items, i


def _mapping(
    lines: list[tuple[int, str]], i: int, indent: int, first: str | None
) -> tuple[dict[str, Any], int]:
    mapping: dict[str, Any] = {}
    content = first
    while True:
        if content is None:
            if i >= len(lines) or lines[i][0] != indent or lines[i][1].startswith("- "):
                break
            content = lines[i][1]
        match = _KEY.fullmatch(content)
        if match is None:
            raise _Outside
        key, value = match.group(1), match.group(2)
        if value is None or value == "":
            i += 1
            if i < len(lines) and lines[i][0] > indent:
                mapping[key], i = _block(lines, i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                mapping[key], i = _sequence(lines, i, indent)
            else:
                mapping[key] = ""
        else:
            mapping[key], i = _scalar_value(lines, i, value, indent)
        content = None
    if i < len(lines) and lines[i][0] > indent:
        raise _Outside
    return mapping, i


def _scalar_value(lines: list[tuple[int, str]], i: int, value: str, indent: int) -> tuple[str, int]:
    """A scalar starting on line ``i`` (owned by something at ``indent``); returns it and the next line."""
    i += 1
    if _BLOCK.fullmatch(value):
        while i < len(lines) and lines[i][0] > indent:
            i += 1
        return "", i
    if value[0] == '"':
        if len(value) < 2 or not value.endswith('"') or "\\" in value or '"' in value[1:-1]:
            raise _Outside
        return value[1:-1], i
    if value[0] == "'":
        body = value[1:-1]
        if len(value) < 2 or not value.endswith("'") or "'" in body.replace("''", ""):
            raise _Outside
        return body.replace("''", "'"), i
    if (
        value[0] in _SPECIAL_START
        or value.startswith("- ")
        or ": " in value
        or " #" in value
        or value[-1] == ":"
    ):
        raise _Outside
    parts = [value]
    while i < len(lines) and lines[i][0] > indent:  # a plain scalar folded over several lines
        more = lines[i][1]
        if ": " in more or " #" in more or more[-1] == ":":
            raise _Outside
        parts.append(more)
        i += 1
    return " ".join(parts), i
