"""Manifest sections of a package version decoded into the shapes the reference emits."""

from __future__ import annotations

from typing import Any

from eprd.model.datastream import stream_doc
from eprd.model.ingestion import ingestion_method
from eprd.model.listing import Listing
from eprd.model.manifest import (
    OMIT_NULL,
    ManifestError,
    deployment_modes_doc,
    deprecated_doc,
    flag,
    go_path_join,
    go_quote,
    images_doc,
    name_list_doc,
    obj,
    objects,
    put,
    required,
    text,
    texts,
    variables_doc,
)

AGENTLESS_RELEASES = ("beta", "ga")


def conditions_doc(value: Any) -> dict[str, Any] | None:
    """The ``conditions`` section."""
    raw = obj(value, "conditions")
    if raw is None:
        return None
    doc: dict[str, Any] = {}
    kibana = obj(raw.get("kibana"), "conditions.kibana")
    if kibana is not None:
        doc["kibana"] = {"version": text(kibana.get("version"), "conditions.kibana.version")}
    elastic = obj(raw.get("elastic"), "conditions.elastic")
    if elastic is not None:
        doc["elastic"] = {
            "subscription": text(elastic.get("subscription"), "conditions.elastic.subscription")
        }
        capabilities = texts(elastic.get("capabilities"), "conditions.elastic.capabilities")
        put(doc["elastic"], "capabilities", capabilities)
    agent = obj(raw.get("agent"), "conditions.agent")
    if agent is not None:
        doc["agent"] = {"version": text(agent.get("version"), "conditions.agent.version")}
    return doc


def discovery_doc(value: Any) -> dict[str, Any] | None:
    """The ``discovery`` section."""
    raw = obj(value, "discovery")
    if raw is None:
        return None
    doc: dict[str, Any] = {}
    put(doc, "fields", name_list_doc(raw.get("fields"), "discovery.fields"))
    put(doc, "datasets", name_list_doc(raw.get("datasets"), "discovery.datasets"))
    return doc


def requires_doc(value: Any) -> dict[str, Any] | None:
    """The ``requires`` section (input and content package dependencies)."""
    raw = obj(value, "requires")
    if raw is None:
        return None
    doc: dict[str, Any] = {}
    for kind in ("input", "content"):
        deps = [
            {
                "package": required(dep.get("package"), f"requires.{kind}.{i}.package"),
                "version": required(dep.get("version"), f"requires.{kind}.{i}.version"),
            }
            for i, dep in enumerate(objects(raw.get(kind), f"requires.{kind}"))
        ]
        put(doc, kind, deps)
    return doc


def elasticsearch_doc(value: Any) -> dict[str, Any] | None:
    """The package-level ``elasticsearch`` section."""
    raw = obj(value, "elasticsearch")
    if raw is None:
        return None
    doc: dict[str, Any] = {}
    privileges = obj(raw.get("privileges"), "elasticsearch.privileges")
    if privileges is not None:
        doc["privileges"] = {}
        put(
            doc["privileges"],
            "cluster",
            texts(privileges.get("cluster"), "elasticsearch.privileges.cluster"),
        )
    return doc


def policy_template_doc(
    raw: dict[str, Any], where: str, url: str, manifest: dict[str, Any], listing: Listing, validate: bool
) -> dict[str, Any]:
    """One policy template of the manifest, as the package document shows it."""
    template_name = required(raw.get("name"), f"{where}.name")
    doc: dict[str, Any] = {
        "name": template_name,
        "title": required(raw.get("title"), f"{where}.title"),
        "description": required(raw.get("description"), f"{where}.description"),
    }
    put(doc, "data_streams", texts(raw.get("data_streams"), f"{where}.data_streams"))
    inputs = [
        _input(i, f"{where}.inputs.{n}", doc, validate)
        for n, i in enumerate(objects(raw.get("inputs"), f"{where}.inputs"))
    ]
    put(doc, "inputs", inputs)
    multiple = flag(raw.get("multiple"), f"{where}.multiple")
    doc["multiple"] = True if multiple is None else multiple
    put(doc, "icons", images_doc(raw.get("icons"), f"{where}.icons", url))
    if raw.get("categories") is not None:
        doc["categories"] = texts(raw.get("categories"), f"{where}.categories")
        if not doc["categories"]:
            del doc["categories"]
    put(doc, "screenshots", images_doc(raw.get("screenshots"), f"{where}.screenshots", url))
    readme = f"docs/{template_name}.md"
    if listing.is_dir(readme):
        raise ManifestError(f"{template_name}.md is a directory")
    if listing.is_file(readme):
        doc["readme"] = go_path_join(url, readme)
    modes = deployment_modes_doc(raw.get("deployment_modes"), f"{where}.deployment_modes")
    agentless_release = ((modes or {}).get("agentless") or {}).get("release", "")
    if agentless_release and agentless_release not in AGENTLESS_RELEASES:
        raise ManifestError(
            f"policy template {go_quote(template_name)}: "
            f"invalid agentless release: {go_quote(agentless_release)}"
        )
    put(doc, "deployment_modes", modes, OMIT_NULL)
    put(doc, "type", text(raw.get("type"), f"{where}.type"))
    input_type = text(raw.get("input"), f"{where}.input")
    put(doc, "input", input_type)
    method = text(raw.get("ingestion_method"), f"{where}.ingestion_method")
    pkg_type = text(manifest.get("type"), "type") or "integration"
    if pkg_type == "input" and input_type:
        method = ingestion_method(input_type)
    put(doc, "ingestion_method", method)
    put(doc, "template_path", text(raw.get("template_path"), f"{where}.template_path"))
    put(doc, "deprecated", deprecated_doc(raw.get("deprecated"), f"{where}.deprecated"), OMIT_NULL)
    return doc


def _input(raw: dict[str, Any], where: str, template: dict[str, Any], validate: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    put(doc, "type", text(raw.get("type"), f"{where}.type"))
    put(doc, "package", text(raw.get("package"), f"{where}.package"))
    put(doc, "vars", variables_doc(raw.get("vars"), f"{where}.vars"))
    put(doc, "title", text(raw.get("title"), f"{where}.title"))
    put(doc, "description", text(raw.get("description"), f"{where}.description"))
    streams = [
        stream_doc(s, f"{where}.streams.{i}")
        for i, s in enumerate(objects(raw.get("streams"), f"{where}.streams"))
    ]
    put(doc, "streams", streams)
    put(doc, "template_path", text(raw.get("template_path"), f"{where}.template_path"))
    put(doc, "input_group", text(raw.get("input_group"), f"{where}.input_group"))
    put(doc, "deployment_modes", texts(raw.get("deployment_modes"), f"{where}.deployment_modes"))
    put(doc, "deprecated", deprecated_doc(raw.get("deprecated"), f"{where}.deprecated"), OMIT_NULL)
    if validate and bool(doc.get("type")) == bool(doc.get("package")):
        but = ", but not both" if doc.get("type") else ""
        raise ManifestError(
            f"input {doc.get('title', '')} in policy template {template['name']} "
            f"must have a type or package{but}"
        )
    return doc


def template_summary(template: dict[str, Any]) -> dict[str, Any]:
    """The projection of a policy template that /search shows."""
    doc = {key: template[key] for key in ("name", "title", "description")}
    for key in ("icons", "categories", "deployment_modes", "data_streams", "deprecated"):
        if key in template:
            doc[key] = template[key]
    return doc
