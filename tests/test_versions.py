"""Tests for eprd.versions: strict/loose parsing, precedence keys and Masterminds-v3 constraints."""

from __future__ import annotations

import functools
import itertools
import random
import re

import pytest
import semver

from eprd.model import versions
from eprd.model.versions import (
    Constraint,
    VersionError,
    is_prerelease,
    is_strict,
    parse_loose,
    parse_strict,
    sort_key,
)

# --- strict ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0", (0, 0, 0, None, None)),
        ("1.0.0", (1, 0, 0, None, None)),
        ("10.20.30", (10, 20, 30, None, None)),
        ("1.0.0-rc1", (1, 0, 0, "rc1", None)),
        ("1.0.0-0", (1, 0, 0, "0", None)),
        ("1.0.0-rc.1", (1, 0, 0, "rc.1", None)),
        ("1.0.0-alpha-1", (1, 0, 0, "alpha-1", None)),
        ("1.0.0--", (1, 0, 0, "-", None)),
        ("1.0.0-x.7.z.92", (1, 0, 0, "x.7.z.92", None)),
        ("1.0.0-0a", (1, 0, 0, "0a", None)),
        ("1.0.0+build", (1, 0, 0, None, "build")),
        ("1.0.0+001", (1, 0, 0, None, "001")),
        ("1.0.0+b-1.2", (1, 0, 0, None, "b-1.2")),
        ("1.2.3-SNAPSHOT+exp.sha.5114f85", (1, 2, 3, "SNAPSHOT", "exp.sha.5114f85")),
        ("18446744073709551615.0.0", (2**64 - 1, 0, 0, None, None)),
    ],
)
def test_parse_strict_accepts(text, expected):
    v = parse_strict(text)
    assert isinstance(v, semver.Version)
    assert (v.major, v.minor, v.patch, v.prerelease, v.build) == expected
    assert is_strict(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "version string empty"),
        ("1", "invalid semantic version"),
        ("1.0", "invalid semantic version"),
        ("v1.0.0", "invalid characters in version"),
        ("V1.0.0", "invalid characters in version"),
        (" 1.0.0", "invalid characters in version"),
        ("1.0.0 ", "invalid characters in version"),
        ("1.0.0\n", "invalid characters in version"),
        ("1.0.0.0", "invalid characters in version"),
        ("1.x.0", "invalid characters in version"),
        ("1.2-rc.3", "invalid characters in version"),
        ("\u0661.0.0", "invalid characters in version"),
        ("01.0.0", "version segment starts with 0"),
        ("1.00.0", "version segment starts with 0"),
        ("1.0.01", "version segment starts with 0"),
        ("1.0.0-01", "version segment starts with 0"),
        ("1.0.0-rc.01", "version segment starts with 0"),
        ("1..0", 'strconv.ParseUint: parsing "": invalid syntax'),
        ("1.0.", 'strconv.ParseUint: parsing "": invalid syntax'),
        ("18446744073709551616.0.0", 'strconv.ParseUint: parsing "18446744073709551616": value out of range'),
        ("1.0.0-", "invalid prerelease string"),
        ("1.0.0-+b", "invalid prerelease string"),
        ("1.0.0-a..b", "invalid prerelease string"),
        ("1.0.0-a.", "invalid prerelease string"),
        ("1.0.0-rc_1", "invalid prerelease string"),
        ("1.0.0-rc 1", "invalid prerelease string"),
        ("1.0.0+", "invalid metadata string"),
        ("1.0.0+a..b", "invalid metadata string"),
        ("1.0.0+a_b", "invalid metadata string"),
        ("1.0.0-rc1+a+b", "invalid metadata string"),
    ],
)
def test_parse_strict_rejects(text, reason):
    with pytest.raises(VersionError) as info:
        parse_strict(text)
    assert str(info.value) == reason
    assert isinstance(info.value, ValueError)
    assert not is_strict(text)


