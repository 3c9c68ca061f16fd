"""A fast reader for the block-style YAML that package files are written in.

Manifests and fields files are mostly block mappings and sequences of plain or
quoted scalars, sometimes with ``|``/``>`` block scalars and comments. This
module reads that style line by line, several times faster than composing
PyYAML nodes, and gives exactly what :func:`eprd.yamlfile.load` gives (yaml.v2
scalar types). Anything outside the style it knows (anchors, tags, flow
mappings, explicit keys, quoted keys, tabs, document markers, indentation it
does not expect...) makes :func:`parse` give up, and the caller parses the
document with PyYAML, which also produces the error messages: this reader never
rejects a document, it only declines it.
"""

from __future__ import annotations

import json
import operator
import re
from itertools import repeat
from typing import Any

from eprd.model import limits

# Characters libyaml refuses, and line breaks other than \n (YAML 1.1 also breaks lines at
# NEL, LS and PS): the document is left to PyYAML.
_DECLINED_CHARS = re.compile(
    "[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_ALLOWED_ASCII = b"\n" + bytes(range(0x20, 0x7F))  # _DECLINED_CHARS's complement in ASCII
# A plain scalar may not start with an indicator (but "-", "?" and ":" may start one when a
# non-space follows them: declined here but for "-", as in -1).
_NOT_PLAIN_START = frozenset("-?:,[]{}#&*!|>'\"%@`")
_SPACES = repeat(" ")
_MARKERS = ("---", "...", "%")
_LATER_MARKER = re.compile(r"\n(?:---|\.\.\.|%)")  # (one pass, where a find per marker takes three)
_BLOCK_HEADER = re.compile(r"([|>])([-+]?)(?: +#.*)?")
# An item of a one-line flow sequence: a plain scalar of safe characters, or a quoted one
# without escapes (and, since items are split at commas, without commas).
_FLOW_ITEM = re.compile(
    r' *(?:([A-Za-z0-9_./$^~=<+()][A-Za-z0-9_./@$^~=<>+() -]*?)|"([^"\\]*)"|\'([^\']*)\') *'
)


# --- yaml.v2's implicit types of plain scalars (YAML 1.1 without sexagesimals and timestamps)

CONSTANTS: dict[str, Any] = {"": None, "~": None, "null": None, "Null": None, "NULL": None}
_TRUE = ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")
_FALSE = ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")
CONSTANTS.update(dict.fromkeys(_TRUE, True))
CONSTANTS.update(dict.fromkeys(_FALSE, False))
_NUMBER_START = frozenset("-+.0123456789")
_INT = re.compile(r"[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0[0-7_]+|0|[1-9][0-9_]*)")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


def scalar(text: str) -> Any:
    """A plain scalar with yaml.v2's implicit types (y/n booleans, no sexagesimal, no timestamps)."""
    if text in CONSTANTS:
        return CONSTANTS[text]
    if text[0] in _NUMBER_START:
        if _INT.fullmatch(text):
            return to_int(text)
        if _FLOAT.fullmatch(text):
            return to_float(text)
    return text


def to_int(text: str) -> int:
    """An integer in YAML 1.1 notation (binary, hexadecimal, octal with a leading 0, underscores)."""
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if digits.startswith(("0b", "0x")):
        return sign * int(digits, 0)
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits, 8)  # YAML 1.1 octal
    return sign * int(digits)


def to_float(text: str) -> float:
    """A float in YAML 1.1 notation (.inf, .nan, underscores)."""
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return float("-inf") if lowered.startswith("-") else float("inf")
    if lowered == ".nan":
        return float("nan")
    return float(text.replace("_", ""))


class _Declined(Exception):
    """The document uses YAML this reader leaves to PyYAML."""


def parse(data: bytes) -> tuple[bool, Any]:
    """``(True, document)`` when the document is in the style read here, else ``(False, None)``.

    An empty document (or one of comments only) is ``(True, None)``, as PyYAML gives None.
    """
    fast, value, _ = read(data)
    return fast, value


