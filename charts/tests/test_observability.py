"""Tests of the chart's operating assets: the Grafana dashboard and the PrometheusRule.

    .venv-chart/bin/python -m pytest -p no:cacheprovider -q charts/tests/test_observability.py

The metric catalogue is read from the Rust sources themselves (gateway/src/metrics.rs and
operator/src/metrics.rs: every `"switchboard_..."` name literal with the label array of its
constructor), so a renamed metric or label fails here instead of leaving an empty panel or an
alert that can never fire. Every PromQL expression (dashboard targets, variable queries, alert
`expr`) goes through a real PromQL parser (`promql-parser`, pinned in requirements.txt); the
checks walk its syntax tree: every selector names a real series, every matcher, `by`, `without`,
`on` and `group_left` label exists on the metrics below it, fixed label values occur in the
component's sources, and every `{{label}}` of a legend or `$labels.x` of an annotation is a label
the expression's result carries.

The render with the features on is charts/tests/values/observability.yaml; its golden file,
lint and Kubernetes-schema checks are the generic ones in test_chart.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import helm_python as helm
import promql_parser as pq
import pytest
import yaml

from test_chart import CHART, NAMESPACE, RELEASE, ROOT, by_kind, chart, objects, one, render

DASHBOARD_FILE = CHART / "dashboards" / "switchboard.json"
OPERATIONS_MD = ROOT / "docs" / "operations.md"
SOURCES = {
    "gateway": ROOT / "gateway" / "src",
    "operator": ROOT / "operator" / "src",
}
METRICS_RS = {name: src / "metrics.rs" for name, src in SOURCES.items()}

# Labels every scraped series carries besides its own: the target labels the chart's
# ServiceMonitors get from the Prometheus Operator (and `le` only on histogram buckets).
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job", "service", "endpoint", "container"})
DS_UID = "${datasource}"
# Grafana's interval variables become a duration, every other variable a sentinel value.
GRAFANA_VAR = "grafana_var"


# --- the metric catalogue from the Rust sources ----------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "histogram" or "scalar" (counter or gauge: one series name)
    labels: tuple[str, ...]
    component: str


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|&\[[^\]]*\]|\.expect\(|\?|;')
_NAME = re.compile(r'"(switchboard_[a-z0-9_]+)"')


def parse_metrics_rs(path: Path, component: str) -> dict[str, Metric]:
    """Metric name literal -> kind and label array, from one metrics.rs.

    After each name literal, tokens are read (string literals and comments skipped as wholes)
    until the constructor ends (`.expect(`, `?`, `;`) or the next name literal; a `&["a", "b"]`
    among them is the label array. A `HistogramOpts::new(` right before the name makes it a
    histogram. The `#[cfg(test)]` module is ignored."""
    text = path.read_text().split("#[cfg(test)]", 1)[0]
    found: dict[str, Metric] = {}
    for m in _NAME.finditer(text):
        name = m.group(1)
        kind = "histogram" if re.search(r"HistogramOpts::new\(\s*$", text[: m.start()]) else "scalar"
        labels: tuple[str, ...] = ()
        for tok in _TOKEN.finditer(text, m.end()):
            t = tok.group(0)
            if _NAME.fullmatch(t) or t in (".expect(", "?", ";"):
                break
            if t.startswith("&["):
                items = re.findall(r'"([^"]*)"', t)
                if items and re.fullmatch(r'&\[\s*("[^"]*"\s*,?\s*)+\]', t):
                    labels = tuple(items)
                    break
        assert name not in found, f"{path}: {name} defined twice"
        found[name] = Metric(name, kind, labels, component)
    return found


@lru_cache(maxsize=None)
def catalogue() -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    for component, path in METRICS_RS.items():
        out.update(parse_metrics_rs(path, component))
    return out


@lru_cache(maxsize=None)
def series() -> dict[str, tuple[Metric, frozenset[str]]]:
    """Every series name Prometheus stores -> its metric and the labels it can carry."""
    out = {}
    for m in catalogue().values():
        labels = frozenset(m.labels) | TARGET_LABELS
        if m.kind == "histogram":
            out[f"{m.name}_bucket"] = (m, labels | {"le"})
            out[f"{m.name}_sum"] = (m, labels)
            out[f"{m.name}_count"] = (m, labels)
        else:
            out[m.name] = (m, labels)
    return out


@lru_cache(maxsize=None)
def string_literals(component: str) -> frozenset[str]:
    lits = set()
    for path in SOURCES[component].rglob("*.rs"):
        lits.update(re.findall(r'"((?:[^"\\]|\\.)*)"', path.read_text()))
    return frozenset(lits)


# --- PromQL checks on the parser's syntax tree -----------------------------------------------


def substitute_grafana_variables(expr: str) -> str:
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", GRAFANA_VAR, expr)


def _selectors(node) -> list:
    """Every VectorSelector below (and including) node."""
    out = []

    def visit(n):
        if isinstance(n, pq.VectorSelector):
            out.append(n)
        elif isinstance(n, pq.MatrixSelector):
            out.append(n.vector_selector)
        elif isinstance(n, pq.BinaryExpr):
            visit(n.lhs)
            visit(n.rhs)
        elif isinstance(n, pq.Call):
            for a in n.args:
                visit(a)
        elif isinstance(n, (pq.AggregateExpr, pq.ParenExpr, pq.UnaryExpr, pq.SubqueryExpr)):
            visit(n.expr)
        elif isinstance(n, (pq.NumberLiteral, pq.StringLiteral)) or n is None:
            pass
        else:
            raise AssertionError(f"unhandled PromQL node {type(n).__name__}")

    visit(node)
    return out


def labels_of(node) -> frozenset[str]:
    """The labels the series of an expression's result can carry."""
    if isinstance(node, pq.MatrixSelector):
        node = node.vector_selector
    if isinstance(node, pq.VectorSelector):
        known = series().get(node.name or "")
        return known[1] if known else frozenset()
    if isinstance(node, (pq.NumberLiteral, pq.StringLiteral)):
        return frozenset()
    if isinstance(node, (pq.ParenExpr, pq.UnaryExpr, pq.SubqueryExpr)):
        return labels_of(node.expr)
    if isinstance(node, pq.AggregateExpr):
        mod = node.modifier
        if mod is None:
            return frozenset()
        if mod.type == pq.AggModifierType.By:
            return frozenset(mod.labels)
        return labels_of(node.expr) - set(mod.labels)
    if isinstance(node, pq.Call):
        if node.func.name == "histogram_quantile":
            return labels_of(node.args[1]) - {"le"}
        return frozenset().union(*(labels_of(a) for a in node.args))
    if isinstance(node, pq.BinaryExpr):
        mod = node.modifier
        lhs, rhs = labels_of(node.lhs), labels_of(node.rhs)
        if str(node.op) in ("and", "unless"):
            return lhs
        if str(node.op) == "or":
            return lhs | rhs
        if not lhs or not rhs:  # a scalar on one side
            return lhs | rhs
        matching = mod.matching if mod else None
        card = mod.card if mod else pq.VectorMatchCardinality.OneToOne
        extra = frozenset(mod.group_labels or ()) if mod else frozenset()
        if card == pq.VectorMatchCardinality.ManyToOne:
            return lhs | extra
        if card == pq.VectorMatchCardinality.OneToMany:
            return rhs | extra
        if matching is not None and matching.type == pq.LabelModifierType.Include:
            return frozenset(matching.labels)
        if matching is not None:
            return lhs - set(matching.labels)
        return lhs
    raise AssertionError(f"unhandled PromQL node {type(node).__name__}")


