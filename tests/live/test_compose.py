"""The rendered compose project, run for real on a private Docker engine (issue 8).

One stack for this module, started by the stack app's own `up` (Debian's docker-compose 1.29 as its
compose binary) with images laid out by nix/stack/image-specs.nix; see helpers.py for what is real and
what is a stand-in. The tests run in file order: the restart/stop tests come after the ones that
read the first start.
"""

import base64
import json
import re
import socket
import time
import urllib.error

import pytest

from tests import spec
from tests.conftest import dashboard_queries, http_get, wait_for
from tests.live.helpers import PASSWORD_LINE, running_stack, time_to_healthy, volume_dir

@pytest.fixture(scope="module")
def stack(dockerd, warpwatch_bin, tmp_path_factory):
    with running_stack(dockerd, warpwatch_bin, tmp_path_factory.mktemp("live")) as running:
        yield running


def test_up_through_the_stack_app_prints_the_urls_and_a_password(stack):
    out = stack.first_up.stdout
    assert "warpwatch stack is up" in out
    for name in spec.PUBLISHED:
        assert f"{name}: http://{spec.LOOPBACK}:{spec.PORTS[name]}/" in out
    assert PASSWORD_LINE.search(out), out


def test_up_says_once_that_no_alert_receiver_is_declared(stack):
    # Issue 17: the default declaration has no receiver; the stack runs and the app says so.
    out = stack.first_up.stdout + stack.first_up.stderr
    assert out.count("No alert receiver is declared") == 1, out


def test_every_service_healthy_within_one_interval_plus_5s(stack):
    # Issue 8, defect 6: it took ~2 minutes behind three health-gated depends_on levels.
    healthy = time_to_healthy(stack)
    print(f"\ntime to healthy after the first container start (s): {healthy}")
    assert set(healthy) == set(spec.SERVICES)
    assert max(healthy.values()) <= spec.HEALTHCHECK_INTERVAL_S + spec.TIME_TO_HEALTHY_SLACK_S, healthy


def test_prometheus_scrapes_all_five_jobs(stack):
    def all_up():
        results = {r["metric"]["job"]: r["value"][1] for r in stack.query("up")}
        return results if results == {name: "1" for name in spec.SERVICES} else None

    wait_for("up == 1 for every job", all_up, deadline=3 * stack.specs["stack"]["prometheus"]["scrapeIntervalSeconds"], interval=1)


def warpwatch_counter(stack, path: str) -> int:
    """http_requests_total{path} summed, read from the service itself."""
    _, text = http_get(stack.url("warpwatch", "/metrics"))
    total = 0
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and f'path="{path}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_http_requests_total_grows_by_what_was_sent(stack):
    sent = 7
    before = warpwatch_counter(stack, "/visits")
    for _ in range(sent):
        assert http_get(stack.url("warpwatch", "/visits"))[0] == 200

    def scraped():
        result = stack.query('sum(http_requests_total{job="warpwatch", path="/visits"})')
        return result and int(float(result[0]["value"][1])) == before + sent

    wait_for(f"Prometheus to see {before} + {sent} requests", scraped, deadline=40, interval=1)


def test_docker_inspect_shows_the_declared_limits_logging_and_confinement(stack):
    compose = stack.specs["project"]["docker-compose.yml"]
    for name in spec.SERVICES:
        info = stack.inspect(name)
        host = info["HostConfig"]
        assert host["Memory"] == spec.MEMORY_MIB[name] * spec.MIB, name
        assert host["LogConfig"]["Type"] == spec.LOG_DRIVER, name
        options = host["LogConfig"]["Config"]
        assert (options["max-size"], options["max-file"]) == (f"{spec.LOG_FILE_MIB}m", str(spec.LOG_FILES)), name
        assert options["tag"].endswith(f"/{name}"), name
        uid = stack.specs["stack"]["services"][name]["uid"]
        assert info["Config"]["User"] == f"{uid}:{uid}", name
        assert f'user: "{uid}:{uid}"' in compose
        assert host["ReadonlyRootfs"] is True, name
        assert host["CapDrop"] == ["ALL"], name
        assert "no-new-privileges:true" in host["SecurityOpt"], name


def test_published_ports_are_bound_to_loopback_only(stack):
    for name in spec.SERVICES:
        bindings = {port: b for port, b in stack.inspect(name)["NetworkSettings"]["Ports"].items() if b}
        if name in spec.PUBLISHED:
            assert bindings, f"{name} is not published"
            for port, entries in bindings.items():
                assert {b["HostIp"] for b in entries} == {spec.LOOPBACK}, (name, port, entries)
        else:
            assert not bindings, (name, bindings)
    with socket.create_connection((spec.LOOPBACK, spec.PORTS["grafana"]), timeout=5):
        pass


