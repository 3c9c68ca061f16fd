"""The request-header rules of Go's ``http.ServeContent``, for any bytes a client sends.

Conditional requests (If-Match, If-Unmodified-Since, If-None-Match,
If-Modified-Since, If-Range), ``Range`` and HTTP dates are parsed exactly as
Go's net/http parses them: ASCII digits only, Go's three date layouts, entity
tags scanned token by token. A malformed header is never an error of the
server: it is ignored, or answered 416 where Go answers 416.

Header values reach here as aiohttp decodes them (UTF-8 with surrogate
escapes), so nothing below may call ``int()`` on text it has not matched
against an ASCII pattern first: ``int()`` accepts ``²``, ``٣``, ``_`` and
spaces, and refuses more than 4,300 digits with a ValueError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum

# textproto.TrimString: ASCII white space only (str.strip() would also eat U+0085, U+00A0, ...).
_OWS = " \t\r\n"
_INT64_MAX = (1 << 63) - 1
# strconv.ParseInt(s, 10, 64): an optional sign, then ASCII digits.
_GO_INT = re.compile(r"[+-]?[0-9]+")


def go_parse_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64), None where Go returns an error (syntax or range)."""
    if not _GO_INT.fullmatch(text):
        return None
    sign = -1 if text[0] == "-" else 1
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 19:  # beyond int64, and before int() could refuse a very long string
        return None
    value = sign * int(digits)
    if value > _INT64_MAX or value < -_INT64_MAX - 1:
        return None
    return value


# --- dates: http.ParseTime ----------------------------------------------------------------------

