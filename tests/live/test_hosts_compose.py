"""Many hosts in compose, for real (issue 18): a server project and an agent project on two
private Docker engines whose networks meet only at the server's mutual-TLS endpoint.

The server is the session's engine, started by the stack app's `up` with `receiver.enable`, its
receiver (Debian's nginx) published on the address of a veth link. The agent is a second engine
running inside a network namespace at the other end of that link (a second Docker host), started
by the agent app (`nix run .#agent`, the same script) with `up --server --tls-dir --host`. Its
collector is Debian's Prometheus 2.42 in agent mode: the compose file takes the agent-mode flag
from the collector image's tag, here Debian's version (2.x: --enable-feature=agent; the flake's
3.x images get --agent). Certificates are made here with openssl (tests/hosts/helpers.py).

Shown: the agent's warpwatch and node series reach the server's Prometheus with `host`; the
receiver refuses a client without a certificate, one with another CA's, one the server's CRL
(`receiver.crlFile`, a compose secret) revokes, and any other path; the server publishes nothing
beyond loopback but the receiver's port; inside every agent container (`ss` in its network
namespace) nothing listens beyond loopback, and the agent reaches nothing of the server but the
receiver; a key the collector's uid may not read stops `up` before anything starts, on both
sides. The 2-minute outage and HostSilent are shown in tests/hosts/test_two_hosts.py.
"""

import contextlib
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import nix_eval, require_tool, wait_for
from tests.dockerd import private_dockerd
from tests.hosts.helpers import Namespace, make_pki, revoke
from tests.live.helpers import debian_prometheus_version, prepared_stack, running_stack, time_to_healthy

HOST = "app1"
# A second agent of the same CA whose certificate the server's CRL revokes.
REVOKED = "app2"
# Fast enough for a short file; both sides, so the agent's samples arrive within seconds.
SCRAPE_SECONDS = 5
TIMING = f"prometheus.scrapeIntervalSeconds = {SCRAPE_SECONDS};"
LOOPBACK = ("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")


def tls_dir(directory: Path, files: dict[str, Path]) -> Path:
    """A TLS directory as a user lays it out: the key 0600, owned by its user (root here)."""
    directory.mkdir(parents=True)
    for name, source in files.items():
        shutil.copy(source, directory / name)
        (directory / name).chmod(0o600 if name.endswith(".key") else 0o644)
    return directory


def setfacl(path: Path, uid: int):
    subprocess.run([require_tool("setfacl"), "-m", f"u:{uid}:r", str(path)], check=True)


