"""YAML semantics of manifests (§2.1) and JSON serialisation (§2.6): through HTTP, plus unit tests."""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp
import pkgfactory as pf
import pytest

from eprd.model import gofmt, gojson, yamlfile

IDENTITY = {"Accept-Encoding": "identity"}  # bodies as sent, never compressed


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with http.get(url, allow_redirects=False, headers=IDENTITY) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def document(http: aiohttp.ClientSession, base: str, name: str, version: str = "1.0.0") -> bytes:
    status, ctype, body = await fetch(http, f"{base}/package/{name}/{version}/")
    assert status == 200, body
    assert ctype == "application/json"
    return body


def ordered(body: bytes) -> Any:
    """Decode keeping object members in order, as lists of pairs."""
    return json.loads(body, object_pairs_hook=list)


MANIFEST_HEAD = """\
format_version: 3.0.0
name: {name}
version: 1.0.0
"""


def manifest(name: str, body: str) -> str:
    return MANIFEST_HEAD.format(name=name) + body


# --- dotted keys -----------------------------------------------------------------------------


DOTTED_MANIFEST = """\
title: Dotted keys
description: Dotted keys everywhere.
owner.github: elastic/dotted
owner.type: partner
conditions.kibana.version: "^8.10.0"
conditions:
  elastic.subscription: platinum
  agent:
    version: ">=8.10.0"
icons:
  - src: /img/icon.svg
unknown_top_level_key: never echoed
policy_templates:
  - name: main
    title: Main
    description: Main template.
    deployment_modes.default.enabled: true
    deployment_modes.agentless:
      enabled: false
    inputs:
      - type: logfile
        vars:
          - name: settings
            type: yaml
            secret: true
            default:
              outer.inner: 1
              outer.other.deep: x
              plain: 2
"""

DOTTED_DATA_STREAM = """\
type: logs
title: Dotted data stream
streams:
  - input: logfile
    title: Logs
    description: Logs.
elasticsearch.index_template.mappings:
  dynamic: false
  properties.message.type: text
  properties:
    host.name:
      type: keyword
elasticsearch:
  index_template.settings:
    index.refresh_interval: 5s
"""


