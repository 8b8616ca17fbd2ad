"""What the service dashboard must show (issue 8, defect 7), checked against the alert rules it
mirrors. tests/live additionally runs every Prometheus query of the dashboards against the real
Prometheus of a running stack and requires data from each."""

import json
import re

import pytest
import yaml

from tests.conftest import DASHBOARDS, ROOT

ALERTS = ROOT / "configs" / "prometheus" / "alerts.yml"
# Requests that are not users': Prometheus scrapes and healthcheck probes.
NOT_USER_PATHS = ("/metrics", "/healthz", "/readyz")


@pytest.fixture(scope="module")
def panels():
    return {p["title"]: p for p in json.loads((DASHBOARDS / "service.json").read_text())["panels"]}


def exprs(panel) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def thresholds(panel) -> set[float]:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    return {s["value"] for s in steps if s["value"] is not None}


def alert_threshold(name: str) -> float:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return float(re.search(r">\s*([0-9.]+)\s*$", rule["expr"].strip()).group(1))
    raise AssertionError(f"no alert {name}")


def excludes_probe_traffic(expr: str) -> bool:
    matcher = re.search(r'path!~"([^"]+)"', expr)
    return bool(matcher) and all(re.fullmatch(matcher.group(1), p) for p in NOT_USER_PATHS)


def test_error_ratio_is_zero_not_no_data_without_5xx(panels):
    (expr,) = exprs(panels["5xx error ratio"])
    assert expr.rstrip().endswith("or vector(0)"), expr
    assert re.search(r'status=~"5\.\."}\S*\)\) or vector\(0\)\)', expr), "the 5xx sum alone must default to 0"


def test_user_traffic_panels_leave_out_scrapes_and_probes(panels):
    for title in ("Request rate by route and status", "5xx error ratio", "Latency p50 / p95 / p99"):
        for expr in exprs(panels[title]):
            assert excludes_probe_traffic(expr), (title, expr)


def test_in_flight_does_not_count_the_scrape_reading_it(panels):
    (expr,) = exprs(panels["Requests in flight"])
    assert re.search(r"- count\(http_requests_in_flight\{[^}]*\}\)", expr), expr


def test_visit_rate_has_a_rate_unit(panels):
    unit = panels["Visit rate"]["fieldConfig"]["defaults"]["unit"]
    assert unit != "short" and "/s" in unit or unit.endswith("ps"), unit


@pytest.mark.parametrize(
    ("alert", "titles"),
    [
        ("HighErrorRatio", ["5xx error ratio"]),
        ("HighLatencyP99", ["Latency p50 / p95 / p99", "Latency p99 by route"]),
        ("MemoryNearLimit", ["Memory against the declared limit"]),
    ],
)
def test_panel_thresholds_are_the_alert_thresholds(panels, alert, titles):
    for title in titles:
        assert thresholds(panels[title]) == {alert_threshold(alert)}, title


def test_alerts_and_panels_leave_out_the_same_traffic():
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in ("HighErrorRatio", "HighLatencyP99"):
                assert excludes_probe_traffic(rule["expr"]), rule["alert"]


@pytest.mark.parametrize(
    "what",
    [
        r"rate\(process_cpu_seconds_total",
        r"process_resident_memory_bytes.*/ on \(job\) warpwatch:memory_limit_bytes",
        r"process_start_time_seconds",
        r"process_open_fds",
        r"process_max_fds",
        r"warpwatch_ready",
        r"warpwatch_visits_flush_failures_total",
        r"warpwatch_build_info",
        r"sum by \(path, le\)",
        r'level="error"',
        r'level="warn"',
    ],
)
def test_what_an_sre_looks_for_first_is_on_the_service_dashboard(panels, what):
    assert any(re.search(what, e) for p in panels.values() for e in exprs(p)), what


def test_log_levels_offered_are_the_ones_the_shipper_writes():
    dashboard = json.loads((DASHBOARDS / "logs.json").read_text())
    (level,) = [v for v in dashboard["templating"]["list"] if v["name"] == "level"]
    assert level["query"].split(",") == ["error", "warn", "info", "debug", "trace"]


def test_warpwatch_log_lines_show_zero_not_no_data(panels):
    # Issue 19, item 9: a healthy service writes no error or warn line, and the panel said "No data".
    panel = panels["Error and warning log lines"]
    legends = {t["legendFormat"] for t in panel["targets"]}
    assert legends == {"error", "warn"}
    for expr in exprs(panel):
        assert expr.rstrip().endswith(") or vector(0)"), expr
    assert panel["fieldConfig"]["defaults"]["noValue"] == "0"


def test_a_connections_row_shows_open_against_cap_evictions_and_errors_by_kind(panels):
    # Issue 19, item 9: what the service knows about bad clients was on no dashboard.
    row = panels["Connections"]
    assert row["type"] == "row" and not row["collapsed"]
    below = [p for p in panels.values() if p["type"] != "row" and p["gridPos"]["y"] > row["gridPos"]["y"]]
    queries = [e for p in below for e in exprs(p)]
    for what in (
        r"^max\(warpwatch_connections_open\{",
        r"^max\(warpwatch_connections_max\{",
        r"^sum\(rate\(warpwatch_connections_evicted_total\{[^}]*\}\[\$__rate_interval\]\)\)$",
        r"^sum by \(kind\) \(rate\(warpwatch_connection_errors_total\{[^}]*\}\[\$__rate_interval\]\)\)$",
    ):
        assert any(re.search(what, e) for e in queries), what
    (open_vs_cap,) = [p for p in below if "warpwatch_connections_open" in " ".join(exprs(p))]
    assert any("warpwatch_connections_max" in e for e in exprs(open_vs_cap)), "open and cap on one panel"


# Issue 17: what an SRE opens first about the machine, one panel each, all from the node exporter.
HOST_PANELS = {
    "CPU busy": [r'node_cpu_seconds_total\{job="node-exporter", host=~"\$host", mode="idle"\}'],
    "Memory": [r"node_memory_MemAvailable_bytes", r"node_memory_MemTotal_bytes"],
    "Load average": [r"node_load1\{", r"node_load5\{", r"node_load15\{"],
    "Disk space available": [r"node_filesystem_avail_bytes"],
    "Disk I/O": [r"node_disk_read_bytes_total", r"node_disk_written_bytes_total"],
    "Network": [r"node_network_receive_bytes_total", r"node_network_transmit_bytes_total"],
    "Filesystem fill, now and predicted in 4 hours": [r"predict_linear\(node_filesystem_avail_bytes"],
}


def test_host_dashboard_shows_cpu_memory_load_disks_network_and_fill():
    dashboard = json.loads((DASHBOARDS / "host.json").read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    assert set(panels) == set(HOST_PANELS)
    for title, needed in HOST_PANELS.items():
        for what in needed:
            assert any(re.search(what, e) for e in exprs(panels[title])), (title, what)
        for expr in exprs(panels[title]):
            assert 'job="node-exporter"' in expr, (title, expr)


def test_host_dashboard_thresholds_are_the_alert_thresholds():
    panels = {p["title"]: p for p in json.loads((DASHBOARDS / "host.json").read_text())["panels"]}
    assert thresholds(panels["CPU busy"]) == {alert_threshold("HostCpuSaturated")}
