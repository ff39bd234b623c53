"""Tests of the Helm chart charts/switchboard, with the real Helm engine and no cluster.

    .venv-chart/bin/python -m pytest charts/tests -q        # scripts/setup.sh creates the venv
    UPDATE_GOLDEN=1 .venv-chart/bin/python -m pytest charts/tests -q -k golden   # accept renders

Helm is the v4 Go SDK embedded in the `helm-python-sdk` wheel (render, lint and values-schema
validation exactly as `helm template`/`helm lint`/`helm install` do them, offline). Every
rendered object is validated with `kubernetes-validate` against the Kubernetes OpenAPI schemas
in strict mode (unknown fields fail), for the oldest Kubernetes the chart supports and the
newest the package knows. The CRD the chart installs is validated against the
apiextensions.k8s.io/v1 schema and compared byte for byte with crds/realtimeroutes.yaml.
ServiceMonitors (monitoring.coreos.com) have no schema here; their selectors and ports are
checked against the Services they scrape instead.

Where the tools are on the machine, the rendered configs also go through the real programs:
the NATS config through `nats-server -t`, the base GatewayConfig through
`switchboard-gateway --check` and `switchboard-operator --check` (built binaries under
target/debug or $CARGO_TARGET_DIR/debug; skipped, with the reason, when absent).

Test names are sentences. Values files: charts/tests/values/*.yaml; golden renders:
charts/tests/golden/<values file>.yaml.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "switchboard"
TESTS = ROOT / "charts" / "tests"
VALUES_DIR = TESTS / "values"
GOLDEN_DIR = TESTS / "golden"
RELEASE = "switchboard"
NAMESPACE = "switchboard-system"
# The chart's kubeVersion floor (Chart.yaml) and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

VALUES_FILES = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))

# Kinds with no Kubernetes schema available offline; checked structurally instead.
NO_SCHEMA_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


# --- helpers ---------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def load_values(name: str) -> dict:
    data = yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text())
    return data or {}


def render(values: dict | None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` / `helm install` render it."""
    return chart().render(
        copy.deepcopy(values) if values else None,
        name=RELEASE,
        namespace=NAMESPACE,
        is_install=True,
    )


@lru_cache(maxsize=None)
def _render_file(name: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(render(load_values(name)).items()))


def render_file(name: str) -> dict[str, str]:
    return dict(_render_file(name))


def objects_of(rendered: dict[str, str]) -> list[dict]:
    objs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append(doc)
    return objs


def objects(name: str) -> list[dict]:
    return objects_of(render_file(name))


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def container(objs: list[dict], kind: str, name: str) -> dict:
    spec = one(objs, kind, name)["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    return spec["containers"][0]


def flag(c: dict, name: str) -> str | None:
    """The value of `--name=value` in a container's args."""
    values = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given twice"
    return values[0] if values else None


def base_config(objs: list[dict]) -> dict:
    cm = one(objs, "ConfigMap", f"{RELEASE}-base-config")
    return yaml.safe_load(cm["data"]["base.yaml"])


def seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, f"expected whole seconds, got {duration!r}"
    return int(m.group(1))


def rule_set(rules: list[dict]) -> set[tuple]:
    """RBAC rules as comparable tuples, one per (group, resource, verb, resourceName)."""
    out = set()
    for r in rules:
        names = r.get("resourceNames") or [None]
        assert set(r) <= {"apiGroups", "resources", "verbs", "resourceNames"}, r
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    for n in names:
                        out.add((g, res, v, n))
    return out


def rbac(objs: list[dict], component: str) -> dict[tuple, set[tuple]]:
    """(kind, namespace) -> rules of the Roles/ClusterRoles bound to that component's account."""
    account = f"{RELEASE}-{component}"
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    out: dict[tuple, set[tuple]] = {}
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == NAMESPACE
            for s in b["subjects"]
        ):
            continue
        ns = b["metadata"].get("namespace")
        ref = b["roleRef"]
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])]
        key = (ref["kind"], ns)
        out.setdefault(key, set()).update(rule_set(role["rules"]))
    return out


