"""The Helm chart (helm/eprd): lint it, render it with several value sets, validate every rendered
object against the Kubernetes schemas (strict: unknown fields are errors) and check what matters
for running eprd: probes, the drain on shutdown, security, the EPR_* environment, the packages
volume and the rollout on config changes.

Rendering uses Helm's own engine through helm-python-sdk, validation kubernetes-validate; both are
in the ``test`` extra, and a missing one fails these tests instead of skipping them.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from eprd.cli import flags
from eprd.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "eprd"
RELEASE = "registry"
NAMESPACE = "fleet"
FULLNAME = "registry-eprd"
SELECTOR = {"app.kubernetes.io/name": "eprd", "app.kubernetes.io/instance": RELEASE}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
OLDEST_KUBERNETES = "1.25"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "pvc-packages": {
        "packages": {"source": "pvc", "pvc": {"claimName": "epr-packages", "subPath": "production"}},
    },
    "configmap-packages": {
        # The layout the README recommends: the keys in a folder of their own, away from the hidden
        # ..data folders of a ConfigMap volume, and that folder as the package path.
        "packages": {
            "source": "configMap",
            "configMap": {
                "name": "epr-zips",
                "items": [
                    {"key": "nginx-1.2.0.zip", "path": "zips/nginx-1.2.0.zip"},
                    {"key": "nginx-1.2.0.zip.sig", "path": "zips/nginx-1.2.0.zip.sig"},
                ],
            },
        },
        "config": {"packagePaths": ["/packages/package-registry/zips"]},
    },
    "gitsync-packages": {
        "packages": {
            "source": "gitSync",
            "gitSync": {"repository": "https://git.example.com/fleet/packages.git", "subPath": "packages"},
        },
    },
    "metrics-servicemonitor-hpa-pdb": {
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "autoscaling": {
            "enabled": True,
            "minReplicas": 3,
            "maxReplicas": 9,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2, "maxUnavailable": None},
        "extraEnv": [
            {"name": "EPR_LOG_LEVEL", "value": "debug"},
            {"name": "ELASTIC_APM_ENVIRONMENT", "value": "x"},
        ],
        "extraArgs": ["-log-type", "dev"],
        "podAnnotations": {"example.com/team": "fleet"},
        # The remaining optional branches of the templates, so that they are schema-checked too.
        "imagePullSecrets": [{"name": "pull-secret"}],
        "extraEnvFrom": [{"secretRef": {"name": "apm-token"}}],
        "extraVolumes": [{"name": "icons", "configMap": {"name": "icons"}}],
        "extraVolumeMounts": [{"name": "icons", "mountPath": "/icons", "readOnly": True}],
        "cacheVolume": {"medium": "Memory", "sizeLimit": "256Mi"},
        "service": {"annotations": {"example.com/lb": "internal"}},
        "serviceAccount": {"annotations": {"example.com/role": "epr"}},
        "priorityClassName": "high",
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": SELECTOR},
            }
        ],
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "epr", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": SELECTOR},
                        },
                    }
                ]
            }
        },
    },
}

EXPECTED_KINDS = {
    "defaults": {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"},
    "pvc-packages": {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"},
    "configmap-packages": {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"},
    "gitsync-packages": {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"},
    "metrics-servicemonitor-hpa-pdb": {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    },
}

# ServiceMonitor is a Prometheus Operator CRD that kubernetes-validate has no schema for: it is
# checked against this structural schema of the fields the chart renders (unknown fields refused).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _STRING_MAP},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}

INSTALL_HINT = "install the test tools with: .venv/bin/pip install -e '.[test]'"


def _require(module: str, distribution: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pytest.fail(
            f"{distribution} is required by the Helm chart tests but missing ({err}); {INSTALL_HINT}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    module = _require("helm_python", "helm-python-sdk")
    module.disable_logging()
    return module


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    return _require("kubernetes_validate", "kubernetes-validate")


@pytest.fixture(scope="module")
def chart(helm: ModuleType) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


class Rendered:
    """The manifests of one render: raw text by template, and the parsed objects."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.manifests = manifests
        self.objects: list[dict[str, Any]] = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                continue
            self.objects.extend(doc for doc in yaml.safe_load_all(text) if doc)

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    def one(self, kind: str) -> dict[str, Any]:
        found = [obj for obj in self.objects if obj["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]

    @property
    def container(self) -> dict[str, Any]:
        containers = [c for c in self.pod["spec"]["containers"] if c["name"] != "git-sync"]
        assert [c["name"] for c in containers] == ["eprd"]
        return containers[0]

    def env(self) -> dict[str, str]:
        names = [item["name"] for item in self.container["env"]]
        assert len(names) == len(set(names)), f"duplicate env names: {names}"
        return {item["name"]: item["value"] for item in self.container["env"]}

    def volumes(self) -> dict[str, dict[str, Any]]:
        return {volume["name"]: volume for volume in self.pod["spec"]["volumes"]}

    def mounts(self) -> dict[str, dict[str, Any]]:
        return {mount["mountPath"]: mount for mount in self.container["volumeMounts"]}

    def config_yml(self) -> str:
        return self.one("ConfigMap")["data"]["config.yml"]


def render(chart: Any, values: dict[str, Any]) -> Rendered:
    return Rendered(chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest, chart: Any) -> tuple[str, Rendered]:
    return request.param, render(chart, VALUE_SETS[request.param])


# --- lint and schemas -----------------------------------------------------------------------------


def test_chart_metadata_matches_the_project() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "eprd"
    assert meta["type"] == "application"
    assert meta["appVersion"] == project["version"]
    assert meta["kubeVersion"] == f">={OLDEST_KUBERNETES}.0-0"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_is_clean(helm: ModuleType, name: str) -> None:
    report = helm.lint(CHART, copy.deepcopy(VALUE_SETS[name]), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert not report["errors"], report["errors"]
    assert not problems, problems


def test_renders_the_expected_objects(value_set: tuple[str, Rendered]) -> None:
    name, rendered = value_set
    assert rendered.kinds() == EXPECTED_KINDS[name]
    for obj in rendered.objects:
        assert obj["metadata"]["name"] == FULLNAME
        assert obj["metadata"]["namespace"] == NAMESPACE
        labels = obj["metadata"]["labels"]
        assert labels.items() >= SELECTOR.items()
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_every_object_is_valid(value_set: tuple[str, Rendered], kubernetes_validate: ModuleType) -> None:
    import jsonschema  # a dependency of kubernetes-validate

    _, rendered = value_set
    known = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert OLDEST_KUBERNETES in known, f"kubernetes-validate has no {OLDEST_KUBERNETES} schemas any more"
    versions = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())
    for obj in rendered.objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            # No Kubernetes schema for a CRD: the structural schema above instead, explicitly.
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(part) for part in err.path)
                pytest.fail(f"{where} is invalid for Kubernetes {version}: {path}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError as err:
                pytest.fail(f"{where}: {err.message}")


def test_strict_validation_refuses_unknown_fields(chart: Any, kubernetes_validate: ModuleType) -> None:
    deployment = render(chart, {}).one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)


def test_service_monitor_schema_refuses_unknown_fields(chart: Any) -> None:
    import jsonschema

    monitor = render(chart, VALUE_SETS["metrics-servicemonitor-hpa-pdb"]).one("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


# --- the Deployment ------------------------------------------------------------------------------


def test_deployment_defaults(chart: Any) -> None:
    rendered = render(chart, {})
    deployment = rendered.one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == SELECTOR
    assert rendered.pod["metadata"]["labels"].items() >= SELECTOR.items()
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }

    container = rendered.container
    assert container["image"] == "eprd:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert "args" not in container
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["resources"]["limits"] == {"memory": "1Gi"}


def test_probes(chart: Any) -> None:
    container = render(chart, {}).container
    assert container["readinessProbe"]["httpGet"] == {"path": "/health?ready=true", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "room for the first package load"


def test_shutdown_drains_before_sigterm(chart: Any) -> None:
    rendered = render(chart, {})
    env = rendered.env()
    assert env["EPR_SHUTDOWN_TIMEOUT"] == "30s"
    assert rendered.container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert rendered.pod["spec"]["terminationGracePeriodSeconds"] == 30 + 5 + 10

    custom = render(chart, {"eprd": {"shutdownTimeoutSeconds": 60}, "lifecycle": {"preStopSleepSeconds": 15}})
    assert custom.env()["EPR_SHUTDOWN_TIMEOUT"] == "60s"
    assert custom.container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    assert custom.pod["spec"]["terminationGracePeriodSeconds"] == 85

    explicit = render(chart, {"terminationGracePeriodSeconds": 36})
    assert explicit.pod["spec"]["terminationGracePeriodSeconds"] == 36

    no_pause = render(chart, {"lifecycle": {"preStopSleepSeconds": 0}})
    assert "lifecycle" not in no_pause.container
    assert no_pause.pod["spec"]["terminationGracePeriodSeconds"] == 40


def test_security_context(chart: Any) -> None:
    rendered = render(chart, {})
    pod_spec = rendered.pod["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["serviceAccountName"] == FULLNAME
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    security = rendered.container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_writable_paths_are_empty_dirs(chart: Any) -> None:
    rendered = render(chart, {})
    env, volumes, mounts = rendered.env(), rendered.volumes(), rendered.mounts()
    # packages.source=image (the default): the baked index in <cacheDir>/index stays visible
    assert env["EPR_CACHE_DIR"] not in mounts
    cache = mounts[env["EPR_CACHE_DIR"] + "/archives"]
    assert volumes[cache["name"]]["emptyDir"] == {"sizeLimit": "2Gi"}
    assert not cache.get("readOnly")
    mounted = render(chart, {"packages": {"source": "pvc", "pvc": {"claimName": "p"}}}).mounts()
    assert mounted[env["EPR_CACHE_DIR"]]["name"] == cache["name"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    config = mounts["/package-registry"]
    assert config["readOnly"] is True
    assert volumes[config["name"]]["configMap"] == {"name": FULLNAME}


def test_environment_is_eprd_flags(value_set: tuple[str, Rendered]) -> None:
    """Every EPR_* variable is one of eprd's flags, and eprd's own parser accepts the values."""
    _, rendered = value_set
    env = rendered.env()
    known = {flags.env_name(spec.name) for spec in flags.FLAGS}
    epr = {name: value for name, value in env.items() if name.startswith("EPR_")}
    assert set(epr) <= known, set(epr) - known
    options = flags.parse(rendered.container.get("args", []), epr)
    assert options["address"] == "0.0.0.0:8080"
    assert options["config"] == "/package-registry/config.yml"
    assert options["cache-dir"] == "/var/cache/eprd"
    mounts = rendered.mounts()
    assert os.path.dirname(options["config"]) in mounts
    assert options["cache-dir"] in mounts or options["cache-dir"] + "/archives" in mounts
    assert options["workers"] == 1
    assert options["shutdown-timeout"] == 30.0
    assert options["require-package-signatures"] is True
    assert options["package-paths-workers"] == 2
    assert options["package-paths-enable-watcher"] is True


def test_default_environment(chart: Any) -> None:
    env = render(chart, {}).env()
    assert env == {
        "EPR_ADDRESS": "0.0.0.0:8080",
        "EPR_CONFIG": "/package-registry/config.yml",
        "EPR_CACHE_DIR": "/var/cache/eprd",
        "EPR_SHUTDOWN_TIMEOUT": "30s",
        "EPR_LOG_LEVEL": "info",
        "EPR_LOG_TYPE": "ecs",
        "EPR_REQUIRE_PACKAGE_SIGNATURES": "true",
        "EPR_PACKAGE_PATHS_ENABLE_WATCHER": "true",
        "EPR_PACKAGE_PATHS_WATCHER_POLL": "false",
        "EPR_WORKERS": "1",
        "EPR_PACKAGE_PATHS_WORKERS": "2",
    }
    assert render(chart, {"eprd": {"workers": 4}}).env()["EPR_WORKERS"] == "4"
    unset_workers = render(chart, {"eprd": {"packagePathsWorkers": None}}).env()
    assert "EPR_PACKAGE_PATHS_WORKERS" not in unset_workers


def test_extra_env_and_args(chart: Any) -> None:
    rendered = render(chart, VALUE_SETS["metrics-servicemonitor-hpa-pdb"])
    env = rendered.env()  # also checks that no name appears twice
    assert env["EPR_LOG_LEVEL"] == "debug"  # extraEnv replaces the chart's value
    assert env["ELASTIC_APM_ENVIRONMENT"] == "x"
    assert rendered.container["args"] == ["-log-type", "dev"]
    assert flags.parse(rendered.container["args"], env)["log-type"] == "dev"


def test_scheduling_and_image_values(chart: Any) -> None:
    values = VALUE_SETS["metrics-servicemonitor-hpa-pdb"]
    rendered = render(chart, values)
    pod = rendered.pod
    assert pod["metadata"]["annotations"]["example.com/team"] == "fleet"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull-secret"}]
    assert pod["spec"]["priorityClassName"] == "high"
    assert pod["spec"]["topologySpreadConstraints"] == values["topologySpreadConstraints"]
    assert rendered.container["envFrom"] == [{"secretRef": {"name": "apm-token"}}]
    assert rendered.volumes()["icons"] == {"name": "icons", "configMap": {"name": "icons"}}
    assert rendered.mounts()["/icons"] == {"name": "icons", "mountPath": "/icons", "readOnly": True}
    assert rendered.volumes()["cache"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Mi"}
    assert rendered.one("Service")["metadata"]["annotations"] == {"example.com/lb": "internal"}
    assert rendered.one("HorizontalPodAutoscaler")["spec"]["behavior"] == values["autoscaling"]["behavior"]
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]

    image = {"repository": "registry.example.com/eprd", "tag": "1.2.3", "pullPolicy": "Always"}
    container = render(chart, {"image": image, "imagePullSecrets": [{"name": "pull"}]}).container
    assert container["image"] == "registry.example.com/eprd:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    digest = "sha256:" + "a" * 64
    pinned = render(chart, {"image": {"repository": "r/eprd", "digest": digest}}).container
    assert pinned["image"] == f"r/eprd@{digest}"


# --- config.yml and the rollout on change ----------------------------------------------------------


def test_config_map_is_an_eprd_config(chart: Any, tmp_path: Path) -> None:
    config_file = tmp_path / "config.yml"
    config_file.write_text(render(chart, {}).config_yml())
    config = load_config(str(config_file))
    assert config.package_paths == ("/packages/package-registry",)
    assert config.cache_time.index == 10
    assert config.cache_time.search == config.cache_time.categories == config.cache_time.catch_all == 600

    custom = {
        "config": {
            "packagePaths": ["/packages/a", "/packages/b"],
            "cacheTime": {"index": 30, "search": "1m30s", "categories": "1h", "catchAll": 5},
        }
    }
    config_file.write_text(render(chart, custom).config_yml())
    config = load_config(str(config_file))
    assert config.package_paths == ("/packages/a", "/packages/b")
    assert (config.cache_time.index, config.cache_time.search) == (30, 90)
    assert (config.cache_time.categories, config.cache_time.catch_all) == (3600, 5)


def test_config_checksum_rolls_the_pods(chart: Any) -> None:
    rendered = render(chart, {})
    configmap_text = rendered.manifests["eprd/templates/configmap.yaml"]
    checksum = rendered.pod["metadata"]["annotations"]["checksum/config"]
    assert checksum == hashlib.sha256(configmap_text.encode()).hexdigest()

    changed = render(chart, {"config": {"cacheTime": {"search": "5m"}}})
    assert changed.pod["metadata"]["annotations"]["checksum/config"] != checksum
    unrelated = render(chart, {"replicaCount": 5, "podAnnotations": {"a": "b"}})
    assert unrelated.pod["metadata"]["annotations"]["checksum/config"] == checksum


# --- the packages volume -----------------------------------------------------------------------------


def test_packages_baked_into_the_image(chart: Any) -> None:
    rendered = render(chart, {})
    assert "packages" not in rendered.volumes()
    assert "/packages/package-registry" not in rendered.mounts()
    assert 'package_paths:\n  - "/packages/package-registry"\n' in rendered.config_yml()


def test_packages_from_a_pvc(chart: Any) -> None:
    rendered = render(chart, VALUE_SETS["pvc-packages"])
    volume = rendered.volumes()["packages"]
    assert volume["persistentVolumeClaim"] == {"claimName": "epr-packages", "readOnly": True}
    mount = rendered.mounts()["/packages/package-registry"]
    assert mount == {
        "name": "packages",
        "mountPath": "/packages/package-registry",
        "readOnly": True,
        "subPath": "production",
    }


def test_packages_from_a_configmap(chart: Any, tmp_path: Path) -> None:
    rendered = render(chart, VALUE_SETS["configmap-packages"])
    volume = rendered.volumes()["packages"]
    assert volume["configMap"] == {
        "name": "epr-zips",
        "optional": False,
        "items": VALUE_SETS["configmap-packages"]["packages"]["configMap"]["items"],
    }
    assert rendered.mounts()["/packages/package-registry"] == {
        "name": "packages",
        "mountPath": "/packages/package-registry",
        "readOnly": True,
    }
    config_file = tmp_path / "config.yml"
    config_file.write_text(rendered.config_yml())
    assert load_config(str(config_file)).package_paths == ("/packages/package-registry/zips",)


def test_packages_from_a_git_sync_sidecar(chart: Any, tmp_path: Path) -> None:
    rendered = render(chart, VALUE_SETS["gitsync-packages"])
    spec = rendered.pod["spec"]
    # A one-time clone before eprd starts, then the sidecar that follows the branch.
    init = {c["name"]: c for c in spec["initContainers"]}["git-sync-init"]
    sidecar = {c["name"]: c for c in spec["containers"]}["git-sync"]
    for container in (init, sidecar):
        args = container["args"]
        assert "--repo=https://git.example.com/fleet/packages.git" in args
        assert {"--ref=main", "--root=/packages/package-registry", "--link=current", "--period=30s"} <= set(
            args
        )
        assert container["volumeMounts"][0] == {"name": "packages", "mountPath": "/packages/package-registry"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--one-time" in init["args"] and "--one-time" not in sidecar["args"]
    assert rendered.volumes()["packages"] == {"name": "packages", "emptyDir": {"sizeLimit": "1Gi"}}
    assert rendered.mounts()["/packages/package-registry"]["readOnly"] is True
    config_file = tmp_path / "config.yml"
    config_file.write_text(rendered.config_yml())
    assert load_config(str(config_file)).package_paths == ("/packages/package-registry/current/packages",)


def test_package_paths_follow_the_mount_path(chart: Any, tmp_path: Path) -> None:
    values = {"packages": {"source": "configMap", "mountPath": "/srv/zips", "configMap": {"name": "z"}}}
    rendered = render(chart, values)
    assert rendered.mounts()["/srv/zips"]["name"] == "packages"
    assert "items" not in rendered.volumes()["packages"]["configMap"]
    config_file = tmp_path / "config.yml"
    config_file.write_text(rendered.config_yml())
    assert load_config(str(config_file)).package_paths == ("/srv/zips",)


# --- metrics, ServiceMonitor, HPA, PDB --------------------------------------------------------------


def test_metrics_and_service_monitor(chart: Any) -> None:
    rendered = render(chart, VALUE_SETS["metrics-servicemonitor-hpa-pdb"])
    assert rendered.env()["EPR_METRICS_ADDRESS"] == "0.0.0.0:9000"
    ports = {port["name"]: port for port in rendered.container["ports"]}
    assert ports["metrics"] == {"name": "metrics", "containerPort": 9000, "protocol": "TCP"}

    service = rendered.one("Service")
    assert service["spec"]["selector"] == SELECTOR
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] == "http"
    assert service_ports["metrics"] == {
        "name": "metrics",
        "port": 9000,
        "targetPort": "metrics",
        "protocol": "TCP",
    }

    monitor = rendered.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in service_ports
    assert endpoint["path"] == "/metrics"


def test_metrics_off_by_default(chart: Any) -> None:
    rendered = render(chart, {})
    assert "EPR_METRICS_ADDRESS" not in rendered.env()
    assert [port["name"] for port in rendered.one("Service")["spec"]["ports"]] == ["http"]
    assert [port["name"] for port in rendered.container["ports"]] == ["http"]


def test_autoscaler_and_disruption_budget(chart: Any) -> None:
    rendered = render(chart, VALUE_SETS["metrics-servicemonitor-hpa-pdb"])
    deployment = rendered.one("Deployment")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        }
    ]
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"minAvailable": 2, "selector": {"matchLabels": SELECTOR}}
    assert rendered.pod["metadata"]["labels"].items() >= pdb["spec"]["selector"]["matchLabels"].items()

    default_pdb = render(chart, {}).one("PodDisruptionBudget")
    assert default_pdb["spec"]["maxUnavailable"] == 1
    assert "PodDisruptionBudget" not in render(chart, {"podDisruptionBudget": {"enabled": False}}).kinds()


# --- values the chart refuses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"packages": {"source": "nfs"}},
            'packages.source must be image, pvc, configMap or gitSync, not "nfs"',
        ),
        ({"packages": {"source": "pvc"}}, "packages.source=pvc needs packages.pvc.claimName"),
        ({"packages": {"source": "configMap"}}, "packages.source=configMap needs packages.configMap.name"),
        ({"terminationGracePeriodSeconds": 35}, "must be larger than eprd.shutdownTimeoutSeconds"),
        (
            {"metrics": {"serviceMonitor": {"enabled": True}}},
            "metrics.serviceMonitor.enabled needs metrics.enabled",
        ),
        (
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
            "autoscaling.minReplicas (5) is larger than autoscaling.maxReplicas (2)",
        ),
        (
            {"packages": {"source": "gitSync"}},
            "packages.source=gitSync needs packages.gitSync.repository",
        ),
        (
            {"podDisruptionBudget": {"minAvailable": None, "maxUnavailable": None}},
            "needs podDisruptionBudget.minAvailable or podDisruptionBudget.maxUnavailable",
        ),
    ],
)
def test_bad_values_fail_the_render(
    helm: ModuleType, chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as raised:
        render(chart, values)
    assert message in str(raised.value)
