"""Prometheus renderings and alert rules, checked by the real promtool."""

import json
import subprocess

import pytest
import yaml

from tests import spec
from tests.conftest import ROOT, dashboard_targets, nix_eval, require_tool, substitute
from tests.stack.helpers import (
    REQUIRED_ALERTS,
    STATIC_ALERTS,
    render_compose,
    render_yaml,
    stack_expr,
    write_prometheus_host_config,
)

ALERTS = ROOT / "configs" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "configs" / "prometheus" / "alerts.test.yml"
JOBS = set(spec.SERVICES)


def run_promtool(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def promtool(*args, cwd=None) -> str:
    """promtool's output; the test fails if promtool does."""
    proc = run_promtool(*args, cwd=cwd)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_host_rendering_passes_promtool_and_scrapes_loopback(tmp_path):
    config = write_prometheus_host_config(tmp_path)
    promtool("check", "config", str(config))
    rendered = yaml.safe_load(config.read_text())
    scrape = rendered["scrape_configs"]
    assert {c["job_name"] for c in scrape} == JOBS
    for job in scrape:
        assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{spec.PORTS[job['job_name']]}"]
        assert job["relabel_configs"] == [{"target_label": "service", "replacement": job["job_name"]}]
    assert rendered["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{spec.PORTS['alertmanager']}"]}]}]
    }


def test_compose_rendering_passes_promtool_and_scrapes_service_names(tmp_path):
    out = tmp_path / "project"
    files = render_compose(out)
    config = yaml.safe_load(files["prometheus/prometheus.yml"])
    scrape = config["scrape_configs"]
    assert {c["job_name"] for c in scrape} == JOBS
    for job in scrape:
        assert job["static_configs"][0]["targets"] == [f"{job['job_name']}:{spec.PORTS[job['job_name']]}"]
        # Issue 17: every series carries the `service` the alert routes group and inhibit by.
        assert job["relabel_configs"] == [{"target_label": "service", "replacement": job["job_name"]}]
    assert config["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": [f"alertmanager:{spec.PORTS['alertmanager']}"]}]}]
    }
    # The container sees ./prometheus at /etc/prometheus: check the file with that mount applied.
    mount = "/etc/prometheus/"
    assert all(f.startswith(mount) for f in config["rule_files"])
    config["rule_files"] = [str(out / "prometheus" / f[len(mount) :]) for f in config["rule_files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    promtool("check", "config", str(checked))


def test_alloy_job_replaces_promtail(tmp_path):
    config = yaml.safe_load(render_yaml("prometheus", "host", '{ logShipper = "alloy"; }'))
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert set(jobs) == JOBS - {"promtail"} | {"alloy"}
    assert jobs["alloy"]["static_configs"][0]["targets"] == [f"127.0.0.1:{spec.PORTS['alloy']}"]


def test_static_alerts_check_and_unit_tests_pass():
    promtool("check", "rules", str(ALERTS))
    out = promtool("test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in out
    # Every alert has a firing and a quiet case in the unit tests.
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    alerts = [r["alert"] for r in rules]
    assert set(alerts) == STATIC_ALERTS
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    for alert in alerts:
        cases = [c for t in tests for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in cases), f"{alert} never shown firing"
        assert any(not c["exp_alerts"] for c in cases), f"{alert} never shown quiet"


def rendered_alert_rules(overrides: str = "{ }") -> list[dict]:
    text = nix_eval(stack_expr("s.configs.rules", overrides))
    return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_carries_a_known_severity():
    # Issue 17: the routes send "page" and "ticket" to their receivers; any other value would
    # fall through to the default receiver unnoticed.
    rules = rendered_alert_rules()
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in spec.SEVERITIES, rule["alert"]


def target_down_test(tmp_path, overrides: str, cases: list[dict], series: list[dict]) -> subprocess.CompletedProcess:
    """promtool test rules on the rendered rules file (recording + TargetDown + static alerts)."""
    (tmp_path / "rules.yml").write_text(nix_eval(stack_expr("s.configs.rules", overrides)))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "alert_rule_test": cases}],
    }
    (tmp_path / "test.yml").write_text(json.dumps(test))
    return run_promtool("test", "rules", "test.yml", cwd=tmp_path)


def target_down(service: str, port: int, description_for: str) -> dict:
    return {
        "exp_labels": {"severity": "page", "job": service, "service": service, "instance": f"{service}:{port}"},
        "exp_annotations": {
            "summary": f"Target {service}:{port} of {service} is down",
            "description": f"Prometheus has failed to scrape {service} for {description_for}.",
        },
    }


# up as the compose scrape jobs label it: a down warpwatch, a healthy Grafana, a host whose node
# exporter stopped answering.
TARGET_SERIES = [
    {"series": f'up{{job="warpwatch", service="warpwatch", instance="warpwatch:{spec.PORTS["warpwatch"]}"}}', "values": "0x20"},
    {"series": f'up{{job="grafana", service="grafana", instance="grafana:{spec.PORTS["grafana"]}"}}', "values": "1x20"},
    {
        "series": f'up{{job="node-exporter", service="node-exporter", instance="node-exporter:{spec.PORTS["node-exporter"]}"}}',
        "values": "1x3 0x17",
    },
]


