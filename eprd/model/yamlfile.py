"""YAML loading with the semantics the reference applies to package manifests.

The reference parses manifests with Go's yaml.v2 (YAML 1.1 scalars) and then
go-ucfg, which treats dotted keys as paths (``owner.github: x`` is
``owner: {github: x}``) at every nesting level.

Loading YAML is most of what start-up costs, so this module takes the fast
route through PyYAML: its C parser composes the node graph, every plain
scalar is tagged with a cheap marker instead of running PyYAML's regex
resolver, and a small constructor turns nodes into Python values with
yaml.v2's scalar rules. Parsed documents are memoised by content, because
consecutive versions of a package mostly share their files.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import yaml
from yaml.nodes import Node, ScalarNode, SequenceNode

from eprd.model import fastyaml, limits
from eprd.model.fastyaml import CONSTANTS, scalar, to_float, to_int
from eprd.model.gofmt import go_string


class YAMLError(ValueError):
    """A document that is not valid YAML."""


_PLAIN = "!eprd-plain"
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


class _Composer(yaml.CSafeLoader):
    """The C parser and composer, with implicit resolution left to :func:`eprd.fastyaml.scalar`."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _SEQ if kind is SequenceNode else _MAP


_EXPLICIT = {
    "tag:yaml.org,2002:int": lambda text: to_int(text),
    "tag:yaml.org,2002:float": lambda text: to_float(text),
    "tag:yaml.org,2002:bool": lambda text: bool(CONSTANTS.get(text, text)),
    "tag:yaml.org,2002:null": lambda text: None,
}


class _Builder:
    """Python values from a composed node graph, within the limits of :mod:`eprd.model.limits`.

    An alias is the same node object met again: its value is shared, not copied, but what it
    would expand to is counted, so that a "billion laughs" document is refused before anything
    walks it, and an alias inside its own anchor (``x: &a [*a]``) is refused as yaml.v2 does.
    """

    def __init__(self) -> None:
        self.built: dict[int, Any] = {}
        self.sizes: dict[int, int] = {}  # node id -> nodes in its expanded subtree
        self.building: set[int] = set()
        self.nodes = 0
        self.aliases = 0

    def build(self, node: Node, depth: int = 1) -> Any:
        key = id(node)
        known = self.built.get(key)
        if known is not None:
            return self._alias(node, known)
        self.nodes += 1
        if isinstance(node, ScalarNode):
            if node.tag == _PLAIN:
                return scalar(node.value)
            convert = _EXPLICIT.get(node.tag)
            return convert(node.value) if convert is not None else node.value
        if depth > limits.MAX_YAML_DEPTH:
            raise YAMLError(
                f"nesting deeper than {limits.MAX_YAML_DEPTH} levels at line {node.start_mark.line + 1}"
            )
        if self.nodes > limits.MAX_YAML_NODES:
            raise YAMLError(f"more than {limits.MAX_YAML_NODES} nodes")
        start = self.nodes
        self.building.add(key)
        if isinstance(node, SequenceNode):
            items: list[Any] = []
            self.built[key] = items
            items.extend(self.build(child, depth + 1) for child in node.value)
            value: Any = items
        else:
            value = self._mapping(node, key, depth)
        self.building.discard(key)
        self.sizes[key] = self.nodes - start + 1
        return value

    def _alias(self, node: Node, value: Any) -> Any:
        key = id(node)
        if key in self.building:
            raise YAMLError(f"anchor value contains itself (line {node.start_mark.line + 1})")
        self.aliases += 1
        self.nodes += self.sizes.get(key, 1)
        if self.aliases > limits.MAX_YAML_ALIASES:
            raise YAMLError(f"more than {limits.MAX_YAML_ALIASES} aliases")
        if self.nodes > limits.MAX_YAML_NODES:
            raise YAMLError(f"aliases expand to more than {limits.MAX_YAML_NODES} nodes")
        return value

    def _mapping(self, node: Node, key: int, depth: int) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        self.built[key] = mapping
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, ScalarNode)
                and key_node.tag in (_PLAIN, "tag:yaml.org,2002:merge")
                and (key_node.value == "<<")
            ):
                for source in value_node.value if isinstance(value_node, SequenceNode) else [value_node]:
                    value = self.build(source, depth + 1)
                    if not isinstance(value, dict):
                        raise YAMLError("expected a mapping for merging")
                    merged = {**value, **merged}
                continue
            item_key = self.build(key_node, depth + 1)
            try:
                mapping[item_key] = self.build(value_node, depth + 1)
            except TypeError:
                raise YAMLError(f"found unhashable key at line {key_node.start_mark.line + 1}") from None
        for item_key, value in merged.items():
            mapping.setdefault(item_key, value)
        return mapping