_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_SHORT_DAYS = frozenset(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
_LONG_DAYS = frozenset(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
# Go's stdHour takes one or two digits, minutes and seconds exactly two; after the seconds a
# fraction ("05.123") is accepted even though no layout has one.
_CLOCK = r"([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?:[.,][0-9]+)?"
# TimeFormat "Mon, 02 Jan 2006 15:04:05 GMT" (GMT is literal text of the layout).
_IMF = re.compile(rf"([A-Za-z]{{3}}), ([0-9]{{2}}) ([A-Za-z]{{3}}) ([0-9]{{4}}) {_CLOCK} GMT")
# time.RFC850 "Monday, 02-Jan-06 15:04:05 MST", with the zone names Go's parseTimeZone takes.
_ZONE = r"GMT[+-][0-9]{1,2}|[A-Z]{3,4}T|[A-Z]{3}|WITA|ChST|MeST"
_RFC850 = re.compile(rf"([A-Za-z]{{6,9}}), ([0-9]{{2}})-([A-Za-z]{{3}})-([0-9]{{2}}) {_CLOCK} ({_ZONE})")
# time.ANSIC "Mon Jan _2 15:04:05 2006".
_ANSIC = re.compile(rf"([A-Za-z]{{3}}) ([A-Za-z]{{3}}) ( ?[0-9]{{1,2}}) {_CLOCK} ([0-9]{{4}})")


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, unlike ``datetime``)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in(month: int, year: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _timestamp(year: int, month_name: str, day: int, clock: tuple[str, str, str], offset: int) -> int | None:
    month = _MONTHS.get(month_name.lower())
    hour, minute, second = (int(part) for part in clock)
    if month is None or hour > 23 or minute > 59 or second > 59 or not 1 <= day <= _days_in(month, year):
        return None
    return _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset


def parse_http_time(value: str) -> int | None:
    """http.ParseTime: Unix seconds of an HTTP date in one of Go's three layouts, else None."""
    found = _IMF.fullmatch(value)
    if found is not None:
        wday, day, month, year, *clock = found.groups()
        if wday.lower() not in _SHORT_DAYS:
            return None
        return _timestamp(int(year), month, int(day), (clock[0], clock[1], clock[2]), 0)
    found = _RFC850.fullmatch(value)
    if found is not None:
        wday, day, month, year2, hour, minute, second, zone = found.groups()
        if wday.lower() not in _LONG_DAYS:
            return None
        year = int(year2)
        year += 1900 if year >= 69 else 2000  # Go's two-digit years
        # A zone abbreviation Go does not know is taken as UTC; only GMT+N carries an offset.
        offset = int(zone[3:]) * 3600 if zone.startswith("GMT") and len(zone) > 3 else 0
        if not -23 * 3600 <= offset <= 12 * 3600:
            return None
        return _timestamp(year, month, int(day), (hour, minute, second), offset)
    found = _ANSIC.fullmatch(value)
    if found is not None:
        wday, month, day, hour, minute, second, year = found.groups()
        if wday.lower() not in _SHORT_DAYS:
            return None
        return _timestamp(int(year), month, int(day.lstrip(" ")), (hour, minute, second), 0)
    return None


# --- entity tags --------------------------------------------------------------------------------


def _scan_etag(text: str) -> tuple[str, str]:
    """Go's scanETag: the first entity tag of ``text`` and what follows it; ("", "") if malformed."""
    text = text.strip(_OWS)
    start = 2 if text.startswith("W/") else 0
    if len(text) - start < 2 or text[start] != '"':
        return "", ""
    for i in range(start + 1, len(text)):
        c = ord(text[i])
        if c == 0x22:
            return text[: i + 1], text[i + 1 :]
        # Allowed: 0x21, 0x23-0x7E and any byte >= 0x80 (here: any non-ASCII character).
        if not (c == 0x21 or 0x23 <= c <= 0x7E or c >= 0x80):
            return "", ""
    return "", ""


def _strong_match(a: str, b: str | None) -> bool:
    return bool(b) and a == b and a[0] == '"'


def _weak_match(a: str, b: str | None) -> bool:
    return a.removeprefix("W/") == (b or "").removeprefix("W/")


def _scan_list(header: str, etag: str | None, strong: bool) -> bool | None:
    """Whether a list of entity tags matches: True, False, or None if ``*`` was given."""
    while True:
        header = header.strip(_OWS)
        if not header:
            return False
        if header[0] == ",":
            header = header[1:]
            continue
        if header[0] == "*":
            return None
        tag, header = _scan_etag(header)
        if not tag:
            return False  # Go stops at the first malformed tag
        if (_strong_match if strong else _weak_match)(tag, etag):
            return True


# --- preconditions ------------------------------------------------------------------------------


class Outcome(Enum):
    """What checkPreconditions decided before any byte of the file is read."""

    SEND = 0
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412


def check_preconditions(
    method: str, headers: Mapping[str, str], mtime: int | None, etag: str | None
) -> tuple[Outcome, str]:
    """Go's checkPreconditions: the outcome and the Range header still to honour ("" for none).

    ``headers`` is the request's header mapping (``.get``); ``mtime`` the resource's
    modification time in whole seconds, None when unknown (Go's zero time).
    """
    get = headers.get
    get_or_head = method in ("GET", "HEAD")
    if_match = get("If-Match") or ""
    if if_match:
        matched = _scan_list(if_match, etag, strong=True)
        if matched is False:
            return Outcome.PRECONDITION_FAILED, ""
    else:
        since = _header_time(get("If-Unmodified-Since"))
        if since is not None and mtime is not None and mtime > since:
            return Outcome.PRECONDITION_FAILED, ""
    if_none_match = get("If-None-Match") or ""
    if if_none_match:
        if _scan_list(if_none_match, etag, strong=False) is not False:
            return (Outcome.NOT_MODIFIED if get_or_head else Outcome.PRECONDITION_FAILED), ""
    elif get_or_head:
        since = _header_time(get("If-Modified-Since"))
        if since is not None and mtime is not None and mtime <= since:
            return Outcome.NOT_MODIFIED, ""
    range_header = get("Range") or ""
    if range_header and get_or_head:
        if_range = get("If-Range") or ""
        if if_range and not _if_range_matches(if_range, mtime, etag):
            range_header = ""
    return Outcome.SEND, range_header


def _header_time(value: str | None) -> int | None:
    return parse_http_time(value) if value else None


def _if_range_matches(value: str, mtime: int | None, etag: str | None) -> bool:
    tag, _ = _scan_etag(value)
    if tag:
        return _strong_match(tag, etag)
    if mtime is None:
        return False
    since = parse_http_time(value)
    return since is not None and since == mtime


# --- ranges: parseRange -------------------------------------------------------------------------


class RangeError(ValueError):
    """A Range header Go answers 416 to; ``no_overlap`` when it was well formed but out of the file."""

    def __init__(self, message: str, no_overlap: bool = False) -> None:
        super().__init__(message)
        self.no_overlap = no_overlap


def parse_range(header: str, size: int) -> list[tuple[int, int]]:
    """Go's parseRange: byte ranges as (start, length); raises RangeError (416)."""
    if not header:
        return []
    if not header.startswith("bytes="):
        raise RangeError("invalid range")
    ranges: list[tuple[int, int]] = []
    no_overlap = False
    for spec in header[len("bytes=") :].split(","):
        spec = spec.strip(_OWS)
        if not spec:
            continue
        start_text, sep, end_text = spec.partition("-")
        if not sep:
            raise RangeError("invalid range")
        start_text, end_text = start_text.strip(_OWS), end_text.strip(_OWS)
        if not start_text:
            # A suffix length: must be a non-negative integer.
            if not end_text or end_text[0] == "-":
                raise RangeError("invalid range")
            suffix = go_parse_int64(end_text)
            if suffix is None or suffix < 0:
                raise RangeError("invalid range")
            suffix = min(suffix, size)
            ranges.append((size - suffix, suffix))
            continue
        start = go_parse_int64(start_text)
        if start is None or start < 0:
            raise RangeError("invalid range")
        if start >= size:
            no_overlap = True
            continue
        if not end_text:
            ranges.append((start, size - start))
            continue
        end = go_parse_int64(end_text)
        if end is None or start > end:
            raise RangeError("invalid range")
        end = min(end, size - 1)
        ranges.append((start, end - start + 1))
    if no_overlap and not ranges:
        raise RangeError("invalid range: failed to overlap", no_overlap=True)
    return ranges
