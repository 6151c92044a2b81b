"""Offline checks of the deployment files: deploy/kubernetes (kustomize base, overlays, examples)
and deploy/compose/compose.yaml. Nothing is applied or started; no cluster or daemon is needed.

    .venv/bin/pytest -q tests/deploy/test_manifests.py

Three layers, each able to fail on its own:

* ``kubectl kustomize`` renders every kustomization (kubectl >= 1.27 must be installed: a
  missing kubectl fails here, it does not skip);
* every rendered object validates against the Kubernetes 1.30 OpenAPI schemas, strictly (an
  unknown or misspelled field fails), with ``kubernetes_validate`` and its bundled schemas;
* what no schema knows: the probes ask the port the tail listens on, the grace periods nest,
  selectors select the tail pods, the autoscaler's metric is one the tail exports
  (``splitwire.cloud.metrics``), and the command lines parse with the real ``splitwire`` CLI.

The compose file is checked the same way against the CLI and against deploy/mosquitto's
configuration, and make-secrets.sh runs for real (openssl, mosquitto_passwd). Where a compose
CLI is installed, ``config`` validates the file too; that one check is optional and skips.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from kubernetes_validate.utils import all_versions

from splitwire.cli import build_parser
from splitwire.cloud.config import CloudConfig
from splitwire.cloud.metrics import CloudMetrics
from splitwire.edge.config import EdgeConfig
from splitwire.errors import SplitwireError

Manifest = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = {
    "base": KUBERNETES / "base",
    "production": KUBERNETES / "overlays" / "production",
}
EXAMPLES = KUBERNETES / "examples"
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
MOSQUITTO = REPO / "deploy" / "mosquitto"

# The oldest Kubernetes the manifests are written for (the preStop `sleep` action is on by
# default from 1.30). Strict schemas: additionalProperties false everywhere.
KUBERNETES_VERSION = "1.30.0"
# Kinds defined by CRDs, which kubernetes_validate has no schema for; checked structurally below.
CRD_KINDS = {"PodMonitor", "GRPCRoute"}
TAIL = ("Deployment", "splitwire-tail")
KUBECTL_HINT = (
    "install kubectl >= 1.27 (kustomize v5 is built into it): the `kubectl` package of the "
    "Kubernetes project's or Google Cloud's apt repository, or the release binary; Debian's "
    "kubernetes-client (1.20) is too old"
)


# --- rendering and lookup -------------------------------------------------------------------


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(f"kubectl is not on PATH; {KUBECTL_HINT}", pytrace=False)
    return path


@functools.cache
def _kustomize(directory: Path) -> str:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"kubectl kustomize {directory.relative_to(REPO)} exited {result.returncode}:\n"
            f"{result.stderr.strip()}\n(if kustomize itself is too old: {KUBECTL_HINT})",
            pytrace=False,
        )
    return result.stdout


def render(directory: Path) -> list[Manifest]:
    """The objects ``kubectl kustomize directory`` prints (kubectl runs once per directory;
    each call returns fresh objects, free to change)."""
    objects = [doc for doc in yaml.safe_load_all(_kustomize(directory)) if doc is not None]
    assert objects, f"kubectl kustomize {directory} rendered nothing"
    return objects


def load_yaml_documents(path: Path) -> list[Manifest]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def find(objects: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def tail_container(objects: list[Manifest]) -> Manifest:
    pod = one(objects, *TAIL)["spec"]["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == "tail"]
    assert len(containers) == 1, "the tail Deployment needs exactly one container named `tail`"
    return containers[0]


def selector_matches(selector: Manifest, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels, matchExpressions) against a label set.
    An empty selector selects everything, as in the API."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def container_ports(container: Manifest) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container.get("ports", [])}


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# --- the real command line ------------------------------------------------------------------


def expand_env(args: list[str], container: Manifest) -> list[str]:
    """Kubernetes' $(VAR) expansion in args, with a stand-in for downward-API values."""
    values = {env["name"]: env.get("value", f"<{env['name']}>") for env in container.get("env", [])}
    return [re.sub(r"\$\((\w+)\)", lambda m: values.get(m[1], m[0]), arg) for arg in args]


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the real ``splitwire`` parser; a rejected line fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`splitwire {' '.join(argv)}` is rejected by the CLI (exit {exc.code})")


