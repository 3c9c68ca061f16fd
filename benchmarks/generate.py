#!/usr/bin/env python3
"""Generate a synthetic package collection for benchmarking eprd.

    python benchmarks/generate.py OUT_DIR --packages N --versions M [--seed S] [--zips FRACTION]

writes N packages x M versions shaped like the packages of elastic/integrations:

    OUT_DIR/packages/<name>/<version>/   directory packages
    OUT_DIR/zips/<name>-<version>.zip    zip packages (a FRACTION of all versions)
    OUT_DIR/config.yml                   an eprd config serving both folders
    OUT_DIR/collection.json              what was generated (written last: marks a complete run)

Every version has a format_version 3.x manifest (categories from the real category
table, a Kibana condition, owner, icons, screenshots, policy templates with inputs and
variables, some prerelease versions, a few deprecated packages), docs/README.md, real
PNG/SVG images, changelog.yml, Kibana saved objects (dashboards, visualizations,
searches, tags) and 2-6 data streams, each with a manifest (streams, variables),
fields (base-fields.yml with the fields validation requires, and larger files), an
agent stream template, ingest pipelines and a sample event: about 40-120 files per
version. One package (the first) gets a large latest version: ~6 MB of downloads
(noise screenshots, big dashboards) and 40 data streams, so its
/package/{n}/{v}/ document is large too.

Output is a pure function of the arguments (including --seed); packages are written
in parallel (--jobs, default: the number of CPUs).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import struct
import sys
import time
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import yaml

try:  # libyaml's emitter is ~10x faster than the pure-Python one
    _DUMPER: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _DUMPER = yaml.SafeDumper

# Real category ids (top-level and subcategories) of the reference's category table.
CATEGORY_POOL = [
    "security",
    "observability",
    "web",
    "monitoring",
    "aws",
    "azure",
    "google_cloud",
    "cloud",
    "network",
    "datastore",
    "containers",
    "kubernetes",
    "os_system",
    "productivity",
    "infrastructure",
    "siem",
    "threat_intel",
    "edr_xdr",
    "iam",
    "firewall_security",
    "network_security",
    "vulnerability_management",
    "message_queue",
    "custom",
    "elastic_stack",
    "load_balancer",
]
SECURITY_CATEGORIES = ["security", "siem", "threat_intel", "edr_xdr", "iam", "firewall_security"]

VENDORS = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "aperture",
    "vandelay",
    "nakatomi",
    "oscorp",
    "gringotts",
    "monarch",
    "duff",
    "pied",
    "massive",
    "vortex",
    "zenith",
    "orbit",
    "quantum",
    "nimbus",
    "cobalt",
    "falcon",
    "summit",
    "harbor",
    "beacon",
    "meridian",
    "apex",
    "sentinel",
    "lumen",
    "kestrel",
    "polaris",
    "atlas",
    "cascade",
    "ember",
    "granite",
]
PRODUCTS = [
    "firewall",
    "gateway",
    "proxy",
    "endpoint",
    "identity",
    "mail",
    "dns",
    "vpn",
    "waf",
    "siem",
    "database",
    "cache",
    "queue",
    "storage",
    "loadbalancer",
    "webserver",
    "kubernetes",
    "cloud",
    "audit",
    "threat",
    "sandbox",
    "edr",
    "nac",
    "scanner",
    "backup",
]
INPUTS = ["logfile", "filestream", "httpjson", "cel", "aws-s3", "tcp", "udp", "winlog", "http/metrics"]
METRIC_INPUTS = ["http/metrics", "cel"]
KIBANA_CONDITIONS = [
    "^7.17.0 || ^8.0.0",
    "^8.10.0",
    "^8.13.0 || ^9.0.0",
    "^8.15.0 || ^9.0.0",
    "^8.16.0 || ^9.0.0",
    "^8.18.0 || ^9.1.0",
]
FORMAT_VERSIONS = ["3.0.0", "3.0.3", "3.1.4", "3.2.1", "3.3.0"]
TEAMS = ["security-service-integrations", "obs-infraobs-integrations", "obs-ds-hosted-services"]
WORDS = (  # noqa: SIM905
    "collect parse events logs metrics from the service and ship them to elasticsearch with ingest "
    "pipelines dashboards field mappings for security analytics alerting observability traffic "
    "sessions users hosts network connections requests responses errors latency throughput audit "
    "trail configuration changes authentication failures policy violations threat indicators "
    "vulnerabilities assets inventory cloud accounts regions buckets queues topics partitions"
).split()

BIG_VERSION_DATA_STREAMS = 40
BIG_SCREENSHOTS = 3  # noise PNGs of ~1.9 MB each: incompressible, like real screenshots
BIG_SCREENSHOT_SIDE = 800


# --- small content helpers ----------------------------------------------------------------------


def dump_yaml(value: Any) -> bytes:
    return yaml.dump(value, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100).encode()


def sentence(rng: random.Random, low: int = 6, high: int = 14) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def png(width: int, height: int, pixel_rows: list[bytes], level: int = 6) -> bytes:
    """A real RGB PNG file from raw rows of ``3 * width`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + row for row in pixel_rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, level))
        + chunk(b"IEND", b"")
    )


def gradient_png(rng: random.Random, width: int, height: int, noise_rows: int = 0) -> bytes:
    r, g, b = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    rows = []
    for y in range(height):
        if y < noise_rows:
            rows.append(rng.randbytes(3 * width))
        else:
            shade = bytes(((r + y) % 256, (g + 2 * y) % 256, b))
            rows.append(shade * width)
    return png(width, height, rows)


def noise_png(rng: random.Random, side: int) -> bytes:
    return png(side, side, [rng.randbytes(3 * side) for _ in range(side)], level=1)


def icon_svg(name: str, color: str) -> bytes:
    initials = "".join(part[0] for part in name.split("_"))[:2].upper()
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 0 32 32">\n'
        f'  <rect width="32" height="32" rx="6" fill="{color}"/>\n'
        f'  <text x="16" y="21" font-family="sans-serif" font-size="13" text-anchor="middle" '
        f'fill="#fff">{initials}</text>\n'
        "</svg>\n"
    ).encode()


def uuid_like(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def saved_object(rng: random.Random, kind: str, obj_id: str, title: str, panels: int) -> bytes:
    """A Kibana saved object shaped like the ones in integration packages."""
    panel_list = []
    references = []
    for i in range(panels):
        ref = f"panel_{i}"
        panel_list.append(
            {
                "embeddableConfig": {
                    "attributes": {
                        "description": sentence(rng),
                        "state": {
                            "datasourceStates": {
                                "formBased": {
                                    "layers": {
                                        uuid_like(rng): {
                                            "columnOrder": [uuid_like(rng) for _ in range(3)],
                                            "incompleteColumns": {},
                                        }
                                    }
                                }
                            },
                            "filters": [],
                            "query": {"language": "kuery", "query": f'data_stream.dataset : "{title}"'},
                            "visualization": {
                                "layerId": uuid_like(rng),
                                "layerType": "data",
                                "seriesType": rng.choice(["bar_stacked", "line", "area"]),
                                "accessors": [uuid_like(rng)],
                            },
                        },
                        "title": sentence(rng, 2, 5),
                        "visualizationType": rng.choice(["lnsXY", "lnsMetric", "lnsDatatable", "lnsPie"]),
                    },
                    "enhancements": {},
                },
                "gridData": {"h": 12, "i": ref, "w": 24, "x": 24 * (i % 2), "y": 12 * (i // 2)},
                "panelIndex": ref,
                "type": "lens",
            }
        )
        references.append(
            {"id": "logs-*", "name": f"{ref}:indexpattern-datasource-layer", "type": "index-pattern"}
        )
    doc = {
        "attributes": {
            "description": paragraph(rng, 2),
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps({"filter": [], "query": {"language": "kuery", "query": ""}})
            },
            "optionsJSON": json.dumps({"hidePanelTitles": False, "syncColors": False, "useMargins": True}),
            "panelsJSON": json.dumps(panel_list),
            "timeRestore": False,
            "title": title,
            "version": 1,
        },
        "coreMigrationVersion": "8.8.0",
        "id": obj_id,
        "managed": False,
        "references": references,
        "type": kind,
        "typeMigrationVersion": "8.9.0",
    }
    return json.dumps(doc, indent=4).encode()


# --- package plans ------------------------------------------------------------------------------


@dataclass
class DataStreamPlan:
    folder: str
    type: str
    title: str
    inputs: list[str]
    files: dict[str, bytes]  # relative to data_stream/<folder>/, without manifest.yml
    manifest: dict[str, Any]


def package_names(count: int, seed: int) -> list[str]:
    rng = random.Random(f"names-{seed}")
    pairs = [(v, p) for v in VENDORS for p in PRODUCTS]
    rng.shuffle(pairs)
    names = [f"{v}_{p}" for v, p in pairs[:count]]
    extra = 0
    while len(names) < count:  # beyond 1,000 packages: numbered names
        v, p = pairs[extra % len(pairs)]
        names.append(f"{v}_{p}_{extra // len(pairs) + 2}")
        extra += 1
    return names


def version_list(rng: random.Random, count: int) -> list[str]:
    """``count`` increasing strict semver versions, some of them prereleases."""
    major = rng.choice([0, 1, 1, 1, 2])
    minor, patch = rng.randint(0, 3), 0
    out: list[str] = []
    while len(out) < count:
        roll = rng.random()
        if out and roll < 0.07:
            # a preview of the next major, then its release
            out.append(f"{major + 1}.0.0-preview{rng.randint(1, 3)}")
            major, minor, patch = major + 1, 0, 0
        elif out and roll < 0.12:
            out.append(f"{major}.{minor + 1}.0-beta.{rng.randint(1, 2)}")
            minor, patch = minor + 1, 0
        elif out and roll < 0.45:
            patch += 1
        else:
            minor, patch = minor + 1, 0
        if len(out) < count:
            out.append(f"{major}.{minor}.{patch}")
    return out[:count]


def make_variables(rng: random.Random, prefix: str, count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        kind = rng.choice(["text", "text", "bool", "integer", "password", "yaml", "select"])
        var: dict[str, Any] = {
            "name": f"{prefix}_{i}" if i else prefix,
            "type": kind,
            "title": sentence(rng, 2, 4).rstrip("."),
            "description": sentence(rng),
            "multi": kind == "text" and rng.random() < 0.3,
            "required": rng.random() < 0.4,
            "show_user": rng.random() < 0.6,
        }
        if kind == "text":
            var["default"] = [f"/var/log/{prefix}/*.log"] if var["multi"] else f"{prefix}-default"
        elif kind == "bool":
            var["default"] = rng.random() < 0.5
        elif kind == "integer":
            var["default"] = rng.choice([10, 30, 60, 300])
        elif kind == "yaml":
            var["default"] = "# processors:\n#   - add_fields:\n#       fields:\n#         env: prod\n"
        elif kind == "select":
            var["options"] = [{"value": v, "text": v.upper()} for v in ("info", "debug", "warn")]
            var["default"] = "info"
        out.append(var)
    return out


def make_fields(rng: random.Random, folder: str, count: int) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = []
    group_count = max(1, count // 8)
    for g in range(group_count):
        children = []
        for i in range(rng.randint(4, 12)):
            children.append(
                {
                    "name": f"{rng.choice(WORDS)}_{i}",
                    "type": rng.choice(
                        ["keyword", "keyword", "long", "date", "ip", "boolean", "text", "double"]
                    ),
                    "description": sentence(rng),
                }
            )
        fields.append({"name": f"{folder}.{rng.choice(WORDS)}_{g}", "type": "group", "fields": children})
    return fields


BASE_FIELDS = dump_yaml(
    [
        {"name": "data_stream.type", "type": "constant_keyword", "description": "Data stream type."},
        {"name": "data_stream.dataset", "type": "constant_keyword", "description": "Data stream dataset."},
        {
            "name": "data_stream.namespace",
            "type": "constant_keyword",
            "description": "Data stream namespace.",
        },
        {"name": "@timestamp", "type": "date", "description": "Event timestamp."},
        {"name": "event.module", "type": "constant_keyword", "description": "Event module."},
        {"name": "event.dataset", "type": "constant_keyword", "description": "Event dataset."},
    ]
)
AGENT_FIELDS = dump_yaml(
    [
        {
            "name": "cloud",
            "type": "group",
            "fields": [
                {
                    "name": "account.id",
                    "level": "extended",
                    "type": "keyword",
                    "description": "Cloud account.",
                },
                {
                    "name": "provider",
                    "level": "extended",
                    "type": "keyword",
                    "description": "Cloud provider.",
                },
                {"name": "region", "level": "extended", "type": "keyword", "description": "Region."},
            ],
        },
        {
            "name": "host",
            "type": "group",
            "fields": [
                {"name": "architecture", "type": "keyword", "description": "Host architecture."},
                {"name": "hostname", "type": "keyword", "description": "Host name."},
                {"name": "os.name", "type": "keyword", "description": "Operating system name."},
            ],
        },
    ]
)
ECS_NAMES = [
    "ecs.version",
    "event.category",
    "event.kind",
    "event.outcome",
    "event.original",
    "message",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "user.name",
    "user.id",
    "url.original",
    "http.request.method",
    "http.response.status_code",
    "related.ip",
    "related.user",
    "tags",
    "error.message",
    "observer.vendor",
    "observer.product",
    "network.protocol",
]


def make_data_stream(rng: random.Random, package: str, index: int, big: bool = False) -> DataStreamPlan:
    words = [
        "access",
        "audit",
        "events",
        "alerts",
        "traffic",
        "system",
        "auth",
        "dns",
        "flow",
        "threat",
        "metrics",
        "status",
        "usage",
        "inventory",
        "session",
        "policy",
    ]
    folder = f"{words[index % len(words)]}" + (f"_{index // len(words) + 1}" if index >= len(words) else "")
    ds_type = "metrics" if folder.startswith(("metrics", "status", "usage")) else "logs"
    inputs = (
        [rng.choice(METRIC_INPUTS)] if ds_type == "metrics" else rng.sample(INPUTS[:8], rng.randint(1, 2))
    )
    title = f"{package.replace('_', ' ').title()} {folder.replace('_', ' ')}"
    streams = []
    files: dict[str, bytes] = {}
    for n, input_type in enumerate(inputs):
        template = "stream.yml.hbs" if n == 0 else f"{input_type.replace('/', '_').replace('-', '_')}.yml.hbs"
        stream: dict[str, Any] = {
            "input": input_type,
            "title": f"{title} via {input_type}",
            "description": sentence(rng),
            "vars": make_variables(
                rng, folder if n == 0 else f"{folder}_{n}", rng.randint(3, 8 if not big else 6)
            ),
        }
        if n:
            stream["template_path"] = template
        streams.append(stream)
        lines = [f"{v['name']}: {{{{{v['name']}}}}}" for v in stream["vars"]]
        files[f"agent/stream/{template}"] = (
            "\n".join(lines)
            + "\ntags:\n{{#each tags as |tag|}}\n  - {{tag}}\n{{/each}}\n"
            + "{{#if processors}}\nprocessors:\n{{processors}}\n{{/if}}\n"
        ).encode()
    manifest: dict[str, Any] = {"title": title, "type": ds_type, "streams": streams}
    if rng.random() < 0.3:
        manifest["elasticsearch"] = {"index_template": {"mappings": {"dynamic": False}}}
    if ds_type == "logs":
        processors = []
        for i in range(rng.randint(8, 30)):
            kind = rng.choice(["set", "rename", "grok", "date", "remove", "script", "convert"])
            if kind == "grok":
                body: dict[str, Any] = {
                    "field": "message",
                    "patterns": ["%{IPORHOST:source.ip} %{GREEDYDATA:rest}"],
                }
            elif kind == "script":
                body = {"lang": "painless", "source": "ctx.event.kind = 'event';\n" * rng.randint(1, 4)}
            elif kind == "date":
                body = {
                    "field": f"{folder}.time",
                    "formats": ["ISO8601", "UNIX"],
                    "target_field": "@timestamp",
                }
            else:
                body = {
                    "field": f"{folder}.{rng.choice(WORDS)}_{i}",
                    "tag": f"{kind}_{i}",
                    "ignore_missing": True,
                }
            processors.append({kind: body})
        pipeline = {
            "description": f"Pipeline for {title}",
            "processors": [{"set": {"field": "ecs.version", "value": "8.11.0"}}, *processors],
            "on_failure": [
                {"set": {"field": "error.message", "value": "{{{ _ingest.on_failure_message }}}"}}
            ],
        }
        files["elasticsearch/ingest_pipeline/default.yml"] = dump_yaml(pipeline)
        if rng.random() < 0.4:
            files["elasticsearch/ingest_pipeline/pipeline_object.yml"] = dump_yaml(
                {"description": "Parse the object", "processors": processors[:5]}
            )
        if rng.random() < 0.5:
            manifest["ingest_pipeline"] = "default"  # else found by its name, default.yml
    files["fields/base-fields.yml"] = BASE_FIELDS
    files["fields/fields.yml"] = dump_yaml(make_fields(rng, folder, rng.randint(30, 150)))
    files["fields/ecs.yml"] = dump_yaml(
        [{"external": "ecs", "name": n} for n in rng.sample(ECS_NAMES, rng.randint(8, len(ECS_NAMES)))]
    )
    if rng.random() < 0.5:
        files["fields/agent.yml"] = AGENT_FIELDS
    files["sample_event.json"] = json.dumps(
        {
            "@timestamp": "2024-05-01T12:00:00.000Z",
            "data_stream": {"dataset": f"{package}.{folder}", "namespace": "default", "type": ds_type},
            "ecs": {"version": "8.11.0"},
            "event": {"category": ["network"], "kind": "event", "original": sentence(rng, 10, 30)},
            folder: {w: rng.randint(0, 10_000) for w in rng.sample(WORDS, 8)},
        },
        indent=4,
    ).encode()
    return DataStreamPlan(folder, ds_type, title, inputs, files, manifest)


class PackageBuilder:
    """All versions of one package; content shared across versions is made once."""

    def __init__(
        self, index: int, name: str, seed: int, versions: int, zips: float, big: bool, names: list[str]
    ):
        self.rng = random.Random(f"{seed}-{index}-{name}")
        rng = self.rng
        self.name = name
        self.big = big
        self.versions = version_list(rng, versions)
        self.kinds = ["zip" if not big and rng.random() < zips else "dir" for _ in self.versions]
        self.title = name.replace("_", " ").title()
        self.description = f"Collect logs and metrics from {self.title} with Elastic Agent."
        if big or rng.random() < 0.33:
            categories = [rng.choice(SECURITY_CATEGORIES)]
            if rng.random() < 0.5:
                categories.append("security")
        else:
            categories = []
        while len(categories) < rng.randint(1, 3):
            category = rng.choice(CATEGORY_POOL)
            if category not in categories:
                categories.append(category)
        self.categories = categories
        self.owner = {
            "github": f"elastic/{rng.choice(TEAMS)}",
            "type": rng.choice(["elastic", "elastic", "partner", "community"]),
        }
        self.deprecated = None
        if not big and rng.random() < 0.04:
            self.deprecated = {
                "since": self.versions[len(self.versions) // 2],
                "description": f"{self.title} is deprecated, use {names[(index + 1) % len(names)]} instead.",
                "replaced_by": {"package": names[(index + 1) % len(names)]},
            }
        self.max_streams = rng.randint(2, 6)
        self.streams = [make_data_stream(rng, name, i) for i in range(self.max_streams)]
        color = f"#{rng.randrange(0x1000000):06x}"
        self.images = {
            "img/icon.svg": icon_svg(name, color),
            "img/logo.png": gradient_png(rng, 64, 64),
            f"img/{name}-screenshot.png": gradient_png(rng, 320, 200, noise_rows=rng.randint(10, 60)),
        }
        self.kibana: dict[str, bytes] = {}
        for i in range(rng.randint(2, 8)):
            obj_id = f"{name}-{uuid_like(rng)}"
            self.kibana[f"kibana/dashboard/{obj_id}.json"] = saved_object(
                rng, "dashboard", obj_id, f"[Logs {self.title}] Overview {i}", rng.randint(2, 20)
            )
        # Visualizations: a pool; each version takes enough to have 40-120 files in all.
        self.visualizations: dict[str, bytes] = {}
        for i in range(40):
            obj_id = f"{name}-{uuid_like(rng)}"
            self.visualizations[f"kibana/visualization/{obj_id}.json"] = saved_object(
                rng, "visualization", obj_id, f"{self.title} visualization {i}", 1
            )
        self.file_target = rng.randint(40, 110)
        for i in range(rng.randint(0, 2)):
            obj_id = f"{name}-{uuid_like(rng)}"
            self.kibana[f"kibana/search/{obj_id}.json"] = saved_object(
                rng, "search", obj_id, f"{self.title} search {i}", 1
            )
        tag_id = f"{name}-security-solution-default"
        self.kibana[f"kibana/tag/{tag_id}.json"] = json.dumps(
            {
                "attributes": {"color": color, "description": "", "name": "Security Solution"},
                "id": tag_id,
                "type": "tag",
            },
            indent=4,
        ).encode()
        self.readme_intro = (
            f"# {self.title}\n\n{paragraph(rng, 6)}\n\n## Compatibility\n\n{paragraph(rng, 3)}\n\n"
        )
        self.changelog = [
            {
                "version": v,
                "changes": [
                    {
                        "description": sentence(rng),
                        "type": rng.choice(["enhancement", "bugfix", "breaking-change"]),
                        "link": f"https://github.com/elastic/integrations/pull/{rng.randint(1000, 12000)}",
                    }
                    for _ in range(rng.randint(1, 3))
                ],
            }
            for v in self.versions
        ]
        self.kibana_conditions = sorted(rng.sample(range(len(KIBANA_CONDITIONS)), 3))
        self.format_versions = sorted(rng.sample(range(len(FORMAT_VERSIONS)), 2))
        self.package_vars = make_variables(rng, "api_url", rng.randint(0, 3))

    def latest_ga_index(self) -> int:
        for i in range(len(self.versions) - 1, -1, -1):
            if "-" not in self.versions[i]:
                return i
        return len(self.versions) - 1

    def version_files(self, i: int) -> dict[str, bytes]:
        version = self.versions[i]
        fraction = (i + 1) / len(self.versions)
        rng = random.Random(f"{self.name}-{version}")
        is_big = self.big and i == self.latest_ga_index()
        if is_big:
            streams = [make_data_stream(rng, self.name, n, big=True) for n in range(BIG_VERSION_DATA_STREAMS)]
        else:
            streams = self.streams[: max(2, round(self.max_streams * min(1.0, 0.5 + fraction)))]
        conditions = self.kibana_conditions
        kibana = KIBANA_CONDITIONS[conditions[min(len(conditions) - 1, int(fraction * len(conditions)))]]
        fmt = FORMAT_VERSIONS[self.format_versions[0 if fraction < 0.5 else 1]]

        files: dict[str, bytes] = {}
        inputs: list[dict[str, Any]] = []
        seen_inputs: set[str] = set()
        for ds in streams:
            for input_type in ds.inputs:
                if input_type in seen_inputs:
                    continue
                seen_inputs.add(input_type)
                inputs.append(
                    {
                        "type": input_type,
                        "title": f"Collect {self.title} data via {input_type}",
                        "description": sentence(rng),
                        "vars": make_variables(
                            rng, input_type.replace("/", "_").replace("-", "_"), rng.randint(1, 4)
                        ),
                    }
                )
        templates: list[dict[str, Any]] = [
            {
                "name": self.name,
                "title": f"{self.title} logs and metrics",
                "description": f"Collect logs and metrics from {self.title} instances.",
                "data_streams": [ds.folder for ds in streams],
                "inputs": inputs,
            }
        ]
        if len(self.categories) > 1:
            templates[0]["categories"] = self.categories[:1]
        manifest: dict[str, Any] = {
            "format_version": fmt,
            "name": self.name,
            "title": self.title,
            "version": version,
            "description": self.description,
            "type": "integration",
            "categories": self.categories,
            "conditions": {"kibana": {"version": kibana}, "elastic": {"subscription": "basic"}},
            "icons": [
                {
                    "src": "/img/icon.svg",
                    "title": f"{self.title} logo",
                    "size": "32x32",
                    "type": "image/svg+xml",
                }
            ],
            "screenshots": [
                {
                    "src": f"/img/{self.name}-screenshot.png",
                    "title": f"{self.title} overview",
                    "size": "320x200",
                    "type": "image/png",
                }
            ],
            "policy_templates": templates,
            "owner": self.owner,
        }
        if self.package_vars:
            manifest["vars"] = self.package_vars
        if self.deprecated and i == len(self.versions) - 1:
            manifest["deprecated"] = self.deprecated
        images = dict(self.images)
        kibana_files = dict(self.kibana)
        if is_big:
            for n in range(BIG_SCREENSHOTS):
                path = f"img/{self.name}-big-screenshot-{n}.png"
                images[path] = noise_png(rng, BIG_SCREENSHOT_SIDE)
                manifest["screenshots"].append(
                    {"src": f"/{path}", "title": f"Screenshot {n}", "size": "800x800", "type": "image/png"}
                )
            for n in range(12):
                obj_id = f"{self.name}-{uuid_like(rng)}"
                kibana_files[f"kibana/dashboard/{obj_id}.json"] = saved_object(
                    rng, "dashboard", obj_id, f"[Logs {self.title}] Big {n}", 60
                )
        files["manifest.yml"] = dump_yaml(manifest)
        files["changelog.yml"] = dump_yaml(list(reversed(self.changelog[: i + 1])))
        readme = [self.readme_intro, f"This is version {version}.\n\n## Data streams\n\n"]
        for ds in streams:
            readme.append(
                f"### {ds.folder}\n\n{ds.title}: {sentence(rng)}\n\n"
                "| Field | Description | Type |\n|---|---|---|\n"
            )
            for field in ECS_NAMES[: 6 + len(ds.folder)]:
                readme.append(f"| {field} | {sentence(rng, 3, 8)} | keyword |\n")
            readme.append("\n")
        files["docs/README.md"] = "".join(readme).encode()
        files.update(images)
        files.update(kibana_files)
        for ds in streams:
            base = f"data_stream/{ds.folder}"
            files[f"{base}/manifest.yml"] = dump_yaml(ds.manifest)
            for rel, body in ds.files.items():
                files[f"{base}/{rel}"] = body
        for rel, body in list(self.visualizations.items())[: max(1, self.file_target - len(files))]:
            files[rel] = body
        return files


# --- writing ------------------------------------------------------------------------------------


def write_dir(target: str, files: dict[str, bytes]) -> None:
    made: set[str] = set()
    for rel in sorted(files):
        path = os.path.join(target, rel)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, files[rel])
        finally:
            os.close(fd)


def zip_bytes(top: str, files: dict[str, bytes]) -> bytes:
    """A zip like elastic-package builds: one top folder, folder entries, deflated files."""
    buffer = io.BytesIO()
    stamp = (2024, 5, 1, 12, 0, 0)
    seen: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in sorted(files, key=lambda p: p.split("/")):
            parts = f"{top}/{rel}".split("/")[:-1]
            for n in range(1, len(parts) + 1):
                folder = "/".join(parts[:n]) + "/"
                if folder not in seen:
                    seen.add(folder)
                    info = zipfile.ZipInfo(folder, stamp)
                    info.external_attr = (0o40755 << 16) | 0x10
                    archive.writestr(info, b"")
            info = zipfile.ZipInfo(f"{top}/{rel}", stamp)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[rel])
    return buffer.getvalue()


def build_package(job: tuple[int, str, int, int, float, bool, list[str], str]) -> dict[str, Any]:
    index, name, seed, versions, zips, big, names, out = job
    builder = PackageBuilder(index, name, seed, versions, zips, big, names)
    written = []
    for i, (version, kind) in enumerate(zip(builder.versions, builder.kinds, strict=True)):
        files = builder.version_files(i)
        size = sum(len(b) for b in files.values())
        if kind == "zip":
            path = os.path.join(out, "zips", f"{name}-{version}.zip")
            with open(path, "wb") as fh:
                fh.write(zip_bytes(f"{name}-{version}", files))
        else:
            write_dir(os.path.join(out, "packages", name, version), files)
        written.append({"version": version, "kind": kind, "files": len(files), "bytes": size})
    return {
        "name": name,
        "categories": builder.categories,
        "deprecated": builder.deprecated is not None,
        "big": big,
        "latest_ga": builder.versions[builder.latest_ga_index()],
        "versions": written,
    }


def generate(out: str, packages: int, versions: int, seed: int, zips: float, jobs: int) -> dict[str, Any]:
    started = time.monotonic()
    out = os.path.abspath(out)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "packages"))
    os.makedirs(os.path.join(out, "zips"))
    names = package_names(packages, seed)
    work = [(i, name, seed, versions, zips, i == 0, names, out) for i, name in enumerate(names)]
    # The big package first: it takes longest.
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(build_package, work, chunksize=max(1, len(work) // (jobs * 8) or 1)))
    with open(os.path.join(out, "config.yml"), "w") as fh:
        fh.write(
            "# Generated by benchmarks/generate.py\npackage_paths:\n"
            f"  - {json.dumps(os.path.join(out, 'packages'))}\n  - {json.dumps(os.path.join(out, 'zips'))}\n"
        )
    all_versions = [v for r in results for v in r["versions"]]
    big = next(r for r in results if r["big"])
    meta = {
        "generator": 1,
        "params": {"packages": packages, "versions": versions, "seed": seed, "zips": zips},
        "versions_total": len(all_versions),
        "zip_versions": sum(1 for v in all_versions if v["kind"] == "zip"),
        "files_total": sum(v["files"] for v in all_versions),
        "bytes_total": sum(v["bytes"] for v in all_versions),
        "big": {"name": big["name"], "version": big["latest_ga"]},
        "config": os.path.join(out, "config.yml"),
        "packages": results,
        "seconds": round(time.monotonic() - started, 2),
    }
    with open(os.path.join(out, "collection.json.tmp"), "w") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(os.path.join(out, "collection.json.tmp"), os.path.join(out, "collection.json"))
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="output folder (replaced if it exists)")
    parser.add_argument("--packages", type=int, required=True, help="number of packages")
    parser.add_argument("--versions", type=int, required=True, help="versions per package")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--zips", type=float, default=0.1, help="fraction of versions stored as zip files (default 0.1)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel writers")
    args = parser.parse_args(argv)
    if args.packages < 1 or args.versions < 1 or not 0 <= args.zips <= 1:
        parser.error("--packages and --versions must be >= 1 and --zips in [0, 1]")
    meta = generate(args.out_dir, args.packages, args.versions, args.seed, args.zips, args.jobs)
    print(
        f"{meta['versions_total']} versions ({meta['zip_versions']} zips) of {args.packages} packages, "
        f"{meta['files_total']} files, {meta['bytes_total'] / 1e6:.0f} MB in {meta['seconds']} s "
        f"-> {os.path.abspath(args.out_dir)} (config: {meta['config']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
