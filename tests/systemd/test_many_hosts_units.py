"""Issue 18: the NixOS mapping's two roles under a real systemd 252, in two containers on one
private network of the tests' dockerd (like test_units_run.py, one Debian bookworm container each):

- `monitor`, a receiving server: nixpkgs' Prometheus unit from the mapping's values (with the
  remote-write receiver flag and the stack's rules, HostSilent among them) running Debian's
  prometheus, and the stack's warpwatch-receiver unit running Debian's nginx with its certificate,
  key, client CA and the CA's CRL (revoking a second agent, app2) as systemd credentials;
- `app1`, an agent: the warpwatch unit, nixpkgs' node exporter unit, and the collector (nixpkgs'
  Prometheus unit in agent mode; Debian's 2.42 takes `--enable-feature=agent` where nixos-26.05's
  Prometheus 3 takes `--agent`) remote-writing over mutual TLS with its credentials.

The server's Prometheus then holds the agent's series labelled host="app1"; the agent listens on
nothing beyond loopback; a stopped collector raises HostSilent on the server. The certificates
are made here with the real openssl; no key is ever in a unit or a store path.
"""

import ipaddress
import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import nix_eval, nix_value, require_tool
from tests.hosts.helpers import make_pki, revoke
from tests.nixos.helpers import AGENT, FAKE, RECEIVING, SYSTEM_FAKE, mapping, mapping_raw
from tests.nixos.nixpkgs_units import merge_unit, nixpkgs_prometheus, node_exporter_unit
from tests.systemd.helpers import Machine

PROMETHEUS = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-prometheus"
NODE_EXPORTER = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-prometheus-node-exporter"
# Seconds instead of the declared 15 s / 300 s, through the overrides an operator uses, so the
# silence is noticed within a minute: HostSilent holds 4 scrape intervals after `silentFor`.
FAST = {"prometheus": {"scrapeIntervalSeconds": 2, "evaluationIntervalSeconds": 2}}
SILENT_FOR = 10
RECEIVER_PORT = 8443
SERVER = {
    **RECEIVING,
    **FAST,
    "hosts": {**RECEIVING["hosts"], "name": "monitor", "silentForSeconds": SILENT_FOR},
    "receiver": {**RECEIVING["receiver"], "port": RECEIVER_PORT, "crlFile": "/etc/warpwatch/tls/ca.crl"},
}
CLIENT = {**AGENT, **FAST, "agent": {**AGENT["agent"], "serverAddress": f"monitor:{RECEIVER_PORT}"}}
PACKAGES = {name: SYSTEM_FAKE[name] for name in ("bash", "systemd", "coreutils", "gnugrep")}
DEBIAN_AGENT_FLAG = "--enable-feature=agent"


def store_binary(box: Machine, store_path: str, program: str, tool: str):
    """The host's (Debian's) program at <store_path>/bin/<program> of the machine's store."""
    target = box.store.directory / Path(store_path).name / "bin" / program
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(require_tool(tool)).resolve(), target)


def prometheus_units(box: Machine, overrides: dict) -> dict:
    """nixpkgs' Prometheus units from the mapping's services.prometheus values: the configuration
    nixpkgs writes (agent mode: no rules, no alerting targets) with the stack's rules stored."""
    options = mapping(overrides)["monitoring"]["services"]["prometheus"]
    ours = mapping_raw(overrides)["monitoring"]["systemd"]["services"]["prometheus"]["serviceConfig"]
    agent = options.get("enableAgentMode", False)
    rules = nix_eval(f"(import ./nix/stack {{ overrides = {nix_value(overrides)}; }}).configs.rules")
    config = {
        "alerting": {"alertmanagers": []},
        "global": options["globalConfig"],
        "remote_read": [],
        "remote_write": options.get("remoteWrite", []),
        "rule_files": [] if agent else [box.store.add("warpwatch-rules.yml", "warpwatch-rules.yml", rules)],
        "scrape_configs": options["scrapeConfigs"],
    }
    return nixpkgs_prometheus(options, ours, yaml.safe_dump(config), box.store, PACKAGES, PROMETHEUS, DEBIAN_AGENT_FLAG)