def check_promql(text: str) -> tuple[list[str], frozenset[str]]:
    """Parse one expression; the problems found, and the labels its result carries."""
    try:
        expr = pq.parse(substitute_grafana_variables(text))
    except ValueError as e:
        return [f"does not parse: {e}"], frozenset()
    problems: list[str] = []

    def check_selector(vs):
        if not vs.name:
            problems.append(f"selector without a metric name: {vs}")
            return
        known = series().get(vs.name)
        if not known:
            problems.append(f"{vs.name}: not a metric of gateway/src/metrics.rs or operator/src/metrics.rs")
            return
        metric, labels = known
        matchers = list(vs.matchers.matchers) + [m for group in vs.matchers.or_matchers for m in group]
        for m in matchers:
            if m.name not in labels:
                problems.append(f"{vs.name}: no label {m.name!r} (has {sorted(metric.labels)})")
                continue
            if m.name in TARGET_LABELS or GRAFANA_VAR in m.value:
                continue
            if not re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*", m.value):
                problems.append(f"{vs.name}: matcher {m} is not a plain list of values")
                continue
            lits = string_literals(metric.component)
            for value in m.value.split("|"):
                if value not in lits:
                    problems.append(f'{vs.name}: {m.name}="{value}" occurs nowhere in {metric.component}/src')

    def visit(n):
        if isinstance(n, pq.MatrixSelector):
            n = n.vector_selector
        if isinstance(n, pq.VectorSelector):
            check_selector(n)
            return
        if isinstance(n, pq.AggregateExpr):
            if n.modifier is not None:
                missing = set(n.modifier.labels) - labels_of(n.expr)
                if missing:
                    problems.append(f"{str(n.op)} by/without {sorted(missing)}: not labels of {n.expr}")
            visit(n.expr)
            return
        if isinstance(n, pq.BinaryExpr):
            mod = n.modifier
            if mod is not None and mod.matching is not None:
                both = labels_of(n.lhs) & labels_of(n.rhs)
                missing = set(mod.matching.labels) - both
                if missing:
                    problems.append(f"on/ignoring {sorted(missing)}: not labels of both sides of {n}")
            if mod is not None and mod.group_labels:
                one_side = n.rhs if mod.card == pq.VectorMatchCardinality.ManyToOne else n.lhs
                missing = set(mod.group_labels) - labels_of(one_side)
                if missing:
                    problems.append(f"group_left/right {sorted(missing)}: not labels of {one_side}")
            visit(n.lhs)
            visit(n.rhs)
            return
        if isinstance(n, pq.Call):
            for a in n.args:
                visit(a)
            return
        if isinstance(n, (pq.ParenExpr, pq.UnaryExpr, pq.SubqueryExpr)):
            visit(n.expr)

    visit(expr)
    return problems, labels_of(expr)