def cloud_config(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> CloudConfig:
    """The :class:`CloudConfig` that ``splitwire cloud`` builds from ``argv``: the command's own
    handler runs (with its cross-flag checks), only ``serve`` is replaced."""
    args = parse_cli(argv)
    assert args.command == "cloud", f"expected a `splitwire cloud` command line, got {argv}"
    captured: list[CloudConfig] = []

    async def fake_serve(config: CloudConfig) -> int:
        captured.append(config)
        return 0

    monkeypatch.setattr("splitwire.cloud.server.serve", fake_serve)
    # The handler raises the daemon's log level; keep this process's as it was.
    logger = logging.getLogger("splitwire")
    level = logger.level
    try:
        assert args.func(args) == 0
    finally:
        logger.setLevel(level)
    assert len(captured) == 1
    return captured[0]


def edge_config(argv: list[str]) -> tuple[EdgeConfig, argparse.Namespace]:
    """The :class:`EdgeConfig` ``splitwire edge`` would run with, built by the CLI's own code
    (it validates cross-flag mistakes and the config on creation)."""
    from splitwire.edge.cli import edge_config as config_of

    args = parse_cli(argv)
    assert args.command == "edge", f"expected a `splitwire edge` command line, got {argv}"
    config: EdgeConfig = config_of(args)
    return config, args


def flag_value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"expected {flag} once in {argv}"
    return argv[argv.index(flag) + 1]


def exported_series() -> dict[str, str]:
    """Every series name the tail's registry exports, with its metric type."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    series: dict[str, str] = {}
    for family in CloudMetrics().registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            series[family.name + suffix] = family.type
    return series


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    """Each kustomization in turn."""
    return render(KUSTOMIZATIONS[request.param])


@pytest.fixture(scope="module")
def production() -> list[Manifest]:
    return render(KUSTOMIZATIONS["production"])


@pytest.fixture(scope="module")
def compose() -> Manifest:
    with COMPOSE.open(encoding="utf-8") as stream:
        document = yaml.safe_load(stream)
    assert isinstance(document, dict), f"{COMPOSE} is not a YAML mapping"
    return document


# --- Kubernetes: schemas --------------------------------------------------------------------


def validate_schema(obj: Manifest) -> None:
    where = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(part) for part in exc.path)
        message = f"{where}: {exc.message} at /{path} (Kubernetes {KUBERNETES_VERSION})"
        pytest.fail(message, pytrace=False)
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{where}: {exc.message}", pytrace=False)


def test_the_pinned_kubernetes_schemas_are_installed() -> None:
    """kubernetes-validate bundles a window of Kubernetes versions; 1.30 must be in it."""
    wanted = KUBERNETES_VERSION.rpartition(".")[0]
    shipped = {version.rpartition(".")[0] for version in all_versions()}
    assert wanted in shipped, (
        f"kubernetes-validate {kubernetes_validate.__version__} ships schemas for "
        f"{sorted(shipped)}, not Kubernetes {wanted}: pin a release that still has them"
    )


def test_every_rendered_object_validates_against_the_kubernetes_schemas(
    rendered: list[Manifest],
) -> None:
    for obj in rendered:
        validate_schema(obj)


def test_every_example_validates_or_is_a_known_crd() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files, f"no examples in {EXAMPLES}"
    for path in files:
        for obj in load_yaml_documents(path):
            if obj["kind"] not in CRD_KINDS:
                validate_schema(obj)


def test_strict_schemas_reject_a_misspelled_field() -> None:
    """The validator is not vacuous: a typo in a probe is an error, not an ignored key."""
    deployment = one(render(KUSTOMIZATIONS["base"]), *TAIL)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {
        "port": 8500
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- Kubernetes: what the schemas cannot check ----------------------------------------------


def test_the_tail_command_line_is_accepted_by_splitwire_cloud(
    rendered: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = tail_container(rendered)
    assert "command" not in container, "keep the image's ENTRYPOINT (splitwire); set args only"
    config = cloud_config(expand_env(container["args"], container), monkeypatch)
    assert all(str(plan).startswith("/plans/") for plan in config.plans)
    assert config.token_file is not None, "the tail must require bearer tokens (--token-file)"
    assert str(config.token_file).startswith("/run/secrets/")


def test_probes_ask_grpc_health_on_the_port_the_tail_listens_on(
    rendered: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = tail_container(rendered)
    config = cloud_config(expand_env(container["args"], container), monkeypatch)
    listen_port = int(config.listen.rpartition(":")[2])
    assert container_ports(container).get("grpc") == listen_port
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(name)
        assert probe is not None, f"the tail has no {name}"
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, (
            f"{name} must be a native grpc probe (grpc.health.v1)"
        )
        assert probe["grpc"]["port"] == listen_port, f"{name} asks another port than --listen"
    # The kubelet's grpc probe speaks plaintext only: a TLS port would never look healthy.
    assert config.tls is None, "grpc probes cannot reach a TLS port; terminate TLS at the ingress"


def test_liveness_is_lenient_and_the_startup_probe_covers_loading(
    rendered: list[Manifest],
) -> None:
    container = tail_container(rendered)
    pod = one(rendered, *TAIL)["spec"]["template"]["spec"]
    live, start = container["livenessProbe"], container["startupProbe"]
    # A draining tail answers NOT_SERVING on purpose: liveness must not restart it before the
    # termination grace period ends.
    assert live["failureThreshold"] * live["periodSeconds"] > pod["terminationGracePeriodSeconds"]
    assert start["failureThreshold"] * start["periodSeconds"] >= 120, "allow 2 min to load"


def test_termination_grace_covers_the_prestop_pause_and_the_drain(
    rendered: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = tail_container(rendered)
    pod = one(rendered, *TAIL)["spec"]["template"]["spec"]
    config = cloud_config(expand_env(container["args"], container), monkeypatch)
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 5, "preStop must wait for the endpoint removal to reach the ingress"
    # The tail drains for --grace-s, then gives the streams 1 s to close, then exits.
    assert pod["terminationGracePeriodSeconds"] >= pause + config.grace_s + 5, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} does not cover "
        f"preStop {pause} s + --grace-s {config.grace_s} s + 5 s; the kubelet would SIGKILL "
        "tails with frames still in flight"
    )


def test_the_rollout_never_lowers_capacity_and_the_hpa_owns_the_replicas(
    rendered: list[Manifest],
) -> None:
    deployment = one(rendered, *TAIL)
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"], (
        "spec.replicas would reset the autoscaler's count on every apply"
    )


def test_the_hpa_scales_the_tail_deployment_on_a_metric_the_tail_exports(
    rendered: list[Manifest],
) -> None:
    hpa = one(rendered, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", *TAIL)
    one(rendered, *TAIL)
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pods_metrics = [
        m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"
    ]
    assert pods_metrics, "the HPA must scale on a tail metric (type Pods), not only on CPU"
    series = exported_series()
    for name in pods_metrics:
        assert name in series, f"the tail exports no metric {name!r}; it has {sorted(series)}"
        # AverageValue over pods makes sense for a level, not for an ever-growing counter.
        assert series[name] == "gauge", f"{name} is a {series[name]}, not a gauge"


def test_the_pdb_service_and_networkpolicy_select_the_tail_pods(rendered: list[Manifest]) -> None:
    deployment = one(rendered, *TAIL)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(deployment["spec"]["selector"], labels)
    pdb = one(rendered, "PodDisruptionBudget")
    assert selector_matches(pdb["spec"]["selector"], labels), "the PDB protects other pods"
    service = one(rendered, "Service", "splitwire-tail")
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
    policy = one(rendered, "NetworkPolicy")
    assert selector_matches(policy["spec"]["podSelector"], labels)
    # The selectors must not be empty: an empty one selects every pod of the namespace.
    for selector in (pdb["spec"]["selector"], service["spec"]["selector"]):
        assert selector, "an empty selector selects every pod in the namespace"


def test_the_service_and_ingress_reach_the_grpc_port(
    rendered: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = tail_container(rendered)
    ports = container_ports(container)
    service = one(rendered, "Service", "splitwire-tail")
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    grpc = service_ports["grpc"]
    assert grpc["targetPort"] in (ports["grpc"], "grpc")
    ingress = one(rendered, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    protocol = annotations["nginx.ingress.kubernetes.io/backend-protocol"]
    config = cloud_config(expand_env(container["args"], container), monkeypatch)
    # The proxy's protocol to the pods must be what the tail serves.
    assert protocol == ("GRPCS" if config.tls else "GRPC")
    # ClusterIP as the upstream would make nginx balance per connection through kube-proxy.
    assert annotations.get("nginx.ingress.kubernetes.io/service-upstream", "false") == "false"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert ingress["spec"]["tls"], "edges must reach the ingress over TLS"
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"].get("name") in service_ports or backend["port"].get(
                "number"
            ) in {port["port"] for port in service_ports.values()}


def test_the_networkpolicy_opens_only_the_grpc_and_metrics_ports(
    rendered: list[Manifest],
) -> None:
    ports = container_ports(tail_container(rendered))
    policy = one(rendered, "NetworkPolicy")
    opened: dict[str, list[Manifest]] = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits every source"
        assert rule.get("ports"), "an ingress rule without `ports` opens every port"
        for port in rule["ports"]:
            name = port["port"] if isinstance(port["port"], str) else None
            name = name or next(n for n, number in ports.items() if number == port["port"])
            assert name in ports, f"the NetworkPolicy opens {port['port']}, not a tail port"
            opened.setdefault(name, []).extend(rule["from"])
    assert set(opened) == {"grpc", "metrics"}
    namespaces = {
        name: {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
               for peer in peers}
        for name, peers in opened.items()
    }  # fmt: skip
    assert namespaces["metrics"] == {"monitoring"}
    assert "monitoring" not in namespaces["grpc"]


def test_metrics_port_is_the_one_the_tail_serves_and_prometheus_scrapes(
    rendered: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = tail_container(rendered)
    config = cloud_config(expand_env(container["args"], container), monkeypatch)
    assert config.metrics is not None, "the tail must serve metrics (--metrics) for the HPA"
    port = int(config.metrics.rpartition(":")[2])
    assert container_ports(container)["metrics"] == port
    annotations = one(rendered, *TAIL)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_plans_and_secrets_are_mounted_read_only(rendered: list[Manifest]) -> None:
    container = tail_container(rendered)
    volumes = {v["name"]: v for v in one(rendered, *TAIL)["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "/plans" in mounts, "the plans must be mounted at /plans"
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        sensitive = (
            {"secret", "persistentVolumeClaim", "configMap", "projected"} & set(volume)
            or mount["mountPath"].startswith(("/plans", "/run/secrets"))
        )  # fmt: skip
        if sensitive:
            assert mount.get("readOnly") is True, f"{mount['mountPath']} is mounted writable"
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"].get("readOnly") is True
            claim = volume["persistentVolumeClaim"]["claimName"]
            one(rendered, "PersistentVolumeClaim", claim)
    assert volumes[mounts["/tmp"]["name"]].get("emptyDir") is not None, "/tmp must be an emptyDir"


def test_no_secret_values_are_rendered(rendered: list[Manifest]) -> None:
    """Secrets are referenced by name; their values are the operator's, never in git."""
    assert not find(rendered, "Secret"), "a Secret object (with values) is in the manifests"
    pod = one(rendered, *TAIL)["spec"]["template"]["spec"]
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secrets == ["splitwire-tokens"]


def test_the_pod_runs_restricted(rendered: list[Manifest]) -> None:
    pod = one(rendered, *TAIL)["spec"]["template"]["spec"]
    container = tail_container(rendered)
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001, "the image's user (deploy/docker/Dockerfile)"
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    own = container["securityContext"]
    assert own["runAsNonRoot"] is True
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    assert not own["capabilities"].get("add")
    assert pod["automountServiceAccountToken"] is False
    namespace = one(rendered, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_resources_are_bounded_and_threads_fit_the_cpu_limit(
    rendered: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = tail_container(rendered)
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(section, {})), f"no cpu/memory {section}"
    config = cloud_config(expand_env(container["args"], container), monkeypatch)
    assert config.threads <= cpu_cores(resources["limits"]["cpu"]), (
        f"--threads {config.threads} is more than the CPU limit {resources['limits']['cpu']}: "
        "torch would be throttled"
    )
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_the_production_overlay_pins_the_image_and_grows_the_tails(
    production: list[Manifest],
) -> None:
    image = tail_container(production)["image"]
    name, _, tag = image.rpartition(":")
    assert name.endswith("splitwire") and tag and tag != "latest", f"unpinned image {image}"
    base = render(KUSTOMIZATIONS["base"])
    hpa, base_hpa = one(production, "HorizontalPodAutoscaler"), one(base, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= base_hpa["spec"]["minReplicas"]
    assert hpa["spec"]["maxReplicas"] > base_hpa["spec"]["maxReplicas"]


# --- Kubernetes: the examples ---------------------------------------------------------------


def test_the_adapter_rule_publishes_the_hpa_metric_from_a_tail_series() -> None:
    """HPA metric -> prometheus-adapter rule -> Prometheus series the tail exports."""
    hpa = one(render(KUSTOMIZATIONS["base"]), "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    config_map = one(load_yaml_documents(EXAMPLES / "prometheus-adapter-rules.yaml"), "ConfigMap")
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    series = exported_series()
    published: dict[str, str] = {}
    for rule in rules:
        source = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])
        assert source is not None, f"no metric name in {rule['seriesQuery']!r}"
        assert source[0] in series, f"the adapter reads {source[0]}, which the tail never exports"
        assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
        assert rule["resources"]["overrides"]["namespace"]["resource"] == "namespace"
        published[rule.get("name", {}).get("as") or source[0]] = source[0]
    assert wanted <= set(published), f"the HPA reads {wanted}, the adapter publishes {published}"


def test_the_podmonitor_scrapes_the_tail_metrics_port() -> None:
    rendered = render(KUSTOMIZATIONS["base"])
    labels = one(rendered, *TAIL)["spec"]["template"]["metadata"]["labels"]
    monitor = one(load_yaml_documents(EXAMPLES / "podmonitor.yaml"), "PodMonitor")
    assert monitor["metadata"]["namespace"] == one(rendered, "Namespace")["metadata"]["name"]
    assert selector_matches(monitor["spec"]["selector"], labels)
    ports = container_ports(tail_container(rendered))
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == {"metrics"} & set(ports)


def test_the_grpcroute_example_routes_to_the_service() -> None:
    rendered = render(KUSTOMIZATIONS["base"])
    service = one(rendered, "Service", "splitwire-tail")
    route = one(load_yaml_documents(EXAMPLES / "grpcroute.yaml"), "GRPCRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    for rule in route["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            assert (ref["name"], ref["port"]) == (service["metadata"]["name"], grpc_port)


def test_the_plans_loader_writes_the_claim_the_tails_read() -> None:
    rendered = render(KUSTOMIZATIONS["base"])
    claim = one(rendered, "PersistentVolumeClaim")["metadata"]["name"]
    pod = one(load_yaml_documents(EXAMPLES / "plans-loader.yaml"), "Pod")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes[mounts["/plans"]["name"]]["persistentVolumeClaim"]["claimName"] == claim
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001


# --- Docker Compose -------------------------------------------------------------------------

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# mosquitto.conf keys that name a file or directory the broker container must have.
BROKER_PATH_KEYS = ("password_file", "acl_file", "cafile", "certfile", "keyfile")


def command_of(service: Manifest) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "write commands as lists (no shell word splitting)"
    return [str(part) for part in command]


def mounted_secret_paths(service: Manifest) -> dict[str, str]:
    """secret name -> its path inside the container."""
    paths = {}
    for entry in service.get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        paths[source] = target if target.startswith("/") else f"/run/secrets/{target}"
    return paths


def mount_targets(service: Manifest) -> set[str]:
    """Every path compose puts into the container: volumes, binds and secrets."""
    return {v["target"] for v in service.get("volumes", [])} | set(
        mounted_secret_paths(service).values()
    )


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def mosquitto_settings() -> dict[str, list[str]]:
    """deploy/mosquitto/mosquitto.conf as key -> the values of each of its lines."""
    settings: dict[str, list[str]] = {}
    for line in (MOSQUITTO / "mosquitto.conf").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            settings.setdefault(key, []).append(value.strip())
    return settings


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2) or Debian's `docker-compose` (1.29), whichever is installed."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def test_compose_file_passes_docker_compose_config() -> None:
    """Compose's own schema and interpolation, where a compose CLI is installed (optional:
    the checks below do not need it)."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(cli)} config rejects {COMPOSE}:\n{result.stderr}"


def test_compose_has_the_three_services(compose: Manifest) -> None:
    assert set(compose["services"]) == {"broker", "tail", "agent"}


def test_compose_secrets_are_declared_used_and_kept_out_of_git(compose: Manifest) -> None:
    declared = compose["secrets"]
    used = {
        name for service in compose["services"].values() for name in mounted_secret_paths(service)
    }
    assert used == set(declared), f"declared {sorted(declared)}, used {sorted(used)}"
    for name, secret in declared.items():
        path = (COMPOSE.parent / secret["file"]).resolve()
        assert path.is_relative_to(COMPOSE.parent / "secrets"), f"{name}: {path}"
        ignored = subprocess.run(
            ["git", "-C", str(REPO), "check-ignore", "-q", str(path)], check=False
        )
        assert ignored.returncode == 0, f"git would commit the secret {path.relative_to(REPO)}"
    assert "mosquitto_passwd" in mounted_secret_paths(compose["services"]["broker"])
    tail = compose["services"]["tail"]
    assert flag_value(command_of(tail), "--token-file") in mounted_secret_paths(tail).values()


def test_make_secrets_writes_every_secret_compose_mounts(compose: Manifest, tmp_path: Path) -> None:
    """make-secrets.sh, run for real: the files compose needs, a password file for the agent's
    user, and a broker certificate for the name the agent dials, signed by the CA it trusts."""
    for tool in ("openssl", "mosquitto_passwd"):
        assert shutil.which(tool), f"{tool} is missing: apt-get install openssl mosquitto"
    agent = compose["services"]["agent"]
    _, args = edge_config(command_of(agent))
    out = tmp_path / "secrets"
    result = subprocess.run(
        ["bash", str(COMPOSE.parent / "make-secrets.sh"), str(out), args.edge_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    wanted = {Path(secret["file"]).name for secret in compose["secrets"].values()}
    assert {path.name for path in out.iterdir()} == wanted
    users = [line.partition(":")[0] for line in (out / "mosquitto.passwd").read_text().split()]
    assert users == [args.mqtt_username]
    assert (out / "edge-token").read_text() in (out / "tail-tokens").read_text().splitlines(True)
    ca = x509.load_pem_x509_certificate((out / "broker-ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "broker.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert host_port(args.mqtt)[0] in names.get_values_for_type(x509.DNSName)


def plan_mount(service: Manifest) -> Manifest:
    """The one volume under /plans, which must hold the directory ``--plan`` names."""
    plans = [v for v in service.get("volumes", []) if v["target"].startswith("/plans")]
    assert len(plans) == 1, f"expected one mount under /plans, got {plans}"
    plan = flag_value(command_of(service), "--plan")
    assert Path(plan).is_relative_to(plans[0]["target"]), f"--plan {plan} is outside the mount"
    return plans[0]


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}")


def interpolate(text: str, environment: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}``, the one form the file uses."""
    rest = _INTERPOLATION.sub(lambda m: environment.get(m["name"], m["default"]), text)
    assert "$" not in rest, f"an interpolation compose would read otherwise: {text}"
    return rest


def test_compose_mounts_plans_read_only(compose: Manifest) -> None:
    for name in ("tail", "agent"):
        mount = plan_mount(compose["services"][name])
        assert mount["read_only"] is True, f"{name}: its plan mount must be :ro"


def test_compose_mounts_each_side_its_own_pack(
    compose: Manifest, plan_dir: Path, tmp_path: Path
) -> None:
    """Real packs of the session's plan, put where compose's variables say: the tail's mount
    holds the cloud's pack and loads as the cloud (no head in it), the agent's the edge's; and
    the defaults are where `make demo` (deploy/demo.sh) writes the packs."""
    from splitwire.partitioner.pack import pack_plan
    from splitwire.partitioner.runtime import open_plan

    environment = {}
    sides = {"tail": "cloud", "agent": "edge"}
    assert '"$plan-$side"' in (REPO / "deploy" / "demo.sh").read_text()
    for service, side in sides.items():
        source = plan_mount(compose["services"][service])["source"]
        variable = _INTERPOLATION.fullmatch(source)
        assert variable is not None, f"{service}: mount a variable's pack, e.g. ${{NAME:-default}}"
        # make demo: deploy/demo.sh packs out/demo/resnet18 into out/demo/resnet18-{side}.
        assert variable["default"] == f"../../out/demo/resnet18-{side}", variable["default"]
        pack = pack_plan(plan_dir, tmp_path / side, side=side).directory
        environment[variable["name"]] = str(pack)
    for service, side in sides.items():
        definition = compose["services"][service]
        mount = plan_mount(definition)
        plan = Path(flag_value(command_of(definition), "--plan"))
        host = Path(interpolate(mount["source"], environment)) / plan.relative_to(mount["target"])
        other = "edge" if side == "cloud" else "cloud"
        assert not list(host.rglob(("head" if side == "cloud" else "tail") + ".pt2"))
        open_plan(host, side=side)
        with pytest.raises(SplitwireError, match=f"is the {side}'s pack"):
            open_plan(host, side=other)


def test_compose_tail_command_is_accepted_by_splitwire_cloud(
    compose: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    tail = compose["services"]["tail"]
    config = cloud_config(command_of(tail), monkeypatch)
    stop = re.fullmatch(r"(\d+)s", tail["stop_grace_period"])
    assert stop is not None and int(stop[1]) > config.grace_s + 1, "docker stop would SIGKILL"
    # The health check asks the address the tail listens on.
    test = tail["healthcheck"]["test"]
    assert test[:3] == ["CMD", "splitwire", "health"]
    assert host_port(test[-1])[1] == host_port(config.listen)[1]
    parse_cli(test[2:])


def test_compose_agent_command_is_accepted_by_splitwire_edge(
    compose: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = compose["services"]["agent"]
    config, args = edge_config(command_of(agent))
    assert config.cloud is not None
    tail_listen = cloud_config(command_of(compose["services"]["tail"]), monkeypatch).listen
    assert host_port(config.cloud)[1] == host_port(tail_listen)[1]
    assert args.mqtt_username == config.edge_id, "the broker's ACL expects user name = edge id"
    secrets = set(mounted_secret_paths(agent).values())
    assert {str(args.token_file), str(args.mqtt_password_file)} <= secrets


def test_compose_agent_reaches_the_broker_as_mosquitto_conf_serves_it(
    compose: Manifest,
) -> None:
    """The agent dials the broker's listener, and trusts the CA the broker's certificate
    comes from when the listener is TLS."""
    _, args = edge_config(command_of(compose["services"]["agent"]))
    settings = mosquitto_settings()
    (listener,) = settings["listener"]
    port, _, bind = listener.partition(" ")
    assert host_port(args.mqtt)[1] == int(port)
    if bind in LOOPBACK:
        # Reachable only from the broker's own network namespace: the host's, shared.
        network = {compose["services"][s].get("network_mode") for s in ("broker", "agent")}
        assert network == {"host"}, f"mosquitto listens on {bind}, which the agent cannot reach"
        assert host_port(args.mqtt)[0] in LOOPBACK
    if "certfile" in settings:
        assert args.mqtt_tls_ca is not None, "the broker speaks TLS only: give --mqtt-tls-ca"
        broker, agent = (
            {path: name for name, path in mounted_secret_paths(compose["services"][s]).items()}
            for s in ("broker", "agent")
        )
        (cafile,) = settings["cafile"]
        assert agent[str(args.mqtt_tls_ca)] == broker[cafile], "the agent trusts another CA"


def test_compose_agent_waits_for_a_healthy_tail(compose: Manifest) -> None:
    agent = compose["services"]["agent"]
    assert agent["depends_on"]["tail"]["condition"] == "service_healthy"
    assert compose["services"]["tail"]["healthcheck"].get("disable") is not True
    # The image's own HEALTHCHECK asks for a tail: an agent container would look unhealthy.
    assert agent["healthcheck"]["disable"] is True


def test_compose_listens_on_loopback_only(
    compose: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    if compose["services"]["tail"].get("network_mode") == "host":
        config = cloud_config(command_of(compose["services"]["tail"]), monkeypatch)
        for address in (config.listen, config.metrics or ""):
            assert host_port(address)[0] in LOOPBACK, f"the tail listens on {address}"
    if compose["services"]["broker"].get("network_mode") == "host":
        for listener in mosquitto_settings()["listener"]:
            assert listener.partition(" ")[2] in LOOPBACK, f"mosquitto listens on {listener}"


def test_compose_broker_runs_the_committed_mosquitto_config(compose: Manifest) -> None:
    broker = compose["services"]["broker"]
    binds = [v for v in broker["volumes"] if v["type"] == "bind"]
    for bind in binds:
        source = (COMPOSE.parent / bind["source"]).resolve()
        assert source.is_relative_to(MOSQUITTO), f"unexpected broker mount {source}"
        assert source.is_file(), f"{source.relative_to(REPO)} is missing"
        assert bind["read_only"] is True
    conf = next(b["target"] for b in binds if Path(b["source"]).name == "mosquitto.conf")
    assert command_of(broker)[-2:] == ["-c", conf]
    # Every file mosquitto.conf names is in the container, and its database directory too.
    targets = mount_targets(broker)
    settings = mosquitto_settings()
    for key in BROKER_PATH_KEYS:
        for path in settings.get(key, []):
            assert path in targets, f"mosquitto.conf's {key} {path} is not mounted"
    for directory in settings.get("persistence_location", []):
        assert directory.rstrip("/") in targets, f"{directory} would be lost on restart"


def test_compose_broker_image_is_built_here(compose: Manifest) -> None:
    build = compose["services"]["broker"]["build"]
    dockerfile = COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")
    text = dockerfile.read_text(encoding="utf-8")
    # The image's default command runs the same configuration path compose mounts.
    conf = command_of(compose["services"]["broker"])[-1]
    assert f'CMD ["-c", "{conf}"]' in text
    assert "USER 1883:1883" in text, "make-secrets.sh chowns the broker's files to uid 1883"


def test_compose_image_is_the_one_the_kubernetes_overlay_runs(
    compose: Manifest, production: list[Manifest]
) -> None:
    tag = tail_container(production)["image"].rpartition(":")[2]
    for name in ("tail", "agent"):
        image = compose["services"][name]["image"]
        assert image == f"splitwire:{tag}", f"{name} runs {image}; the overlay runs :{tag}"
