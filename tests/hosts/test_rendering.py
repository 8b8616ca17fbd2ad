"""Many hosts (issue 18), offline: the agent's collector and shipper configurations, the
server's receiver (nginx, run for real with certificates made by openssl), the silent-host
alert (promtool's rule tests) and the rules that reject a bad declaration."""

import contextlib
import json
import signal
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests import spec
from tests.conftest import DASHBOARDS, free_port, nix_eval_error, nix_value, require_tool, stop_process, wait_for
from tests.hosts.helpers import agent_overrides, make_pki, render, render_yaml_text, revoke, server_overrides
from tests.stack.helpers import stack_expr

SERVER = "monitor.example.org:8443"


def promtool(*args, cwd=None) -> str:
    proc = subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_agent_collector_scrapes_loopback_labels_host_and_writes_over_mutual_tls(tmp_path):
    text = render_yaml_text("agentPrometheus", agent_overrides("app1", SERVER))
    config = tmp_path / "agent.yml"
    config.write_text(text)
    promtool("check", "config", "--agent", str(config))
    parsed = yaml.safe_load(text)
    assert parsed["global"]["external_labels"] == {"host": "app1"}
    assert {job["job_name"]: job["static_configs"][0]["targets"] for job in parsed["scrape_configs"]} == {
        "warpwatch": [f"127.0.0.1:{spec.PORTS['warpwatch']}"],
        "node-exporter": [f"127.0.0.1:{spec.PORTS['node-exporter']}"],
    }
    assert parsed["remote_write"] == [
        {
            "url": f"https://{SERVER}/api/v1/write",
            "tls_config": {
                "cert_file": "/etc/warpwatch/tls/client.crt",
                "key_file": "/etc/warpwatch/tls/client.key",
                "ca_file": "/etc/warpwatch/tls/ca.crt",
            },
        }
    ]
    # A directory of credentials instead of the declared files (compose mount, NixOS unit).
    moved = yaml.safe_load(render_yaml_text("agentPrometheus", agent_overrides("app1", SERVER), 'tlsDir = "/run/tls";'))
    assert moved["remote_write"][0]["tls_config"]["key_file"] == "/run/tls/client.key"


@pytest.mark.parametrize("target", ["compose", "host"])
def test_agent_shipper_pushes_to_the_receiver_with_host_and_listens_on_loopback(target):
    config = yaml.safe_load(render_yaml_text("promtail", agent_overrides("app1", SERVER), f'target = "{target}";'))
    (client,) = config["clients"]
    assert client["url"] == f"https://{SERVER}/loki/api/v1/push"
    assert client["external_labels"] == {"host": "app1"}
    assert client["tls_config"]["key_file"] == "/etc/warpwatch/tls/client.key"
    # Outlasts a long outage instead of dropping a batch after Promtail's default 10 retries.
    assert client["backoff_config"]["max_retries"] >= 1000
    assert config["server"]["http_listen_address"] == "127.0.0.1"
    # A server's own shipper is unchanged.
    server = yaml.safe_load(render_yaml_text("promtail", {}, f'target = "{target}";'))
    assert "tls_config" not in server["clients"][0] and "external_labels" not in server["clients"][0]