def metrics_in(text: str) -> set[str]:
    """The metrics (not series) an expression reads."""
    expr = pq.parse(substitute_grafana_variables(text))
    return {series()[vs.name][0].name for vs in _selectors(expr) if vs.name in series()}


def check_label_values_query(query: str) -> list[str]:
    """A Grafana `label_values(selector, label)` variable query."""
    m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query.strip())
    if not m:
        return [f"not a label_values(selector, label) query: {query}"]
    problems, labels = check_promql(m.group(1))
    if m.group(2) not in labels:
        problems.append(f"label_values: {m.group(1)} has no label {m.group(2)!r}")
    return problems


# --- the dashboard ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def panels() -> list[dict]:
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def dashboard_queries() -> list[tuple[str, dict]]:
    return [
        (f"{p['title']} / {t['refId']}", t) for p in panels() for t in p.get("targets", [])
    ]


def variables() -> dict[str, dict]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def test_the_metric_catalogue_read_from_the_rust_sources_has_every_metric_with_its_labels():
    cat = catalogue()
    gateway = {n for n, m in cat.items() if m.component == "gateway"}
    operator = {n for n, m in cat.items() if m.component == "operator"}
    # Every metric the sources mention in a doc comment is one the parser found.
    for component, path in METRICS_RS.items():
        documented = set(re.findall(r"`(switchboard_[a-z0-9_]+)", path.read_text().split("#[cfg(test)]")[0]))
        # (Per file: `switchboard_build_info` is in both, and the catalogue keeps one entry per name.)
        assert documented <= set(parse_metrics_rs(path, component)), component
    assert len(gateway) >= 20 and len(operator) >= 10
    # Spot checks of every constructor shape the two files use.
    assert cat["switchboard_handshake_refusals_total"].labels == ("route", "reason")  # counter_vec()
    assert cat["switchboard_connections_active"].labels == ("route",)  # IntGaugeVec::new(Opts)
    assert cat["switchboard_backends"].labels == ("service", "state")
    assert cat["switchboard_closes_total"].labels == ("route", "code", "cause")
    assert cat["switchboard_bus_up"].labels == ()  # IntGauge in a block
    assert cat["switchboard_room_deliveries_total"].labels == ()
    assert cat["switchboard_operator_reconcile_errors_total"].labels == ("reason",)  # `?` ends it
    assert cat["switchboard_operator_gateways"].labels == ("state",)
    assert cat["switchboard_operator_reconciles_total"].labels == ()
    assert cat["switchboard_operator_reconcile_duration_seconds"].kind == "histogram"
    assert {m.kind for n, m in cat.items() if n != "switchboard_operator_reconcile_duration_seconds"} == {"scalar"}
    assert "switchboard_operator_reconcile_duration_seconds_bucket" in series()


