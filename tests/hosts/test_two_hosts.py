"""Two hosts on one machine (issue 18), for real: the agent in a network namespace of its own,
joined to the server's by a veth pair, so the only way between them is the server's receiver.

Agent namespace: the warpwatch release build, Debian's node exporter and Debian's Prometheus in
agent mode, with the configuration the stack renders for `role = "agent"`, at the declared
ports on loopback. Server side: the rendered nginx receiver on the veth address (mutual TLS,
certificates made here with openssl) in front of Debian's Prometheus with the remote-write
receiver and the rendered rules (HostSilent for the expected host).

Shown: the agent's warpwatch and node series reach the server with `host`; nothing in the
agent's namespace listens beyond loopback; a client without a certificate or with another CA's
is refused; the server stopped for 2 minutes under steady agent traffic leaves no gap in the
agent's series; HostSilent fires when the agent's collector stops and resolves when it returns.
(Logs: tests/hosts/test_rendering.py runs the receiver's push path; no Promtail binary exists
in CI to ship from the agent.)
"""

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import ipaddress
import uuid
from pathlib import Path

import pytest
import yaml

from tests import spec
from tests.conftest import free_port, http_get, require_tool, stop_process, wait_for
from tests.dockerd import host_networks
from tests.hosts.helpers import agent_overrides, make_pki, render, server_overrides

# Short timings through overrides keep the file near 4 minutes.
SCRAPE_SECONDS = 2
SILENT_SECONDS = 20
OUTAGE_SECONDS = 120
HOST = "app1"


def ip(*args: str) -> None:
    proc = subprocess.run([require_tool("ip"), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"ip {' '.join(args)}: {proc.stderr}"


def free_link() -> tuple[str, str]:
    """Two addresses of a /30 in 10.213.0.0/16 that no host route or address overlaps (the veth
    link between the test's side and the agent's namespace); a /30 another run holds is taken too."""
    taken = host_networks()
    for link in ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=30):
        if not any(net.overlaps(link) for net in taken):
            first, second = list(link.hosts())
            return str(first), str(second)
    pytest.fail("no free /30 in 10.213.0.0/16 for the veth link: free a route there", pytrace=False)


class Namespace:
    """A network namespace with loopback up and one end of a veth pair; the other end, on the
    test's side, carries the server's address."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.name, self.host_if, self.agent_if = f"wwh-{tag}", f"wwh{tag}s", f"wwh{tag}a"
        self.server_ip, self.agent_ip = free_link()

    def __enter__(self):
        ip("netns", "add", self.name)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.agent_if)
        ip("link", "set", self.agent_if, "netns", self.name)
        ip("addr", "add", f"{self.server_ip}/30", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        self.exec_ip("link", "set", "lo", "up")
        self.exec_ip("addr", "add", f"{self.agent_ip}/30", "dev", self.agent_if)
        self.exec_ip("link", "set", self.agent_if, "up")
        return self

    def exec_ip(self, *args):
        ip("netns", "exec", self.name, "ip", *args)

    def popen(self, args, log: Path, env=None):
        return subprocess.Popen(
            [require_tool("ip"), "netns", "exec", self.name, *args],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def __exit__(self, *exc):
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def query(port: int, promql: str, at: float | None = None) -> list:
    params = {"query": promql, **({"time": f"{at:.3f}"} if at else {})}
    status, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(params), timeout=10)
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", answer
    return answer["data"]["result"]


def host_silent(port: int) -> list:
    _, body = http_get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=10)
    return [a for a in json.loads(body)["data"]["alerts"] if a["labels"]["alertname"] == "HostSilent" and a["state"] == "firing"]


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

        receiver_port, server_prom_port = free_port(), free_port()
        timing = {"prometheus": {"scrapeIntervalSeconds": SCRAPE_SECONDS, "evaluationIntervalSeconds": 1}}
        server = server_overrides(
            [HOST],
            receiver={"bindAddress": ns.server_ip, "port": receiver_port},
            hosts={"expected": [HOST], "silentForSeconds": SILENT_SECONDS},
            services={"prometheus": {"port": server_prom_port}},
            **timing,
        )
        server["receiver"].update(certFile=str(pki["server"][0]), keyFile=str(pki["server"][1]), clientCaFile=str(pki["ca"][0]))
        agent = agent_overrides(HOST, f"{ns.server_ip}:{receiver_port}", **timing)

        srv = tmp_path / "server"
        (srv / "nginx").mkdir(parents=True)
        (srv / "rules.yml").write_text(render("s.configs.rules", server))
        config = yaml.safe_load(render('s.toYAML (s.configs.prometheus { target = "host"; })', server))
        # Only the server's own Prometheus is running on this side: its other jobs would be down.
        config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] == "prometheus"]
        config.pop("alerting")
        (srv / "prometheus.yml").write_text(yaml.safe_dump(config))
        (srv / "nginx.conf").write_text(render(f's.configs.nginx {{ target = "host"; stateDir = "{srv / "nginx"}"; }}', server))

        ag = tmp_path / "agent"
        ag.mkdir()
        (ag / "agent.yml").write_text(render(f's.toYAML (s.configs.agentPrometheus {{ tlsDir = "{agent_tls}"; }})', agent))
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

        def start_collector():
            procs["collector"] = ns.popen(
                [prometheus, "--enable-feature=agent", f"--config.file={ag / 'agent.yml'}",
                 f"--storage.agent.path={ag / 'wal'}", f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                ag / "collector.log",
            )  # fmt: skip

        try:
            start_server_prometheus()
            start_nginx()
            procs["warpwatch"] = ns.popen(
                [str(warpwatch_bin)], ag / "warpwatch.log",
                env={**os.environ, "WARPWATCH_ADDR": f"127.0.0.1:{ports['warpwatch']}", "WARPWATCH_DATA_DIR": str(ag / "ww")},
            )  # fmt: skip
            procs["node"] = ns.popen([node_exporter, f"--web.listen-address=127.0.0.1:{ports['node-exporter']}"], ag / "node.log")
            start_collector()
            yield {
                "ns": ns,
                "pki": pki,
                "procs": procs,
                "server_port": server_prom_port,
                "receiver": f"https://{ns.server_ip}:{receiver_port}",
                "start_server": start_server_prometheus,
                "start_nginx": start_nginx,
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
    assert status("/api/v1/query?query=up", pki["clients"][HOST], "GET") == 404
    assert status("/graph", pki["clients"][HOST], "GET") == 404

    # 4. The server (receiver and Prometheus) away for 2 minutes under steady scraping; then back.
    selector = f'up{{host="{HOST}",job="warpwatch"}}'
    stop_process(procs["nginx"])
    stop_process(procs["server"])
    down_at = time.time()
    time.sleep(OUTAGE_SECONDS)
    two_hosts["start_server"]()
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

    # 5. HostSilent: the agent's collector stops; the alert fires for this host, then resolves.
    wait_for("no HostSilent while the agent sends", lambda: host_silent(port) == [], deadline=60, interval=1)
    stop_process(procs["collector"])
    stopped = time.monotonic()
    firing = wait_for("HostSilent firing", lambda: host_silent(port), deadline=SILENT_SECONDS + 30, interval=1)
    assert [a["labels"]["host"] for a in firing] == [HOST]
    assert time.monotonic() - stopped >= SILENT_SECONDS - 2 * SCRAPE_SECONDS
    two_hosts["start_collector"]()
    wait_for("HostSilent resolved", lambda: host_silent(port) == [], deadline=60, interval=1)
