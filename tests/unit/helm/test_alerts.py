"""Kova's alerts: the chart's optional PrometheusRule (``prometheusRule.enabled``),
unit-tested with ``promtool test rules`` (Debian's promtool, cached by
hack/install-promtool.sh) on series shaped like the ones Kova exports --
the metric and label names of the operator's, the agent's and Placement's
metrics, with the ``job``/``instance``/``namespace``/``pod`` labels a
ServiceMonitor scrape adds.  Every alert fires in a case and stays quiet in
another, every metric it reads exists in a component's registry, and every
alert has its section in docs/runbooks.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.chart import REPO, by_kind, render

RUNBOOKS = REPO / "docs" / "runbooks.md"

OP_A = {"job": "kova-operator", "namespace": "kova-system",
        "pod": "kova-operator-5d8f7-a1", "instance": "10.0.0.11:9464"}
OP_B = {**OP_A, "pod": "kova-operator-5d8f7-b2", "instance": "10.0.0.12:9464"}
AGENT = {"job": "kova-agent", "namespace": "kova-system", "pod": "kova-agent-x7k2q",
         "instance": "10.0.1.21:9465"}
PLACEMENT = {"job": "kova-placement", "namespace": "kova-system",
             "pod": "kova-placement-6c9d-q4", "instance": "10.0.0.31:8778"}


def series(name: str, labels: dict, values: str) -> dict:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def fires(alert: str, at: str, labels: dict, summary: str) -> dict:
    """The alert fires at ``at`` with ``labels`` (besides alertname) and
    this summary."""
    return {"alert": alert, "at": at, "labels": labels, "summary": summary}


def quiet(alert: str, at: str) -> dict:
    return {"alert": alert, "at": at}


#: name -> (input series, expectations); the interval is one minute.
CASES: dict[str, tuple[list[dict], list[dict]]] = {
    "a host goes Down": ([
        series("kova_operator_hosts", {**OP_A, "state": "Down"}, "0 0 1x10"),
        series("kova_operator_hosts", {**OP_A, "state": "Up"}, "3 3 2x10"),
    ], [
        quiet("KovaHostDown", "1m"), quiet("KovaHostDown", "3m"),
        fires("KovaHostDown", "5m", {"severity": "warning"},
              "1 Kova host(s) Down: their agent's heartbeat Lease expired"),
    ]),
    "the leader replica stops leading": ([
        series("kova_operator_leader", OP_A, "1 1 1 0x12"),
        series("kova_operator_leader", OP_B, "0x15"),
    ], [
        quiet("KovaOperatorNoLeader", "6m"),
        fires("KovaOperatorNoLeader", "9m", {"severity": "critical"},
              "No active Kova operator: nothing is scheduled, rescheduled or evacuated"),
    ]),
    "no operator is scraped at all": ([
        series("kova_agent_domains", {**AGENT, "state": "Running"}, "1x10"),
    ], [
        fires("KovaOperatorNoLeader", "6m", {"severity": "critical"},
              "No active Kova operator: nothing is scheduled, rescheduled or evacuated"),
    ]),
    "Instances pending without a break": ([
        series("kova_operator_pending_instances", OP_A, "0 3x20"),
    ], [
        quiet("KovaInstancesPendingTooLong", "10m"),
        fires("KovaInstancesPendingTooLong", "17m", {"severity": "warning"},
              "3 Instance(s) waiting for a host, without a break, for 15m"),
    ]),
    "Instances pending with a break": ([
        series("kova_operator_pending_instances", OP_A, "0 3x8 0 3x12"),
    ], [
        quiet("KovaInstancesPendingTooLong", "17m"),
    ]),
    "half the builds fail, on one host": ([
        series("kova_operator_build_attempts_total", OP_A, "0+2x40"),
        series("kova_operator_build_failures_total", {**OP_A, "host": "node-a"}, "0+1x40"),
    ], [
        quiet("KovaBuildFailureRateHigh", "2m"), quiet("KovaHostBuildFailures", "2m"),
        fires("KovaBuildFailureRateHigh", "15m", {"severity": "warning"},
              "More than 0.25 of Kova's builds failed in the last 30 minutes"),
        fires("KovaHostBuildFailures", "15m", {"severity": "warning", "host": "node-a"},
              "Builds keep failing on host node-a"),
    ]),
    "few builds fail, all on one host": ([
        series("kova_operator_build_attempts_total", OP_A, "0+20x40"),
        series("kova_operator_build_failures_total", {**OP_A, "host": "node-b"}, "0+1x40"),
    ], [
        quiet("KovaBuildFailureRateHigh", "15m"),
        fires("KovaHostBuildFailures", "15m", {"severity": "warning", "host": "node-b"},
              "Builds keep failing on host node-b"),
    ]),
    "the audit finds orphans and missing claims (a standby holds stale figures)": ([
        series("kova_operator_leader", OP_A, "1x30"),
        series("kova_operator_leader", OP_B, "0x30"),
        series("kova_operator_audit_orphan_allocations", OP_A, "0 2x30"),
        series("kova_operator_audit_orphan_allocations", OP_B, "5x30"),
        series("kova_operator_audit_missing_allocations", OP_A, "0 1x30"),
        series("kova_operator_audit_missing_allocations", OP_B, "7x30"),
    ], [
        quiet("KovaAuditOrphanAllocations", "10m"),
        fires("KovaAuditOrphanAllocations", "17m", {"severity": "warning"},
              "2 Placement allocation(s) without an Instance"),
        fires("KovaAuditMissingAllocations", "17m", {"severity": "critical"},
              "1 scheduled Instance(s) without an allocation in Placement"),
    ]),
    "the audit finds nothing on the leader": ([
        series("kova_operator_leader", OP_A, "1x30"),
        series("kova_operator_leader", OP_B, "0x30"),
        series("kova_operator_audit_orphan_allocations", OP_A, "0x30"),
        series("kova_operator_audit_orphan_allocations", OP_B, "5x30"),
        series("kova_operator_audit_missing_allocations", OP_A, "0x30"),
    ], [
        quiet("KovaAuditOrphanAllocations", "20m"), quiet("KovaAuditMissingAllocations", "20m"),
    ]),
    "Placement answers 10% 5xx": ([
        series("placement_requests_total", {**PLACEMENT, "route": "/allocation_candidates",
                                            "method": "GET", "status": "200"}, "0+90x20"),
        series("placement_requests_total", {**PLACEMENT, "route": "/allocation_candidates",
                                            "method": "GET", "status": "500"}, "0+10x20"),
    ], [
        fires("KovaPlacementErrors", "8m", {"severity": "warning"},
              "10% of Placement's answers are 5xx"),
        quiet("KovaPlacementDatabaseUnavailable", "8m"),
    ]),
    "Placement answers 1% 5xx": ([
        series("placement_requests_total", {**PLACEMENT, "route": "/usages", "method": "GET",
                                            "status": "200"}, "0+99x20"),
        series("placement_requests_total", {**PLACEMENT, "route": "/usages", "method": "GET",
                                            "status": "502"}, "0+1x20"),
    ], [
        quiet("KovaPlacementErrors", "10m"),
    ]),
    "Placement without its database": ([
        series("placement_requests_total", {**PLACEMENT, "route": "/allocations/{uuid}",
                                            "method": "PUT", "status": "204"}, "0+10x3 30x10"),
        series("placement_requests_total", {**PLACEMENT, "route": "/allocations/{uuid}",
                                            "method": "PUT", "status": "503"}, "0 0 0 0+5x10"),
    ], [
        quiet("KovaPlacementDatabaseUnavailable", "2m"),
        fires("KovaPlacementDatabaseUnavailable", "8m", {"severity": "critical"},
              "Placement answers 503: its database (or the TokenReview API) is unavailable"),
    ]),
    "an agent's Lease renewals fail": ([
        series("kova_agent_lease_renewals_total", {**AGENT, "result": "ok"}, "0+6x5 30x10"),
        series("kova_agent_lease_renewals_total", {**AGENT, "result": "error"}, "0x5 0+6x10"),
    ], [
        quiet("KovaAgentLeaseRenewalsFailing", "4m"),
        fires("KovaAgentLeaseRenewalsFailing", "9m",
              {"severity": "warning", "namespace": AGENT["namespace"], "pod": AGENT["pod"],
               "instance": AGENT["instance"]},
              f"Compute agent {AGENT['pod']} fails to renew its heartbeat Lease"),
    ]),
}


# ------------------------------------------------------------ helpers
def promtool() -> str:
    proc = subprocess.run(["bash", str(REPO / "hack" / "install-promtool.sh")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def rule_objects(**values) -> list[dict]:
    return by_kind(render({"prometheusRule.enabled": True, **values}), "PrometheusRule")


def rules_by_alert(groups: list[dict]) -> dict[str, dict]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def promtool_tests(rules: dict[str, dict]) -> dict:
    """The promtool test file: one test group per case.  The expected
    summaries are the cases' own text; the other annotations are static
    strings of the rule."""
    tests = []
    for name, (inputs, expects) in CASES.items():
        alert_tests = []
        for e in expects:
            exp = []
            if "labels" in e:
                annotations = dict(rules[e["alert"]]["annotations"], summary=e["summary"])
                exp = [{"exp_labels": e["labels"], "exp_annotations": annotations}]
            alert_tests.append({"eval_time": e["at"], "alertname": e["alert"], "exp_alerts": exp})
        tests.append({"name": name, "interval": "1m", "input_series": inputs,
                      "alert_rule_test": alert_tests})
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}


# ------------------------------------------------------------ tests
def test_chart_renders_the_rule_only_when_enabled() -> None:
    assert not by_kind(render(), "PrometheusRule")
    (rule,) = rule_objects()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = rules_by_alert(rule["spec"]["groups"])
    assert set(alerts) == {e["alert"] for _, exps in CASES.values() for e in exps}
    (custom,) = rule_objects(**{"prometheusRule.pendingMinutes": 30,
                                "prometheusRule.runbookBaseUrl": "https://docs.example/rb.md",
                                "prometheusRule.labels.release": "prom"})
    pending = rules_by_alert(custom["spec"]["groups"])["KovaInstancesPendingTooLong"]
    assert pending["for"] == "30m"
    assert pending["annotations"]["runbook_url"] == (
        "https://docs.example/rb.md#kovainstancespendingtoolong")
    assert custom["metadata"]["labels"]["release"] == "prom"


def test_every_alert_with_promtool(tmp_path: Path) -> None:
    tool = promtool()
    (rule,) = rule_objects()
    rules = rules_by_alert(rule["spec"]["groups"])
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(promtool_tests(rules)))
    check = subprocess.run([tool, "check", "rules", "rules.yaml"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout, check.stdout
    test = subprocess.run([tool, "test", "rules", "tests.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    # each alert fires somewhere and is quiet somewhere
    for alert in rules:
        kinds = {"labels" in e for _, exps in CASES.values() for e in exps if e["alert"] == alert}
        assert kinds == {True, False}, alert


def exported_metrics() -> dict[str, set[str]]:
    """Every metric family Kova's components export -> its label names."""
    from prometheus_client import REGISTRY

    from kova.agents.metrics import AgentMetrics
    from kova.operator import metrics as _operator  # noqa: F401 - registers the families
    from kova.placement import metrics as placement

    out: dict[str, set[str]] = {}
    for registry in (REGISTRY, AgentMetrics().registry, placement.REGISTRY):
        for family in registry.collect():
            for sample in family.samples:
                out.setdefault(sample.name, set()).update(sample.labels)
        for name, collector in getattr(registry, "_names_to_collectors", {}).items():
            labels = set(getattr(collector, "_labelnames", ()))
            out.setdefault(name, set()).update(labels)
    return out