def test_the_promql_checker_finds_unknown_metrics_labels_and_values():
    # The checks below are only worth something if they can fail.
    cases = {
        "rate(switchboard_no_such_total[5m])": "not a metric",
        'switchboard_bus_up{route="x"}': "no label 'route'",
        "sum by (reason) (rate(switchboard_config_reloads_total[5m]))": "not labels of",
        'switchboard_config_reloads_total{result="maybe"}': "occurs nowhere",
        'switchboard_closes_total{cause=~"client.*"}': "not a plain list",
        "sum by (route) (switchboard_connections_active) / on (reason) sum by (route) (switchboard_connections_active)": "on/ignoring",
        "sum by (route (switchboard_connections_active)": "does not parse",
        '{__name__="switchboard_bus_up"}': "without a metric name",
    }
    for expr, expected in cases.items():
        problems, _ = check_promql(expr)
        assert any(expected in p for p in problems), (expr, problems)
    ok, labels = check_promql(
        'sum by (namespace, route) (rate(switchboard_handshake_refusals_total{reason="pod_cap"}[5m]))'
    )
    assert ok == [] and labels == {"namespace", "route"}
    ok, labels = check_promql(
        "histogram_quantile(0.99, sum by (le, pod) (rate(switchboard_operator_reconcile_duration_seconds_bucket[5m])))"
    )
    assert ok == [] and labels == {"pod"}


def test_the_dashboard_is_valid_grafana_json_with_a_recent_schema_and_a_stable_uid():
    d = dashboard()
    assert DASHBOARD_FILE.read_text().endswith("}\n")
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["uid"] == "switchboard" and d["title"] == "Switchboard"
    assert d["id"] is None  # provisioned dashboards must not carry a database id
    assert "__inputs" not in d  # the datasource is a template variable, not an import input


def test_every_panel_has_a_title_and_the_datasource_variable():
    for p in panels():
        assert p.get("title", "").strip(), p.get("id")
        assert p.get("datasource") == {"type": "prometheus", "uid": DS_UID}, p["title"]
        for t in p.get("targets", []):
            assert t.get("datasource") == {"type": "prometheus", "uid": DS_UID}, p["title"]
        if p["type"] != "row":
            assert p.get("targets") and p.get("description"), p["title"]


def test_the_dashboard_panels_have_unique_ids_and_titles_and_do_not_overlap():
    ps = panels()
    assert len({p["id"] for p in ps}) == len(ps)
    assert len({p["title"] for p in ps}) == len(ps)
    cells = {}
    for p in ps:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    for p in ps:
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(set(refs)) == len(refs), p["title"]