def credentials_stand_in(box: Machine, unit: str, load_credential: list[str]):
    """What systemd's LoadCredential= does, finished by hand: this container's systemd 252 bind-mounts
    each unit's credentials directory (/run/credentials/<unit>.service, root 0700) but leaves it
    empty (measured here: even `systemd-run -p DynamicUser=yes -p LoadCredential=x:FILE` finds
    nothing it may read; tests/systemd/test_alert_units_run.py found the same for Alertmanager).
    A drop-in adds an ExecStartPre= run as root outside the sandbox that copies each file of the
    unit's own LoadCredential= lines into that (read-only, so briefly remounted) directory,
    readable, so the service reads them at the very paths the rendered configuration names. The
    unit file keeps the mapping's lines."""
    directory = f"/run/credentials/{unit}.service"
    # Absolute programs of the image: the unit's PATH names the mapping's store paths.
    copies = " && ".join(f"/bin/cp {path} {directory}/{name}" for name, path in (c.split(":", 1) for c in load_credential))
    box.put(
        f"/etc/systemd/system/{unit}.service.d/credentials.conf",
        f"[Service]\nExecStartPre=+/bin/sh -c '/bin/mount -o remount,bind,rw {directory} && {copies} && "
        f"/bin/chmod 0755 {directory} && /bin/chmod 0444 {directory}/* && /bin/mount -o remount,bind,ro {directory}'\n",
        "0644",
    )
    box.sh("systemctl daemon-reload")


