"""The built-in category table (ids, titles, parents) the reference ships."""

from __future__ import annotations

from typing import NamedTuple


class Category(NamedTuple):
    id: str
    title: str
    parent: str | None


_TOP_LEVEL = {
    "aws": "AWS",
    "azure": "Azure",
    "cloud": "Cloud",
    "config_management": "Config management",
    "containers": "Containers",
    "crm": "CRM",
    "custom": "Custom",
    "datastore": "Database",
    "elastic_stack": "Elastic Stack",
    "elasticsearch_sdk": "Elasticsearch SDK",
    "enterprise_search": "Enterprise Search",
    "google_cloud": "Google Cloud",
    "infrastructure": "Infrastructure",
    "languages": "Languages",
    "network": "Network",
    "observability": "Observability",
    "opentelemetry": "OpenTelemetry",
    "os_system": "Operating Systems",
    "productivity": "Productivity",
    "security": "Security",
    "support": "Support",
    "ticketing": "Ticketing",
    "version_control": "Version Control",
}

_SUBCATEGORIES = {
    "custom": {"custom_logs": "Custom Logs"},
    "enterprise_search": {
        "app_search": "Application Search",
        "connector": "Connector",
        "connector_client": "Connector Client",
        "connector_package": "Connector Package",
        "content_source": "Content Source",
        "crawler": "Crawler",
        "language_client": "Language Client",
        "native_search": "Native Search",
        "sdk_search": "SDK",
        "workplace_search": "Workplace Search",
    },
    "observability": {
        "application_observability": "Application",
        "analytics_engine": "Analytics Engine",
        "big_data": "Big Data",
        "java_observability": "Java",
        "kubernetes": "Kubernetes",
        "load_balancer": "Load Balancer",
        "message_queue": "Message Broker",
        "monitoring": "Monitoring",
        "notification": "Notification",
        "process_manager": "Process Manager",
        "stream_processing": "Stream Processing",
        "virtualization": "Virtualization Platform",
        "web": "Web Server",
        "websphere": "WebSphere Application Server",
    },
    "security": {
        "advanced_analytics_ueba": "Advanced Analytics (UEBA)",
        "asset_inventory": "Asset Inventory",
        "auditd": "AuditD",
        "authentication": "Authentication",
        "cdn_security": "Content Delivery Network",
        "cloudsecurity_cdr": "Cloud Security/CDR",
        "credential_management": "Credential Management",
        "database_security": "Database",
        "dns_security": "DNS",
        "edr_xdr": "EDR/XDR",
        "email_security": "Email",
        "firewall_security": "Firewall",
        "iam": "Identity and Access Management",
        "ids_ips": "IDS/IPS",
        "misconfiguration_workflow": "Misconfiguration Workflow",
        "network_security": "Network",
        "productivity_security": "Productivity",
        "proxy_security": "Proxy",
        "siem": "SIEM",
        "threat_intel": "Threat Intelligence",
        "vpn_security": "VPN",
        "vulnerability_management": "Vulnerability Management",
        "vulnerability_workflow": "Vulnerability Workflow",
        "web_application_firewall": "Web Application Firewall",
    },
}

CATEGORIES: dict[str, Category] = {
    **{cid: Category(cid, title, None) for cid, title in _TOP_LEVEL.items()},
    **{
        cid: Category(cid, title, parent)
        for parent, children in _SUBCATEGORIES.items()
        for cid, title in children.items()
    },
}

# parent id -> its subcategory ids, for the subcategory-aware category filter.
CHILDREN: dict[str, frozenset[str]] = {
    parent: frozenset(children) for parent, children in _SUBCATEGORIES.items()
}


def has_category(categories: tuple[str, ...] | list[str], wanted: str) -> bool:
    """True if ``wanted`` is in ``categories`` directly or through one of its subcategories."""
    if wanted in categories:
        return True
    children = CHILDREN.get(wanted)
    return children is not None and any(c in children for c in categories)