def test_the_dashboard_has_the_datasource_namespace_and_route_variables():
    v = variables()
    assert set(v) == {"datasource", "namespace", "route"}
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    for name in ("namespace", "route"):
        assert v[name]["type"] == "query", name
        assert v[name]["datasource"] == {"type": "prometheus", "uid": DS_UID}, name
        assert v[name]["definition"] == v[name]["query"]["query"], name
        assert check_label_values_query(v[name]["definition"]) == [], name
        assert v[name]["definition"].endswith(f", {name})"), name
    # "All routes" must match the empty route of refusals before any route matched.
    assert v["route"]["includeAll"] and v["route"]["allValue"] == ".*"


@pytest.mark.parametrize("where,target", dashboard_queries(), ids=[w for w, _ in dashboard_queries()])
def test_every_dashboard_query_parses_and_uses_only_real_metrics_and_labels(where, target):
    problems, labels = check_promql(target["expr"])
    assert problems == []
    # Legends name labels the result has.
    legend = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target.get("legendFormat", "")))
    assert legend <= labels, f"legend {sorted(legend - labels)} not in the result labels {sorted(labels)}"
    # Gateway and operator queries follow the namespace variable.
    assert re.search(r'namespace=~"\$namespace"', target["expr"]), "no namespace=~\"$namespace\" matcher"


def test_every_metric_of_the_gateway_and_the_operator_is_on_the_dashboard():
    used = set().union(*(metrics_in(t["expr"]) for _, t in dashboard_queries()))
    assert sorted(set(catalogue()) - used) == []


def test_route_scoped_panels_follow_the_route_variable():
    for where, t in dashboard_queries():
        metrics = metrics_in(t["expr"])
        if any("route" in catalogue()[m].labels for m in metrics):
            assert 'route=~"$route"' in t["expr"], where


# --- the dashboard ConfigMap -----------------------------------------------------------------


def test_the_dashboard_configmap_carries_the_json_verbatim_with_the_sidecar_label():
    objs = objects("observability")
    cm = one(objs, "ConfigMap", f"{RELEASE}-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Switchboard"}
    assert cm["data"] == {"switchboard.json": DASHBOARD_FILE.read_text().rstrip("\n")}
    assert json.loads(cm["data"]["switchboard.json"]) == dashboard()


