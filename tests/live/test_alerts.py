"""Alerts that reach a person (issue 17), on the private Docker engine: real warpwatch, Prometheus,
Alertmanager and node exporter (Debian's binaries in images laid out by nix/stack/image-specs.nix),
started by the stack app like test_live_compose.py's stack.

The test's own webhook receiver is a container on the project's internal network: Debian's static
busybox serving a CGI that stores every notification body as a file in a directory of this test
(or answers 503 while a `refuse` file exists there). It is reached as http://hook:8000, like any
receiver a user would run next to the stack; nothing leaves the project's networks.

The declaration is overridden to keep the test short: `for` of TargetDown, the scrape and
evaluation intervals and Alertmanager's group timers. Tests run in file order."""

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests import spec
from tests.conftest import dashboard_queries, http_get, wait_for
from tests.dockerd import busybox_image
from tests.live.helpers import running_stack, volume_dir
from tests.webhook import CGI_PATH, Notifications, cgi

FOR_S = 15
INTERVAL_S = 5
GROUP_WAIT_S = 5
GROUP_INTERVAL_S = 10
HOOK_PORT = 8000
# The bound for the firing notification: for + evaluation interval + group_wait + 15 s.
DELIVERY_BOUND_S = FOR_S + INTERVAL_S + GROUP_WAIT_S + 15

OVERRIDES = (
    f"prometheus.scrapeIntervalSeconds = {INTERVAL_S}; prometheus.evaluationIntervalSeconds = {INTERVAL_S}; "
    f'alerts.receivers.test.webhook.url = "http://hook:{HOOK_PORT}{CGI_PATH}"; '
    f"alerts.targetDownForSeconds = {FOR_S}; alerts.groupWaitSeconds = {GROUP_WAIT_S}; "
    f"alerts.groupIntervalSeconds = {GROUP_INTERVAL_S};"
)

class Hook(Notifications):
    """The receiver's data directory, shared with its container."""

    def __init__(self, data: Path):
        self.data = data
        super().__init__(Notifications.in_directory(data).read)

    def refuse(self, on: bool):
        flag = self.data / "refuse"
        if on:
            flag.write_text("")
        else:
            flag.unlink()


