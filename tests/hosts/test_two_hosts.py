"""Two hosts on one machine (issue 18), for real: the agent in a network namespace of its own,
joined to the server's by a veth pair, so the only way between them is the server's receiver.

Agent namespace: the warpwatch release build, Debian's node exporter and Debian's Prometheus in
agent mode, with the configuration the stack renders for `role = "agent"`, at the declared
ports on loopback; the log shipper is tests/hosts/shipper.py, a stand-in for Promtail that
follows the rendered `configs.promtail` (compose target: dockerd's json-file logs, which the
test writes for warpwatch's output as dockerd would), since no Promtail binary exists in CI.
Server side: the rendered nginx receiver on the veth address (mutual TLS, certificates made
here with openssl) in front of Debian's Prometheus with the remote-write receiver and the
rendered rules (HostSilent for the expected host), and the Loki stand-in of
tests/live/standin.rs (confined as its container is), which records every pushed entry.

Shown: the agent's warpwatch and node series reach the server with `host`; warpwatch's log
lines reach it with `host` and `level`; nothing in the agent's namespace listens beyond
loopback; a client without a certificate or with another CA's is refused on both write paths;
the server (receiver, Prometheus, Loki) stopped for 2 minutes under steady agent traffic (a
numbered access-log line every 0.5 s) leaves no gap in the agent's series and loses no log line
(each arrives at least once; duplicates are counted and printed); HostSilent fires when the
agent's collector stops and resolves when it returns.
"""

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tests import spec
from tests.conftest import free_port, http_get, require_tool, stop_process, wait_for
from tests.hosts.helpers import Namespace, agent_overrides, confined, make_pki, render, server_overrides
from tests.live.helpers import build_standin

# Short timings through overrides keep the file near 4 minutes.
SCRAPE_SECONDS = 2
SILENT_SECONDS = 20
OUTAGE_SECONDS = 120
HOST = "app1"
# One request to the agent's warpwatch this often: one numbered access-log line each.
TICK_SECONDS = 0.5
TICK_PATH = "/hosts-test/"
# The ticker's run after the outage's backlog is delivered (steady-state latency).
STEADY_SECONDS = 20
SHIPPER = Path(__file__).with_name("shipper.py")
# Runs in the agent's namespace: a request every TICK_SECONDS, and `<n> <unix ns>` for each.
TICKER = """
import sys, time, urllib.error, urllib.request
base, every = sys.argv[1], float(sys.argv[2])
n = 0
while True:
    sent = time.time_ns()
    try:
        urllib.request.urlopen(f"{base}{n}", timeout=5).close()
    except urllib.error.HTTPError:
        pass
    print(n, sent, flush=True)
    n += 1
    time.sleep(max(0.0, every - (time.time_ns() - sent) / 1e9))
"""


def query(port: int, promql: str, at: float | None = None) -> list:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at else {})}
    status, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(params), timeout=10)
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", answer
    return answer["data"]["result"]


def host_silent(port: int) -> list:
    _, body = http_get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=10)
    return [a for a in json.loads(body)["data"]["alerts"] if a["labels"]["alertname"] == "HostSilent" and a["state"] == "firing"]


def json_file_log(pipe, path: Path, tag: str) -> threading.Thread:
    """dockerd's part for the agent's warpwatch: each line of its output appended to `path` as
    a json-file log record (`log` with its newline, `stream`, `attrs.tag` from the compose
    logging tag, `time` in RFC 3339 with nanoseconds), the files the rendered shipper reads."""

    def copy():
        with path.open("ab", buffering=0) as out:
            for raw in iter(pipe.readline, b""):
                now = time.time_ns()
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z"
                record = {"log": raw.decode(errors="replace"), "stream": "stderr", "attrs": {"tag": tag}, "time": stamp}
                out.write(json.dumps(record).encode() + b"\n")

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def pushes(loki_port: int) -> list[dict]:
    """Every entry the server's Loki stand-in has recorded, in arrival order."""
    status, body = http_get(f"http://127.0.0.1:{loki_port}/standin/pushes", timeout=10)
    assert status == 200, body
    return [json.loads(line) for line in body.splitlines()]


def numbered(entries: list[dict]) -> dict[int, list[dict]]:
    """The recorded ticker lines by their number."""
    found = {}
    for entry in entries:
        match = re.search(rf"GET {TICK_PATH}(\d+) ", entry["line"])
        if match:
            found.setdefault(int(match[1]), []).append(entry)
    return found


def ticks(log: Path) -> dict[int, int]:
    """What the ticker sent: number -> unix ns just before its request."""
    return {int(n): int(t) for n, t in (line.split() for line in log.read_text().splitlines() if line.strip())}


