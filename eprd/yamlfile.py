"""YAML loading with the semantics the reference applies to package manifests.

The reference parses manifests with Go's yaml.v2 (YAML 1.1 scalars) and then
go-ucfg, which treats dotted keys as paths (``owner.github: x`` is
``owner: {github: x}``) at every nesting level. PyYAML's C parser does the
parsing; the resolver below is adjusted to yaml.v2's scalar rules.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from eprd.gofmt import go_string


class YAMLError(ValueError):
    """A document that is not valid YAML."""


class _Loader(yaml.CSafeLoader):
    """CSafeLoader with yaml.v2's implicit scalar types."""


# Start from the safe resolvers minus bool/int/float/timestamp, then add
# yaml.v2's: y/n are booleans, no sexagesimal numbers, exponent floats without
# a dot, and timestamps stay strings (yaml.v2 only makes time.Time when asked).
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag
        not in (
            "tag:yaml.org,2002:bool",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
            "tag:yaml.org,2002:timestamp",
        )
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
    list("yYnNtTfFoO"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[01_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)

_BOOLS = {
    **dict.fromkeys(("y", "yes", "true", "on"), True),
    **dict.fromkeys(("n", "no", "false", "off"), False),
}


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return _BOOLS[loader.construct_scalar(node).lower()]


_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def load(data: bytes | str) -> Any:
    """Parse one YAML document with yaml.v2 scalar rules (no key expansion)."""
    try:
        return yaml.load(data, Loader=_Loader)  # a CSafeLoader subclass
    except yaml.YAMLError as err:
        raise YAMLError(str(err).replace("\n", " ")) from None
    except (ValueError, KeyError, TypeError) as err:  # e.g. a malformed number
        raise YAMLError(f"invalid scalar: {err}") from None


def load_config(data: bytes | str) -> Any:
    """Parse YAML as go-ucfg sees it: dotted keys become nested objects."""
    return expand_dotted(load(data))


def expand_dotted(value: Any) -> Any:
    """Turn ``{"a.b": 1}`` into ``{"a": {"b": 1}}`` recursively, merging objects."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            _set_path(out, _key(key).split("."), expand_dotted(item))
        return out
    if isinstance(value, list):
        return [expand_dotted(item) for item in value]
    return value


def _key(key: Any) -> str:
    return key if isinstance(key, str) else go_string(key)


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    last = parts[-1]
    existing = target.get(last)
    if isinstance(existing, dict) and isinstance(value, dict):
        for key, item in value.items():
            _set_path(existing, [key], item)
    else:
        target[last] = value
