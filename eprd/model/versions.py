"""Version parsing, ordering and constraints as the reference does them (Masterminds/semver v3.4; spec §5)."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from typing import Any

import semver


class VersionError(ValueError):
    """A version or constraint was rejected; ``str(err)`` is the reason text the reference prints."""


_U64_MAX = 2**64 - 1
_RELEASE = (1,)  # sorts after every (0, ...) prerelease tuple
_NUM = re.compile(r"[0-9]*")
_IDENT = re.compile(r"[0-9A-Za-z-]+")
_LOOSE_RE = re.compile(
    r"v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


def _parse_uint(digits: str) -> int:
    """Go's ``strconv.ParseUint(digits, 10, 64)`` for a string of ASCII digits, with its error texts."""
    if not digits:
        raise VersionError('strconv.ParseUint: parsing "": invalid syntax')
    # Length check first: int() refuses very long digit strings on modern Pythons.
    if len(digits.lstrip("0")) > 20 or int(digits) > _U64_MAX:
        raise VersionError(f'strconv.ParseUint: parsing "{digits}": value out of range')
    return int(digits)


def _check_prerelease(pre: str) -> None:
    for ident in pre.split("."):
        # Masterminds lets empty identifiers through in strict mode; the spec (and SemVer) do not.
        if not _IDENT.fullmatch(ident):
            raise VersionError("invalid prerelease string")
        if ident.isdigit() and len(ident) > 1 and ident[0] == "0":
            raise VersionError("version segment starts with 0")


def parse_strict(text: str) -> semver.Version:
    """Parse ``MAJOR.MINOR.PATCH[-pre][+build]`` (no ``v``, no leading zeros); StrictNewVersion's texts."""
    if not text:
        raise VersionError("version string empty")
    parts = text.split(".", 2)
    if len(parts) != 3:
        raise VersionError("invalid semantic version")
    pre = build = None
    tail = parts[2]
    # Build metadata first: it is rightmost and may itself contain '-'.
    if "+" in tail:
        tail, build = tail.split("+", 1)
    if "-" in tail:
        tail, pre = tail.split("-", 1)
    parts[2] = tail
    for part in parts:
        if not _NUM.fullmatch(part):
            raise VersionError("invalid characters in version")
        if len(part) > 1 and part[0] == "0":
            raise VersionError("version segment starts with 0")
    major, minor, patch = (_parse_uint(part) for part in parts)
    if pre is not None:
        _check_prerelease(pre)
    if build is not None and not all(_IDENT.fullmatch(ident) for ident in build.split(".")):
        raise VersionError("invalid metadata string")
    return semver.Version(major, minor, patch, pre, build)


def is_strict(text: str) -> bool:
    """Whether ``text`` is a strict semantic version."""
    with contextlib.suppress(VersionError):
        parse_strict(text)
        return True
    return False


def parse_loose(text: str) -> semver.Version:
    """Parse like Masterminds ``NewVersion``: optional ``v``, 1-3 numeric parts, leading zeros tolerated."""
    m = _LOOSE_RE.fullmatch(text)
    if m is None:
        raise VersionError("invalid semantic version")
    major, minor, patch, pre, build = m.groups()
    try:
        nums = [_parse_uint(part) if part else 0 for part in (major, minor, patch)]
    except VersionError as err:
        raise VersionError(f"error parsing version segment: {err}") from None
    # The regex already guarantees identifier syntax; only numeric leading zeros remain to reject.
    if pre:
        _check_prerelease(pre)
    return semver.Version(nums[0], nums[1], nums[2], pre, build)


def sort_key(v: semver.Version) -> tuple:
    """Hashable key ordered by SemVer 2.0 precedence (build metadata ignored)."""
    pre = v.prerelease
    if not pre:
        return (v.major, v.minor, v.patch, _RELEASE)
    idents: list[tuple[int, int, str] | tuple[int, str]] = []
    for ident in pre.split("."):
        if ident.isdigit():
            # Compare numbers by (length, digits): exact for any size, no int() conversion.
            digits = ident.lstrip("0") or "0"
            idents.append((0, len(digits), digits))
        else:
            idents.append((1, ident))
    return (v.major, v.minor, v.patch, (0, *idents))


