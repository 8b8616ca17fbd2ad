"""End to end: the built warpwatch and Debian's real Prometheus, configured by the host-addressed
rendering (ports and intervals overridden for the test), observed through Prometheus' HTTP API."""

import json
import os
import subprocess
import time
import urllib.parse

import pytest

from tests import spec
from tests.conftest import dashboard_queries, free_port, http_get, require_tool, stop_process, wait_for
from tests.stack.helpers import REQUIRED_ALERTS, write_prometheus_host_config


def query(base, promql):
    _, body = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]["result"]


@pytest.fixture(scope="module")
def running_stack(warpwatch_bin, tmp_path_factory):
    prometheus_bin = require_tool("prometheus")
    tmp_path = tmp_path_factory.mktemp("e2e")
    ports = {name: free_port() for name in ("warpwatch", "prometheus", "loki")}
    overrides = (
        "{ prometheus.scrapeIntervalSeconds = 1; prometheus.evaluationIntervalSeconds = 1; "
        + " ".join(f"services.{name}.port = {port};" for name, port in ports.items())
        + " }"
    )
    config = write_prometheus_host_config(tmp_path, overrides)

    (tmp_path / "data").mkdir()
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("warpwatch", "prometheus")}
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [str(warpwatch_bin), "--addr", f"127.0.0.1:{ports['warpwatch']}", "--data-dir", str(tmp_path / "data")],
                stdout=logs["warpwatch"],
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": "info"},
            )
        )
        processes.append(
            subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                ],
                stdout=logs["prometheus"],
                stderr=subprocess.STDOUT,
            )
        )
        warpwatch = f"http://127.0.0.1:{ports['warpwatch']}"
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        wait_for("warpwatch /healthz", lambda: http_get(f"{warpwatch}/healthz")[0] == 200, processes=processes)
        wait_for("prometheus /-/ready", lambda: http_get(f"{prometheus}/-/ready")[0] == 200, processes=processes)
        yield warpwatch, prometheus, processes
    finally:
        for proc in processes:
            stop_process(proc)
        for log in logs.values():
            log.close()


def test_prometheus_scrapes_warpwatch_with_the_rendered_config(running_stack):
    warpwatch, prometheus, processes = running_stack

    def warpwatch_up():
        result = query(prometheus, 'up{job="warpwatch"}')
        return result and result[0]["value"][1] == "1"

    wait_for('up{job="warpwatch"} == 1', warpwatch_up, processes=processes)

    served = 'sum(http_requests_total{job="warpwatch", path!="/metrics"}) or vector(0)'

    def total():
        return float(query(prometheus, served)[0]["value"][1])

    before = total()
    sent = 25
    for _ in range(sent):
        assert http_get(f"{warpwatch}/")[0] == 200
    wait_for(f"http_requests_total to grow by {sent}", lambda: total() >= before + sent, processes=processes)


def test_prometheus_loads_and_evaluates_the_rules(running_stack):
    _, prometheus, processes = running_stack
    _, body = http_get(f"{prometheus}/api/v1/rules")
    groups = json.loads(body)["data"]["groups"]
    rules = {rule["name"] for group in groups for rule in group["rules"]}
    assert REQUIRED_ALERTS <= rules
    assert "warpwatch:memory_limit_bytes" in rules

    def recorded_limit():
        result = query(prometheus, 'warpwatch:memory_limit_bytes{job="warpwatch"}')
        return result and float(result[0]["value"][1])

    limit = wait_for("the recorded memory limit", recorded_limit, processes=processes)
    assert limit == spec.MEMORY_MIB["warpwatch"] * spec.MIB

    # Nothing listens on the overridden Loki port, so its TargetDown alert goes pending.
    def loki_target_down():
        _, alerts = http_get(f"{prometheus}/api/v1/alerts")
        return [
            a
            for a in json.loads(alerts)["data"]["alerts"]
            if a["labels"]["alertname"] == "TargetDown" and a["labels"]["job"] == "loki"
        ]

    (alert,) = wait_for("TargetDown for loki", loki_target_down, processes=processes)
    assert alert["state"] in ("pending", "firing")


def test_every_service_dashboard_query_has_data(running_stack):
    # The connections row (issue 19) included; tests/live runs every dashboard against the stack.
    _, prometheus, _ = running_stack

    def missing():
        return [title for title, expr in dashboard_queries("service.json") if not query(prometheus, expr)] or None

    # rate() needs two scrapes inside its one-minute window; scrapes are a second apart here.
    end = time.monotonic() + 30
    while (empty := missing()) and time.monotonic() < end:
        time.sleep(1)
    assert not empty, f"panels without data: {empty}"
    assert any("warpwatch_connection_errors_total" in e for _, e in dashboard_queries("service.json"))