async def test_dotted_keys_are_paths_at_every_level(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(
        root,
        "dotted",
        manifest_text=manifest("dotted", DOTTED_MANIFEST),
        data_streams={"log": DOTTED_DATA_STREAM},
    )

    registry, base = await serve([root])
    assert registry.snapshot.rejected == ()

    doc = json.loads(await document(http, base, "dotted"))
    assert doc["owner"] == {"type": "partner", "github": "elastic/dotted"}
    assert doc["conditions"] == {
        "kibana": {"version": "^8.10.0"},
        "elastic": {"subscription": "platinum"},
        "agent": {"version": ">=8.10.0"},
    }
    assert doc["license"] == "platinum"
    assert "unknown_top_level_key" not in doc
    template = doc["policy_templates"][0]
    assert template["deployment_modes"] == {"default": {"enabled": True}, "agentless": {"enabled": False}}
    variable = template["inputs"][0]["vars"][0]
    assert "secret" not in variable
    assert variable["default"] == {"outer": {"inner": 1, "other": {"deep": "x"}}, "plain": 2}
    es = doc["data_streams"][0]["elasticsearch"]
    assert es["index_template.mappings"] == {
        "dynamic": False,
        "properties": {"host": {"name": {"type": "keyword"}}, "message": {"type": "text"}},
    }
    assert es["index_template.settings"] == {"index": {"refresh_interval": "5s"}}

    # The dotted constraint is a real constraint: it filters.
    _, _, body = await fetch(http, f"{base}/search?kibana.version=8.11.0")
    assert [e["name"] for e in json.loads(body)] == ["dotted"]
    _, _, body = await fetch(http, f"{base}/search?kibana.version=8.9.0")
    assert body == b"[]"


# --- yaml.v2 scalars -------------------------------------------------------------------------


BOOLEANS_MANIFEST = """\
title: Booleans
description: yaml.v2 booleans.
agent.privileges.root: yes
policy_templates:
  - name: main
    title: Main
    description: Main template.
    multiple: no
    deployment_modes:
      default:
        enabled: on
      agentless:
        enabled: off
        is_default: n
    inputs:
      - type: logfile
        vars:
          - {name: a, type: bool, multi: Y, required: y, show_user: NO, default: yes}
          - {name: b, type: bool, multi: off, required: True, show_user: ON, default: "yes"}
          - {name: c, type: text, default: n}
"""

BOOLEANS_DATA_STREAM = """\
type: metrics
title: Booleans data stream
hidden: on
dataset_is_prefix: Yes
streams:
  - input: logfile
    enabled: off
"""


async def test_yaml_v2_booleans(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(
        root,
        "booleans",
        manifest_text=manifest("booleans", BOOLEANS_MANIFEST),
        data_streams={"metric": BOOLEANS_DATA_STREAM},
    )

    registry, base = await serve([root])
    assert registry.snapshot.rejected == ()

    doc = json.loads(await document(http, base, "booleans"))
    assert doc["agent"] == {"privileges": {"root": True}}
    template = doc["policy_templates"][0]
    assert template["multiple"] is False
    assert template["deployment_modes"] == {
        "default": {"enabled": True},
        "agentless": {"enabled": False, "is_default": False},
    }
    variables = {v["name"]: v for v in template["inputs"][0]["vars"]}
    assert [variables["a"][k] for k in ("multi", "required", "show_user", "default")] == [
        True,
        True,
        False,
        True,
    ]
    assert [variables["b"][k] for k in ("multi", "required", "show_user", "default")] == [
        False,
        True,
        True,
        "yes",
    ]
    assert variables["c"]["default"] is False
    stream = doc["data_streams"][0]
    assert (stream["hidden"], stream["dataset_is_prefix"]) == (True, True)
    assert stream["streams"][0]["enabled"] is False


NUMBERS_MANIFEST = """\
title: 123
description: 1.50
owner:
  github: 1e6
  type: 0x1F
policy_templates:
  - name: 2024
    title: 0.00001
    description: 12345678.9
    inputs:
      - type: logfile
        title: 100.0
        description: 1_000
categories: [custom]
deprecated:
  since: 2024-01-31
  description: 2001-12-14t21:59:43.10-05:00
"""


async def test_numbers_in_string_fields_are_formatted_like_go(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "numbers", manifest_text=manifest("numbers", NUMBERS_MANIFEST))

    registry, base = await serve([root])
    assert registry.snapshot.rejected == ()

    doc = json.loads(await document(http, base, "numbers"))
    assert doc["title"] == "123"
    assert doc["description"] == "1.5"
    assert doc["owner"] == {"type": "31", "github": "1e+06"}
    template = doc["policy_templates"][0]
    assert (template["name"], template["title"], template["description"]) == (
        "2024",
        "1e-05",
        "1.23456789e+07",
    )
    assert (template["inputs"][0]["title"], template["inputs"][0]["description"]) == ("100", "1000")
    # Dates and timestamps stay the strings they were written as.
    assert doc["deprecated"] == {"since": "2024-01-31", "description": "2001-12-14t21:59:43.10-05:00"}
    _, _, body = await fetch(http, f"{base}/search")
    entry = json.loads(body)[0]
    assert (entry["title"], entry["description"]) == ("123", "1.5")


FREE_FORM_MANIFEST = """\
title: Free form
description: Free-form values keep their YAML types.
vars:
  - name: numbers
    type: yaml
    default: [10.0, 1.5, 42, "42", 1e3, 0.1, 1.0e-7, 1e21, 2.5e+300, -2.0, 017, 0x10, 1_000]
  - name: scalars
    type: yaml
    default: {zeta: true, alpha: null, mid: 2024-01-31, Upper: ~, "10": ten, "9": nine, b: off}
  - name: nested
    type: yaml
    default:
      z:
        yy: [{b: 1, a: 2}]
        x: 1
      a: {}
  - name: zero
    type: integer
    default: 0
  - name: empty
    type: text
    default: ""
  - name: absent
    type: text
"""


async def test_free_form_values_keep_types_and_sort_keys(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "freeform", manifest_text=manifest("freeform", FREE_FORM_MANIFEST))

    registry, base = await serve([root])
    assert registry.snapshot.rejected == ()

    body = await document(http, base, "freeform")
    variables = {v["name"]: v for v in json.loads(body)["vars"]}
    numbers_json = json.dumps(variables["numbers"]["default"])
    assert numbers_json == '[10, 1.5, 42, "42", 1000, 0.1, 1e-07, 1e+21, 2.5e+300, -2, 15, 16, 1000]'
    # The exact text Go writes for each number.
    compact = body.replace(b" ", b"").replace(b"\n", b"")
    assert b'"default":[10,1.5,42,"42",1000,0.1,1e-7,1e+21,2.5e+300,-2,15,16,1000]' in compact
    pairs = dict(ordered(body))["vars"]
    defaults = {dict(v)["name"]: dict(v).get("default", "<absent>") for v in pairs}
    assert defaults["scalars"] == [
        ("10", "ten"),
        ("9", "nine"),
        ("Upper", None),
        ("alpha", None),
        ("b", False),
        ("mid", "2024-01-31"),
        ("zeta", True),
    ]
    assert defaults["nested"] == [("a", []), ("z", [("x", 1), ("yy", [[("a", 2), ("b", 1)]])])]
    assert (defaults["zero"], defaults["empty"], defaults["absent"]) == (0, "", "<absent>")


TEXT_MANIFEST = """\
title: "Tom & Jerry <b>bold</b>"
description: "naïve café — 日本語 ✓ \\u2028line\\u2029para \\U0001F600 \\
  'quotes' \\"double\\" back\\\\slash\\ttab"
"""


async def test_json_is_not_html_escaped_and_non_ascii_is_utf8(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "texts", manifest_text=manifest("texts", TEXT_MANIFEST))

    registry, base = await serve([root])
    assert registry.snapshot.rejected == ()

    body = await document(http, base, "texts")
    _, ctype, search = await fetch(http, f"{base}/search")
    assert ctype == "application/json"
    for raw in (body, search):
        assert b'"title": "Tom & Jerry <b>bold</b>"' in raw
        assert b"\\u003c" not in raw and b"\\u0026" not in raw
        assert "naïve café — 日本語 ✓".encode() in raw
        assert "😀".encode() in raw
        assert b"\\u2028line\\u2029para" in raw
        assert "\u2028".encode() not in raw and "\u2029".encode() not in raw
        assert b"'quotes' \\\"double\\\" back\\\\slash\\ttab" in raw
    doc = json.loads(body)
    assert (
        doc["description"]
        == "naïve café — 日本語 ✓ \u2028line\u2029para 😀 'quotes' \"double\" back\\slash\ttab"
    )


async def test_documents_use_two_space_indentation_and_one_trailing_newline(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "layout", "1.0.0")

    _, base = await serve([root])

    body = await document(http, base, "layout")
    assert body.startswith(b'{\n  "name": "layout",\n  "title": "Layout package",\n  "version": "1.0.0",\n')
    assert body.endswith(b"\n}\n") and not body.endswith(b"\n\n")
    assert (
        b'\n    {\n      "src": "/img/icon.svg",\n      "path": "/package/layout/1.0.0/img/icon.svg",' in body
    )
    # Byte for byte what any encoder writes with Go's layout (this document has no floats).
    assert body == (json.dumps(json.loads(body), indent=2, ensure_ascii=False) + "\n").encode()


# --- unit tests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (123, "123"),
        (-7, "-7"),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        (100.0, "100"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (1e6, "1e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (-2.5, "-2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
        ("text", "text"),
    ],
)
def test_go_string_is_go_percent_v(value, expected):
    assert gofmt.go_string(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, "1.5"),
        (0.000001, "0.000001"),
        (0.0000001, "1e-7"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.25e-10, "1.25e-10"),
        (123456789.125, "123456789.125"),
        (-0.5, "-0.5"),
    ],
)
def test_float_json_is_go_encoding_json(value, expected):
    assert gofmt.float_json(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(10.0, b"10"), (1.5, b"1.5"), (1e21, b"1e+21"), (1e-7, b"1e-7"), (-3.0, b"-3"), (-0.0, b"-0")],
)
def test_gojson_number(value, expected):
    assert gojson.encode(gojson.number(value)) == expected