def is_prerelease(v: semver.Version) -> bool:
    """Whether the version carries a prerelease tag (0.x versions are not prereleases, §2.5)."""
    return bool(v.prerelease)


# Constraint regexes mirror the reference's so that the same strings are accepted and split the same
# way. Go's \s is ASCII-only without \v, and Go's $ never matches before a trailing newline.
_WS = r"[\t\n\f\r ]"
_OPS = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^"
_CV = (
    r"v?([0-9|xX*]+)(\.[0-9|xX*]+)?(\.[0-9|xX*]+)?"
    r"(-([0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*))?(\+([0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*))?"
)
_RANGE_RE = re.compile(rf"{_WS}*({_CV}){_WS}+-{_WS}+({_CV}){_WS}*")
_FIND_RE = re.compile(rf"(?:{_OPS}){_WS}*{_CV}")
_TERM_RE = re.compile(rf"{_WS}*({_OPS}){_WS}*({_CV}){_WS}*")
# Same language as the reference's validation regex, rewritten with possessive/atomic parts:
# the original's overlapping whitespace quantifiers backtrack exponentially on bad input.
_VALID_RE = re.compile(
    rf"{_WS}*+(?:{_OPS}){_WS}*+(?>{_CV})"
    rf"(?:(?:{_WS}*+,{_WS}*+|{_WS}++)(?:{_OPS}){_WS}*+(?>{_CV}))*{_WS}*+"
)
_WILDCARDS = frozenset(("x", "X", "*"))
_Op = Callable[["_Term", semver.Version, tuple], bool]


class _Term:
    """One operator/version pair of an alternative."""

    __slots__ = ("dirty", "fn", "key", "major", "minor", "minor_dirty", "patch", "patch_dirty", "pre")

    def __init__(self, op: str, con: semver.Version, minor: bool, patch: bool, dirty: bool) -> None:
        self.fn: _Op = _OPERATORS[op]
        self.major, self.minor, self.patch = con.major, con.minor, con.patch
        self.pre = con.prerelease or ""
        self.key = sort_key(con)
        # Which level was wildcarded/missing decides how the dirty operators compare.
        self.minor_dirty, self.patch_dirty, self.dirty = minor, patch, dirty


def _tilde(t: _Term, v: semver.Version, key: tuple) -> bool:
    if key < t.key:
        return False
    # ~0.0.0 (also '*', 'x') accepts everything at or above it.
    if t.major == t.minor == t.patch == 0 and not (t.minor_dirty or t.patch_dirty):
        return True
    return v.major == t.major and (t.minor_dirty or v.minor == t.minor)


def _caret(t: _Term, v: semver.Version, key: tuple) -> bool:
    if key < t.key:
        return False
    if t.major > 0 or t.minor_dirty:
        return v.major == t.major
    if v.major > 0:
        return False
    if t.minor > 0 or t.patch_dirty:
        return v.minor == t.minor
    return v.minor == 0 and v.patch == t.patch


def _equal(t: _Term, v: semver.Version, key: tuple) -> bool:
    return _tilde(t, v, key) if t.dirty else key == t.key


def _not_equal(t: _Term, v: semver.Version, key: tuple) -> bool:
    if t.dirty:
        if v.major != t.major:
            return True
        if t.minor_dirty or v.minor != t.minor:
            return not t.minor_dirty
        if t.patch_dirty:
            return (v.prerelease or "") != t.pre
        if v.patch != t.patch:
            return True
    return key != t.key


def _greater(t: _Term, v: semver.Version, key: tuple) -> bool:
    # Dirty forms compare on the wildcarded level: '>1.2' means '>=1.3.0', '>1' means '>=2.0.0'.
    if t.dirty:
        if v.major != t.major:
            return v.major > t.major
        if t.minor_dirty:
            return False
        if t.patch_dirty:
            return v.minor > t.minor
    return key > t.key