def assert_hardened(c: dict, at: str) -> None:
    """The container security context every Switchboard manifest uses, and resources set."""
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True, at
    assert sc["readOnlyRootFilesystem"] is True, at
    assert sc["allowPrivilegeEscalation"] is False, at
    assert sc.get("privileged", False) is False, at
    assert sc["capabilities"] == {"drop": ["ALL"]}, at
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, at
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], at
    assert c["resources"]["limits"]["memory"], at


def schema_failures(objs: list[dict], kube_version: str) -> list[str]:
    """Every object that does not validate (strict: unknown fields fail) against the Kubernetes
    schemas of `kube_version`, with the path of the offending field."""
    failures = []
    for o in objs:
        try:
            kubernetes_validate.validate(o, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in getattr(e.caught, "absolute_path", []))
            failures.append(f"{o['kind']}/{o['metadata']['name']} at {path}: {e.message}")
    return failures


def require_or_skip(reason: str) -> None:
    """`make test` sets SWITCHBOARD_CHART_TESTS_STRICT=1: there, a missing tool is a failure,
    never a silent skip (it builds both binaries and installs nats-server first)."""
    if os.environ.get("SWITCHBOARD_CHART_TESTS_STRICT") == "1":
        pytest.fail(reason + " (strict mode: make test must provide it)")
    pytest.skip(reason)


def built_binary(name: str) -> Path | None:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    path = target / "debug" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


# --- render and lint -------------------------------------------------------------------------