def test_silent_host_alert_fires_per_expected_host_and_resolves(tmp_path):
    overrides = server_overrides(["app1", "app2"], hosts={"expected": ["app1", "app2"], "silentForSeconds": 300})
    rules = tmp_path / "rules.yml"
    rules.write_text(render("s.configs.rules", overrides))
    promtool("check", "rules", str(rules))
    # app1 pushes for 10 minutes and goes quiet; app2 never stops. HostSilent names app1 only,
    # once 5 minutes have passed without a sample and 4 scrape intervals more, never before.
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yml"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": 'up{host="app1",job="warpwatch"}', "values": "1x10 _x20 1x10"},
                            {"series": 'up{host="app2",job="warpwatch"}', "values": "1x40"},
                        ],
                        "alert_rule_test": [
                            {"eval_time": "14m", "alertname": "HostSilent", "exp_alerts": []},
                            # Silent from 15m on, pending for 4 scrape intervals (1m) first.
                            {"eval_time": "16m", "alertname": "HostSilent", "exp_alerts": []},
                            {
                                "eval_time": "17m",
                                "alertname": "HostSilent",
                                "exp_alerts": [
                                    {
                                        "exp_labels": {"host": "app1", "severity": "page"},
                                        "exp_annotations": {
                                            "summary": "Host app1 has sent nothing for 5m",
                                            "description": "No sample from host app1 reached this server in 5m: the host, its collector, or the network or TLS path to the receiver is down.",
                                        },
                                    }
                                ],
                            },
                            {"eval_time": "32m", "alertname": "HostSilent", "exp_alerts": []},
                        ],
                    }
                ],
            }
        )
    )
    promtool("test", "rules", "test.yml", cwd=tmp_path)


def test_no_silent_host_rules_without_expected_hosts_and_a_warning_names_the_option():
    assert "HostSilent" not in render("s.configs.rules", {})
    assert render("s.stack.warnings", {}) == []
    assert render("s.stack.warnings", server_overrides(["app1"])) == []
    (warning,) = render("s.stack.warnings", server_overrides(None))
    assert "hosts.expected" in warning and "receiver.enable" in warning


def test_server_prometheus_receives_remote_write_only_with_the_receiver():
    def command(overrides):
        return render("s.compose.file", overrides)["services"]["prometheus"]["command"]

    assert "--web.enable-remote-write-receiver" not in command({})
    assert "--web.enable-remote-write-receiver" in command(server_overrides(["app1"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"role": "relay"}, 'role must be "server" or "agent" (got "relay")'),
        ({"role": "agent"}, "hosts.name is not set"),
        (agent_overrides("app1", SERVER, agent={"serverAddress": None}), "agent.serverAddress is not set"),
        (agent_overrides("app1", "https://monitor/"), "agent.serverAddress must be host:port"),
        ({**agent_overrides("app1", SERVER), "agent": {"serverAddress": SERVER}}, "agent.certFile is not set"),
        (
            {**agent_overrides("app1", SERVER), "agent": {"serverAddress": SERVER, "certFile": "/c", "caFile": "/a"}},
            "agent.keyFile is not set",
        ),
        (
            agent_overrides("app1", SERVER, tls_dir="/nix/store/abc-tls"),
            "agent.keyFile is in the Nix store (/nix/store/abc-tls/client.key)",
        ),
        (agent_overrides("App 1", SERVER), 'hosts.name must be a host name of lower-case letters, digits, ., - or _ (got "App 1")'),
        (server_overrides(["app1", "app2", "app1"]), 'hosts.expected names "app1" more than once'),
        ({"receiver": {"enable": True}}, "receiver.certFile is not set"),
        (
            server_overrides(["app1"], receiver={"keyFile": "/nix/store/x-server.key"}),
            "receiver.keyFile is in the Nix store",
        ),
        (server_overrides(["app1"], receiver={"port": 9090}), "receiver.port 9090 is a service's port too"),
        (server_overrides(["app1"], receiver={"crlFile": "ca.crl"}), 'receiver.crlFile must be an absolute path string (got "ca.crl")'),
    ],
)
def test_bad_many_hosts_declarations_fail_naming_the_field(overrides, message):
    err = nix_eval_error(stack_expr("s.stack.role", nix_value(overrides)))
    assert message in err, err


def test_a_key_given_as_a_nix_path_is_refused_before_it_reaches_the_store():
    agent = agent_overrides("app1", SERVER)
    expr = stack_expr(
        "s.stack.role",
        f"({nix_value(agent)}) // {{ agent = ({nix_value(agent['agent'])}) // {{ keyFile = /etc/warpwatch/client.key; }}; }}",
    )
    err = nix_eval_error(expr)
    assert "agent.keyFile is the Nix path /etc/warpwatch/client.key" in err, err