# Documents by their bytes (and whether keys were expanded). The bytes themselves are the key:
# Python's own hash of them is five times as fast as a digest and is kept on the object, so the
# callers that key other memos by the same bytes hash them once.
_MEMO: OrderedDict[tuple[bytes, bool], Any] = OrderedDict()
_MEMO_SIZE = 4096


def load(data: bytes | str) -> Any:
    """Parse one YAML document with yaml.v2 scalar rules (no key expansion).

    The result may be shared with other callers that loaded the same bytes: treat it as read-only.
    """
    return _memoised(data, expand=False)


def load_config(data: bytes | str) -> Any:
    """Parse YAML as go-ucfg sees it: dotted keys become nested objects (read-only, like :func:`load`)."""
    return _memoised(data, expand=True)


def _memoised(data: bytes | str, expand: bool) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    key = (raw, expand)
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    value, plain_keys = _parse(raw)
    if expand and not plain_keys:
        value = expand_dotted(value)
    _MEMO[key] = value
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return value


def _parse(raw: bytes) -> tuple[Any, bool]:
    """The document, and whether dotted keys would leave it as it is (False: not known)."""
    fast, value, plain_keys = fastyaml.read(raw)
    if fast:
        return value, plain_keys
    try:
        node = yaml.compose(raw, Loader=_Composer)  # a CSafeLoader subclass
        return (None if node is None else _Builder().build(node)), False
    except yaml.YAMLError as err:
        raise YAMLError(str(err).replace("\n", " ")) from None
    except YAMLError:
        raise
    except (ValueError, TypeError, RecursionError) as err:
        raise YAMLError(f"invalid YAML value: {err}") from None


def expand_dotted(value: Any, depth: int = 1) -> Any:
    """Turn ``{"a.b": 1}`` into ``{"a": {"b": 1}}`` recursively, merging objects.

    Parts without dotted keys are returned as they are (not copied); nothing is modified. The
    levels dotted keys add count towards :data:`eprd.model.limits.MAX_YAML_DEPTH` (YAMLError
    beyond it), which also bounds the recursion here.
    """
    if isinstance(value, dict):
        if depth > limits.MAX_YAML_DEPTH:
            raise YAMLError(f"nesting deeper than {limits.MAX_YAML_DEPTH} levels")
        expanded = [(key, expand_dotted(item, depth + 1)) for key, item in value.items()]
        if all(type(key) is str and "." not in key and new is value[key] for key, new in expanded):
            return value
        out: dict[str, Any] = {}
        for key, item in expanded:
            parts = _key(key).split(".")
            if len(parts) > 1 and depth + len(parts) - 1 + _depth(item) > limits.MAX_YAML_DEPTH:
                raise YAMLError(f"nesting deeper than {limits.MAX_YAML_DEPTH} levels (dotted key)")
            _set_path(out, parts, item)
        return out
    if isinstance(value, list):
        if depth > limits.MAX_YAML_DEPTH:
            raise YAMLError(f"nesting deeper than {limits.MAX_YAML_DEPTH} levels")
        items = [expand_dotted(item, depth + 1) for item in value]
        return value if all(new is old for new, old in zip(items, value, strict=True)) else items
    return value


def _depth(value: Any) -> int:
    """Levels of nesting of an expanded value (bounded: it passed expand_dotted's checks)."""
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _key(key: Any) -> str:
    return key if isinstance(key, str) else go_string(key)


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    # Objects already in ``target`` may be parts of the input (see expand_dotted): merge into copies.
    for part in parts[:-1]:
        child = target.get(part)
        child = target[part] = dict(child) if isinstance(child, dict) else {}
        target = child
    last = parts[-1]
    existing = target.get(last)
    if isinstance(existing, dict) and isinstance(value, dict):
        existing = target[last] = dict(existing)
        for key, item in value.items():
            _set_path(existing, [key], item)
    else:
        target[last] = value