def listeners(ns: Namespace) -> list[str]:
    """Local addresses of every listening TCP socket in the namespace (IPv4 and IPv6), from
    `ss -ltn` run inside it."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, require_tool("ss"), "-Hltn"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split()[3] for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture
def two_hosts(tmp_path, warpwatch_bin):
    prometheus = require_tool("prometheus")
    node_exporter = require_tool("prometheus-node-exporter")
    nginx = require_tool("nginx")
    with Namespace() as ns:
        pki = make_pki(tmp_path / "pki", [ns.server_ip], [HOST])
        # The agent's TLS directory, as the compose mount and the NixOS credentials lay it out.
        agent_tls = tmp_path / "agent-tls"
        agent_tls.mkdir()
        for name, source in (("client.crt", pki["clients"][HOST][0]), ("client.key", pki["clients"][HOST][1]), ("ca.crt", pki["ca"][0])):
            shutil.copy(source, agent_tls / name)
        (agent_tls / "client.key").chmod(0o600)

        receiver_port, server_prom_port, loki_port, loki_grpc = free_port(), free_port(), free_port(), free_port()
        timing = {"prometheus": {"scrapeIntervalSeconds": SCRAPE_SECONDS, "evaluationIntervalSeconds": 1}}
        server = server_overrides(
            [HOST],
            receiver={"bindAddress": ns.server_ip, "port": receiver_port},
            hosts={"expected": [HOST], "silentForSeconds": SILENT_SECONDS},
            services={"prometheus": {"port": server_prom_port}, "loki": {"port": loki_port, "grpcPort": loki_grpc}},
            **timing,
        )
        server["receiver"].update(certFile=str(pki["server"][0]), keyFile=str(pki["server"][1]), clientCaFile=str(pki["ca"][0]))
        ag = tmp_path / "agent"
        containers = ag / "containers"
        agent = agent_overrides(HOST, f"{ns.server_ip}:{receiver_port}", containerLogs={"hostDir": str(containers)}, **timing)

        srv = tmp_path / "server"
        (srv / "nginx").mkdir(parents=True)
        (srv / "rules.yml").write_text(render("s.configs.rules", server))
        config = yaml.safe_load(render('s.toYAML (s.configs.prometheus { target = "host"; })', server))
        # Only the server's own Prometheus is running on this side: its other jobs would be down.
        config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] == "prometheus"]
        config.pop("alerting")
        (srv / "prometheus.yml").write_text(yaml.safe_dump(config))
        (srv / "nginx.conf").write_text(render(f's.configs.nginx {{ target = "host"; stateDir = "{srv / "nginx"}"; }}', server))
        # The Loki stand-in (tests/live/standin.rs) is the tool's binary under the tool's name.
        (srv / "bin").mkdir()
        (srv / "bin" / "loki").symlink_to(build_standin())
        (srv / "loki").mkdir()
        (srv / "loki.yml").write_text(render(f's.toYAML (s.configs.loki {{ target = "host"; dataDir = "{srv / "loki"}"; }})', server))

        ag.mkdir()
        (ag / "agent.yml").write_text(render(f's.toYAML (s.configs.agentPrometheus {{ tlsDir = "{agent_tls}"; }})', agent))
        (ag / "shipper").mkdir()
        shipper_args = f'target = "compose"; tlsDir = "{agent_tls}"; stateDir = "{ag / "shipper"}";'
        (ag / "promtail.yml").write_text(render(f"s.toYAML (s.configs.promtail {{ {shipper_args} }})", agent))
        # warpwatch's json-file log, where dockerd would keep it: <hostDir>/<id>/<id>-json.log.
        container_id = uuid.uuid4().hex * 2
        (containers / container_id).mkdir(parents=True)
        warpwatch_log = containers / container_id / f"{container_id}-json.log"
        ports = {name: spec.PORTS[name] for name in ("warpwatch", "node-exporter", "prometheus")}

        procs = {}

        def start_server_prometheus():
            procs["server"] = subprocess.Popen(
                [prometheus, f"--config.file={srv / 'prometheus.yml'}", f"--storage.tsdb.path={srv / 'data'}",
                 f"--web.listen-address=127.0.0.1:{server_prom_port}", "--web.enable-remote-write-receiver"],
                stdout=(srv / "prometheus.log").open("ab"), stderr=subprocess.STDOUT, cwd=srv,
            )  # fmt: skip
            wait_for("the server's Prometheus", lambda: http_get(f"http://127.0.0.1:{server_prom_port}/-/ready")[0] == 200, processes=[procs["server"]])

        def start_nginx():
            procs["nginx"] = subprocess.Popen(
                [nginx, "-e", "stderr", "-p", str(srv), "-c", str(srv / "nginx.conf")],
                stdout=(srv / "nginx.log").open("ab"), stderr=subprocess.STDOUT,
            )  # fmt: skip

        def start_loki():
            # Confined as its container is (the stand-in checks): read-only root but for its
            # data directory, no capability, no_new_privs.
            procs["loki"] = subprocess.Popen(
                confined([str(srv / "bin" / "loki"), f"-config.file={srv / 'loki.yml'}"], writable=[srv / "loki"]),
                stdout=(srv / "loki.log").open("ab"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            wait_for("the server's Loki stand-in", lambda: http_get(f"http://127.0.0.1:{loki_port}/ready")[0] == 200, processes=[procs["loki"]])

        def start_collector():
            procs["collector"] = ns.popen(
                [prometheus, "--enable-feature=agent", f"--config.file={ag / 'agent.yml'}",
                 f"--storage.agent.path={ag / 'wal'}", f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                ag / "collector.log",
            )  # fmt: skip

        try:
            start_server_prometheus()
            start_loki()
            start_nginx()
            # The access log on: each request is a numbered debug line.
            procs["warpwatch"] = ns.popen(
                [str(warpwatch_bin)], None,
                env={**os.environ, "WARPWATCH_ADDR": f"127.0.0.1:{ports['warpwatch']}", "WARPWATCH_DATA_DIR": str(ag / "ww"),
                     "RUST_LOG": "info,warpwatch::access=debug"},
            )  # fmt: skip
            json_file_log(procs["warpwatch"].stdout, warpwatch_log, render("s.stack.services.warpwatch.logTag", agent))
            procs["node"] = ns.popen([node_exporter, f"--web.listen-address=127.0.0.1:{ports['node-exporter']}"], ag / "node.log")
            start_collector()
            procs["shipper"] = ns.popen([sys.executable, str(SHIPPER), str(ag / "promtail.yml")], ag / "shipper.log")
            procs["ticker"] = ns.popen(
                [sys.executable, "-c", TICKER, f"http://127.0.0.1:{ports['warpwatch']}{TICK_PATH}", str(TICK_SECONDS)], ag / "ticks"
            )  # fmt: skip
            yield {
                "ns": ns,
                "pki": pki,
                "procs": procs,
                "server_port": server_prom_port,
                "loki_port": loki_port,
                "receiver": f"https://{ns.server_ip}:{receiver_port}",
                "start_server": start_server_prometheus,
                "start_nginx": start_nginx,
                "start_loki": start_loki,
                "start_collector": start_collector,
                "dirs": (srv, ag),
            }
        finally:
            for proc in procs.values():
                stop_process(proc)


def samples(port: int, selector: str, seconds: int) -> list[float]:
    """Timestamps of the raw samples of the one series `selector` picks over the last `seconds`."""
    (series,) = query(port, f"{selector}[{seconds}s]")
    return [float(t) for t, _ in series["values"]]


def test_agent_series_reach_the_server_over_mutual_tls_survive_an_outage_and_silence_alerts(two_hosts):
    port = two_hosts["server_port"]
    ns = two_hosts["ns"]
    procs = two_hosts["procs"]

    # 1. Both local targets, the service's own counter and the host's node series, with `host`.
    def arrived():
        up = {r["metric"]["job"]: r["value"][1] for r in query(port, f'up{{host="{HOST}"}}')}
        return up == {"warpwatch": "1", "node-exporter": "1"} and query(port, f'node_load1{{host="{HOST}"}}') and query(
            port, f'process_cpu_seconds_total{{host="{HOST}",job="warpwatch"}}'
        )

    wait_for("the agent's series on the server", arrived, deadline=60, processes=list(procs.values()), interval=1)

    # 1b. Its log lines, shipped by the rendered shipper's contract through the receiver: every
    # entry carries host and a level; warpwatch's start line is info, its access lines debug.
    loki = two_hosts["loki_port"]

    def shipped():
        entries = pushes(loki)
        levels = {e["labels"].get("level") for e in entries}
        return entries if {"info", "debug"} <= levels and numbered(entries) else None

    entries = wait_for("the agent's log lines on the server", shipped, deadline=60, processes=list(procs.values()), interval=1)
    assert all(e["labels"].get("host") == HOST for e in entries), {json.dumps(e["labels"]) for e in entries}
    assert all(e["labels"].get("service") == "warpwatch" and e["labels"].get("level") for e in entries), entries[:3]
    assert all("filename" not in e["labels"] for e in entries)
    (start,) = [e for e in entries if " listening on http://" in e["line"]]
    assert start["labels"]["level"] == "info" and start["line"].split()[0] == "INFO", start
    assert all(e["labels"]["level"] == "debug" for found in numbered(entries).values() for e in found)

    # 2. Nothing in the agent's namespace listens beyond loopback.
    addresses = listeners(ns)
    assert addresses, "ss found no listener in the agent's namespace"
    assert all(a.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses

    # 3. Refusals at the receiver: no certificate, another CA's certificate, any other path.
    pki = two_hosts["pki"]

    def status(path, client=None, method="POST"):
        ctx = ssl.create_default_context(cafile=str(pki["ca"][0]))
        if client:
            ctx.load_cert_chain(str(client[0]), str(client[1]))
        request = urllib.request.Request(two_hosts["receiver"] + path, data=b"x" if method == "POST" else None, method=method)
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert status("/api/v1/write") == 400
    assert status("/api/v1/write", pki["stranger"]) == 400
    assert status("/loki/api/v1/push") == 400
    assert status("/loki/api/v1/push", pki["stranger"]) == 400
    assert status("/api/v1/query?query=up", pki["clients"][HOST], "GET") == 404
    assert status("/graph", pki["clients"][HOST], "GET") == 404

    # 4. The server (receiver, Prometheus, Loki) away for 2 minutes under steady scraping and
    # a numbered log line every TICK_SECONDS; then back.
    selector = f'up{{host="{HOST}",job="warpwatch"}}'
    stop_process(procs["nginx"])
    stop_process(procs["server"])
    stop_process(procs["loki"])
    down_at = time.time()
    time.sleep(OUTAGE_SECONDS)
    two_hosts["start_server"]()
    two_hosts["start_loki"]()
    two_hosts["start_nginx"]()
    up_at = time.time()

    def caught_up():
        stamps = samples(port, selector, int(time.time() - down_at) + 30)
        return stamps[-1] > up_at + SCRAPE_SECONDS and stamps[0] < down_at and stamps

    stamps = wait_for("the agent's backlog on the server", caught_up, deadline=90, interval=2)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    print(f"\noutage {up_at - down_at:.0f}s: {len(stamps)} samples over {stamps[-1] - stamps[0]:.0f}s, largest gap {max(gaps):.1f}s")
    assert max(gaps) < 1.5 * SCRAPE_SECONDS, f"gap in the agent's series over the outage: {max(gaps):.1f}s"
    assert len([s for s in stamps if down_at <= s <= up_at]) >= (up_at - down_at) / SCRAPE_SECONDS - 2

    # Every numbered line sent up to now arrives, at least once (the shipper resends what the
    # server did not acknowledge; exactly once unless an answer was lost as the server stopped).
    # The ticker runs STEADY_SECONDS more first: steady state after the backlog, for the latency.
    time.sleep(STEADY_SECONDS)
    stop_process(procs["ticker"])
    sent = ticks(two_hosts["dirs"][1] / "ticks")
    during = [n for n, t in sent.items() if down_at * 1e9 <= t <= up_at * 1e9]
    assert len(during) >= OUTAGE_SECONDS / TICK_SECONDS * 0.9, f"the ticker sent only {len(during)} lines during the outage"

    def all_lines():
        found = numbered(pushes(loki))
        return found if set(sent) <= set(found) else None

    try:
        found = wait_for("every numbered line on the server", all_lines, deadline=60, interval=1)
    except BaseException:
        found = numbered(pushes(loki))
        print(f"lost {len(set(sent) - set(found))} of {len(sent)} lines: {sorted(set(sent) - set(found))[:20]} ...")
        raise
    assert set(found) == set(sent), f"lines recorded that were never sent: {sorted(set(found) - set(sent))}"
    duplicates = sum(len(f) - 1 for f in found.values())
    # Steady state (a figure for the README, not a timed assertion): lines sent before the
    # outage but its last 5 s, and after the backlog was recorded.
    backlog_done = max(int(found[n][0]["received_ns"]) for n in during)
    latencies = sorted(
        (int(found[n][0]["received_ns"]) - t) / 1e9 for n, t in sent.items() if t < (down_at - 5) * 1e9 or t > backlog_done
    )  # fmt: skip
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"log lines: {len(sent)} sent, all recorded ({len(during)} during the outage), {duplicates} recorded twice; "
        f"steady state write-to-record latency over {len(latencies)} lines: median {latencies[len(latencies) // 2]:.2f}s, "
        f"p95 {p95:.2f}s, max {latencies[-1]:.2f}s"
    )

    # 5. HostSilent: the agent's collector stops; the alert fires for this host, then resolves.
    wait_for("no HostSilent while the agent sends", lambda: host_silent(port) == [], deadline=60, interval=1)
    stop_process(procs["collector"])
    stopped = time.monotonic()
    firing = wait_for("HostSilent firing", lambda: host_silent(port), deadline=SILENT_SECONDS + 30, interval=1)
    assert [a["labels"]["host"] for a in firing] == [HOST]
    assert time.monotonic() - stopped >= SILENT_SECONDS - 2 * SCRAPE_SECONDS
    two_hosts["start_collector"]()
    wait_for("HostSilent resolved", lambda: host_silent(port) == [], deadline=60, interval=1)