def test_target_down_fires_after_its_declared_for_and_covers_the_host(tmp_path):
    """TargetDown (declared `for`: 2 minutes) fires for the down service and, once its exporter has
    been silent as long, for the host; never for the healthy Grafana."""
    proc = target_down_test(
        tmp_path,
        "{ }",
        [
            {"eval_time": "1m45s", "alertname": "TargetDown", "exp_alerts": []},
            {"eval_time": "2m", "alertname": "TargetDown", "exp_alerts": [target_down("warpwatch", spec.PORTS["warpwatch"], "2m")]},
            {
                "eval_time": "3m",
                "alertname": "TargetDown",
                "exp_alerts": [
                    target_down("warpwatch", spec.PORTS["warpwatch"], "2m"),
                    target_down("node-exporter", spec.PORTS["node-exporter"], "2m"),
                ],
            },
        ],
        TARGET_SERIES,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_target_down_for_is_overridden_through_the_declaration(tmp_path):
    proc = target_down_test(
        tmp_path,
        "{ alerts.targetDownForSeconds = 30; }",
        [
            {"eval_time": "15s", "alertname": "TargetDown", "exp_alerts": []},
            {"eval_time": "30s", "alertname": "TargetDown", "exp_alerts": [target_down("warpwatch", spec.PORTS["warpwatch"], "30s")]},
        ],
        TARGET_SERIES,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_target_down_names_the_host_of_an_agents_target(tmp_path):
    """Issue 18: every agent's warpwatch is 127.0.0.1:8080 on its own host; the summary says
    which host, from the `host` its collector adds."""
    down = target_down("warpwatch", spec.PORTS["warpwatch"], "2m")
    down["exp_labels"] |= {"instance": f"127.0.0.1:{spec.PORTS['warpwatch']}", "host": "app1"}
    down["exp_annotations"]["summary"] = f"Target 127.0.0.1:{spec.PORTS['warpwatch']} of warpwatch on app1 is down"
    series = [
        {"series": f'up{{job="warpwatch", service="warpwatch", instance="127.0.0.1:{spec.PORTS["warpwatch"]}", host="{host}"}}', "values": values}
        for host, values in (("app1", "0x20"), ("app2", "1x20"))
    ]
    proc = target_down_test(tmp_path, "{ }", [{"eval_time": "3m", "alertname": "TargetDown", "exp_alerts": [down]}], series)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_target_down_case_can_fail(tmp_path):
    """The cases above can fail: the default `for` of 2 minutes has not passed at 30 s."""
    proc = target_down_test(
        tmp_path,
        "{ }",
        [{"eval_time": "30s", "alertname": "TargetDown", "exp_alerts": [target_down("warpwatch", spec.PORTS["warpwatch"], "2m")]}],
        TARGET_SERIES,
    )
    assert proc.returncode != 0 and "TargetDown" in proc.stdout + proc.stderr


def test_rendered_rules_record_the_declared_limits(tmp_path):
    rules_text = nix_eval(stack_expr("s.configs.rules"))
    path = tmp_path / "rules.yml"
    path.write_text(rules_text)
    promtool("check", "rules", str(path))
    records = {
        r["labels"]["job"]: r["expr"]
        for g in yaml.safe_load(rules_text)["groups"]
        for r in g["rules"]
        if r.get("record") == "warpwatch:memory_limit_bytes"
    }
    assert records == {job: f"vector({mib * spec.MIB})" for job, mib in spec.MEMORY_MIB.items()}


def test_memory_alert_fires_from_the_recorded_limit(tmp_path):
    """The deployed rules file alone (recording + alerts) fires MemoryNearLimit at 95% of the
    declared Loki limit and stays quiet for Grafana at 20% of its limit."""
    (tmp_path / "rules.yml").write_text(nix_eval(stack_expr("s.configs.rules")))
    limit = spec.MEMORY_MIB["loki"] * spec.MIB
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'process_resident_memory_bytes{job="loki", service="loki", instance="loki:3100"}',
                        "values": f"{int(limit * 0.95)}x10",
                    },
                    {
                        "series": 'process_resident_memory_bytes{job="grafana", service="grafana", instance="grafana:3000"}',
                        "values": f"{int(limit * 0.2)}x10",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "7m",
                        "alertname": "MemoryNearLimit",
                        "exp_alerts": [
                            {
                                "exp_labels": {"job": "loki", "service": "loki", "severity": "ticket"},
                                "exp_annotations": {
                                    "summary": "loki uses more than 90% of its declared memory limit",
                                    "description": "Resident memory is 95% of the limit in nix/stack/declaration.nix.",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(json.dumps(test))
    promtool("test", "rules", "test.yml", cwd=tmp_path)


def test_every_dashboard_promql_expression_parses(tmp_path):
    queries = list(dashboard_targets("prometheus"))
    assert len(queries) >= 10
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(expr)} for i, (_, _, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    promtool("check", "rules", str(path))


def test_promtool_rejects_a_broken_dashboard_query(tmp_path):
    """The check above can fail: an unbalanced expression is refused."""
    path = tmp_path / "bad.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "x:y", "expr": "sum(rate(up[1m])"}]}]}))
    proc = run_promtool("check", "rules", str(path))
    assert proc.returncode != 0, proc.stdout


@pytest.mark.parametrize("name", ["service.json", "stack.json"])
def test_dashboards_cover_the_required_metrics(name):
    exprs = " ".join(e for f, _, e in dashboard_targets("prometheus") if f == name)
    needed = {
        "service.json": ["http_requests_total", "histogram_quantile(0.99", "histogram_quantile(0.5",
                         "histogram_quantile(0.95", "http_requests_in_flight", "warpwatch_visits_total", '5..'],
        "stack.json": ["up", "warpwatch:memory_limit_bytes", "process_resident_memory_bytes", "scrape_duration_seconds"],
    }[name]
    for metric in needed:
        assert metric in exprs, f"{name} lacks {metric}"
