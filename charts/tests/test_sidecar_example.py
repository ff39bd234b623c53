"""Tests of the sidecar-mode manifests in examples/k8s/sidecar/ (docs/sidecar.md), offline.

    .venv-chart/bin/python -m pytest -p no:cacheprovider -q charts/tests/test_sidecar_example.py

Every object in the folder is validated with `kubernetes-validate` in strict mode (unknown
fields fail) against the same Kubernetes versions as the chart tests: the chart's floor (1.29,
also the first release where restartable init containers are on by default) and the newest
the package ships. The gateway config embedded in the ConfigMap must be examples/sidecar.yaml
(with the pod's file paths) and pass the built gateway's own `--check`; the drain settings,
the grace period, the Service, the probes, the shutdown ordering and the security context are
checked against each other.

`make test` runs this with SWITCHBOARD_CHART_TESTS_STRICT=1: a missing gateway binary is then a
failure, not a skip (the same rule as test_chart.py).
"""

from __future__ import annotations

import copy
import ipaddress
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from test_chart import assert_hardened, built_binary, require_or_skip, schema_failures

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "examples" / "k8s" / "sidecar"
EXAMPLE = ROOT / "examples" / "sidecar.yaml"
# The same versions as test_chart.py: the chart's kubeVersion floor and the newest schemas.
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
# docs/config.md: a route's drain.window defaults to 10s; the last close handshake takes up to
# 5 s; the chart's exit margin is at least 5 s.
DEFAULT_WINDOW = 10
CLOSE_HANDSHAKE = 5
MIN_EXIT_MARGIN = 5


# --- helpers ---------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _objects() -> tuple[tuple[str, str], ...]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, yaml.safe_dump(doc)))
    return tuple(out)


def objects() -> list[dict]:
    """Every object in examples/k8s/sidecar/*.yaml (fresh copies)."""
    return [yaml.safe_load(text) for _, text in _objects()]


