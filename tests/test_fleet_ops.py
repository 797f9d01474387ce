"""What watches a fleet: its alert rules, its Grafana dashboard and the Prometheus
configuration they come with, checked by promtool and against the metrics the
gateway really exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.exported_metrics import exported_metric_names, metrics_in

REPO = Path(__file__).resolve().parent.parent
OPS = REPO / "ops"
RULES = OPS / "fleet_alerts.yml"
RULE_TESTS = OPS / "fleet_alerts_test.yml"
DASHBOARD = OPS / "grafana" / "edge-gateway-fleet.json"
PROMETHEUS = OPS / "prometheus-fleet.yml"
# Grafana's variables, as Prometheus would see them once Grafana filled them in.
GRAFANA_VARIABLES = {"$instance": ".*", "$__rate_interval": "5m"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_fleet_rules_pass_promtool_and_their_tests() -> None:
    check = _promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in check.stdout
    test = _promtool("test", "rules", str(RULE_TESTS))
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_fleet_alert_fires_in_a_test_and_is_documented() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c.get("exp_alerts")}
    names = {str(rule["alert"]) for rule in _alerts()}
    assert names == fired
    fleet_doc = (REPO / "docs" / "fleet.md").read_text()
    assert {n for n in names if n not in fleet_doc} == set()


def test_the_prometheus_configuration_is_valid_with_both_rule_files() -> None:
    result = _promtool("check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_dashboard_is_grafana_json_with_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "edge-gateway-fleet"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["targets"] and p["title"] for p in panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    used = set(re.findall(r"\$\{?(\w+)", DASHBOARD.read_text())) - {"__rate_interval"}
    assert used <= variables


def test_dashboard_queries_parse_and_read_only_exported_metrics(tmp_path: Path) -> None:
    exprs = _dashboard_exprs()
    # promtool parses each query as the expression of a recording rule.
    rules = []
    for k, expr in enumerate(exprs):
        filled = expr
        for variable, value in GRAFANA_VARIABLES.items():
            filled = filled.replace(variable, value)
        rules.append({"record": f"dashboard:query_{k}", "expr": filled})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = _promtool("check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr


async def test_rules_and_dashboard_read_only_metrics_the_gateway_exports(tmp_path: Path) -> None:
    exported = await exported_metric_names(tmp_path)
    used = set().union(*(metrics_in(e) for e in _dashboard_exprs()))
    used |= set().union(*(metrics_in(str(rule["expr"])) for rule in _alerts()))
    assert len(used) > 10
    assert used - exported == set()