def test_the_default_values_render_and_lint_clean():
    assert helm.helm_sdk_version().startswith("v4"), helm.helm_sdk_version()
    report = helm.lint(CHART, None, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
    kinds = {o["kind"] for o in objects("defaults")}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"} <= kinds


def test_the_default_images_are_the_ones_make_image_builds():
    # scripts/image.sh tags switchboard/<target>:<workspace version>; Kubernetes resolves the
    # chart's `switchboard/gateway` to the same docker.io/switchboard/gateway that image.sh
    # gives podman, and that `kind load` / `k3d image import` put into the cluster.
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"$', cargo, re.M).group(1)
    appversion = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert appversion == version, "Chart.yaml appVersion is the workspace version"
    containerfile = (ROOT / "Containerfile").read_text()
    assert re.findall(r"^ARG VERSION=(.*)$", containerfile, re.M) == [version, version]
    script = (ROOT / "scripts" / "image.sh").read_text()
    assert "PREFIX=switchboard\n" in script and "PREFIX=docker.io/switchboard\n" in script
    assert 'TAG="${IMAGE_TAG:-$VERSION}"' in script
    for target in ("gateway", "operator"):
        assert re.search(rf"^FROM \$\{{RUNTIME_IMAGE\}} AS {target}$", containerfile, re.M), target
        c = container(objects("defaults"), "Deployment", f"{RELEASE}-{target}")
        assert c["image"] == f"switchboard/{target}:{version}", c["image"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_values_file_lints_clean(values_file):
    report = helm.lint(CHART, load_values(values_file), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


# --- Kubernetes schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(values_file, kube_version):
    objs = [o for o in objects(values_file) if (o["apiVersion"], o["kind"]) not in NO_SCHEMA_KINDS]
    assert schema_failures(objs, kube_version) == []


def test_the_schema_validation_catches_a_misspelt_kubernetes_field():
    deployment = copy.deepcopy(one(objects("defaults"), "Deployment", f"{RELEASE}-gateway"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_the_chart_crd_validates_against_the_apiextensions_schema():
    crds = chart().crds
    assert [c["name"] for c in crds] == ["crds/realtimeroutes.yaml"]
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate.validate(yaml.safe_load(crds[0]["data"]), kube_version, strict=True)


def test_the_chart_crd_is_byte_for_byte_the_committed_crds_file():
    committed = (ROOT / "crds" / "realtimeroutes.yaml").read_bytes()
    in_chart = (CHART / "crds" / "realtimeroutes.yaml").read_bytes()
    assert in_chart == committed, (
        "charts/switchboard/crds/realtimeroutes.yaml differs from crds/realtimeroutes.yaml; "
        "copy it: cp crds/realtimeroutes.yaml charts/switchboard/crds/"
    )
    # And it is what Helm loads as the chart's CRD.
    assert chart().crds[0]["data"].encode() == committed


# --- golden renders --------------------------------------------------------------------------


def golden_text(values_file: str) -> str:
    rendered = render_file(values_file)
    parts = [
        f"# Golden render of charts/tests/values/{values_file}.yaml (release {RELEASE}, "
        f"namespace {NAMESPACE}).\n# Regenerate: UPDATE_GOLDEN=1 .venv-chart/bin/python -m "
        "pytest charts/tests -k golden\n"
    ]
    for path, text in sorted(rendered.items()):
        if text.strip():
            parts.append(f"---\n# Source: {path}\n{text.strip()}\n")
    return "".join(parts)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_render_matches_its_golden_file(values_file):
    golden = GOLDEN_DIR / f"{values_file}.yaml"
    actual = golden_text(values_file)
    if UPDATE_GOLDEN:
        golden.write_text(actual)
        return
    assert golden.exists(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    expected = golden.read_text()
    if actual != expected:
        import difflib

        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), str(golden), "rendered", n=2
            )
        )
        pytest.fail(f"render differs from {golden.name} (UPDATE_GOLDEN=1 to accept):\n{diff[:6000]}")


def test_every_golden_file_has_its_values_file():
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.yaml")) == VALUES_FILES


# --- values and schema -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "typo",
    [
        {"gateway": {"replica": 3}},
        {"gateway": {"drain": {"windowSeconds": 30}}},
        {"gateway": {"config": {"limits": {"maxConection": 5}}}},
        {"operator": {"serviceMonitor": {"enable": True}}},
        {"nats": {"jetstream": {"persistence": {"storageClass": "fast"}}}},
        {"gatway": {}},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_a_misspelt_values_key_fails_schema_validation_and_install(typo):
    with pytest.raises(helm.HelmValuesError, match="additional propert"):
        chart().validate_schema(typo)
    with pytest.raises(helm.HelmValuesError):
        render(typo)


@pytest.mark.parametrize(
    "bad",
    [
        {"nats": {"replicas": 2}},
        {"gateway": {"drain": {"exitMarginSeconds": 1}}},
        {"gateway": {"logFormat": "yaml"}},
        {"gateway": {"config": {"limits": {"handshakeTimeout": "ten seconds"}}}},
        {"operator": {"watchNamespaces": ["Not_A_Namespace"]}},
        {"gateway": {"tracing": {"sampleRatio": 2}}},
        {"gateway": {"tracing": {"otlpEndpoint": "otel-collector:4318"}}},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_an_out_of_range_value_fails_schema_validation(bad):
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(bad)


def _schema_objects(node, path="$"):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for k, v in node.items():
            yield from _schema_objects(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _schema_objects(v, f"{path}[{i}]")


def test_every_object_in_the_values_schema_is_closed():
    # Fixed-shape objects forbid unknown keys; maps of user-chosen keys (labels, annotations,
    # nodeSelector) allow only string values.
    schema = chart().schema
    open_objects = [
        path
        for path, node in _schema_objects(schema)
        if node.get("additionalProperties") is not False
        and node.get("additionalProperties") != {"type": "string"}
    ]
    assert open_objects == []


def _keys(values, prefix=""):
    for k, v in values.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _keys(v, f"{prefix}{k}.")


def _schema_keys(node, prefix=""):
    for k, v in node.get("properties", {}).items():
        yield f"{prefix}{k}"
        if v.get("type") == "object" and "properties" in v:
            yield from _schema_keys(v, f"{prefix}{k}.")


def test_values_yaml_and_the_schema_list_the_same_keys():
    assert sorted(_keys(chart().values)) == sorted(_schema_keys(chart().schema))


def test_every_key_in_values_yaml_has_a_comment():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        j = n - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j < 0 or not lines[j].startswith(m.group(1) + "#"):
            undocumented.append(f"values.yaml:{n + 1}: {line.strip()}")
    assert undocumented == []


# --- drain and terminationGracePeriodSeconds -------------------------------------------------


def check_drain(objs: list[dict], drain: dict) -> None:
    cfg = base_config(objs)["drain"]
    propagation, deadline = seconds(cfg["propagation"]), seconds(cfg["deadline"])
    gateway = one(objs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]
    grace = gateway["terminationGracePeriodSeconds"]
    window = drain["maxWindowSeconds"]
    assert propagation == drain["propagationSeconds"]
    # The deadline leaves the last close handshake (5 s) after the longest route window ...
    assert deadline >= propagation + window + 5
    assert deadline == (drain["deadlineSeconds"] or propagation + window + 5)
    # ... and the kubelet waits for the gateway's own deadline plus the exit margin.
    assert grace == deadline + drain["exitMarginSeconds"]
    assert grace >= deadline + 5 > propagation + window
    # The operator judges DrainFits against the same number.
    operator = container(objs, "Deployment", f"{RELEASE}-operator")
    assert flag(operator, "gateway-termination-grace-period") == str(grace)
    # No preStop: the gateway's propagation window replaces the usual sleep (see the template).
    assert "lifecycle" not in gateway["containers"][0]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_termination_grace_period_is_never_shorter_than_the_drain(values_file):
    drain = chart().merge_values(load_values(values_file))["gateway"]["drain"]
    check_drain(objects(values_file), drain)


@pytest.mark.parametrize(
    "drain",
    [
        {"propagationSeconds": 0, "maxWindowSeconds": 0, "deadlineSeconds": 0, "exitMarginSeconds": 5},
        {"propagationSeconds": 5, "maxWindowSeconds": 10, "deadlineSeconds": 0, "exitMarginSeconds": 5},
        {"propagationSeconds": 30, "maxWindowSeconds": 600, "deadlineSeconds": 0, "exitMarginSeconds": 15},
        {"propagationSeconds": 5, "maxWindowSeconds": 10, "deadlineSeconds": 20, "exitMarginSeconds": 5},
        {"propagationSeconds": 5, "maxWindowSeconds": 10, "deadlineSeconds": 3600, "exitMarginSeconds": 5},
    ],
    ids=lambda d: "p{propagationSeconds}-w{maxWindowSeconds}-d{deadlineSeconds}-m{exitMarginSeconds}".format(**d),
)
def test_the_grace_period_follows_any_drain_setting(drain):
    check_drain(objects_of(render({"gateway": {"drain": drain}})), drain)


def test_an_explicit_deadline_shorter_than_the_drain_fails_to_render():
    drain = {"propagationSeconds": 5, "maxWindowSeconds": 30, "deadlineSeconds": 39}
    with pytest.raises(helm.HelmRenderError, match="deadlineSeconds"):
        render({"gateway": {"drain": drain}})


# --- values the gateway would refuse at start ------------------------------------------------
# The base config is the gateways' bootstrap: a value the gateway refuses (docs/config.md) is a
# crash loop (exit 64) on every pod, so rendering fails instead, naming the values key.

TLS = {"enabled": True, "secretName": "tls-cert"}
NATS = {"urls": ["nats://nats.example:4222"]}


def config(**keys) -> dict:
    return {"gateway": {"config": keys}}


def ids(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip()


@pytest.mark.parametrize(
    "values, message",
    [
        (config(listener={"port": 9090}), r"gateway\.config\.listener\.port \(9090\).*gateway\.config\.admin\.port"),
        (config(admin={"port": 8080}), r"gateway\.config\.listener\.port \(8080\).*gateway\.config\.admin\.port"),
        (
            config(tls={**TLS, "port": 8080}),
            r"gateway\.config\.tls\.port \(8080\).*gateway\.config\.listener\.port",
        ),
        (config(tls={**TLS, "port": 9090}), r"gateway\.config\.tls\.port \(9090\).*gateway\.config\.admin\.port"),
        (
            config(listener={"port": 7000}, tls={**TLS, "port": 7000}, admin={"port": 7000}),
            r"gateway\.config\.tls\.port \(7000\).*gateway\.config\.listener\.port",
        ),
    ],
    ids=lambda v: ids(v) if isinstance(v, dict) else "refused",
)
def test_listener_tls_and_admin_ports_that_collide_fail_to_render(values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_distinct_ports_render_and_an_unused_tls_port_may_equal_another():
    cfg = base_config(objects_of(render(config(listener={"port": 8443}, tls={**TLS, "port": 8080}))))
    assert [l["address"] for l in cfg["listeners"]] == ["0.0.0.0:8443", "0.0.0.0:8080"]
    assert cfg["admin"]["address"] == "0.0.0.0:9090"
    # With TLS off its port is not bound: no collision.
    cfg = base_config(objects_of(render(config(tls={"enabled": False, "port": 9090}))))
    assert [l["address"] for l in cfg["listeners"]] == ["0.0.0.0:8080"]


@pytest.mark.parametrize(
    "values, message",
    [
        (config(bus={"nats": {**NATS, "presenceTtl": "500ms"}}), r"gateway\.config\.bus\.nats\.presenceTtl \(500ms\): must be at least 1s"),
        (config(bus={"nats": {**NATS, "presenceTtl": "999ms"}}), r"gateway\.config\.bus\.nats\.presenceTtl \(999ms\): must be at least 1s"),
        (config(bus={"nats": {**NATS, "presenceTtl": "0m999ms"}}), r"gateway\.config\.bus\.nats\.presenceTtl \(0m999ms\): must be at least 1s"),
        (config(bus={"nats": {**NATS, "presenceTtl": "0s"}}), r"gateway\.config\.bus\.nats\.presenceTtl \(0s\): must be at least 1s"),
        ({"nats": {"enabled": True}, **config(bus={"nats": {"presenceTtl": "500ms"}})}, r"gateway\.config\.bus\.nats\.presenceTtl"),
        (config(limits={"handshakeTimeout": "0s"}), r"gateway\.config\.limits\.handshakeTimeout \(0s\): must be more than 0s"),
        (config(limits={"upstreamTimeout": "0ms"}), r"gateway\.config\.limits\.upstreamTimeout \(0ms\): must be more than 0s"),
        (config(limits={"handshakeTimeout": "876601h"}), r"gateway\.config\.limits\.handshakeTimeout \(876601h\): .*at most 100 years"),
        (config(limits={"upstreamTimeout": "3155760001s"}), r"gateway\.config\.limits\.upstreamTimeout \(3155760001s\): .*at most 100 years"),
        (config(limits={"httpResponseTimeout": "3155760000001ms"}), r"gateway\.config\.limits\.httpResponseTimeout \(3155760000001ms\): .*at most 100 years"),
        (config(limits={"httpResponseTimeout": "99999999999999999999s"}), r"gateway\.config\.limits\.httpResponseTimeout \(99999999999999999999s\): .*at most 100 years"),
        (config(limits={"httpResponseTimeout": "876000h876000h"}), r"gateway\.config\.limits\.httpResponseTimeout \(876000h876000h\): .*at most 100 years"),
        (config(bus={"nats": {**NATS, "presenceTtl": "900000h"}}), r"gateway\.config\.bus\.nats\.presenceTtl \(900000h\): .*at most 100 years"),
    ],
    ids=lambda v: ids(v) if isinstance(v, dict) else "refused",
)
def test_a_duration_the_gateway_refuses_fails_to_render(values, message):
    # Durations pass the schema's pattern; the bounds of docs/config.md are checked at render.
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


@pytest.mark.parametrize(
    "key, value",
    [
        ("presenceTtl", "1s"),
        ("presenceTtl", "1000ms"),
        ("presenceTtl", "0m1s"),
        ("presenceTtl", "1s500ms"),
        ("presenceTtl", "00001s"),
        ("handshakeTimeout", "1ms"),
        ("upstreamTimeout", "1m1h"),
        ("httpResponseTimeout", "0s"),
        ("httpResponseTimeout", "3155760000s"),
        ("httpResponseTimeout", "3155760000000ms"),
        ("upstreamTimeout", "876600h"),
    ],
    ids=lambda v: str(v),
)
def test_durations_at_the_gateways_bounds_render_unchanged(key, value):
    if key == "presenceTtl":
        cfg = base_config(objects_of(render(config(bus={"nats": {**NATS, key: value}}))))
        assert cfg["bus"]["nats"][key] == value
    else:
        cfg = base_config(objects_of(render(config(limits={key: value}))))
        assert cfg["limits"][key] == value


def test_a_presence_ttl_is_checked_even_while_no_bus_uses_it():
    # A value out of range fails install whether or not NATS is configured yet (docs/helm.md).
    with pytest.raises(helm.HelmRenderError, match=r"gateway\.config\.bus\.nats\.presenceTtl"):
        render(config(bus={"nats": {"presenceTtl": "500ms"}}))


# --- security --------------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_container_runs_with_the_secure_security_context(values_file):
    specs = pod_specs(objects(values_file))
    assert specs
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert "hostNetwork" not in spec and "hostPID" not in spec, where
        assert spec["enableServiceLinks"] is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            at = f"{where} container {c['name']}"
            assert_hardened(c, at)
            assert c.get("readinessProbe") and c.get("livenessProbe"), at


# --- RBAC ------------------------------------------------------------------------------------

SNAPSHOT = f"{RELEASE}-gateway-snapshot"
LEASE = f"{RELEASE}-operator"

OPERATOR_ROUTE_RULES = rule_set(
    [
        {"apiGroups": ["switchboard.dev"], "resources": ["realtimeroutes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["switchboard.dev"], "resources": ["realtimeroutes/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
)
OPERATOR_OWN_NAMESPACE_RULES = rule_set(
    [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SNAPSHOT], "verbs": ["get", "update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [LEASE],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ]
)
GATEWAY_SNAPSHOT_RULES = rule_set(
    [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SNAPSHOT], "verbs": ["get", "list", "watch"]}]
)
ENDPOINTSLICE_RULES = rule_set(
    [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]
)


def test_the_operator_rbac_is_the_least_privilege_set():
    assert rbac(objects("defaults"), "operator") == {
        ("ClusterRole", None): OPERATOR_ROUTE_RULES,
        ("Role", NAMESPACE): OPERATOR_OWN_NAMESPACE_RULES,
    }


def test_the_operator_rbac_matches_operator_rbac_yaml():
    # operator/rbac.yaml is the hand-maintained reference next to the operator's code.
    ref = [d for d in yaml.safe_load_all((ROOT / "operator" / "rbac.yaml").read_text()) if d]
    cluster = set().union(*(rule_set(d["rules"]) for d in ref if d["kind"] == "ClusterRole"))
    namespaced = set().union(*(rule_set(d["rules"]) for d in ref if d["kind"] == "Role"))
    assert cluster == OPERATOR_ROUTE_RULES
    assert namespaced == OPERATOR_OWN_NAMESPACE_RULES


def test_the_gateway_rbac_reads_only_the_snapshot_secret_and_endpointslices():
    assert rbac(objects("defaults"), "gateway") == {
        ("Role", NAMESPACE): GATEWAY_SNAPSHOT_RULES,
        ("ClusterRole", None): ENDPOINTSLICE_RULES,
    }


def test_watched_namespaces_turn_the_cluster_roles_into_roles_per_namespace():
    objs = objects("namespaced-tls")
    assert rbac(objs, "operator") == {
        ("Role", "chat"): OPERATOR_ROUTE_RULES,
        ("Role", "collab"): OPERATOR_ROUTE_RULES,
        ("Role", NAMESPACE): OPERATOR_OWN_NAMESPACE_RULES,
    }
    assert rbac(objs, "gateway") == {
        ("Role", NAMESPACE): GATEWAY_SNAPSHOT_RULES,
        ("Role", "chat"): ENDPOINTSLICE_RULES,
        ("Role", "collab"): ENDPOINTSLICE_RULES,
    }
    assert by_kind(objs, "ClusterRole") == [] and by_kind(objs, "ClusterRoleBinding") == []
    operator = container(objs, "Deployment", f"{RELEASE}-operator")
    assert flag(operator, "namespaces") == "chat,collab"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_no_role_grants_wildcards_and_every_role_is_bound(values_file):
    objs = objects(values_file)
    roles = by_kind(objs, "Role") + by_kind(objs, "ClusterRole")
    bound = {
        (b["roleRef"]["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"])
        for b in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding")
    }
    for r in roles:
        for g, res, verb, _ in rule_set(r["rules"]):
            assert "*" not in (g, res, verb), r["metadata"]["name"]
        assert (r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]) in bound


# --- wiring between the components -----------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_operator_and_the_gateways_agree_on_names_ports_and_config(values_file):
    objs = objects(values_file)
    gw = container(objs, "Deployment", f"{RELEASE}-gateway")
    op = container(objs, "Deployment", f"{RELEASE}-operator")
    # The gateways watch the Secret the operator writes.
    assert flag(gw, "kube-snapshot") == f"{NAMESPACE}/{flag(op, 'snapshot-name')}" == f"{NAMESPACE}/{SNAPSHOT}"
    assert flag(op, "lease-name") == LEASE
    # The operator polls the gateways through the admin Service's `admin` port.
    admin_ns, admin_name = flag(op, "gateway-admin-service").split("/")
    assert admin_ns == NAMESPACE
    admin = one(objs, "Service", admin_name)
    assert [p["name"] for p in admin["spec"]["ports"]] == [flag(op, "gateway-admin-port-name")]
    gw_pod = one(objs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]
    assert admin["spec"]["selector"].items() <= gw_pod["metadata"]["labels"].items()
    # Both read the same base config, whose ports are the containers' ports.
    cfg = base_config(objs)
    for c, kind, name in ((gw, "Deployment", f"{RELEASE}-gateway"), (op, "Deployment", f"{RELEASE}-operator")):
        spec = one(objs, kind, name)["spec"]["template"]["spec"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "base-config")
        volume = next(v for v in spec["volumes"] if v["name"] == "base-config")
        assert volume["configMap"]["name"] == f"{RELEASE}-base-config"
        assert "subPath" not in mount
    assert flag(gw, "config") == flag(op, "base-config") == "/etc/switchboard/config/base.yaml"
    ports = {p["name"]: p["containerPort"] for p in gw["ports"]}
    assert cfg["admin"]["address"] == f"0.0.0.0:{ports['admin']}"
    assert [l["address"] for l in cfg["listeners"]] == [
        f"0.0.0.0:{ports[n]}" for n in ("public", "public-tls") if n in ports
    ]
    assert "routes" not in cfg
    # Probes hit the admin listener.
    assert gw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert gw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    # The public Service exposes only client listeners.
    public = one(objs, "Service", f"{RELEASE}-gateway")
    assert {p["targetPort"] for p in public["spec"]["ports"]} <= {"public", "public-tls"}
    # Files named in the config are mounted.
    mounted = {m["mountPath"] for m in gw["volumeMounts"]}
    files = [c["certFile"] for l in cfg["listeners"] for c in l.get("tls", {}).get("certificates", [])]
    files += [c["keyFile"] for l in cfg["listeners"] for c in l.get("tls", {}).get("certificates", [])]
    files.append(cfg.get("publishApi", {}).get("tokenFile"))
    files.append(cfg.get("bus", {}).get("nats", {}).get("credentialsFile"))
    for f in filter(None, files):
        assert str(Path(f).parent) in mounted, f


def test_nats_enabled_wires_the_gateways_bus_to_the_in_chart_servers():
    objs = objects("nats-enabled")
    sts = one(objs, "StatefulSet", f"{RELEASE}-nats")
    headless = one(objs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    replicas = sts["spec"]["replicas"]
    urls = base_config(objs)["bus"]["nats"]["urls"]
    assert urls == [
        f"nats://{RELEASE}-nats-{i}.{headless['metadata']['name']}.{NAMESPACE}.svc:4222" for i in range(replicas)
    ]
    # History and presence are replicated on every in-chart server.
    assert base_config(objs)["bus"]["nats"]["replicas"] == replicas == 3
    # An external NATS: the configured replica count.
    assert base_config(objects("namespaced-tls"))["bus"]["nats"]["replicas"] == 3
    conf = one(objs, "ConfigMap", f"{RELEASE}-nats-config")["data"]["nats.conf"]
    assert "jetstream {" in conf
    # The NetworkPolicy lets the gateway pods in.
    policy = one(objs, "NetworkPolicy", f"{RELEASE}-nats")
    gw_labels = one(objs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["metadata"]["labels"]
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).items() <= gw_labels.items()
        and "namespaceSelector" not in peer
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    )
    # Without nats.enabled nothing of NATS is rendered and the gateways use the in-process bus.
    default = objects("defaults")
    assert not [o for o in default if o["metadata"]["name"].startswith(f"{RELEASE}-nats")]
    assert "bus" not in base_config(default)


def test_the_hpa_owns_the_replica_count_and_scales_down_one_drain_at_a_time():
    objs = objects("hpa-servicemonitor")
    hpa = one(objs, "HorizontalPodAutoscaler", f"{RELEASE}-gateway")
    deployment = one(objs, "Deployment", f"{RELEASE}-gateway")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    policy = hpa["spec"]["behavior"]["scaleDown"]["policies"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert policy == [{"type": "Pods", "value": 1, "periodSeconds": grace}]
    assert not by_kind(objects("defaults"), "HorizontalPodAutoscaler")


def test_the_service_monitors_scrape_the_metrics_ports_of_the_right_services():
    objs = objects("hpa-servicemonitor")
    monitors = by_kind(objs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {f"{RELEASE}-gateway", f"{RELEASE}-operator"}
    for m in monitors:
        assert set(m["spec"]) == {"selector", "namespaceSelector", "endpoints"}
        assert m["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selected = [
            s
            for s in by_kind(objs, "Service")
            if m["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, m["metadata"]["name"]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for e in m["spec"]["endpoints"]:
            assert set(e) == {"port", "path", "interval", "scrapeTimeout"}
            assert e["port"] in port_names and e["path"] == "/metrics"
    assert not by_kind(objects("defaults"), "ServiceMonitor")



def _env(c: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def test_gateways_export_traces_only_when_an_otlp_endpoint_is_set():
    default = _env(container(objects("defaults"), "Deployment", f"{RELEASE}-gateway"))
    assert not any(k.startswith("OTEL_") for k in default), default
    # The pod's identity always reaches the trace resource, from the downward API.
    assert default["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert default["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    traced = _env(container(objects("observability"), "Deployment", f"{RELEASE}-gateway"))
    assert traced["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert (traced["OTEL_TRACES_SAMPLER"], traced["OTEL_TRACES_SAMPLER_ARG"]) == (
        "traceidratio",
        "0.25",
    )

@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_pod_selector_selects_its_own_pods_only(values_file):
    objs = objects(values_file)
    workloads = by_kind(objs, "Deployment") + by_kind(objs, "StatefulSet")
    for w in workloads:
        selector = w["spec"]["selector"]["matchLabels"]
        matching = [
            o for o in workloads if selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matching == [w], w["metadata"]["name"]
    for pdb in by_kind(objs, "PodDisruptionBudget"):
        targets = [
            w
            for w in workloads
            if pdb["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, pdb["metadata"]["name"]


# --- the real programs, where they are built or installed ------------------------------------


@pytest.mark.parametrize("values_file", ["nats-enabled"])
def test_the_rendered_nats_config_is_accepted_by_nats_server(values_file, tmp_path):
    nats_server = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if not nats_server:
        require_or_skip("nats-server not installed (scripts/setup.sh installs it)")
    conf = one(objects(values_file), "ConfigMap", f"{RELEASE}-nats-config")["data"]["nats.conf"]
    (tmp_path / "nats.conf").write_text(conf)
    env = dict(os.environ, SERVER_NAME=f"{RELEASE}-nats-0")
    out = subprocess.run(
        [nats_server, "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _runnable_base_config(values_file: str, tmp_path: Path) -> Path:
    """The rendered base config, with the TLS files pointed at the repository's test certs."""
    text = one(objects(values_file), "ConfigMap", f"{RELEASE}-base-config")["data"]["base.yaml"]
    certs = ROOT / "examples" / "tls"
    text = text.replace("/etc/switchboard/tls/tls.crt", str(certs / "chat.example.test.crt"))
    text = text.replace("/etc/switchboard/tls/tls.key", str(certs / "chat.example.test.key"))
    path = tmp_path / "base.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_rendered_base_config_passes_the_gateways_own_check(values_file, tmp_path):
    binary = built_binary("switchboard-gateway")
    if not binary:
        require_or_skip("switchboard-gateway not built (make check-examples builds it)")
    path = _runnable_base_config(values_file, tmp_path)
    out = subprocess.run(
        [str(binary), "--check", "--config", str(path), "--kube-snapshot", f"{NAMESPACE}/{SNAPSHOT}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stdout + out.stderr


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_rendered_base_config_passes_the_operators_own_check(values_file, tmp_path):
    binary = built_binary("switchboard-operator")
    if not binary:
        require_or_skip("switchboard-operator not built (cargo build -p switchboard-operator)")
    path = _runnable_base_config(values_file, tmp_path)
    out = subprocess.run(
        [str(binary), "--check", "--base-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
