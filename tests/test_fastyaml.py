"""The fast block-style reader gives exactly what PyYAML gives, or declines the document.

Every document here is parsed both ways: through :mod:`eprd.fastyaml` and through the
PyYAML path of :mod:`eprd.yamlfile` (the C composer and yaml.v2's scalar rules).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from eprd.model import fastyaml, yamlfile

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"


def pyyaml(text: str) -> Any:
    node = yaml.compose(text.encode(), Loader=yamlfile._Composer)
    return None if node is None else yamlfile._Builder().build(node)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (True is not 1 here), in the same key order; NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


READ_FAST = {
    "empty": "",
    "comments only": "# nothing\n\n  # here\n",
    "mapping": "a: 1\nb: two\nc: 3.5\nd: yes\ne: off\nf: ~\ng:\nh: null\n",
    "yaml.v2 numbers": "a: 0x1F\nb: 017\nc: -0b101\nd: 1_000\ne: .inf\nf: -.Inf\ng: .NaN\nh: 1e3\ni: +12\n",
    "strings that look like numbers": "a: 1.2.3\nb: 08\nc: 1e\nd: 12:30\ne: 2024-01-01\n",
    "keys are typed too": "1: a\ntrue: b\nnull: c\n3.5: d\n",
    "nested": "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n",
    "sequence": "- a\n- 1\n- true\n-\n- ~\n",
    "sequence in mapping at the same indentation": "a:\n- x\n- y\nb: 1\n",
    "sequence in mapping indented": "a:\n  - x\n  - y\nb: 1\n",
    "compact mappings": "- name: a\n  type: keyword\n- name: b\n  fields:\n  - name: c\n    type: long\n",
    "dash then block": "-\n  a: 1\n  b: 2\n- # comment\n  c: 3\n",
    "comments everywhere": "# head\na: 1 # one\n# between\nb: 'x' # two\nc: \"y\"  # 3\nd: # four\n  - e\n",
    "plain with colons and hashes": "url: http://example.com:8080/a#b\nt: 12:30:00\nx: a#b\n",
    "plain over lines": "a: one\n  two\n  three\nb: x\n",
    "plain over lines in a sequence": "- one\n  two\n- three\n",
    "single quoted": "a: 'it''s'\nb: ''\nc: 'a: b # c'\nd: '1'\n",
    "double quoted": 'a: "x"\nb: ""\nc: "a: b # c"\nd: "tab\\there \\"q\\" \\u00e9 \\\\"\n',
    "single quoted over lines": "a: 'one\n\n  two\n  three\n\n\n  four\n\n  '\nb: 1\n",
    "double quoted over lines": 'a: "one\n  two\n\n  three  "\n',
    "literal": "a: |\n  line 1\n    indented\n\n  line 3\nb: 1\n",
    "literal strip and keep": "a: |-\n  x\n\nb: |+\n  y\n\n\nc: 1\n",
    "literal with comment lines": "a: | # header comment\n  # not a comment\n  x\n# a comment\nb: 1\n",
    "literal at the end without a line break": "a: |\n  x\n  y",
    "literal keep at the end": "a: |+\n  x\n",
    "literal keep at the end with blank lines": "a: |+\n  x\n\n",
    "literal with leading blank lines": "a: |\n\n\n  x\n",
    "literal trailing spaces kept": "a: |\n  x  \n  y\n",
    "folded": "a: >\n  one\n  two\n\n  three\n\n\n  four\nb: >-\n  x\n  y\n",
    "block scalar in a sequence": "- |\n  x\n- >\n  y\n  z\n",
    "flow sequences": "a: []\nb: {}\nc: [x, 1, 'y z', \"w\", true]\nd: [ a , b ]\n",
    "flow on a line of its own": 'a:\n  ["http://127.0.0.1"]\nb:\n  plain\n',
    "document start": "---\na: 1\n",
    "dotted keys stay as they are": "a.b: 1\na:\n  c: 2\n",
    "duplicate keys: last wins": "a: 1\nb: 2\na: 3\n",
    "unicode": "title: Überwachung — 監視 🚀\n",
    "a top-level scalar": "just text\n  and more\n",
    "negative numbers and dashes": "a: -1\nb: -.5\nc: -x\nd:\n- -2\n",
    "trailing spaces": "a: 1   \nb:   \n  - x   \n",
}


@pytest.mark.parametrize("text", READ_FAST.values(), ids=READ_FAST.keys())
def test_the_fast_reader_gives_what_pyyaml_gives(text: str) -> None:
    fast, value = fastyaml.parse(text.encode())
    assert fast, "declined"
    assert same(value, pyyaml(text)), (value, pyyaml(text))


DECLINED = {
    "anchors and aliases": "a: &x 1\nb: *x\n",
    "merge keys": "base: {a: 1}\nc:\n  <<: {b: 2}\n",
    "tags": "a: !!str 1\n",
    "flow mappings": "a: {b: 1}\n",
    "flow sequences of mappings": "a: [{b: 1}]\n",
    "quoted keys": '"a b": 1\n',
    "explicit keys": "? a\n: 1\n",
    "tabs": "a:\n\t- 1\n",
    "several documents": "a: 1\n---\nb: 2\n",
    "directives": "%YAML 1.1\n---\na: 1\n",
    "windows line breaks": "a: 1\r\nb: 2\r\n",
    "a byte order mark": "\ufeffa: 1\n",
    "NEL line break": "a: x\x85y\n",
    "indentation indicator": "a: |2\n   x\n",
    "more-indented folded lines": "a: >\n  x\n    y\n  z\n",
    "multi-line double quoted with escapes": 'a: "x\\\n  y"\n',
    "bad indentation": "a:\n    b: 1\n  c: 2\n",
    "key after sequence items of a nested sequence": "a:\n  - x\n  b: 1\n",
    "mapping value in a plain scalar": "a: b: c\n",
    "unclosed quote": "a: 'x\n",
    "invalid utf-8": "a: \udcff\n",
}


@pytest.mark.parametrize("text", DECLINED.values(), ids=DECLINED.keys())
def test_the_fast_reader_declines_what_it_does_not_know(text: str) -> None:
    assert fastyaml.parse(text.encode("utf-8", "surrogateescape")) == (False, None)


def test_documents_the_fast_reader_declines_still_load() -> None:
    assert yamlfile.load(b"a: &x 1\nb: *x\n") == {"a": 1, "b": 1}
    with pytest.raises(yamlfile.YAMLError):
        yamlfile.load(b"a: 'x\n")


def test_every_yaml_file_of_the_test_packages_reads_the_same_both_ways() -> None:
    files = sorted(p for p in TESTDATA.rglob("*") if p.suffix in (".yml", ".yaml"))
    assert len(files) > 30
    fast = 0
    for path in files:
        ok, value = fastyaml.parse(path.read_bytes())
        if ok:
            fast += 1
            assert same(value, pyyaml(path.read_text())), path
    assert fast >= len(files) * 0.9  # the reader is for the style packages are written in


PLAIN_KEYS = {
    "nested plain keys": ("a:\n  b:\n  - c: 1\n", True),
    "a dotted key": ("a:\n  b.c: 1\n", False),
    "a dotted key in a sequence": ("- a.b: 1\n", False),
    "a number as key": ("1: x\n", False),
    "a boolean as key": ("yes: x\n", False),
    "a null key": ("~: x\n", False),
    "a key that only looks numeric": ("1a: x\n", True),
    "a flow node beyond the depth limit": (
        "".join(f"{' ' * i}a:\n" for i in range(99)) + " " * 99 + "b: []\n",
        False,
    ),
}


@pytest.mark.parametrize("text, plain", PLAIN_KEYS.values(), ids=PLAIN_KEYS.keys())
def test_the_reader_tells_when_dotted_keys_leave_a_document_as_it_is(text: str, plain: bool) -> None:
    fast, _, plain_keys = fastyaml.read(text.encode())
    assert fast
    assert plain_keys is plain


def test_a_flow_node_beyond_the_depth_limit_is_still_refused_by_load_config() -> None:
    text = "".join(f"{' ' * i}a:\n" for i in range(99)) + " " * 99 + "b: []\n"
    with pytest.raises(yamlfile.YAMLError, match="nesting deeper"):
        yamlfile.load_config(text.encode())


def test_documents_with_plain_keys_expand_to_themselves() -> None:
    files = sorted(p for p in TESTDATA.rglob("*") if p.suffix in (".yml", ".yaml"))
    texts = [p.read_bytes() for p in files] + [t.encode() for t in READ_FAST.values()]
    for text in texts:
        fast, value, plain_keys = fastyaml.read(text)
        if fast and plain_keys:
            assert yamlfile.expand_dotted(value) is value
