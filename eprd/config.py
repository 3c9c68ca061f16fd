"""``config.yml``: the reference's keys, flat dotted names (``cache_time.index``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from eprd.model import yamlfile


class ConfigError(ValueError):
    """A configuration the registry refuses to start with."""


@dataclass(frozen=True, slots=True)
class CacheTimes:
    """Seconds for the ``Cache-Control: max-age`` of each kind of response."""

    index: float = 10.0
    search: float = 600.0
    categories: float = 600.0
    catch_all: float = 600.0


@dataclass(frozen=True, slots=True)
class Config:
    package_paths: tuple[str, ...] = ()
    cache_time: CacheTimes = field(default_factory=CacheTimes)


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: Any) -> float:
    """Seconds of a Go duration string (``1m30s``) or a plain number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION.match(body, pos)
        if match is None:
            raise ConfigError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise ConfigError(f'time: invalid duration "{text}"')
    return sign * total


def load_config(path: str) -> Config:
    """Read ``path``; a missing file is an error, unknown keys are ignored."""
    try:
        with open(path, "rb") as fh:
            raw = yamlfile.load(fh.read())
    except FileNotFoundError:
        raise ConfigError(f"Configuration file is not available: {path}") from None
    except OSError as err:
        raise ConfigError(f"Configuration file is not available: {path}: {err.strerror}") from None
    except yamlfile.YAMLError as err:
        raise ConfigError(f"invalid configuration file {path}: {err}") from None
    return parse_config(raw or {})


def parse_config(raw: Any) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("invalid configuration: expected a mapping at the top level")
    paths = raw.get("package_paths") or []
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list):
        raise ConfigError("invalid configuration: package_paths must be a list of folders")
    times = {}
    for name in ("index", "search", "categories", "catch_all"):
        key = f"cache_time.{name}"
        if key in raw and raw[key] is not None:
            seconds = parse_duration(raw[key])
            if seconds <= 0:
                raise ConfigError(f"{key} must be greater than 0, got {raw[key]}")
            times[name] = seconds
    return Config(
        package_paths=tuple(yamlfile.go_string(p) for p in paths if p is not None),
        cache_time=CacheTimes(**times),
    )