@pytest.fixture(scope="module")
def alert_stack(dockerd, warpwatch_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alerts")
    with running_stack(dockerd, warpwatch_bin, tmp, OVERRIDES) as stack:
        www = tmp / "www" / "cgi-bin"
        www.mkdir(parents=True)
        (www / "hook").write_text(cgi("/data"))
        (www / "hook").chmod(0o755)
        data = tmp / "hook-data"
        data.mkdir()
        data.chmod(0o777)
        dockerd.run(
            [
                "run", "-d", "--name", f"{stack.project}-test-hook",
                "--network", f"{stack.project}_internal", "--network-alias", "hook",
                "--user", "65534:65534", "--read-only", "--cap-drop", "ALL",
                "-v", f"{tmp / 'www'}:/www:ro", "-v", f"{data}:/data",
                busybox_image(dockerd), "busybox", "httpd", "-f", "-p", str(HOOK_PORT), "-h", "/www",
            ]
        )  # fmt: skip
        stack.hook = Hook(data)
        try:
            yield stack
        finally:
            dockerd.run(["rm", "-f", f"{stack.project}-test-hook"], check=False)


def alertmanager_metric(stack, name: str, labels: str = "") -> float:
    """A counter read from Alertmanager's own /metrics (summed over matching lines)."""
    _, text = http_get(stack.url("alertmanager", "/metrics"))
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_receiver_is_declared_so_the_app_does_not_warn(alert_stack):
    assert "No alert receiver is declared" not in alert_stack.first_up.stdout + alert_stack.first_up.stderr


def test_alertmanager_and_node_exporter_are_scraped_and_prometheus_sends_to_alertmanager(alert_stack):
    def up():
        results = {r["metric"]["job"]: r["value"][1] for r in alert_stack.query('up{job=~"alertmanager|node-exporter"}')}
        return results == {"alertmanager": "1", "node-exporter": "1"}

    wait_for("alertmanager and node-exporter up", up, deadline=60, interval=1)
    # Every series carries `service`, the label the routes group and inhibit by.
    assert {r["metric"]["service"] for r in alert_stack.query("up")} == set(spec.SERVICES)
    _, body = http_get(alert_stack.url("prometheus", "/api/v1/alertmanagers"))
    active = json.loads(body)["data"]["activeAlertmanagers"]
    assert [a["url"] for a in active] == [f"http://alertmanager:{spec.PORTS['alertmanager']}/api/v2/alerts"]


def test_target_down_reaches_the_webhook_in_time_then_resolves(alert_stack):
    stack, hook = alert_stack, alert_stack.hook
    # Down from the moment `stop` returns (warpwatch drains its connections first).
    stopping = time.monotonic()
    stack.compose("stop", "warpwatch")
    stopped = time.monotonic()
    seen, body = hook.wait("the firing TargetDown for warpwatch", "TargetDown", "firing", stopping, DELIVERY_BOUND_S + 30, service="warpwatch")
    latency = seen - stopped
    started = time.monotonic()
    stack.compose("start", "warpwatch")
    resolved_seen, resolved = hook.wait("the resolved TargetDown for warpwatch", "TargetDown", "resolved", started, 90, service="warpwatch")
    print(
        f"\nalert delivery: firing TargetDown {latency:.1f}s after the stop ({stopped - stopping:.1f}s to stop; bound {DELIVERY_BOUND_S}s: "
        f"for {FOR_S}s + evaluation {INTERVAL_S}s + group_wait {GROUP_WAIT_S}s + 15s; scrape interval {INTERVAL_S}s); "
        f"resolved {resolved_seen - started:.1f}s after the start"
    )
    assert latency <= DELIVERY_BOUND_S, f"firing notification after {latency:.1f}s"
    assert body["receiver"] == "test" and body["status"] == "firing"
    assert body["groupLabels"] == {"alertname": "TargetDown", "service": "warpwatch"}
    (alert,) = body["alerts"]
    assert alert["labels"]["severity"] == "page" and alert["labels"]["job"] == "warpwatch"
    assert alert["annotations"]["summary"] == f"Target warpwatch:{spec.PORTS['warpwatch']} of warpwatch is down"
    assert resolved["status"] == "resolved"


def test_a_refusing_receiver_is_logged_counted_retried_and_loses_nothing(alert_stack):
    stack, hook = alert_stack, alert_stack.hook
    failed_before = alertmanager_metric(stack, "alertmanager_notifications_failed_total", 'integration="webhook"')
    restarts_before = stack.inspect("alertmanager")["RestartCount"]
    hook.refuse(True)
    stopped = time.monotonic()
    stack.compose("stop", "warpwatch")
    try:
        wait_for(
            "alertmanager_notifications_failed_total to grow",
            lambda: alertmanager_metric(stack, "alertmanager_notifications_failed_total", 'integration="webhook"')
            >= failed_before + 2,
            deadline=DELIVERY_BOUND_S + 60,
            interval=1,
        )
        logs = stack.logs("alertmanager", 200)
        assert re.search(r"Notify.*(fail|retry).*503|503.*Notify", logs, re.IGNORECASE) or "503" in logs, logs
        assert "receiver=test" in logs, logs
    finally:
        refused_until = time.monotonic()
        hook.refuse(False)
    # Once it answers, the firing notification arrives: retried, not dropped.
    seen, body = hook.wait("the firing TargetDown once the receiver answers", "TargetDown", "firing", refused_until, 60, service="warpwatch")
    print(f"\nrefusing receiver: delivered {seen - refused_until:.1f}s after it answered again")
    assert body["status"] == "firing"
    started = time.monotonic()
    stack.compose("start", "warpwatch")
    hook.wait("the resolved TargetDown after the refusal", "TargetDown", "resolved", started, 90, service="warpwatch")
    state = stack.inspect("alertmanager")
    assert state["State"]["Running"] and state["RestartCount"] == restarts_before, state["State"]
    assert stopped < refused_until


def test_silences_and_the_notification_log_survive_a_restart(alert_stack):
    stack = alert_stack
    silence = {
        "matchers": [{"name": "service", "value": "loki", "isRegex": False, "isEqual": True}],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
        "createdBy": "tests/live",
        "comment": "survives a restart",
    }
    request = urllib.request.Request(
        stack.url("alertmanager", "/api/v2/silences"), data=json.dumps(silence).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    silence_id = json.loads(urllib.request.urlopen(request, timeout=10).read())["silenceID"]
    stack.compose("restart", "alertmanager")

    def listed():
        _, body = http_get(stack.url("alertmanager", "/api/v2/silences"))
        return [s for s in json.loads(body) if s["id"] == silence_id and s["status"]["state"] == "active"]

    wait_for("the silence after the restart", listed, deadline=60, interval=1)
    # Both files on the named volume, written by Alertmanager's uid.
    data = volume_dir(stack, "alertmanager")
    uid = stack.specs["stack"]["services"]["alertmanager"]["uid"]
    for name in ("silences", "nflog"):
        assert (data / name).stat().st_uid == uid, name


def test_node_exporter_reads_the_host_through_its_path_flags(alert_stack):
    stack = alert_stack
    info = stack.inspect("node-exporter")
    host = info["HostConfig"]
    assert host["Privileged"] is False and host["CapDrop"] == ["ALL"] and host["ReadonlyRootfs"] is True
    assert host["PidMode"] == "" and host["NetworkMode"] != "host"
    binds = {b.split(":")[1]: b for b in host["Binds"]}
    assert binds["/host/proc"].startswith("/proc:") and binds["/host/proc"].split(":")[2].startswith("ro")
    assert binds["/host/sys"].startswith("/sys:") and binds["/host/sys"].split(":")[2].startswith("ro")
    assert binds["/host/root"].startswith("/:") and "ro" in binds["/host/root"].split(":")[2].split(",")
    # The host's mount points, named as the host names them (the rootfs prefix is stripped).
    mounts = {r["metric"]["mountpoint"] for r in stack.query('node_filesystem_avail_bytes{job="node-exporter"}')}
    assert "/" in mounts, mounts
    # The host's processes and CPUs, without the host PID namespace.
    procs = stack.query('node_procs_running{job="node-exporter"}') + stack.query('node_processes_pids{job="node-exporter"}')
    cpus = stack.query('count(node_cpu_seconds_total{job="node-exporter", mode="idle"})')
    assert int(float(cpus[0]["value"][1])) == len([c for c in Path("/sys/devices/system/cpu").glob("cpu[0-9]*")])
    assert procs
    # The collectors behind the host alerts work unprivileged (timex: HostClockSkew).
    for collector in ("cpu", "meminfo", "filesystem", "loadavg", "timex", "diskstats"):
        (result,) = stack.query(f'node_scrape_collector_success{{job="node-exporter", collector="{collector}"}}')
        assert result["value"][1] == "1", collector
    # Measured, not assumed: in its own network namespace the network collector counts the
    # container's interfaces, not the host's (see the declaration's node-exporter entry).
    devices = {r["metric"]["device"] for r in stack.query('node_network_receive_bytes_total{job="node-exporter"}')}
    host_devices = {p.name for p in Path("/sys/class/net").iterdir()}
    print(f"\nnode exporter network devices: {sorted(devices)}; the host's: {sorted(host_devices)}")
    assert devices and not devices >= host_devices


def test_every_host_dashboard_panel_has_data(alert_stack):
    host_queries = list(dashboard_queries("host.json"))
    assert len(host_queries) >= 7

    def missing():
        return [title for title, expr in host_queries if not alert_stack.query(expr)] or None

    end = time.monotonic() + 60
    while (empty := missing()) and time.monotonic() < end:
        time.sleep(3)
    assert not empty, f"Host panels without data: {empty}"


def test_memory_of_alertmanager_and_node_exporter_under_their_limits(alert_stack):
    """RSS of the real processes in their containers after the alerts above (VmRSS now, VmHWM the
    peak), against the declared limits."""
    figures = {}
    for name in ("alertmanager", "node-exporter"):
        pid = alert_stack.inspect(name)["State"]["Pid"]
        status = Path(f"/proc/{pid}/status").read_text()
        kib = {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) for k in ("VmRSS", "VmHWM")}
        figures[name] = {k: round(v / 1024, 1) for k, v in kib.items()}
        assert kib["VmHWM"] * 1024 < spec.MEMORY_MIB[name] * spec.MIB, (name, kib)
    print(f"\nRSS in MiB in the live stack: {figures}")