def read(data: bytes) -> tuple[bool, Any, bool]:
    """:func:`parse`, and whether every key read is a string without a dot, nested no deeper than
    :data:`eprd.model.limits.MAX_YAML_DEPTH` levels: then go-ucfg's expansion of dotted keys
    (:func:`eprd.model.yamlfile.expand_dotted`) would give the document back as it is, and a
    loader can skip walking it again.
    """
    if data.isascii():
        if data.translate(None, _ALLOWED_ASCII):  # (what is left once the allowed bytes are gone)
            return False, None, False
        text = data.decode("ascii")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return False, None, False
        if _DECLINED_CHARS.search(text):
            return False, None, False
    lines = text.split("\n")
    more = len(lines) > 1 and not lines[-1]
    if more:
        lines.pop()  # what follows the last line break is not a line
    reader = _Reader(text, lines, more)
    try:
        return True, reader.document(), reader.plain_keys
    except (_Declined, RecursionError):
        return False, None, False


class _Reader:
    def __init__(self, source: str, lines: list[str], more: bool) -> None:
        self.source = source
        self.raw = lines
        self.more = more  # whether a line break follows the last line
        # Per line: its content without the indentation and trailing spaces, and its indentation.
        # (map over C methods: a fifth faster than the same loops written as comprehensions)
        left = list(map(str.lstrip, lines, _SPACES))
        self.text = list(map(str.rstrip, left, _SPACES))
        self.indent = list(map(operator.sub, map(len, lines), map(len, left)))
        self.count = len(lines)
        self.depth = 0  # open mappings and sequences: beyond MAX_YAML_DEPTH, PyYAML reports it
        self.plain_keys = True  # see read()

    def document(self) -> Any:
        i = self._content(0)
        if i == self.count:
            return None
        if self.raw[i] == "---" or self.raw[i].startswith("--- #"):
            i = self._content(i + 1)  # an explicit start of the (only) document
            if i == self.count:
                return None
        # A line that starts a directive, a document or an end of document: more than one
        # document. (Searched for in the source: a loop over the lines costs more.)
        start = sum(map(len, self.raw[:i])) + i  # where line i begins in the source
        source = self.source
        if source.startswith(_MARKERS, start) or _LATER_MARKER.search(source, start):
            raise _Declined
        value, i = self._block(i, self.indent[i], -1)
        if self._content(i) != self.count:
            raise _Declined
        return value

    def _content(self, i: int) -> int:
        """The first line from ``i`` on that is neither blank nor a comment (``count`` if none)."""
        text = self.text
        while i < self.count and (not text[i] or text[i][0] == "#"):
            i += 1
        return i

    def _block(self, i: int, indent: int, owner: int) -> tuple[Any, int]:
        """The node on line ``i`` at ``indent``, inside a node at indentation ``owner``."""
        content = self.text[i]
        if content == "-" or content[:2] == "- ":  # (a slice: no method call's argument parsing)
            return self._sequence(i, indent)
        if not _is_key_line(content):
            return self._scalar(i, content, owner)  # a scalar on a line of its own
        return self._mapping(i, indent, content)

    def _sequence(self, i: int, indent: int) -> tuple[list[Any], int]:
        self.depth += 1
        if self.depth > limits.MAX_YAML_DEPTH:
            raise _Declined
        items: list[Any] = []
        text, indents, count = self.text, self.indent, self.count
        while i < count and indents[i] == indent:
            content = text[i]
            if content == "-" or content[:3] == "- #":
                j = self._content(i + 1)
                if j < count and indents[j] > indent:
                    item, i = self._block(j, indents[j], indent)
                else:
                    item, i = None, i + 1
            elif content[:2] == "- ":
                rest = content[2:].lstrip(" ")
                if ": " in rest or rest[-1] == ":":  # _is_key_line(rest), inlined
                    item, i = self._mapping(i, indent + len(content) - len(rest), rest)
                else:
                    item, i = self._scalar(i, rest, indent)
            else:
                break  # a key of the mapping that holds this sequence at its own indentation
            items.append(item)
            while i < count and (not text[i] or text[i][0] == "#"):
                i += 1
        if i < count and indents[i] > indent:
            raise _Declined
        self.depth -= 1
        return items, i

    def _mapping(self, i: int, indent: int, first: str) -> tuple[dict[Any, Any], int]:
        self.depth += 1
        if self.depth > limits.MAX_YAML_DEPTH:
            raise _Declined
        mapping: dict[Any, Any] = {}
        text, indents, count = self.text, self.indent, self.count
        content = first
        while True:
            # The key, by one partition (a method without argument parsing, unlike find)
            key_text, colon, rest = content.partition(": ")
            if not colon:
                if content[-1] != ":":
                    raise _Declined
                key_text = content[:-1]
            if not key_text:
                raise _Declined
            if key_text[0] in _NOT_PLAIN_START or key_text[-1] == " " or " #" in key_text:
                raise _Declined
            if "." in key_text:
                self.plain_keys = False
            if key_text in CONSTANTS or key_text[0] in _NUMBER_START:
                key = scalar(key_text)
                if type(key) is not str:
                    self.plain_keys = False
            elif key_text == "<<":
                raise _Declined  # merge keys
            else:
                key = key_text
            rest = rest.lstrip(" ")
            if not rest or rest[0] == "#":
                j = self._content(i + 1)
                if j < count and indents[j] > indent:
                    mapping[key], i = self._block(j, indents[j], indent)
                elif j < count and indents[j] == indent and (text[j] == "-" or text[j][:2] == "- "):
                    mapping[key], i = self._sequence(j, indent)
                else:
                    mapping[key], i = None, i + 1
            elif (
                rest[0] not in _NOT_PLAIN_START
                and " #" not in rest
                and ": " not in rest
                and rest[-1] != ":"
                and (i + 1 == count or indents[i + 1] <= indent or not text[i + 1])
            ):
                # The common case, inline: a plain scalar on one line.
                if rest in CONSTANTS:
                    mapping[key] = CONSTANTS[rest]
                elif rest[0] in _NUMBER_START:
                    mapping[key] = scalar(rest)
                else:
                    mapping[key] = rest
                i += 1
            else:
                mapping[key], i = self._scalar(i, rest, indent)
            while i < count and (not text[i] or text[i][0] == "#"):
                i += 1
            if i == count or indents[i] < indent:
                self.depth -= 1
                return mapping, i
            if indents[i] > indent:
                raise _Declined
            content = text[i]
            if content == "-" or content[:2] == "- ":
                raise _Declined  # sequence items after a key that has a value

    def _scalar(self, i: int, value: str, owner: int) -> tuple[Any, int]:
        """The scalar ``value`` starting on line ``i``, in a node at indentation ``owner``."""
        first = value[0]
        if first == "'" or first == '"':
            return self._quoted(i, value, owner)
        if first == "|" or first == ">":
            return self._block_scalar(i, value, owner)
        if first == "[" or first == "{":
            if self.depth >= limits.MAX_YAML_DEPTH:
                self.plain_keys = False  # (the flow node would be one level too deep)
            return _flow(value), i + 1
        if first in _NOT_PLAIN_START and not (first == "-" and value[1:2] not in ("", " ")):
            raise _Declined  # (a dash before anything but a space starts a plain scalar: -1)
        cut = value.find(" #")
        if cut >= 0:
            value = value[:cut].rstrip(" ")
        if ": " in value or value[-1] == ":":
            raise _Declined
        i += 1
        if i < self.count and self.indent[i] > owner and self.text[i] and cut < 0:
            return self._plain_lines(i, value, owner)
        return scalar(value), i

    def _plain_lines(self, i: int, value: str, owner: int) -> tuple[Any, int]:
        """A plain scalar folded over several lines."""
        parts = [value]
        text, indents = self.text, self.indent
        while i < self.count and text[i] and indents[i] > owner:
            more = text[i]
            if more[0] == "#" or ": " in more or " #" in more or more[-1] == ":":
                raise _Declined
            parts.append(more)
            i += 1
        j = self._content(i)
        if j < self.count and indents[j] > owner:
            raise _Declined  # blank lines inside the scalar, or a comment then more of it
        return scalar(" ".join(parts)), i

    def _quoted(self, i: int, value: str, owner: int) -> tuple[str, int]:
        quote = value[0]
        end = _closing_quote(value, quote)
        if end >= 0:
            body = value[1:end]
            after = value[end + 1 :].lstrip(" ")
            if after and after[0] != "#":
                raise _Declined
            return _unquote(body, quote), i + 1
        # Over several lines: folded like a plain scalar, blank lines kept as line breaks.
        pieces = [value[1:]]
        j = i + 1
        while True:
            if j >= self.count:
                raise _Declined
            line = self.raw[j]
            if self.text[j] and self.indent[j] <= owner:
                raise _Declined
            end = _closing_quote(line, quote, 0)
            if end >= 0:
                after = line[end + 1 :].lstrip(" ")
                if after and after[0] != "#":
                    raise _Declined
                pieces.append(line[:end])
                break
            pieces.append(line)
            j += 1
        if quote == '"' and any("\\" in p for p in pieces):
            raise _Declined
        folded = pieces[0].rstrip(" ")
        breaks = 0
        for piece in pieces[1:-1]:
            piece = piece.strip(" ")
            if not piece:
                breaks += 1
                continue
            folded += ("\n" * breaks if breaks else " ") + piece
            breaks = 0
        last = pieces[-1].lstrip(" ")
        folded += "\n" * breaks if breaks else " "
        folded += last
        return _unquote(folded, quote, folded=True), j + 1

    def _block_scalar(self, i: int, header: str, owner: int) -> tuple[str, int]:
        match = _BLOCK_HEADER.fullmatch(header)
        if match is None:
            raise _Declined  # an indentation indicator, or text after the header
        style, chomp = match.groups()
        raw, text, indents = self.raw, self.text, self.indent
        j = i + 1
        while j < self.count and not text[j]:
            if raw[j]:
                raise _Declined  # leading lines of spaces only
            j += 1
        if j == self.count or indents[j] <= owner:
            raise _Declined  # an empty block scalar
        column = indents[j]
        body: list[str] = [""] * (j - i - 1)
        while j < self.count and (not text[j] or indents[j] >= column):
            if not text[j]:
                if len(raw[j]) > column:
                    raise _Declined  # spaces beyond the indentation: content in YAML
                body.append("")
            else:
                body.append(raw[j][column:])
            j += 1
        trailing = 0
        while body and not body[-1]:
            body.pop()
            trailing += 1
        j -= trailing  # trailing blank lines end the scalar; the caller skips them
        content = "\n".join(body) if style == "|" else _fold(body)
        if chomp == "-" or (j == self.count and not self.more):  # (a file's last line may have no break)
            return content, j
        if chomp == "+":
            return content + "\n" * (trailing + 1), j
        return content + "\n", j


