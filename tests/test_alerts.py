"""The Prometheus alert rules: valid, unit-tested by promtool, and built on real metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.exported_metrics import exported_metric_names, metrics_in

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "ops" / "alerts.yml"
RULE_TESTS = REPO / "ops" / "alerts_test.yml"
PROMTOOL = "promtool"


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_rule_tests_pass() -> None:
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    # The control for the test above: promtool fails when an expectation is off.
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    wrong = RULE_TESTS.read_text().replace("for 17m 0s;", "for 16m 0s;")
    assert wrong != RULE_TESTS.read_text()
    (tmp_path / "alerts_test.yml").write_text(wrong)
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "alerts_test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "EdgeGatewayUplinkDown" in result.stdout + result.stderr


def test_every_alert_fires_in_a_test_and_is_documented() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    names = {str(rule["alert"]) for rule in _alerts()}
    assert names == fired
    operations = (REPO / "docs" / "operations.md").read_text()
    assert {n for n in names if n not in operations} == set()
    assert all({"summary", "description"} <= set(rule["annotations"]) for rule in _alerts())  # type: ignore[call-overload]


async def test_alerts_use_only_metrics_the_gateway_exports(tmp_path: Path) -> None:
    exported = await exported_metric_names(tmp_path)
    used: set[str] = set()
    for rule in _alerts():
        used |= metrics_in(str(rule["expr"]))
    assert used, "no metric found in the rules"
    assert used - exported == set()