# --- loose -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3", (1, 2, 3, None, None)),
        ("v1.2.3", (1, 2, 3, None, None)),
        ("8.1", (8, 1, 0, None, None)),
        ("8", (8, 0, 0, None, None)),
        ("v2", (2, 0, 0, None, None)),
        ("01.02.03", (1, 2, 3, None, None)),
        ("007", (7, 0, 0, None, None)),
        ("8.1.0-SNAPSHOT", (8, 1, 0, "SNAPSHOT", None)),
        ("8.1-SNAPSHOT", (8, 1, 0, "SNAPSHOT", None)),
        ("1-0", (1, 0, 0, "0", None)),
        ("1.2.3-rc.1+b.2", (1, 2, 3, "rc.1", "b.2")),
        ("1.2.3+001", (1, 2, 3, None, "001")),
        ("1.2+build", (1, 2, 0, None, "build")),
        ("v2.3.5-20161202202307-sha.e8fc5e5", (2, 3, 5, "20161202202307-sha.e8fc5e5", None)),
        ("18446744073709551615", (2**64 - 1, 0, 0, None, None)),
        ("000000000000000000000000000001", (1, 0, 0, None, None)),
    ],
)
def test_parse_loose_accepts(text, expected):
    v = parse_loose(text)
    assert isinstance(v, semver.Version)
    assert (v.major, v.minor, v.patch, v.prerelease, v.build) == expected


_OUT_OF_RANGE = 'error parsing version segment: strconv.ParseUint: parsing "{}": value out of range'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid semantic version"),
        ("foo", "invalid semantic version"),
        ("v", "invalid semantic version"),
        ("V1.2.3", "invalid semantic version"),
        ("vv1", "invalid semantic version"),
        ("1.2.3.4", "invalid semantic version"),
        (" 1.2.3", "invalid semantic version"),
        ("1.2.3 ", "invalid semantic version"),
        ("1.2.3\n", "invalid semantic version"),
        ("1.2.", "invalid semantic version"),
        (".1", "invalid semantic version"),
        ("1.2.3-", "invalid semantic version"),
        ("1.2.3+", "invalid semantic version"),
        ("1.2.3-a..b", "invalid semantic version"),
        ("1.2.3-rc_1", "invalid semantic version"),
        ("1.x", "invalid semantic version"),
        ("\u0661.2.3", "invalid semantic version"),
        ("1.2.3-01", "version segment starts with 0"),
        ("1.2.3-a.01", "version segment starts with 0"),
        ("1-00", "version segment starts with 0"),
        ("18446744073709551616", _OUT_OF_RANGE.format("18446744073709551616")),
        ("1.99999999999999999999", _OUT_OF_RANGE.format("99999999999999999999")),
        ("1.2.99999999999999999999", _OUT_OF_RANGE.format("99999999999999999999")),
        ("9" * 5000, _OUT_OF_RANGE.format("9" * 5000)),
    ],
)
def test_parse_loose_rejects(text, reason):
    with pytest.raises(VersionError) as info:
        parse_loose(text)
    assert str(info.value) == reason


# --- ordering --------------------------------------------------------------------------------


def test_sort_key_semver_spec_example_order():
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1-0",
        "1.0.1",
        "1.2.0",
        "1.10.0",
        "2.0.0",
    ]
    shuffled = ordered[:]
    random.Random(1).shuffle(shuffled)
    assert sorted(shuffled, key=lambda s: sort_key(parse_strict(s))) == ordered


def test_sort_key_ignores_build_and_is_hashable():
    a, b = parse_strict("1.0.0+a"), parse_strict("1.0.0+b")
    assert sort_key(a) == sort_key(b)
    assert hash(sort_key(a)) == hash(sort_key(b))
    assert len({sort_key(parse_loose(s)) for s in ("1.0", "1.0.0", "v1", "01.0.0+x")}) == 1


def _random_version(rng: random.Random) -> semver.Version:
    def ident() -> str:
        kind = rng.random()
        if kind < 0.45:
            return rng.choice(["0", "1", "2", "9", "10", "11", "99", "100", "007", str(2**70)])
        if kind < 0.9:
            return rng.choice(["a", "b", "alpha", "beta", "rc", "SNAPSHOT", "A", "Z", "-", "1a", "a1", "0x"])
        return "".join(rng.choice("0123456789abcXYZ-") for _ in range(rng.randint(1, 4)))

    # Leading-zero numeric identifiers cannot come out of the parsers but semver.Version allows them.
    pre = ".".join(ident() for _ in range(rng.randint(1, 4))) if rng.random() < 0.6 else None
    build = rng.choice([None, "b1", "exp.sha.5114f85"])
    return semver.Version(rng.randint(0, 3), rng.randint(0, 12), rng.randint(0, 3), pre, build)