def assert_refused_before_start(engine, refused, proc):
    """Nothing of the refused project exists: no container, network or volume (the engine may hold
    other tests' things; only this project's count)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    label = f"label=com.docker.compose.project={refused.project}"
    listings = {"container": ["ps", "-aq"], "network": ["network", "ls", "-q"], "volume": ["volume", "ls", "-q"]}
    made = {kind: engine.run([*listing, "--filter", label]).stdout.split() for kind, listing in listings.items()}
    assert made == {"container": [], "network": [], "volume": []}, f"a refused `up` created {made}:\n{proc.stderr}"


@pytest.fixture(scope="module")
def hosts(dockerd, warpwatch_bin, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hosts-compose")
    with contextlib.ExitStack() as stack, Namespace() as ns:
        pki = make_pki(tmp / "pki", [ns.server_ip], [HOST, REVOKED])
        crl = revoke(tmp / "ca-db", pki["ca"], [pki["clients"][REVOKED][0]])
        server_tls = tls_dir(
            tmp / "server-tls",
            {"server.crt": pki["server"][0], "server.key": pki["server"][1], "client-ca.crt": pki["ca"][0], "ca.crl": crl},
        )
        agent_tls = tls_dir(
            tmp / "agent-tls",
            {"client.crt": pki["clients"][HOST][0], "client.key": pki["clients"][HOST][1], "ca.crt": pki["ca"][0]},
        )
        versions = {"prometheus": debian_prometheus_version()}
        server_overrides = (
            f'{TIMING} hosts.expected = [ "{HOST}" ]; receiver = {{ enable = true; bindAddress = "{ns.server_ip}"; '
            f'certFile = "{server_tls}/server.crt"; keyFile = "{server_tls}/server.key"; '
            f'clientCaFile = "{server_tls}/client-ca.crt"; crlFile = "{server_tls}/ca.crl"; }};'
        )
        uids = nix_eval("builtins.mapAttrs (_: s: s.uid) (import ./nix/stack { }).stack.services")
        refusals = {}

        # The receiver's key as the user left it (0600, root's): `up` names the fix and starts nothing.
        refused = prepared_stack(dockerd, warpwatch_bin, tmp / "refused", server_overrides, versions)
        refusals["server"] = refused.app("up")
        assert_refused_before_start(dockerd, refused, refusals["server"])
        setfacl(server_tls / "server.key", uids["receiver"])
        server = stack.enter_context(running_stack(dockerd, warpwatch_bin, tmp / "server", server_overrides, versions))

        agent_engine = stack.enter_context(private_dockerd(netns=ns.name))
        up_args = ("--server", f"{ns.server_ip}:{server.specs['stack']['receiver']['port']}", "--tls-dir", str(agent_tls), "--host", HOST)
        refused = prepared_stack(agent_engine, warpwatch_bin, tmp / "agent-refused", TIMING, versions, "agent")
        refusals["agent"] = refused.app("up", *up_args)
        assert_refused_before_start(agent_engine, refused, refusals["agent"])
        setfacl(agent_tls / "client.key", uids["collector"])
        agent = stack.enter_context(running_stack(agent_engine, warpwatch_bin, tmp / "agent", TIMING, versions, "agent", up_args))
        yield {"ns": ns, "pki": pki, "server": server, "agent": agent, "refusals": refusals, "uids": uids}


def test_a_key_the_reader_may_not_read_stops_up_before_anything_starts(hosts):
    uids = hosts["uids"]
    server, agent = hosts["refusals"]["server"].stderr, hosts["refusals"]["agent"].stderr
    assert "The receiver (nginx) cannot read receiver.keyFile" in server, server
    assert f"setfacl -m u:{uids['receiver']}:r" in server, server
    assert "The agent's collector cannot read client.key in --tls-dir" in agent, agent
    assert f"setfacl -m u:{uids['collector']}:r" in agent, agent


def test_the_agent_runs_its_four_services_healthy_with_the_declared_limits(hosts):
    agent = hosts["agent"]
    healthy = time_to_healthy(agent)
    print(f"\nagent: time to healthy after the first container start (s): {healthy}")
    print(f"server: time to healthy after the first container start (s): {time_to_healthy(hosts['server'])}")
    assert sorted(healthy) == sorted(["warpwatch", "node-exporter", "collector", agent.specs["stack"]["logShipper"]])
    rss = {}
    for name in healthy:
        info = agent.inspect(name)
        assert info["HostConfig"]["NetworkMode"] == "host", name
        assert info["HostConfig"]["Memory"] == agent.specs["stack"]["services"][name]["memoryMiB"] * 1024 * 1024, name
        assert info["HostConfig"]["LogConfig"]["Config"]["max-size"] == "10m", name
        status = Path(f"/proc/{info['State']['Pid']}/status").read_text()
        rss[name] = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) // 1024
    print(f"agent RSS at idle (MiB): {rss}, collector + node exporter {rss['collector'] + rss['node-exporter']}")
    # The collector runs the flag of the Prometheus its image holds (Debian's 2.x here).
    command = agent.inspect("collector")["Config"]["Cmd"]
    assert command[0] == "--enable-feature=agent", command


def test_the_agents_series_reach_the_server_with_its_host_label(hosts):
    server = hosts["server"]

    def arrived():
        up = {r["metric"]["job"]: r["value"][1] for r in server.query(f'up{{host="{HOST}"}}')}
        return (
            up == {"warpwatch": "1", "node-exporter": "1"}
            and server.query(f'node_load1{{host="{HOST}"}}')
            and server.query(f'process_cpu_seconds_total{{host="{HOST}",job="warpwatch"}}')
        )

    wait_for("the agent's series on the server", arrived, deadline=6 * SCRAPE_SECONDS + 30, interval=1)


def listeners_in(pid: int) -> list[str]:
    """Local addresses of every listening TCP socket in the network namespace of `pid`."""
    proc = subprocess.run(
        [require_tool("nsenter"), "-t", str(pid), "-n", require_tool("ss"), "-Hltn"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [line.split()[3] for line in proc.stdout.splitlines() if line.strip()]


def test_nothing_in_any_agent_container_listens_beyond_loopback(hosts):
    agent = hosts["agent"]
    ports = {str(s["port"]) for name, s in agent.specs["stack"]["services"].items() if name in agent.specs["composeServices"]}
    for name in agent.specs["composeServices"]:
        addresses = listeners_in(agent.inspect(name)["State"]["Pid"])
        assert {a.rsplit(":", 1)[1] for a in addresses} >= ports, (name, addresses)
        assert all(a.startswith(LOOPBACK) for a in addresses), (name, addresses)


def connects(ns: Namespace, address: str, port: int) -> bool:
    """Whether a TCP connection from inside the agent's namespace to address:port succeeds."""
    code = f"import socket; socket.create_connection(({address!r}, {port}), timeout=3)"
    proc = subprocess.run(["ip", "netns", "exec", ns.name, "python3", "-c", code], capture_output=True, timeout=30)
    return proc.returncode == 0