def boot_with_users(box: Machine, users: tuple[str, ...]):
    """Boot, then add the system users nixpkgs' modules declare (users.users) for their units."""
    box.boot()
    for user in users:
        box.sh(f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    pki = make_pki(directory, ["monitor"], ["app1", "app2"])
    pki["crl"] = revoke(directory / "ca-db", pki["ca"], [pki["clients"]["app2"][0]])
    return pki


@pytest.fixture(scope="module")
def network(dockerd):
    name = f"ww-hosts-{uuid.uuid4().hex[:8]}"
    # Internal: the two machines reach each other by name, and nothing else.
    dockerd.run(["network", "create", "--internal", name])
    yield name
    dockerd.run(["network", "rm", name], check=False)


@pytest.fixture(scope="module")
def monitor(dockerd, warpwatch_bin, tmp_path_factory, network, pki):
    box = Machine(
        dockerd,
        tmp_path_factory.mktemp("monitor"),
        warpwatch_bin,
        diagnostics=("systemctl status --no-pager prometheus warpwatch-receiver", "journalctl -u warpwatch-receiver -n 15 --no-pager"),
        network=network,
        aliases=("monitor",),
    )
    store_binary(box, PROMETHEUS, "prometheus", "prometheus")
    store_binary(box, FAKE["nginx"], "nginx", "nginx")
    boot_with_users(box, ("prometheus",))
    tls = SERVER["receiver"]
    box.put(tls["certFile"], pki["server"][0].read_text(), "0644")
    box.put(tls["keyFile"], pki["server"][1].read_text(), "0400")
    box.put(tls["clientCaFile"], pki["ca"][0].read_text(), "0644")
    box.put(tls["crlFile"], pki["crl"].read_text(), "0644")
    monitoring = mapping(SERVER)["monitoring"]
    units = prometheus_units(box, SERVER)
    units["systemd"]["services"]["warpwatch-receiver"] = monitoring["systemd"]["services"]["warpwatch-receiver"]
    units["environment"]["etc"]["warpwatch-receiver/nginx.conf"] = monitoring["environment"]["etc"]["warpwatch-receiver/nginx.conf"]
    box.install(units)
    receiver = units["systemd"]["services"]["warpwatch-receiver"]["serviceConfig"]["LoadCredential"]
    credentials_stand_in(box, "warpwatch-receiver", receiver)
    box.sh("systemctl start prometheus.service warpwatch-receiver.service", check=False)
    yield box
    dockerd.run(["rm", "-f", box.name])


@pytest.fixture(scope="module")
def app1(dockerd, warpwatch_bin, tmp_path_factory, network, pki, monitor):
    box = Machine(
        dockerd,
        tmp_path_factory.mktemp("app1"),
        warpwatch_bin,
        diagnostics=("systemctl status --no-pager prometheus prometheus-node-exporter warpwatch", "journalctl -u prometheus -n 15 --no-pager"),
        network=network,
    )
    store_binary(box, PROMETHEUS, "prometheus", "prometheus")
    store_binary(box, NODE_EXPORTER, "node_exporter", "prometheus-node-exporter")
    boot_with_users(box, ("prometheus", "node-exporter"))
    tls = CLIENT["agent"]
    box.put(tls["certFile"], pki["clients"]["app1"][0].read_text(), "0644")
    box.put(tls["keyFile"], pki["clients"]["app1"][1].read_text(), "0400")
    box.put(tls["caFile"], pki["ca"][0].read_text(), "0644")
    result = mapping(CLIENT)
    raw = mapping_raw(CLIENT)["monitoring"]["systemd"]["services"]
    units = prometheus_units(box, CLIENT)
    exporter = node_exporter_unit(result["monitoring"]["services"]["prometheus"]["exporters"]["node"], NODE_EXPORTER)
    exporter["serviceConfig"] = merge_unit(exporter["serviceConfig"], raw["prometheus-node-exporter"]["serviceConfig"])
    units["systemd"]["services"]["prometheus-node-exporter"] = exporter
    box.install(result["service"])
    box.install(units)
    credentials_stand_in(box, "prometheus", units["systemd"]["services"]["prometheus"]["serviceConfig"]["LoadCredential"])
    box.sh("systemctl start warpwatch.service prometheus-node-exporter.service prometheus.service", check=False)
    yield box
    dockerd.run(["rm", "-f", box.name])


def api(box: Machine, path: str, *args: str) -> dict | None:
    """A GET of the server's Prometheus API (None while it does not answer)."""
    port = mapping(SERVER)["monitoring"]["services"]["prometheus"]["port"]
    out = box.sh(f"curl -sf -G http://127.0.0.1:{port}{path} " + " ".join(args), check=False)
    return json.loads(out.stdout)["data"] if out.returncode == 0 else None


def query(box: Machine, expr: str) -> list:
    data = api(box, "/api/v1/query", f"--data-urlencode 'query={expr}'")
    return data["result"] if data else []


def test_the_units_load_the_tls_files_as_credentials(monitor, app1):
    receiver = monitor.sh("cat /etc/systemd/system/warpwatch-receiver.service").stdout
    for name, option in (("server.crt", "certFile"), ("server.key", "keyFile"), ("client-ca.crt", "clientCaFile"), ("client-ca.crl", "crlFile")):
        assert f"LoadCredential={name}:{SERVER['receiver'][option]}" in receiver
    collector = app1.sh("cat /etc/systemd/system/prometheus.service").stdout
    for name, option in (("client.crt", "certFile"), ("client.key", "keyFile"), ("ca.crt", "caFile")):
        assert f"LoadCredential={name}:{CLIENT['agent'][option]}" in collector
    assert DEBIAN_AGENT_FLAG in collector and "--storage.tsdb.path" not in collector


def test_the_agents_series_reach_the_server_labelled_with_its_host(monitor, app1):
    def jobs():
        return sorted(r["metric"]["job"] for r in query(monitor, 'up{host="app1"} == 1'))

    started = time.monotonic()
    monitor.wait("the agent's up series on the server", lambda: jobs() == ["node-exporter", "warpwatch"], deadline=90)
    print(f"\nthe agent's series were on the server {time.monotonic() - started:.1f}s after both machines were up")
    # Series of both scraped targets, not only `up`: the node exporter's and warpwatch's own.
    assert query(monitor, 'node_exporter_build_info{host="app1"}'), "no node exporter series of app1"
    assert query(monitor, 'count({host="app1",job="warpwatch",__name__!="up"})'), "no warpwatch series of app1"
    # The receiver ran as a dynamic user with its files as credentials, not as root.
    assert monitor.show("warpwatch-receiver.service", "ActiveState") == "active"
    user = monitor.sh("ps -o user= -C nginx | sort -u").stdout.split()
    assert user and "root" not in user, user


def listening_addresses(box: Machine) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the machine's listening TCP sockets, from /proc/net/tcp{,6} (each 32-bit
    word in the kernel's byte order)."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in box.sh(f"cat {table}").stdout.splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                addresses.append(ipaddress.ip_address(words))
    return addresses


def test_nothing_on_the_agent_listens_beyond_loopback(app1, monitor):
    collector = mapping(CLIENT)["monitoring"]["services"]["prometheus"]
    ready = f"curl -sf http://{collector['listenAddress']}:{collector['port']}/-/ready"
    app1.wait("the collector to answer", lambda: app1.sh(ready, check=False).returncode == 0)
    addresses = listening_addresses(app1)
    # Docker's own resolver (127.0.0.11) is loopback too.
    assert addresses and all(address.is_loopback for address in addresses), addresses


def test_the_receiver_refuses_a_client_without_a_certificate(app1, monitor):
    status = app1.sh(
        f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {CLIENT['agent']['caFile']} "
        f"-X POST --data-binary x https://monitor:{RECEIVER_PORT}/api/v1/write"
    ).stdout
    assert status == "400", status


def test_the_receiver_refuses_an_agent_its_crl_revokes_and_serves_one_it_does_not(app1, monitor, pki):
    """receiver.crlFile as NixOS runs it: the CRL a credential of warpwatch-receiver, nginx's
    ssl_crl pointing into the credentials directory. A write of the revoked app2 is refused by nginx
    (its 400 page); app1's reaches Prometheus, which refuses the meaningless body itself."""

    def write(agent: str) -> str:
        cert, key = (f"/tmp/{agent}.{ext}" for ext in ("crt", "key"))
        app1.put(cert, pki["clients"][agent][0].read_text(), "0644")
        app1.put(key, pki["clients"][agent][1].read_text(), "0400")
        return app1.sh(
            f"curl -s --cacert {CLIENT['agent']['caFile']} --cert {cert} --key {key} "
            f"-X POST --data-binary x https://monitor:{RECEIVER_PORT}/api/v1/write"
        ).stdout

    assert "The SSL certificate error" in write("app2")
    answer = write("app1")
    assert "snappy" in answer, answer  # Prometheus' own refusal of the body


def test_a_stopped_collector_raises_host_silent_on_the_server(app1, monitor):
    # Runs last: it stops the agent's collector.
    monitor.wait("the agent's series", lambda: query(monitor, 'up{host="app1"}'), deadline=90)
    app1.sh("systemctl stop prometheus.service")
    stopped = time.monotonic()

    def silent():
        alerts = (api(monitor, "/api/v1/alerts") or {"alerts": []})["alerts"]
        return [a for a in alerts if a["labels"].get("alertname") == "HostSilent" and a["state"] == "firing"]

    hold = 4 * FAST["prometheus"]["scrapeIntervalSeconds"]
    (alert,) = monitor.wait("HostSilent for app1", silent, deadline=SILENT_FOR + hold + 30)
    assert alert["labels"]["host"] == "app1"
    print(f"\nHostSilent fired {time.monotonic() - stopped:.1f}s after the agent's collector stopped (silent for {SILENT_FOR}s, held {hold}s)")