def _less_equal(t: _Term, v: semver.Version, key: tuple) -> bool:
    # Dirty '<=1.2' covers all of 1.2.x, '<=1' all of 1.x.x.
    if not t.dirty:
        return key <= t.key
    if v.major != t.major:
        return v.major < t.major
    return t.minor_dirty or v.minor <= t.minor


_OPERATORS: dict[str, _Op] = {
    "": _equal,
    "=": _equal,
    "!=": _not_equal,
    ">": _greater,
    "<": lambda t, v, key: key < t.key,
    ">=": lambda t, v, key: key >= t.key,
    "=>": lambda t, v, key: key >= t.key,
    "<=": _less_equal,
    "=<": _less_equal,
    "~": _tilde,
    "~>": _tilde,
    "^": _caret,
}


def _parse_term(piece: str) -> _Term:
    m = _TERM_RE.fullmatch(piece)
    if m is None:
        raise VersionError(f"improper constraint: {piece}")
    op, orig, major, minor, patch, pre = m.group(1, 2, 3, 4, 5, 6)
    pre = pre or ""
    # Wildcards/missing parts become zeros; build metadata is dropped for such "dirty" versions.
    if major in _WILDCARDS:
        ver, flags = f"0.0.0{pre}", (False, False, True)
    elif minor is None or minor[1:] in _WILDCARDS:
        ver, flags = f"{major}.0.0{pre}", (True, False, True)
    elif patch is None or patch[1:] in _WILDCARDS:
        ver, flags = f"{major}{minor}.0{pre}", (False, True, True)
    else:
        ver, flags = orig, (False, False, False)
    try:
        con = parse_loose(ver)
    except VersionError:
        raise VersionError("constraint parser error") from None
    return _Term(op, con, *flags)


def _rewrite_ranges(text: str) -> str:
    """Turn each hyphen range ``A - B`` into ``>= A, <= B`` the way the reference does."""
    out = text
    for m in _RANGE_RE.finditer(text):
        out = out.replace(m.group(0), f">= {m.group(1)}, <= {m.group(11)} ", 1)
    return out


class Constraint:
    """A parsed constraint expression (§5.2): ``||`` alternatives of AND-ed operator terms."""

    __slots__ = ("_alternatives", "text")

    def __init__(self, text: str, alternatives: tuple[tuple[bool, tuple[_Term, ...]], ...]) -> None:
        self.text = text
        self._alternatives = alternatives

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse ``text``; raises VersionError (an empty or blank string is invalid)."""
        alternatives = []
        for segment in _rewrite_ranges(text).split("||"):
            if not _VALID_RE.fullmatch(segment):
                raise VersionError(f"improper constraint: {segment}")
            pieces = [m.group(0) for m in _FIND_RE.finditer(segment)] or [segment]
            terms = tuple(_parse_term(piece) for piece in pieces)
            alternatives.append((any(term.pre for term in terms), terms))
        return cls(text, tuple(alternatives))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Terms hold operator functions; re-parsing the text is the portable way to pickle, and
        # many packages share a constraint, so an unpickled index parses each text once.
        return (parse_constraint, (self.text,))

    def check(self, v: semver.Version) -> bool:
        """Whether ``v`` satisfies at least one alternative."""
        key = sort_key(v)
        pre = bool(v.prerelease)
        for has_pre, terms in self._alternatives:
            # Prerelease rule: a tagged version is only considered by alternatives that mention one.
            if pre and not has_pre:
                continue
            if all(term.fn(term, v, key) for term in terms):
                return True
        return False

    def __repr__(self) -> str:
        return f"Constraint({self.text!r})"


@functools.lru_cache(maxsize=4096)
def parse_constraint(text: str) -> Constraint:
    """:meth:`Constraint.parse`, memoised (constraints are immutable and widely shared)."""
    return Constraint.parse(text)