def test_the_server_is_reached_only_at_its_receiver(hosts):
    server, ns = hosts["server"], hosts["ns"]
    receiver_port = server.specs["stack"]["receiver"]["port"]
    # Published beyond loopback: the receiver's one port, nothing else of any service.
    exposed = []
    for name in server.specs["composeServices"]:
        for port, bindings in (server.inspect(name)["NetworkSettings"]["Ports"] or {}).items():
            exposed += [(name, port, b["HostIp"]) for b in bindings or [] if b["HostIp"] != "127.0.0.1"]
    assert exposed == [("receiver", f"{receiver_port}/tcp", ns.server_ip)], exposed
    # From the agent's side: the receiver answers, the published loopback services do not.
    assert connects(ns, ns.server_ip, receiver_port)
    for name in ("warpwatch", "grafana"):
        assert not connects(ns, ns.server_ip, server.port(name)), name


def test_the_receiver_refuses_no_certificate_another_ca_a_revoked_one_and_other_paths(hosts):
    server, ns, pki = hosts["server"], hosts["ns"], hosts["pki"]
    base = f"https://{ns.server_ip}:{server.specs['stack']['receiver']['port']}"

    def answer(path, client=None, method="POST"):
        ctx = ssl.create_default_context(cafile=str(pki["ca"][0]))
        if client:
            ctx.load_cert_chain(str(client[0]), str(client[1]))
        request = urllib.request.Request(base + path, data=b"x" if method == "POST" else None, method=method)
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=5) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    # nginx's own refusals (Prometheus answers a bad write with a 400 too: the text tells them apart).
    status, text = answer("/api/v1/write")
    assert status == 400 and "No required SSL certificate was sent" in text, (status, text)
    status, text = answer("/api/v1/write", pki["stranger"])
    assert status == 400 and "The SSL certificate error" in text, (status, text)
    # receiver.crlFile, a compose secret in the container: the CA's revoked agent is refused too.
    status, text = answer("/api/v1/write", pki["clients"][REVOKED])
    assert status == 400 and "The SSL certificate error" in text, (status, text)
    for path, method in (("/api/v1/query?query=up", "GET"), ("/graph", "GET"), ("/api/v1/admin/tsdb/snapshot", "POST")):
        status, text = answer(path, pki["clients"][HOST], method)
        assert status == 404 and "nginx" in text, (path, status, text)
    # The agent's own certificate passes: a (meaningless) write reaches Prometheus, which refuses
    # the body itself.
    status, text = answer("/api/v1/write", pki["clients"][HOST])
    assert status == 400 and "nginx" not in text, (status, text)
