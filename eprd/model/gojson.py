"""JSON documents byte-compatible with the reference's encoding/json output.

Two-space indentation, no HTML escaping, U+2028/U+2029 escaped, one trailing
newline. Floats are turned into Go's notation when documents are built
(:func:`number`), so encoding itself is a single orjson call.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from eprd.model.gofmt import float_json

_LINE_SEPARATORS = (("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as the reference does, with the trailing newline."""
    return encode(obj) + b"\n"


def encode(obj: Any) -> bytes:
    """Encode ``obj`` with Go's indentation and escaping, without a trailing newline."""
    data = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    if data.isascii():  # (most documents: one fast pass instead of a search per separator)
        return data
    for raw, escaped in _LINE_SEPARATORS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def number(value: float) -> int | orjson.Fragment:
    """A YAML float as Go prints it: integral values without ``.0``, Go's exponents."""
    if value.is_integer() and abs(value) < 1e21 and not (value == 0 and math.copysign(1, value) < 0):
        return int(value)
    return orjson.Fragment(float_json(value).encode())


def indent(fragment: bytes, prefix: bytes = b"  ") -> bytes:
    """Indent an encoded document by one level so it can be nested in a list."""
    return prefix + fragment.replace(b"\n", b"\n" + prefix)


def json_list(items: list[bytes]) -> bytes:
    """Join already-encoded items into an indented JSON array (without newline)."""
    if not items:
        return b"[]"
    return b"[\n" + b",\n".join(indent(item) for item in items) + b"\n]"