def test_sort_key_matches_semver_compare_randomized():
    rng = random.Random(20240517)
    pool = [_random_version(rng) for _ in range(600)]
    for a, b in zip(pool, reversed(pool), strict=True):
        expected = a.compare(b)
        ka, kb = sort_key(a), sort_key(b)
        assert ((ka > kb) - (ka < kb)) == expected, (str(a), str(b))
    by_key = sorted(pool, key=sort_key)
    by_compare = sorted(pool, key=functools.cmp_to_key(lambda x, y: x.compare(y)))
    assert [sort_key(v) for v in by_key] == [sort_key(v) for v in by_compare]
    for x, y in itertools.pairwise(by_key):
        assert x.compare(y) <= 0


def test_sort_key_pairwise_small_pool():
    rng = random.Random(7)
    pool = [_random_version(rng) for _ in range(120)]
    for a, b in itertools.product(pool, repeat=2):
        ka, kb = sort_key(a), sort_key(b)
        assert ((ka > kb) - (ka < kb)) == a.compare(b), (str(a), str(b))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.0.0", False),
        ("0.1.0", False),
        ("0.0.1", False),
        ("1.0.0-rc1", True),
        ("0.1.0-beta", True),
        ("1.0.0-SNAPSHOT", True),
        ("1.0.0+build", False),
    ],
)
def test_is_prerelease(text, expected):
    assert is_prerelease(parse_strict(text)) is expected


# --- constraint checks -----------------------------------------------------------------------