def test_a_crl_given_as_a_nix_path_is_refused_naming_the_field():
    server = server_overrides(["app1"])
    expr = stack_expr(
        "s.stack.role",
        f"({nix_value(server)}) // {{ receiver = ({nix_value(server['receiver'])}) // {{ crlFile = /etc/warpwatch/tls/ca.crl; }}; }}",
    )
    err = nix_eval_error(expr)
    assert 'receiver.crlFile is the Nix path /etc/warpwatch/tls/ca.crl: give the file\'s location as a string instead, e.g. receiver.crlFile = "/etc/warpwatch/tls/ca.crl"' in err, err


class _Recorder(BaseHTTPRequestHandler):
    """An upstream that records each request's method and path (stands in for Prometheus and
    Loki behind nginx: what matters here is what nginx lets through)."""

    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.server.server_port, self.command, self.path, body))
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


def _https(url: str, context: ssl.SSLContext, method: str = "POST") -> int:
    request = urllib.request.Request(url, data=b"x" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _client(pki: dict, client=None) -> ssl.SSLContext:
    """A TLS client that trusts the user's CA, presenting `client` (certificate, key) if given."""
    context = ssl.create_default_context(cafile=str(pki["ca"][0]))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


@contextlib.contextmanager
def _receiver(tmp_path, pki: dict, **files):
    """The rendered nginx.conf of a receiver with the user's server certificate and CA (and
    `files`, more receiver fields), checked with `nginx -t` and run by the real nginx in front of
    two recording upstreams (Prometheus, Loki). Yields the base URL, the upstreams' ports by
    name and the nginx process, once its loopback health port answers."""
    nginx = require_tool("nginx")
    upstreams, servers = {}, []
    for name in ("prometheus", "loki"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        upstreams[name] = server.server_port
    port, health = free_port(), free_port()
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    overrides = server_overrides(
        ["app1"],
        receiver={"bindAddress": "127.0.0.1", "port": port},
        services={**{name: {"port": p} for name, p in upstreams.items()}, "receiver": {"port": health}},
    )
    overrides["receiver"].update(
        certFile=str(pki["server"][0]), keyFile=str(pki["server"][1]), clientCaFile=str(pki["ca"][0]), **files
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(f's.configs.nginx {{ target = "host"; stateDir = "{state}"; }}', overrides))
    check = subprocess.run([nginx, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        healthz = f"http://127.0.0.1:{health}/healthz"
        wait_for("nginx", lambda: urllib.request.urlopen(healthz, timeout=5).status == 200, processes=[proc])
        _Recorder.seen.clear()
        yield f"https://127.0.0.1:{port}", upstreams, proc
    finally:
        stop_process(proc)
        for server in servers:
            server.shutdown()


def test_receiver_admits_only_the_two_write_paths_from_clients_of_the_users_ca(tmp_path):
    """The rendered nginx.conf, run by the real nginx: a client of the user's CA reaches
    Prometheus' write path and Loki's push path; no certificate, another CA's certificate, any
    other path and any other method are refused."""
    pki = make_pki(tmp_path / "pki", ["127.0.0.1", "localhost"], ["app1"])
    with _receiver(tmp_path, pki) as (base, upstreams, _):
        agent = _client(pki, pki["clients"]["app1"])
        assert _https(f"{base}/api/v1/write", agent) == 204
        assert _https(f"{base}/loki/api/v1/push", agent) == 204
        assert [(p, m, path) for p, m, path, _ in _Recorder.seen] == [
            (upstreams["prometheus"], "POST", "/api/v1/write"),
            (upstreams["loki"], "POST", "/loki/api/v1/push"),
        ]
        # Everything else: refused, and nothing reaches an upstream.
        _Recorder.seen.clear()
        assert _https(f"{base}/api/v1/write", _client(pki)) == 400  # no certificate
        assert _https(f"{base}/loki/api/v1/push", _client(pki, pki["stranger"])) == 400  # another CA
        for path in ("/api/v1/query?query=up", "/loki/api/v1/query", "/", "/api/v1/write/../query", "/metrics"):
            assert _https(f"{base}{path}", agent, "GET") in (403, 404), path
        assert _https(f"{base}/api/v1/write", agent, "GET") == 403
        assert _Recorder.seen == []


def _writes(base: str, pki: dict) -> dict:
    """The status of a remote write from each of the PKI's agents."""
    return {name: _https(f"{base}/api/v1/write", _client(pki, cert)) for name, cert in pki["clients"].items()}


def test_a_client_revoked_in_the_crl_is_refused_while_another_of_the_same_ca_passes(tmp_path):
    """receiver.crlFile, the CA's CRL made with `openssl ca -revoke` and `-gencrl` (README "Many
    hosts"): the revoked agent's write is refused like any other refused client's (400) and
    reaches no upstream; the CA's other agent writes on. The CA's own CRL is all nginx needs for
    a CA that signs the agents' certificates directly. Without crlFile, both pass."""
    pki = make_pki(tmp_path / "pki", ["127.0.0.1"], ["app1", "app2"])
    crl = revoke(tmp_path / "ca-db", pki["ca"], [pki["clients"]["app2"][0]])
    with _receiver(tmp_path, pki) as (base, _, _):
        assert _writes(base, pki) == {"app1": 204, "app2": 204}
    with _receiver(tmp_path, pki, crlFile=str(crl)) as (base, upstreams, _):
        assert _writes(base, pki) == {"app1": 204, "app2": 400}
        assert [(p, path) for p, _, path, _ in _Recorder.seen] == [(upstreams["prometheus"], "/api/v1/write")]


def test_a_renewed_crl_is_read_on_reload_and_an_expired_one_refuses_every_client(tmp_path):
    """nginx reads the CRL when it starts and again on SIGHUP (a reload), not in between; a CRL
    past its nextUpdate refuses every client, revoked or not, so it must be re-issued before
    then."""
    pki = make_pki(tmp_path / "pki", ["127.0.0.1"], ["app1", "app2"])
    crl = revoke(tmp_path / "ca-db", pki["ca"], [])
    with _receiver(tmp_path, pki, crlFile=str(crl)) as (base, _, proc):
        assert _writes(base, pki) == {"app1": 204, "app2": 204}
        assert revoke(tmp_path / "ca-db", pki["ca"], [pki["clients"]["app2"][0]]) == crl  # renewed in place
        assert _writes(base, pki) == {"app1": 204, "app2": 204}  # not before a reload
        proc.send_signal(signal.SIGHUP)
        wait_for("the renewed CRL", lambda: _writes(base, pki) == {"app1": 204, "app2": 400}, processes=[proc])
    expired = revoke(tmp_path / "expired-db", pki["ca"], [], expired=True)
    with _receiver(tmp_path, pki, crlFile=str(expired)) as (base, _, _):
        assert _writes(base, pki) == {"app1": 400, "app2": 400}
        assert _Recorder.seen == []


def test_dashboards_select_hosts_and_every_service_and_host_query_follows_the_selector():
    """Issue 18: "Dashboards get a host selector". Each query of the service, host and logs
    dashboards filters on `$host`; the host dashboard keeps hosts apart, though every agent's
    node exporter is the same 127.0.0.1:9100."""
    for name in ("service.json", "host.json", "logs.json"):
        dashboard = json.loads((DASHBOARDS / name).read_text())
        (selector,) = [v for v in dashboard["templating"]["list"] if v["name"] == "host"]
        assert selector["includeAll"] and selector["allValue"] == ".*", name
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert 'host=~"$host"' in target["expr"], (name, panel["title"], target["expr"])
                if name == "host.json":
                    assert "by (instance" not in target["expr"] and "on (instance)" not in target["expr"], target["expr"]


def test_a_named_server_labels_its_own_series_with_its_host_name():
    config = yaml.safe_load(render_yaml_text("prometheus", {"hosts": {"name": "monitor"}}, 'target = "host";'))
    for job in config["scrape_configs"]:
        assert {"target_label": "host", "replacement": "monitor"} in job["relabel_configs"], job["job_name"]