def _is_key_line(content: str) -> bool:
    """Whether ``content`` is a ``key: value`` (or ``key:``) line."""
    return ": " in content or content[-1] == ":"


def _closing_quote(text: str, quote: str, start: int = 1) -> int:
    """The index of the quote that closes a quoted scalar in ``text``, -1 if it is not there."""
    i = start
    while True:
        i = text.find(quote, i)
        if i < 0:
            return -1
        if quote == "'":
            if text[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i
        backslashes = len(text[start:i]) - len(text[start:i].rstrip("\\"))
        if backslashes % 2 == 0:
            return i
        i += 1


def _unquote(body: str, quote: str, folded: bool = False) -> str:
    if quote == "'":
        return body.replace("''", "'")
    if "\\" not in body:
        return body
    if folded:
        raise _Declined
    try:
        # JSON's escapes are a subset of YAML's, with the same meanings.
        value = json.loads(f'"{body}"')
    except ValueError:
        raise _Declined from None
    if not isinstance(value, str):
        raise _Declined
    return value


def _fold(lines: list[str]) -> str:
    """The content of a folded (``>``) block scalar: single line breaks become spaces."""
    out = ""
    breaks = 0
    started = False
    for line in lines:
        if not line:
            breaks += 1
            continue
        if line[0] == " ":
            raise _Declined  # more-indented lines keep their breaks: left to PyYAML
        if not started:
            out = "\n" * breaks + line
            started = True
        else:
            out += ("\n" * breaks if breaks else " ") + line
        breaks = 0
    return out


def _flow(value: str) -> list[Any] | dict[Any, Any]:
    """``[]``, ``{}`` and one-line sequences of simple scalars (``[a, "b"]``)."""
    cut = value.find(" #")
    if cut >= 0:
        value = value[:cut].rstrip(" ")
    if value == "{}":
        return {}
    if not value.startswith("[") or not value.endswith("]"):
        raise _Declined
    inner = value[1:-1].strip(" ")
    if not inner:
        return []
    items = []
    for item in inner.split(","):
        match = _FLOW_ITEM.fullmatch(item)
        if match is None:
            raise _Declined
        plain, double, single = match.groups()
        items.append(scalar(plain) if plain is not None else double if double is not None else single)
    return items
