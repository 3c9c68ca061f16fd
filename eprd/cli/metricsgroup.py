"""The ``/metrics`` of a ``-workers`` process group: the workers' expositions merged into one.

Each worker keeps its own metrics (the per-request families are plain numbers, see
:mod:`eprd.ops.metrics`); the supervisor asks each for its text exposition and merges
them. Per-request and per-process series add up across workers (requests, their sizes
and durations, storage requests, in-flight requests, CPU and memory); the rest describe
the one snapshot every worker serves (packages, generation, rebuilds) and are taken
once, as the highest value of any worker.
"""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

# Families whose series are summed over the workers; every other family is the maximum.
SUMMED = ("epr_http_", "epr_in_flight_requests", "epr_storage_requests", "process_", "python_gc_")
# ... except these, which are the same for every process of the group.
NOT_SUMMED = ("process_start_time_seconds", "process_max_fds")


def summed(family: str) -> bool:
    """Whether a family's series add up across workers."""
    return family.startswith(SUMMED) and not family.startswith(NOT_SUMMED)


class _Merged:
    """A collector that yields already merged families (for ``generate_latest``)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self) -> list:
        return self.families


def merge_expositions(texts: list[str]) -> bytes:
    """One text exposition from several, the series of each family merged by name and labels."""
    families: dict[str, object] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = family
                values[family.name] = {}
            merged = values[family.name]
            add = summed(family.name)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                before = merged.get(key)
                if before is None:
                    merged[key] = sample
                elif add:
                    merged[key] = before._replace(value=before.value + sample.value)
                elif sample.value > before.value:
                    merged[key] = sample
    out = []
    for name, family in families.items():
        family.samples = list(values[name].values())  # type: ignore[attr-defined]
        out.append(family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(out))  # type: ignore[arg-type]
    return generate_latest(registry)