def test_alerts_read_metrics_kova_exports() -> None:
    exported = exported_metrics()
    (rule,) = rule_objects()
    scrape_labels = set(OP_A)
    for alert, r in rules_by_alert(rule["spec"]["groups"]).items():
        used = re.findall(r"\b((?:kova|placement)_[a-z_]+)(?:\{([^}]*)\})?", r["expr"])
        assert used, alert
        for name, selector in used:
            assert name in exported, f"{alert}: {name} is not a metric Kova exports"
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in exported[name] | scrape_labels, f"{alert}: {name}{{{label}}}"
        for label in re.findall(r"by \(([^)]*)\)", r["expr"]):
            for one in label.split(","):
                one = one.strip()
                assert one in scrape_labels or any(
                    one in exported[n] for n, _ in used), f"{alert}: by ({one})"


def test_every_alert_has_a_runbook_section() -> None:
    text = RUNBOOKS.read_text()
    headings = {h.strip().lower() for h in re.findall(r"^## (.+)$", text, re.M)}
    (rule,) = rule_objects()
    for alert, r in rules_by_alert(rule["spec"]["groups"]).items():
        assert alert.lower() in headings, f"docs/runbooks.md has no section '## {alert}'"
        assert r["annotations"]["runbook"] == f"docs/runbooks.md#{alert.lower()}"


@pytest.mark.parametrize("alert", ["KovaHostDown"])
def test_promtool_catches_a_wrong_expectation(tmp_path: Path, alert: str) -> None:
    """The harness can fail: a case expecting the alert while it is quiet
    makes promtool fail."""
    tool = promtool()
    (rule,) = rule_objects()
    rules = rules_by_alert(rule["spec"]["groups"])
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    wrong = promtool_tests(rules)
    case = wrong["tests"][0]
    case["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "warning"}}]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({**wrong, "tests": [case]}))
    test = subprocess.run([tool, "test", "rules", "tests.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert test.returncode != 0 and alert in test.stdout + test.stderr