def test_gojson_dumps_matches_go_encoding():
    value = {"b": "<a href='x'>&</a>", "a": ["é", "\u2028\u2029", 1, None, True], "c": {}}
    assert (
        gojson.dumps(value)
        == (
            '{\n  "b": "<a href=\'x\'>&</a>",\n  "a": [\n    "é",\n    "\\u2028\\u2029",\n    1,\n'
            '    null,\n    true\n  ],\n  "c": {}\n}\n'
        ).encode()
    )
    assert gojson.dumps([]) == b"[]\n"


def test_yamlfile_booleans_are_yaml_v2():
    words = ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"]
    negatives = ["n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"]
    text = "".join(f"t{i}: {w}\n" for i, w in enumerate(words)) + "".join(
        f"f{i}: {w}\n" for i, w in enumerate(negatives)
    )
    loaded = yamlfile.load(text)
    assert [loaded[f"t{i}"] for i in range(len(words))] == [True] * len(words)
    assert [loaded[f"f{i}"] for i in range(len(negatives))] == [False] * len(negatives)
    assert yamlfile.load("a: yEs\nb: 'yes'\nc: nope\n") == {"a": "yEs", "b": "yes", "c": "nope"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1_000", 1000),
        ("0x1F", 31),
        ("017", 15),
        ("+12", 12),
        ("-0", 0),
        ("1:30", "1:30"),
        ("1e3", 1000.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("2024-01-31", "2024-01-31"),
        ("2001-12-14 21:59:43.10 -5", "2001-12-14 21:59:43.10 -5"),
        ("~", None),
        ("null", None),
        ("", None),
        ("1.0.0", "1.0.0"),
        ("^8.10.0", "^8.10.0"),
    ],
)
def test_yamlfile_scalars_are_yaml_v2(text, expected):
    value = yamlfile.load(f"key: {text}\n")["key"]
    assert value == expected
    assert type(value) is type(expected)


def test_yamlfile_special_floats():
    loaded = yamlfile.load("a: .inf\nb: -.Inf\nc: .nan\n")
    assert loaded["a"] == math.inf and loaded["b"] == -math.inf and math.isnan(loaded["c"])


def test_yamlfile_expands_dotted_keys_and_merges_objects():
    loaded = yamlfile.load_config(
        "a.b.c: 1\na:\n  d: 2\n  b.e: 3\nlist:\n  - x.y: 1\n    x.z: [ {p.q: r} ]\nplain: {k: v}\n"
    )
    assert loaded == {
        "a": {"b": {"c": 1, "e": 3}, "d": 2},
        "list": [{"x": {"y": 1, "z": [{"p": {"q": "r"}}]}}],
        "plain": {"k": "v"},
    }
    # load() alone keeps dotted keys as they are.
    assert yamlfile.load("a.b: 1\n") == {"a.b": 1}


def test_yamlfile_errors_are_yaml_errors():
    with pytest.raises(yamlfile.YAMLError):
        yamlfile.load("a: [1, 2\n")
    with pytest.raises(yamlfile.YAMLError):
        yamlfile.load("a: b\n  c: d\n")