# (constraint, version, expected)
CHECKS = [
    # Spec §5.2 / reference test examples.
    (">= 7.0.0", "6.7.0", False),
    (">= 7.0.0", "7.1.0", True),
    ("~7", "7.1.0", True),
    ("~7.0.0", "7.1.0", False),
    ("~7.0.x", "7.0.2", True),
    ("^7.6.0", "7.0.2", False),
    ("^7.6.0", "7.12.2", True),
    ("^9.2.0", "9.1.0", False),
    ("^9.2.0", "9.5.0", True),
    ("~7.x.x", "7.9.0", True),
    ("~7.x.x", "8.0.0", False),
    (">6.7.0  <7.6.0", "7.0.0", True),
    ("^8.0.0", "8.1.0-SNAPSHOT", False),
    (">=8.0.0-0", "8.1.0-SNAPSHOT", True),
    ("^7.14.0 || ^8.0.0", "8.3.0", True),
    ("^7.14.0 || ^8.0.0", "7.17.0", True),
    ("^7.14.0 || ^8.0.0", "7.13.0", False),
    ("^7.14.0 || ^8.0.0", "9.0.0", False),
    # = and no operator
    ("=2.0.0", "1.2.3", False),
    ("=2.0.0", "2.0.0", True),
    ("2.0.0", "2.0.0+build", True),
    ("2.0.0+meta", "2.0.0", True),
    ("= 2.0", "1.2.3", False),
    ("= 2.0", "2.0.0", True),
    ("=2.0", "2.0.1", True),
    ("4.1", "4.1.0", True),
    ("2", "1.0.0", False),
    ("2", "3.4.5", False),
    ("2", "2.1.1", True),
    ("2.1", "2.1.1", True),
    ("2.1", "2.2.1", False),
    ("=0", "1.0.0", False),
    ("0.0.0", "1.2.3", False),
    ("v1.2.3", "1.2.3", True),
    ("01.2.3", "1.2.3", True),
    ("1.2.3-beta", "1.2.3-beta", True),
    ("1.2.3-beta", "1.2.3", False),
    # wildcards / dirty forms
    ("*", "1.2.3", True),
    ("*", "0.0.0", True),
    ("x", "4.5.6", True),
    ("X", "4.5.6", True),
    ("*", "1.2.3-alpha.1", False),
    ("*-0", "1.2.3-alpha.1", True),
    ("7.x", "7.9.9", True),
    ("7.x", "8.0.0", False),
    ("7.x", "6.9.9", False),
    ("7.*", "7.0.0", True),
    ("2.*", "3.4.5", False),
    ("2.1.*", "2.1.1", True),
    ("2.1.*", "2.2.1", False),
    ("1.2.x", "1.2.0", True),
    ("1.2.x", "1.2.99", True),
    ("1.2.x", "1.3.0", False),
    ("4.1.x", "4.1.3", True),
    ("1.x", "1.4.0", True),
    ("0.x.x", "1.2.3", False),
    ("0.0.x", "1.2.3", False),
    ("0.0.x", "0.0.7", True),
    ("0.x", "0.9.0", True),
    ("x.5.1", "3.0.0", True),
    # !=
    ("!=4.1.0", "4.1.0", False),
    ("!=4.1.0", "4.1.1", True),
    ("!=4.1.0", "4.1.0+build", False),
    ("!=4.1", "4.1.0", False),
    ("!=4.1", "4.1.1", False),
    ("!=4.1", "5.1.0", True),
    ("!=4.1", "5.1.0-alpha.1", False),
    ("!=4.1-alpha", "4.1.0", True),
    ("!=4.1-alpha", "4.1.0-alpha", False),
    ("!=4.1-alpha", "4.1.1-alpha", False),
    ("!=4.1-alpha", "4.1.0-beta", True),
    ("!=4.x", "5.1.0", True),
    ("!=4.x", "4.1.0", False),
    ("!=4.1.x", "4.2.0", True),
    ("!=4.2.x", "4.2.3", False),
    ("!=*", "0.0.0", False),
    ("!=*", "0.0.1", True),
    ("!=1.0.0", "2.0.0-beta", False),  # prerelease rule applies to every operator
    # >
    (">1.1", "4.1.0", True),
    (">1.1", "1.1.0", False),
    (">1.1", "1.1.9", False),
    (">1.1", "1.2.0", True),
    (">0", "0.0.0", False),
    (">0", "0.9.9", False),
    (">0", "1.0.0", True),
    (">11", "11.1.0", False),
    (">11", "12.0.0", True),
    (">11.1", "11.1.1", False),
    (">11.1", "11.2.1", True),
    (">1.2.3", "1.2.3", False),
    (">1.2.3", "1.2.4", True),
    (">1.2.3", "1.2.3+b", False),
    (">0", "0.0.1-alpha", False),
    (">0-0", "0.0.1-alpha", False),
    (">0.0-0", "0.0.1-alpha", False),
    (">0.0.0-0", "0.0.0-alpha", True),
    (">1.2.3-alpha.1", "1.2.3-alpha.2", True),
    (">1.2.3-alpha.1", "1.3.3-alpha.2", True),
    (">1.2.3-alpha.10", "1.2.3-alpha.9", False),
    (">*", "1.0.0", True),
    (">*", "0.0.0", False),
    (">*", "0.0.1", True),
    # <
    ("<11", "0.1.0", True),
    ("<11", "11.1.0", False),
    ("<1.1", "0.1.0", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "1.1.1", False),
    ("<1.x", "1.1.1", False),
    ("<1.x", "0.1.1", True),
    ("<1.1.x", "1.1.500", False),
    ("<1.1.x", "1.0.500", True),
    ("<1.2.3", "1.2.3-rc1", False),
    ("<1.2.3-0", "1.2.3-rc1", False),
    ("<1.2.3-z", "1.2.3-rc1", True),
    ("<0", "0.0.0-alpha", False),
    ("<0-z", "0.0.0-alpha", True),
    # >= and =>
    (">=11", "11.1.2", True),
    (">=11.1", "11.0.2", False),
    (">=1.1", "1.1.0", True),
    (">=1.1", "0.0.9", False),
    (">=1.1", "4.1.0-beta", False),
    ("=>1.1", "1.1.0", True),
    ("=> 1.1", "1.0.9", False),
    (">=0", "0.0.0", True),
    (">=0", "0.0.1-alpha", False),
    (">=0-0", "0.0.1-alpha", True),
    (">=0.0.0-0", "3.4.5-beta.1", True),
    (">=0.0.0-0", "1.2.3", True),
    # <= and =<
    ("<=11", "1.2.3", True),
    ("<=11", "11.2.3", True),
    ("<=11", "12.2.3", False),
    ("<=1.1", "1.1.1", True),
    ("<=1.1", "1.2.3", False),
    ("<=1.1", "0.1.0-alpha", False),
    ("<=1.1-a", "0.1.0-alpha", True),
    ("<=1.x", "1.9.0", True),
    ("<=2.x", "3.0.0", False),
    ("<=1.1.x", "1.2.500", False),
    ("<=1.2", "1.2.99", True),
    ("<=1.2", "1.3.0", False),
    ("<=1.2.3", "1.2.3", True),
    ("<=1.2.3", "1.2.4", False),
    ("=<1.2.3", "1.2.3", True),
    ("=< 1.2", "1.3.0", False),
    ("<=*", "0.0.9", True),
    ("<=*", "0.5.0", False),
    ("<=*", "1.0.0", False),
    # ~ and ~>
    ("~1.2.3", "1.2.4", True),
    ("~1.2.3", "1.2.2", False),
    ("~1.2.3", "1.3.4", False),
    ("~1.2", "1.2.4", True),
    ("~1.2", "1.3.4", False),
    ("~1", "1.2.4", True),
    ("~1", "2.3.4", False),
    ("~1", "1.3.5-beta", False),
    ("~1.x", "1.3.5", True),
    ("~1.x", "2.1.1", False),
    ("~0.2.3", "0.2.5", True),
    ("~0.2.3", "0.3.5", False),
    ("~*", "2.1.1", True),
    ("~0.0.0", "1.2.3", True),
    ("~0", "1.0.0", False),
    ("~0.0", "0.1.0", False),
    ("~1.1-alpha", "1.1.1-beta", True),
    ("~1.1.1-beta", "1.1.1-alpha", False),
    ("~1.1.1-beta", "1.1.1", True),
    ("~1.2.3-beta.2", "1.2.3-beta.4", True),
    ("~1.2.3-beta.2", "1.2.4-beta.2", True),
    ("~1.2.3-beta.2", "1.3.4-beta.2", False),
    ("~>1.2.3", "1.2.9", True),
    ("~>1.2.3", "1.3.0", False),
    ("~> 2", "2.9.9", True),
    # ^
    ("^1.2.3", "1.8.9", True),
    ("^1.2.3", "2.8.9", False),
    ("^1.2.3", "1.2.1", False),
    ("^1.2", "1.8.9", True),
    ("^1.2", "2.8.9", False),
    ("^1", "1.8.9", True),
    ("^1", "2.8.9", False),
    ("^1.x", "1.1.1", True),
    ("^2.x", "1.1.1", False),
    ("^1.x", "2.1.1", False),
    ("^1.x", "1.1.1-beta1", False),
    ("^0.2.3", "0.2.5", True),
    ("^0.2.3", "0.2.2", False),
    ("^0.2.3", "0.5.6", False),
    ("^0.2.3", "1.2.5", False),
    ("^0.2", "0.2.5", True),
    ("^0.2", "0.5.6", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0.3", "0.1.3", False),
    ("^0.0", "0.0.3", True),
    ("^0.0", "0.1.4", False),
    ("^0.0", "1.0.4", False),
    ("^0.0.x", "0.0.9", True),
    ("^0", "0.2.3", True),
    ("^0", "1.1.4", False),
    ("^0.0.0", "1.2.3", False),
    ("^0.0.0", "0.0.0", True),
    ("^*", "0.0.0", True),
    ("^*", "1.0.0", False),
    ("^1.2.0", "1.2.1-alpha.1", False),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("^1.2.0-alpha.2", "1.2.0-alpha.1", False),
    ("^1.1.2-alpha", "1.2.1-beta1", True),
    ("^1.2.x-alpha", "1.1.1-beta1", False),
    ("^0.2.3-beta.2", "0.2.4-beta.2", True),
    ("^0.2.3-beta.2", "0.3.4-beta.2", False),
    # AND groups: spaces and/or commas
    (">1.1, <2", "1.1.1", False),
    (">1.1, <2", "1.2.1", True),
    (">1.1,<3", "4.3.2", False),
    (">1.1 <2", "1.2.1", True),
    (">1.1    <3", "4.3.2", False),
    (">=1.1, <2, !=1.2.3", "1.2.3", False),
    (">=1.1, <2, !=1.2.3", "1.2.4", True),
    (">=1.1 <2 !=1.2.3", "1.2.3", False),
    ("> 1.1, <     2", "1.1.1", False),
    (">= 1.1 ,< 2", "1.5.0", True),
    (">=1.1 ,<2 , != 1.5.0", "1.5.0", False),
    ("\t>=1.1\n<2 ", "1.5.0", True),
    # OR alternatives
    (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">= 1.1 <2 != 1.2.3 || > 3", "4.1.2", True),
    ("1.0.0||2.0.0", "2.0.0", True),
    ("1.0.0 ||2.0.0|| 3.0.0", "3.0.0", True),
    ("1.0.0 || 2.0.0", "1.5.0", False),
    # hyphen ranges
    ("1.1 - 2", "1.1.1", True),
    ("1.1 - 2", "2.9.9", True),
    ("1.1 - 2", "3.0.0", False),
    ("1.1 - 2", "1.0.9", False),
    ("1.5.0 - 4.5", "3.7.0", True),
    ("1.5.0 - 4.5", "4.5.9", True),
    ("1.5.0 - 4.5", "4.6.0", False),
    ("1.2.3 - 2.3.4", "2.3.4", True),
    ("1.2.3 - 2.3.4", "2.3.5", False),
    ("1.2.3 - 2.3.4", "1.2.2", False),
    ("1.x - 2.x", "2.9.0", True),
    ("1.x - 2.x", "3.0.0", False),
    ("v1.0.0 - v2.0.0", "1.5.0", True),
    ("1.0.0 - 2.0.0 || 5.0.0 - 6.0.0", "5.5.0", True),
    ("1.0.0 - 2.0.0 || 5.0.0 - 6.0.0", "3.0.0", False),
    ("1.0.0 - 2.0.0, !=1.5.0", "1.5.0", False),
    ("1.0.0 - 2.0.0, !=1.5.0", "1.6.0", True),
    ("1.0.0-0 - 2.0.0", "1.5.0-beta", True),
    ("1.1-3", "4.3.2", False),  # no spaces: a prerelease, not a range
    ("3 - 4 || => 3.0, < 4", "4.5.0", True),
    # prerelease rule (spec): per alternative, not per constraint
    (">=1.0.0-0 <2.0.0", "1.5.0-beta", True),
    ("<2.0.0 >=1.0.0-0", "1.5.0-beta", True),
    (">=1.0.0-0 <2.0.0", "2.0.0-beta", True),  # 2.0.0-beta precedes 2.0.0
    (">=1.0.0-0 <2.0.0-0", "2.0.0-beta", False),
    (">=1.0.0 <2.0.0", "1.5.0-beta", False),
    ("^8.0.0 || >=8.1.0-0", "8.1.0-SNAPSHOT", True),
    (">=8.1.0-0 || ^8.0.0", "8.1.0-SNAPSHOT", True),
    ("^7.0.0 || ^8.0.0", "8.1.0-SNAPSHOT", False),
    ("^8.0.0-0", "8.1.0-SNAPSHOT", True),
    ("^8.0.0-0", "9.0.0-SNAPSHOT", False),
    (">=8.0.0-0", "7.17.0-SNAPSHOT", False),
    ("8.x-0", "8.1.0-SNAPSHOT", True),
    ("!=8.0.0-0", "8.1.0-SNAPSHOT", True),
]


@pytest.mark.parametrize(("constraint", "version", "expected"), CHECKS)
def test_constraint_check(constraint, version, expected):
    assert Constraint.parse(constraint).check(parse_loose(version)) is expected


def test_constraint_check_is_reusable_and_keeps_text():
    c = Constraint.parse("^7.14.0 || ^8.0.0")
    assert c.text == "^7.14.0 || ^8.0.0"
    results = [c.check(parse_strict(v)) for v in ("7.14.0", "7.13.9", "8.9.9", "9.0.0")]
    assert results == [True, False, True, False]
    assert "^7.14.0" in repr(c)


def test_constraint_accepts_strict_and_semver_versions():
    c = Constraint.parse(">=1.2.0")
    assert c.check(semver.Version(1, 2, 0))
    assert c.check(parse_strict("1.3.0+build"))
    assert not c.check(semver.Version.parse("1.3.0-rc.1"))


# --- constraint errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "improper constraint: "),
        ("   ", "improper constraint:    "),
        ("foo", "improper constraint: foo"),
        (">= bar", "improper constraint: >= bar"),
        ("BAR >= 1.2.3", "improper constraint: BAR >= 1.2.3"),
        ("12.3.4.1234", "improper constraint: 12.3.4.1234"),
        ("12.3.34~ 1.2.3", "improper constraint: 12.3.34~ 1.2.3"),
        (">= 1.0 || foo", "improper constraint:  foo"),
        (">= 1.0 ||", "improper constraint: "),
        ("|| 1.0", "improper constraint: "),
        ("1.0 ||| 2.0", "constraint parser error"),  # '|' is a wildcard character to the regex
        ("1.0,,2.0", "improper constraint: 1.0,,2.0"),
        (",1.0", "improper constraint: ,1.0"),
        (">>1.0", "improper constraint: >>1.0"),
        ("=>=1.0", "improper constraint: =>=1.0"),
        ("1 -2", "improper constraint: 1 -2"),
        ("1.0.0 - ", "improper constraint: 1.0.0 - "),
        ("1 - 2 foo", "improper constraint: >= 1, <= 2 foo"),
        (">1.0 - 2.0", "improper constraint: >>= 1.0, <= 2.0 "),
        ("V1.0.0", "improper constraint: V1.0.0"),
        ("1.0.0-", "improper constraint: 1.0.0-"),
        ("1.0.0_beta", "improper constraint: 1.0.0_beta"),
        ("1.0.0\v", "improper constraint: 1.0.0\v"),
        ("1.0.0\u00a0", "improper constraint: 1.0.0\u00a0"),
        ("1.0.0-01", "constraint parser error"),
        ("1.0.0 | 2.0.0", "constraint parser error"),
        ("1x", "constraint parser error"),
        ("1.2x.3", "constraint parser error"),
        ("99999999999999999999", "constraint parser error"),
    ],
)
def test_constraint_parse_errors(text, reason):
    with pytest.raises(VersionError) as info:
        Constraint.parse(text)
    assert str(info.value) == reason