def test_the_dashboard_label_and_namespace_are_configurable():
    rendered = render(
        {"grafana": {"dashboards": {"enabled": True, "label": "grafana.example.com/dashboard", "labelValue": "yes"}}}
    )
    cm = one([yaml.safe_load(rendered["switchboard/templates/grafana-dashboard.yaml"])], "ConfigMap", f"{RELEASE}-dashboard")
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["grafana.example.com/dashboard"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"] and "annotations" not in cm["metadata"]


def test_the_dashboard_and_the_alerts_are_off_by_default():
    objs = objects("defaults")
    assert not [o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert not by_kind(objs, "PrometheusRule")
    values = chart().values
    assert values["grafana"]["dashboards"]["enabled"] is False
    assert values["prometheusRule"]["enabled"] is False


@pytest.mark.parametrize(
    "bad",
    [
        {"grafana": {"dashboard": {"enabled": True}}},
        {"grafana": {"dashboards": {"enable": True}}},
        {"prometheusRule": {"enable": True}},
        {"prometheusRule": {"alertLabels": {"severity": "info"}}},
        {"prometheusRule": {"runbookUrl": "docs/operations.md#alerts"}},
        {"grafana": {"dashboards": {"namespace": "Not_A_Namespace"}}},
        {"grafana": {"dashboards": {"labelValue": "not a label value"}}},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_a_wrong_observability_value_fails_schema_validation(bad):
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(bad)


# --- the PrometheusRule ----------------------------------------------------------------------


@lru_cache(maxsize=None)
def prometheus_rule() -> dict:
    rules = by_kind(objects("observability"), "PrometheusRule")
    assert len(rules) == 1
    return rules[0]


def alerts() -> list[dict]:
    return [r for g in prometheus_rule()["spec"]["groups"] for r in g["rules"]]


ALERT_NAMES = [a["alert"] for a in alerts()]


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_the_prometheus_rule_is_structurally_a_monitoring_coreos_com_v1_rule():
    r = prometheus_rule()
    assert r["apiVersion"] == "monitoring.coreos.com/v1" and r["kind"] == "PrometheusRule"
    assert r["metadata"]["namespace"] == NAMESPACE and r["metadata"]["name"] == RELEASE
    assert r["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(r) == {"apiVersion", "kind", "metadata", "spec"} and set(r["spec"]) == {"groups"}
    groups = r["spec"]["groups"]
    assert groups and len({g["name"] for g in groups}) == len(groups)
    for g in groups:
        assert set(g) == {"name", "rules"} and g["rules"], g["name"]
    assert len(set(ALERT_NAMES)) == len(ALERT_NAMES)
    for a in alerts():
        assert set(a) == {"alert", "expr", "for", "labels", "annotations"}, a["alert"]
        assert re.fullmatch(r"Switchboard[A-Z][A-Za-z]+", a["alert"])
        assert isinstance(a["expr"], str) and a["expr"].strip()
        assert pq.parse_duration(a["for"]).total_seconds() >= 60, a["alert"]
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        assert a["labels"]["team"] == "platform", "prometheusRule.alertLabels on every alert"
        assert set(a["annotations"]) == {"summary", "description", "runbook_url"}, a["alert"]
        assert all(isinstance(v, str) and v.strip() for v in a["annotations"].values())


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_every_alert_expression_parses_and_uses_only_real_metrics_and_labels(alert):
    a = next(x for x in alerts() if x["alert"] == alert)
    problems, labels = check_promql(a["expr"])
    assert problems == []
    # The annotations name only labels the alert's series carry.
    used = set()
    for text in a["annotations"].values():
        used |= set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used <= labels, f"annotations use {sorted(used - labels)}; the alert has {sorted(labels)}"
    # Every selector is limited to the release namespace.
    for vs in _selectors(pq.parse(a["expr"])):
        assert f'namespace="{NAMESPACE}"' in str(vs), f"{vs} is not limited to {NAMESPACE}"


def test_every_runbook_url_is_the_configured_url_plus_a_section_of_operations_md():
    anchors = github_anchors(OPERATIONS_MD.read_text())
    base = "https://git.example.com/platform/switchboard/blob/main/docs/operations.md"
    for a in alerts():
        url, _, anchor = a["annotations"]["runbook_url"].partition("#")
        assert url == base, a["alert"]
        assert anchor == a["alert"].lower(), a["alert"]
        assert anchor in anchors, f"docs/operations.md has no section #{anchor}"


def test_the_alerts_cover_the_real_problems_and_page_only_for_outages():
    by_metric = {a["alert"]: metrics_in(a["expr"]) for a in alerts()}
    covered = set().union(*by_metric.values())
    assert {
        "switchboard_operator_gateways",
        "switchboard_bus_up",
        "switchboard_handshake_refusals_total",
        "switchboard_kube_watch_errors_total",
        "switchboard_config_reloads_total",
        "switchboard_operator_reconcile_errors_total",
        "switchboard_jwks_fetches_total",
    } <= covered
    critical = {a["alert"] for a in alerts() if a["labels"]["severity"] == "critical"}
    assert critical == {"SwitchboardNoGatewayServing", "SwitchboardBusDown", "SwitchboardHandshakeRefusals"}
    # Refusal alerts are about the server's side, never the clients' (bad tokens, origins, caps).
    refusals = next(a for a in alerts() if a["alert"] == "SwitchboardHandshakeRefusals")["expr"]
    for client_side in ("origin", "token_missing", "token_invalid", "per_ip_cap", "per_user_cap", "draining"):
        assert f"|{client_side}" not in refusals and f'"{client_side}' not in refusals


def test_the_alerts_are_documented_in_operations_md_and_the_rule_in_helm_md():
    ops = OPERATIONS_MD.read_text()
    for name in ALERT_NAMES:
        assert f"### {name}" in ops, name
    helm_md = (ROOT / "docs" / "helm.md").read_text()
    assert "prometheusRule" in helm_md and "grafana.dashboards" in helm_md
