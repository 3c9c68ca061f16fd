"""Go's textual formatting of scalars, where eprd must print what the reference prints."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def go_string(value: Any) -> str:
    """Format a scalar as Go's ``%v`` does (how go-ucfg turns scalars into strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return float_v(value)
    return str(value)


def _shortest(value: float) -> tuple[str, str, int]:
    """Sign, shortest round-trip digits and decimal point position of a finite float."""
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    point = len(digits) + int(exponent)
    return ("-" if sign else ""), text, point


def _fixed(sign: str, digits: str, point: int) -> str:
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _exponent(sign: str, digits: str, point: int, min_digits: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exp = point - 1
    return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{str(abs(exp)).zfill(min_digits)}"


def _special(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    return None


def float_v(value: float) -> str:
    """Go's ``%v`` for float64 (strconv 'g', shortest: exponent below 1e-4 or from 1e6)."""
    special = _special(value)
    if special is not None:
        return special
    sign, digits, point = _shortest(value)
    if point - 1 < -4 or point - 1 >= 6:
        return _exponent(sign, digits, point, 2)
    return _fixed(sign, digits, point)


def float_json(value: float) -> str:
    """encoding/json's float64: fixed notation except below 1e-6 or from 1e21."""
    special = _special(value)
    if special is not None:
        return special
    sign, digits, point = _shortest(value)
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        return _exponent(sign, digits, point, 1)
    return _fixed(sign, digits, point)
