"""Input type -> ingestion method, as the reference's built-in table maps them."""

from __future__ import annotations

_METHODS: dict[str, tuple[str, ...]] = {
    "API": (
        "cel",
        "entity-analytics",
        "httpjson",
        "o365audit",
        "salesforce",
        "streaming",
        "websocket",
        "winlog",
        "apache/metrics",
        "aws/metrics",
        "awsfargate/metrics",
        "azure/metrics",
        "containerd/metrics",
        "docker/metrics",
        "elasticsearch/metrics",
        "enterprisesearch/metrics",
        "etcd/metrics",
        "gcp/metrics",
        "haproxy/metrics",
        "http/metrics",
        "kibana/metrics",
        "kubernetes/metrics",
        "logstash/metrics",
        "meraki/metrics",
        "nats/metrics",
        "nginx/metrics",
        "panw/metrics",
        "rabbitmq/metrics",
        "stan/metrics",
        "vsphere/metrics",
        "windows/metrics",
    ),
    "Database": (
        "memcached/metrics",
        "mongodb/metrics",
        "mysql/metrics",
        "postgresql/metrics",
        "redis",
        "redis/metrics",
        "sql/metrics",
        "zookeeper/metrics",
    ),
    "Jolokia": ("activemq/metrics", "jolokia/metrics", "kafka/metrics"),
    "File": ("filestream", "logfile", "linux/metrics", "system/metrics"),
    "Network Protocol": ("syslog", "tcp", "udp", "statsd/metrics"),
    "Webhook": ("http_endpoint",),
    "AWS S3": ("aws-s3",),
    "Azure Blob Storage": ("azure-blob-storage",),
    "AWS CloudWatch": ("aws-cloudwatch",),
    "Azure Event Hub": ("azure-eventhub",),
    "ETW": ("etw",),
    "GCP Pub/Sub": ("gcp-pubsub",),
    "Google Cloud Storage": ("gcs",),
    "Windows Performance Counters": ("iis/metrics",),
    "journald": ("journald",),
    "Kafka": ("kafka",),
    "Lumberjack": ("lumberjack",),
    "NetFlow": ("netflow",),
    "Prometheus": ("prometheus/metrics",),
}

INGESTION_METHODS: dict[str, str] = {
    input_type: method for method, inputs in _METHODS.items() for input_type in inputs
}


def ingestion_method(input_type: str) -> str:
    """The ingestion method of an input type, or ``""`` when the table does not know it."""
    return INGESTION_METHODS.get(input_type, "")