def test_constraint_parse_accepts_trailing_newline_and_tabs():
    assert Constraint.parse("^1.0.0\n").check(parse_loose("1.2.0"))
    assert Constraint.parse("\t>=1.0.0,\t<2.0.0").check(parse_loose("1.2.0"))


# The reference's validation regex, transcribed literally (Go: \s is [\t\n\f\r ], $ is end of text).
_GO_WS = r"[\t\n\f\r ]"
_GO_OPS = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^"
_GO_CV = (
    r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
)
_GO_VALID = re.compile(
    rf"^({_GO_WS}*({_GO_OPS}){_GO_WS}*({_GO_CV}){_GO_WS}*)"
    rf"((?:{_GO_WS}+|,{_GO_WS}*)({_GO_OPS}){_GO_WS}*({_GO_CV}){_GO_WS}*)*\Z"
)


def test_validation_regex_matches_reference_language():
    rng = random.Random(99)
    alphabet = [*"102.x*v-+a ,><=~^!|", "  "]
    for _ in range(40000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))
        assert bool(versions._VALID_RE.fullmatch(text)) == bool(_GO_VALID.match(text)), repr(text)


def test_constraint_parse_rejects_pathological_input():
    # With the reference's regex copied verbatim this input backtracks exponentially (hangs).
    bad = "1  " * 200 + "!"
    with pytest.raises(VersionError):
        Constraint.parse(bad)
    with pytest.raises(VersionError):
        Constraint.parse(">= 1.0.0 ,  " * 200 + "<")


def test_many_alternatives_and_terms():
    text = " || ".join(f">={i}.0.0 <{i}.5.0" for i in range(50))
    c = Constraint.parse(text)
    assert c.check(parse_loose("49.4.9"))
    assert not c.check(parse_loose("49.5.0"))