def one(kind: str) -> dict:
    found = [o for o in objects() if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec() -> dict:
    return one("Deployment")["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def named(containers: list[dict], name: str) -> dict:
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, f"expected one container {name}"
    return found[0]


def gateway() -> dict:
    return named(pod_spec()["containers"], "gateway")


def app() -> dict:
    return named(pod_spec().get("initContainers", []), "app")


def flag(c: dict, name: str) -> str | None:
    """The value of `--name=value` in a container's args."""
    values = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given twice"
    return values[0] if values else None


def mount_for(c: dict, path: str) -> tuple[dict, dict]:
    """The container's volume mount holding `path`, and its volume."""
    mounts = [m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{c['name']}: expected one volume mount holding {path}, found {mounts}"
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == mounts[0]["name"])
    return mounts[0], volume


def config_text() -> str:
    """The gateway's config file, as the pod sees it: the ConfigMap key its --config names."""
    path = flag(gateway(), "config")
    assert path, "the gateway needs --config=<file from the ConfigMap>"
    mount, volume = mount_for(gateway(), path)
    cm = one("ConfigMap")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    key = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    assert key in cm["data"], f"ConfigMap has no key {key}"
    return cm["data"][key]


def config() -> dict:
    return yaml.safe_load(config_text())


def seconds(duration: str) -> float:
    """A GatewayConfig duration (`30s`, `500ms`, `1m 30s`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*(ms|s|m|h)", duration)
    assert parts and re.fullmatch(r"(\s*\d+\s*(ms|s|m|h))+\s*", duration), duration
    return sum(int(n) * units[u] for n, u in parts)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def container_port(c: dict, ref: int | str) -> int:
    """A probe's or Service's port (number, or a name of the container's ports) as a number."""
    if isinstance(ref, int):
        return ref
    ports = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == ref]
    assert len(ports) == 1, f"{c['name']} has no port named {ref}"
    return ports[0]


def secret_files(cfg: dict) -> list[str]:
    """Every file the config names (the gateway's own --check reads them)."""
    files = []
    for r in cfg.get("routes", []):
        signature = (r.get("proxy") or {}).get("signature") or {}
        if signature.get("secretFile"):
            files.append(signature["secretFile"])
        for k in (r.get("jwt") or {}).get("keys", []):
            if "file" in k:
                files.append(k["file"]["path"])
    for listener in cfg.get("listeners", []):
        for cert in (listener.get("tls") or {}).get("certificates", []):
            files += [cert["certFile"], cert["keyFile"]]
    return files


def secret_value(volume: dict, filename: str) -> str:
    """The value a Secret volume puts at `filename` (from the Secret in the folder)."""
    secret = one("Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    key = filename
    for item in volume["secret"].get("items", []):
        if item["path"] == filename:
            key = item["key"]
    data = secret.get("stringData", {})
    assert key in data, f"Secret {secret['metadata']['name']} has no key {key}"
    return data[key]


# --- Kubernetes schemas ----------------------------------------------------------------------


def test_the_folder_holds_a_deployment_a_service_a_configmap_and_the_secret_they_need():
    kinds = sorted(o["kind"] for o in objects())
    assert kinds == ["ConfigMap", "Deployment", "Secret", "Service"]
    namespaces = {o["metadata"]["namespace"] for o in objects()}
    assert len(namespaces) == 1, namespaces


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(kube_version):
    assert schema_failures(objects(), kube_version) == []


def test_the_schema_validation_catches_a_misspelt_field_in_the_sidecar_container():
    deployment = copy.deepcopy(one("Deployment"))
    deployment["spec"]["template"]["spec"]["initContainers"][0]["restartPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


# --- the embedded gateway config -------------------------------------------------------------


def test_the_embedded_gateway_config_passes_the_gateways_own_check(tmp_path):
    binary = built_binary("switchboard-gateway")
    if not binary:
        require_or_skip("switchboard-gateway not built (make check-examples builds it)")
    text = config_text()
    # The files it names, from the Secret volumes the gateway mounts them from.
    for i, path in enumerate(secret_files(config())):
        _, volume = mount_for(gateway(), path)
        local = tmp_path / f"file-{i}"
        local.write_text(secret_value(volume, Path(path).name))
        text = text.replace(path, str(local))
    (tmp_path / "gateway.yaml").write_text(text)
    out = subprocess.run(
        [str(binary), "--check", "--config", str(tmp_path / "gateway.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stdout + out.stderr


def test_the_embedded_gateway_config_is_examples_sidecar_yaml_with_the_pods_file_paths():
    example = yaml.safe_load(EXAMPLE.read_text())
    embedded = config()
    # The example names repository files (so `make check-examples` can read them); the pod
    # names the mounted Secret. Everything else is the same document.
    example_files, pod_files = secret_files(example), secret_files(embedded)
    assert len(example_files) == len(pod_files) > 0
    text = yaml.safe_dump(example)
    for local, mounted in zip(example_files, pod_files):
        assert (ROOT / local).is_file(), local
        text = text.replace(local, mounted)
    assert yaml.safe_load(text) == embedded


def test_the_gateway_reads_its_config_and_every_named_file_from_directory_mounts():
    gw = gateway()
    paths = [flag(gw, "config")] + secret_files(config())
    for path in paths:
        mount, volume = mount_for(gw, path)
        # No subPath: the kubelet swaps directory mounts atomically, and the gateway's hot
        # reload follows ConfigMap edits and Secret rotations.
        assert "subPath" not in mount and "subPathExpr" not in mount, path
        assert mount.get("readOnly") is True, path
        assert "configMap" in volume or "secret" in volume, path
        if "secret" in volume:
            secret_value(volume, Path(path).name)  # the Secret has the key
    # The Secret's placeholder is at least as long as the HMAC secret should be.
    assert all(len(v) >= 32 for v in one("Secret")["stringData"].values())


# --- drain and terminationGracePeriodSeconds -------------------------------------------------


def test_the_grace_period_covers_the_drain_deadline_plus_the_exit_margin():
    cfg = config()
    propagation = seconds(cfg["drain"]["propagation"])
    deadline = seconds(cfg["drain"]["deadline"])
    windows = [seconds((r.get("drain") or {}).get("window", f"{DEFAULT_WINDOW}s")) for r in cfg["routes"]]
    grace = pod_spec()["terminationGracePeriodSeconds"]
    # The chart's arithmetic (charts/switchboard/templates/_helpers.tpl, switchboard.drain.*):
    # the deadline leaves the last close handshake after the longest window ...
    assert deadline >= propagation + max(windows) + CLOSE_HANDSHAKE
    # ... and the kubelet waits for the gateway's own deadline plus the exit margin, which in
    # sidecar mode also covers the app's shutdown after the gateway has exited.
    assert grace >= deadline + MIN_EXIT_MARGIN
    assert grace > propagation + max(windows) + CLOSE_HANDSHAKE
    # The gateway's validator: every route's propagation + window ends before the deadline.
    assert all(propagation + w < deadline for w in windows)


def test_the_app_is_a_native_sidecar_that_the_kubelet_stops_after_the_gateway():
    spec = pod_spec()
    # The gateway is the only main container: on termination it gets SIGTERM first and drains.
    assert [c["name"] for c in spec["containers"]] == ["gateway"]
    # The app is a restartable init container: started before the gateway, sent SIGTERM only
    # after the gateway has exited (Kubernetes >= 1.29).
    a = app()
    assert a.get("restartPolicy") == "Always"
    assert [c["name"] for c in spec["initContainers"]] == ["app"]
    # A sidecar's preStop would run at the start of termination, beside the gateway's drain;
    # the gateway needs none (it keeps accepting for drain.propagation by itself).
    assert "lifecycle" not in a
    assert "lifecycle" not in gateway()


# --- Service, ports and probes ---------------------------------------------------------------


def test_the_service_targets_the_gateway_public_port_never_the_app_or_admin_port():
    service = one("Service")
    pod_labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert one("Deployment")["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    cfg = config()
    listener_ports = {port_of(l["address"]) for l in cfg["listeners"]}
    admin_port = port_of(cfg["admin"]["address"])
    app_ports = {port_of(b["address"]) for r in cfg["routes"] for b in r["proxy"]["backends"]}
    gw = gateway()
    for p in service["spec"]["ports"]:
        target = container_port(gw, p["targetPort"])
        assert target in listener_ports, p
        assert target != admin_port and target not in app_ports, p
    # The app declares no port: it is reachable on loopback only, through the gateway.
    assert "ports" not in app()


def test_the_gateway_listens_on_the_pod_ip_and_proxies_to_the_app_on_loopback():
    cfg = config()
    gw_ports = {p["name"]: p["containerPort"] for p in gateway()["ports"]}
    assert [l["address"] for l in cfg["listeners"]] == [f"0.0.0.0:{gw_ports['public']}"]
    # Admin on the pod IP: kubelet probes come from outside the pod's network namespace.
    assert cfg["admin"]["address"] == f"0.0.0.0:{gw_ports['admin']}"
    assert "publishApi" not in cfg
    for r in cfg["routes"]:
        backends = r["proxy"]["backends"]
        # One backend (pinning is moot) in the same pod.
        assert len(backends) == 1, r["name"]
        assert ipaddress.ip_address(host_of(backends[0]["address"])).is_loopback, r["name"]
        assert "pinning" not in r["proxy"], r["name"]
        assert "service" not in r["proxy"], r["name"]


def test_the_gateway_probes_hit_its_admin_readyz_and_healthz():
    gw = gateway()
    admin_port = port_of(config()["admin"]["address"])
    ready, live = gw["readinessProbe"]["httpGet"], gw["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz" and container_port(gw, ready["port"]) == admin_port
    assert live["path"] == "/healthz" and container_port(gw, live["port"]) == admin_port


def test_the_app_readiness_probe_reaches_the_app_through_an_unauthenticated_health_route():
    cfg = config()
    probe = app()["readinessProbe"]["httpGet"]
    # Through the gateway's public listener (the app is on loopback, out of the kubelet's reach).
    assert probe["port"] in {port_of(l["address"]) for l in cfg["listeners"]}
    # The kubelet sends the pod IP as Host, so only routes without `hosts` can match; the
    # best one is the longest path (Exact before Prefix), as the gateway picks it.
    def matches(r):
        value = r["path"]["value"].rstrip("/") or "/"
        if r["path"].get("type", "Prefix") == "Exact":
            return probe["path"] == r["path"]["value"]
        return value == "/" or probe["path"] == value or probe["path"].startswith(value + "/")

    candidates = [r for r in cfg["routes"] if not r.get("hosts") and matches(r)]
    assert candidates, "no host-less route matches the app's readiness probe"
    route = max(candidates, key=lambda r: (len(r["path"]["value"]), r["path"].get("type") == "Exact"))
    assert route["path"] == {"type": "Exact", "value": probe["path"]}, "expose the health path alone"
    assert "jwt" not in route and "identityHeaders" not in route["proxy"]
    main = [r for r in cfg["routes"] if r.get("jwt")]
    assert main and all(r["proxy"]["backends"] == route["proxy"]["backends"] for r in main)
    # Every other route needs a token and names its public host, so the host-less health
    # route cannot widen what the public host serves.
    assert all(r.get("hosts") for r in main)
    # No liveness probe through the gateway: a gateway restart must not restart the app.
    live = app().get("livenessProbe", {}).get("httpGet")
    assert not live or live["port"] not in {port_of(l["address"]) for l in cfg["listeners"]}


# --- security --------------------------------------------------------------------------------


def test_every_container_runs_with_the_secure_security_context():
    spec = pod_spec()
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    containers = all_containers(spec)
    assert {c["name"] for c in containers} == {"app", "gateway"}
    for c in containers:
        at = f"container {c['name']}"
        assert_hardened(c, at)
        assert c["securityContext"].get("runAsUser", pod["runAsUser"]) != 0, at
        assert c.get("readinessProbe"), at