def test_the_shippers_positions_file_is_written_by_its_runtime_user(stack):
    # Issue 8, defect 1: Promtail ran as uid 0 without capabilities on a 10004-owned 0750 state dir.
    shipper = stack.specs["stack"]["logShipper"]
    positions = volume_dir(stack, shipper) / "positions.yaml"
    assert positions.read_text() == f"{shipper} rewritten\n"
    assert positions.stat().st_uid == stack.specs["stack"]["services"][shipper]["uid"]
    assert "read container logs" in stack.logs(shipper)


def grafana_user(stack, password: str) -> int:
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    try:
        return http_get(stack.url("grafana", "/api/user"), headers={"Authorization": f"Basic {token}"})[0]
    except urllib.error.HTTPError as err:
        return err.code


def test_the_printed_grafana_password_is_the_one_grafana_uses(stack):
    # Issue 8, defect 2: `*__FILE` variables were ignored by the binary, leaving admin/admin.
    password = PASSWORD_LINE.search(stack.first_up.stdout).group(1)
    assert (stack.state_dir / "secrets" / "grafana-admin-password").read_text() == password
    assert grafana_user(stack, password) == 200
    assert grafana_user(stack, "admin") == 401


def test_every_dashboard_query_has_data_on_a_healthy_stack(stack):
    # Issue 8, defect 7: the 5xx ratio showed "No data" while everything was healthy.
    def missing():
        empty = [title for title, expr in dashboard_queries() if not stack.query(expr)]
        return empty or None

    # rate() needs two scrapes inside its window.
    time.sleep(max(0, 2 * stack.specs["stack"]["prometheus"]["scrapeIntervalSeconds"] - 20))
    end = time.monotonic() + 60
    while (empty := missing()) and time.monotonic() < end:
        time.sleep(3)
    assert not empty, f"panels without data: {empty}"


def test_requests_in_flight_is_zero_when_idle(stack):
    # Issue 8, defect 7: the gauge counted the scrape reading it.
    (title, expr), = [(t, e) for t, e in dashboard_queries() if t.endswith("Requests in flight")]
    (result,) = stack.query(expr)
    assert float(result["value"][1]) == 0, title


def test_json_file_logs_rotate_at_the_declared_size(stack):
    container = stack.container("grafana")
    logs = stack.engine.data_root / "containers" / container
    http_get(stack.url("grafana", f"/standin/log?bytes={int((spec.LOG_FILES + 0.5) * spec.LOG_FILE_MIB * spec.MIB)}"), timeout=60)

    def rotated():
        files = sorted(logs.glob(f"{container}-json.log*"))
        return files if len(files) == spec.LOG_FILES else None

    files = wait_for(f"{spec.LOG_FILES} json-file logs", rotated, deadline=30, interval=1)
    # dockerd rotates when a write would pass max-size: each file stays within it (plus one line).
    for path in files:
        assert path.stat().st_size <= spec.LOG_FILE_MIB * spec.MIB + 4096, (path, path.stat().st_size)
    assert sum(1 for p in files if p.stat().st_size > (spec.LOG_FILE_MIB - 1) * spec.MIB) >= spec.LOG_FILES - 1


def visits(stack) -> int:
    return json.loads(http_get(stack.url("warpwatch", "/visits"))[1])["visits"]


def count_visits(stack, n: int) -> int:
    for _ in range(n):
        assert http_get(stack.url("warpwatch", "/"))[0] == 200
    return visits(stack)


def test_visits_survive_a_compose_restart(stack):
    counted = count_visits(stack, 3)
    stack.compose("restart", "warpwatch")
    assert wait_for("warpwatch after restart", lambda: visits(stack) == counted, deadline=30, interval=1)


def drain_timeout_s(stack) -> float:
    match = re.search(r"drain timeout: (\d+)s", stack.logs("warpwatch", 400))
    assert match, "warpwatch's start line names its drain timeout"
    return float(match.group(1))


def test_docker_stop_exits_0_within_the_drain_time_and_visits_survive_stop_and_up(stack):
    counted = count_visits(stack, 2)
    drain = drain_timeout_s(stack)
    container = stack.container("warpwatch")
    started = time.monotonic()
    # A stop timeout longer than the drain: an exit past the drain would show as a slow stop.
    stack.engine.run(["stop", "--time", str(int(drain) * 3), container])
    elapsed = time.monotonic() - started
    state = stack.inspect("warpwatch")["State"]
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert elapsed < drain, f"docker stop took {elapsed:.1f}s, drain time {drain}s"
    stack.compose("stop")
    again = stack.app("up")
    assert again.returncode == 0, again.stderr
    assert "shown only this once" not in again.stdout
    assert visits(stack) == counted
