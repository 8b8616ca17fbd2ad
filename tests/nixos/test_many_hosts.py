"""Issue 18 on NixOS: an agent's units (the collector as nixpkgs' Prometheus in agent mode, the
shipper pushing to the server, both with their TLS files as systemd credentials), a server's
receiver in a unit of its own, and the bad inputs that fail evaluation naming the option."""

import subprocess

import pytest
import yaml

from tests.conftest import nix_eval, nix_eval_error, require_tool, write_files
from tests.hosts.helpers import make_pki, revoke
from tests.nixos.helpers import (
    AGENT,
    FAKE,
    RECEIVING,
    mapping,
    mapping_error,
    mapping_expr,
    merged,
    promtool_check_config,
    resolve,
)

# What nix/module.nix passes as hostsFieldPrefix: its options' path.
PREFIX = "services.warpwatch.monitoring."


def module_expr(overrides: dict) -> str:
    """The mapping as nix/module.nix builds it: validation messages name its options."""
    return mapping_expr(overrides).replace("import ./nix/stack {", f'import ./nix/stack {{ hostsFieldPrefix = "{PREFIX}";', 1)


def failed(config: dict) -> list[str]:
    return [a["message"] for a in config.get("assertions", []) if not a["assertion"]]


def listened(config: dict) -> list[str]:
    """host:port of everything the mapped units and services listen on, as far as options say."""
    prometheus = config["services"]["prometheus"]
    node = prometheus["exporters"]["node"]
    return [f"{prometheus['listenAddress']}:{prometheus['port']}", f"{node['listenAddress']}:{node['port']}"]


@pytest.fixture(scope="module")
def agent() -> dict:
    return merged(mapping(AGENT))


@pytest.fixture(scope="module")
def server() -> dict:
    return merged(mapping(RECEIVING))


# --- the agent -------------------------------------------------------------------------------


def test_an_agent_runs_warpwatch_the_node_exporter_and_the_two_collectors_only(agent):
    units = set(agent["systemd"]["services"])
    assert {"warpwatch", "prometheus", "prometheus-node-exporter", "warpwatch-promtail"} <= units
    assert not {"loki", "grafana", "alertmanager", "warpwatch-receiver"} & units
    assert agent["services"]["loki"] == {} and agent["services"]["grafana"] == {}
    healthchecks = {u for u in units if u.startswith("warpwatch-health-")}
    assert healthchecks == {f"warpwatch-health-{n}" for n in ("warpwatch", "node-exporter", "collector", "promtail")}
    assert failed(agent) == []


def test_the_collector_is_prometheus_in_agent_mode_on_loopback(agent):
    prometheus = agent["services"]["prometheus"]
    declared = nix_eval("(import ./nix/stack { }).stack.services.collector")
    assert prometheus["enable"] is True and prometheus["enableAgentMode"] is True
    assert prometheus["listenAddress"] == "127.0.0.1" and prometheus["port"] == declared["port"]
    assert agent["systemd"]["services"]["prometheus"]["serviceConfig"]["MemoryMax"] == f"{declared['memoryMiB']}M"
    # Nothing on an agent listens beyond loopback, and no port is opened.
    assert all(address.startswith("127.0.0.1:") for address in listened(agent))
    assert agent["networking"]["firewall"]["allowedTCPPorts"] == []


@pytest.mark.parametrize(
    ("shape", "paths"),
    [({}, ("globalConfig", "remoteWrite")), ({"prometheusSettings": True, "journaldSettings": True}, None)],
    ids=["nixos-26.05", "master"],
)
def test_the_collector_labels_its_host_and_writes_with_its_credentials(shape, paths):
    config = merged(mapping(AGENT, **({"nixpkgsShape": shape} if shape else {})))
    prometheus = config["services"]["prometheus"]
    if paths:
        global_config, remote_write = (prometheus[p] for p in paths)
    else:
        global_config, remote_write = prometheus["settings"]["global"], prometheus["settings"]["remote_write"]
    assert global_config["external_labels"] == {"host": "app1"}
    credentials = "/run/credentials/prometheus.service"
    assert remote_write == [
        {
            "url": "https://monitor.example.org:8443/api/v1/write",
            "tls_config": {
                "cert_file": f"{credentials}/client.crt",
                "key_file": f"{credentials}/client.key",
                "ca_file": f"{credentials}/ca.crt",
            },
        }
    ]
    # The files the user named, loaded by systemd under the names the configuration reads.
    assert config["systemd"]["services"]["prometheus"]["serviceConfig"]["LoadCredential"] == [
        f"client.crt:{AGENT['agent']['certFile']}",
        f"client.key:{AGENT['agent']['keyFile']}",
        f"ca.crt:{AGENT['agent']['caFile']}",
    ]


@pytest.mark.parametrize("shipper", ["promtail", "alloy"])
def test_the_shipper_pushes_to_the_receiver_with_its_own_credentials(shipper):
    config = merged(mapping({**AGENT, "logShipper": shipper}))
    unit = f"warpwatch-{shipper}"
    service = config["systemd"]["services"][unit]
    credentials = f"/run/credentials/{unit}.service"
    assert service["serviceConfig"]["LoadCredential"] == [
        f"client.crt:{AGENT['agent']['certFile']}",
        f"client.key:{AGENT['agent']['keyFile']}",
        f"ca.crt:{AGENT['agent']['caFile']}",
    ]
    assert "loki.service" not in service["after"]
    promtail = yaml.safe_load(config["environment"]["etc"][f"{unit}/promtail.yaml"]["text"])
    (client,) = promtail["clients"]
    assert client["url"] == "https://monitor.example.org:8443/loki/api/v1/push"
    assert client["external_labels"] == {"host": "app1"}
    assert client["tls_config"] == {
        "cert_file": f"{credentials}/client.crt",
        "key_file": f"{credentials}/client.key",
        "ca_file": f"{credentials}/ca.crt",
    }
    assert promtail["server"]["http_listen_address"] == "127.0.0.1"


def test_promtool_accepts_the_collector_configuration_nixpkgs_writes(agent, tmp_path):
    # nixpkgs' prometheus.yml from these options (its promConfig; rule_files empty in agent
    # mode), checked by the real promtool in agent mode.
    prometheus = agent["services"]["prometheus"]
    config = {
        "alerting": {"alertmanagers": []},
        "global": prometheus["globalConfig"],
        "remote_read": [],
        "remote_write": prometheus["remoteWrite"],
        "rule_files": [],
        "scrape_configs": prometheus["scrapeConfigs"],
    }
    write_files(tmp_path, {"prometheus.yml": yaml.safe_dump(config)})
    promtool_check_config(tmp_path / "prometheus.yml", "--agent")


def test_an_agent_host_running_its_own_prometheus_server_fails_naming_the_option():
    config = merged(mapping(AGENT, host={"prometheus": {"enabledByHost": True}}))
    (message,) = failed(config)
    assert message.startswith("services.prometheus.enable is set on this host"), message
    assert f'{PREFIX}role = "agent"' in message, message


# --- the server's receiver -------------------------------------------------------------------


def test_the_receiver_runs_nginx_in_a_unit_of_its_own_with_credentials(server):
    declared = nix_eval("(import ./nix/stack { }).stack.services.receiver")
    service = server["systemd"]["services"]["warpwatch-receiver"]
    config = service["serviceConfig"]
    assert config["ExecStart"] == (
        f"{FAKE['nginx']}/bin/nginx -e stderr -p {declared['dataDir']} -c /etc/warpwatch-receiver/nginx.conf"
    )
    assert config["MemoryMax"] == f"{declared['memoryMiB']}M"
    assert config["DynamicUser"] is True and config["PrivateUsers"] is True
    assert config["StateDirectory"] == "warpwatch-receiver"
    assert config["CapabilityBoundingSet"] == "" and config["AmbientCapabilities"] == ""
    assert config["ProtectSystem"] == "strict" and config["NoNewPrivileges"] is True
    assert config["LoadCredential"] == [
        f"server.crt:{RECEIVING['receiver']['certFile']}",
        f"server.key:{RECEIVING['receiver']['keyFile']}",
        f"client-ca.crt:{RECEIVING['receiver']['clientCaFile']}",
    ]
    assert "warpwatch-health-receiver" in server["systemd"]["services"]
    # The host's own services.nginx is not touched.
    assert "nginx" not in server["services"] and "nginx" not in server["systemd"]["services"]


def test_the_receivers_crl_is_a_credential_nginx_reads_only_when_declared(server):
    crl = "/etc/warpwatch/tls/ca.crl"
    revoking = merged(mapping({**RECEIVING, "receiver": {**RECEIVING["receiver"], "crlFile": crl}}))
    assert revoking["systemd"]["services"]["warpwatch-receiver"]["serviceConfig"]["LoadCredential"][3:] == [
        f"client-ca.crl:{crl}"
    ]
    text = revoking["environment"]["etc"]["warpwatch-receiver/nginx.conf"]["text"]
    assert "\n    ssl_crl /run/credentials/warpwatch-receiver.service/client-ca.crl;\n" in text, text
    assert "ssl_crl" not in server["environment"]["etc"]["warpwatch-receiver/nginx.conf"]["text"]


def test_prometheus_accepts_remote_write_only_when_receiving(server):
    assert server["services"]["prometheus"]["extraFlags"] == ["--web.enable-remote-write-receiver"]
    assert "extraFlags" not in merged(mapping())["services"]["prometheus"]


def test_the_receivers_port_is_opened_only_when_asked():
    assert merged(mapping(RECEIVING))["networking"]["firewall"]["allowedTCPPorts"] == []
    assert merged(mapping(RECEIVING, receiverOpenFirewall=True))["networking"]["firewall"]["allowedTCPPorts"] == [8443]


def test_a_port_below_1024_gets_the_one_capability_it_needs():
    overrides = {**RECEIVING, "receiver": {**RECEIVING["receiver"], "port": 443}}
    config = merged(mapping(overrides))["systemd"]["services"]["warpwatch-receiver"]["serviceConfig"]
    assert config["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert config["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    # A capability inside a user namespace would not bind the host's port.
    assert config["PrivateUsers"] is False


@pytest.mark.parametrize("crl", [False, True], ids=["without-crl", "with-crl"])
def test_nginx_accepts_the_receiver_configuration(crl, tmp_path):
    # The mapped configuration with its credentials directory and state pointed at real files:
    # the real nginx parses it and loads the certificates and the CRL (`nginx -t`).
    pki = make_pki(tmp_path / "pki", ["monitor"], ["app1"])
    sources = {"server.crt": pki["server"][0], "server.key": pki["server"][1], "client-ca.crt": pki["ca"][0]}
    receiver = RECEIVING["receiver"]
    if crl:
        sources["client-ca.crl"] = revoke(tmp_path / "ca-db", pki["ca"], [pki["clients"]["app1"][0]])
        receiver = {**receiver, "crlFile": "/etc/warpwatch/tls/ca.crl"}
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, source in sources.items():
        (credentials / name).write_bytes(source.read_bytes())
    state = tmp_path / "state"
    state.mkdir()
    server = merged(mapping({**RECEIVING, "receiver": receiver}))
    text = server["environment"]["etc"]["warpwatch-receiver/nginx.conf"]["text"]
    assert ("ssl_crl" in text) is crl
    text = text.replace("/run/credentials/warpwatch-receiver.service", str(credentials))
    text = text.replace("/var/lib/warpwatch-receiver", str(state))
    assert str(credentials) in text and str(state) in text
    write_files(tmp_path, {"nginx.conf": text})
    proc = subprocess.run(
        [require_tool("nginx"), "-t", "-e", "stderr", "-p", str(state), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test is successful" in proc.stderr, proc.stderr


def test_a_receiving_server_without_expected_hosts_warns_naming_the_option():
    overrides = {"receiver": RECEIVING["receiver"]}
    warnings = merged(resolve(nix_eval(module_expr(overrides))))["warnings"]
    assert any(f"{PREFIX}hosts.expected is not" in w for w in warnings), warnings
    assert not any("hosts.expected" in w for w in merged(mapping(RECEIVING))["warnings"])


# --- bad input, named by option --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "option", "says"),
    [
        ({"agent": {**AGENT["agent"], "serverAddress": None}}, "agent.serverAddress", "is not set"),
        ({"agent": {**AGENT["agent"], "certFile": None}}, "agent.certFile", "is not set"),
        ({"agent": {**AGENT["agent"], "keyFile": "/nix/store/abc-client.key"}}, "agent.keyFile", "is in the Nix store"),
        ({"agent": {**AGENT["agent"], "caFile": "ca.crt"}}, "agent.caFile", "must be an absolute path"),
        ({"hosts": {"name": "App 1"}}, "hosts.name", "must be a host name"),
    ],
)
def test_a_bad_agent_fails_naming_the_option(change, option, says):
    error = nix_eval_error(module_expr({**AGENT, **change}))
    assert f"{PREFIX}{option} {says}" in error, error


def test_a_relative_crl_file_fails_naming_the_option():
    error = nix_eval_error(module_expr({**RECEIVING, "receiver": {**RECEIVING["receiver"], "crlFile": "ca.crl"}}))
    assert f'{PREFIX}receiver.crlFile must be an absolute path string (got "ca.crl")' in error, error


def test_duplicate_expected_hosts_fail_naming_the_option():
    error = nix_eval_error(module_expr({**RECEIVING, "hosts": {"expected": ["app1", "app2", "app1"]}}))
    assert f'{PREFIX}hosts.expected names "app1" more than once' in error, error


def test_without_the_prefix_messages_name_the_declarations_fields():
    error = mapping_error({**AGENT, "agent": {**AGENT["agent"], "serverAddress": None}})
    assert "warpwatch stack: agent.serverAddress is not set" in error, error


def test_the_tls_options_are_strings_so_a_path_is_refused_not_copied():
    # The options' types, read from module.nix with a stand-in lib that names types (a Nix path
    # is then a type error of the module system, before anything is copied into the store).
    expr = (
        'let types = { attrsOf = t: { attrsOf = t; }; anything = "anything"; str = "str"; bool = "bool"; '
        'port = "port"; package = "package"; nullOr = t: { nullOr = t; }; listOf = t: { listOf = t; }; '
        "enum = values: { enum = values; }; submodule = m: m.options; }; "
        "m = import ./nix/module.nix { } { config.services.warpwatch.monitoring.overrides = { }; "
        'config.networking.hostName = "app1"; options = { }; pkgs = { }; '
        "lib = { mkOption = o: o; inherit types; mkEnableOption = d: { enable = d; }; literalExpression = t: t; "
        "literalMD = t: t; mkPackageOption = _: _: _: { }; }; }; "
        "o = m.options.services.warpwatch.monitoring; "
        "in { role = o.role.type; expected = o.hosts.expected.type; name = o.hosts.name.default; "
        "port = o.receiver.port.type; open = o.receiver.openFirewall.default; "
        "files = map (f: f.type) [ o.agent.certFile o.agent.keyFile o.agent.caFile o.receiver.certFile "
        "o.receiver.keyFile o.receiver.clientCaFile o.receiver.crlFile o.agent.serverAddress ]; }"
    )
    assert nix_eval(expr) == {
        "role": {"enum": ["server", "agent"]},
        "expected": {"nullOr": {"listOf": "str"}},
        "name": "app1",
        "port": "port",
        "open": False,
        "files": [{"nullOr": "str"}] * 8,
    }


def test_many_hosts_overrides_beside_the_options_do_not_fail_the_option_defaults():
    # An override of the many-hosts fields (receiver.enable, role) is valid only together with
    # the options (the TLS files): the option defaults must not check the overrides on their own.
    expr = (
        'let types = { attrsOf = t: t; anything = "anything"; str = "str"; bool = "bool"; port = "port"; '
        'package = "package"; nullOr = t: t; listOf = t: t; enum = v: v; submodule = m: m; }; '
        "m = import ./nix/module.nix { } { config.services.warpwatch.monitoring.overrides = "
        '{ role = "agent"; receiver = { enable = true; port = 9443; }; }; '
        'config.networking.hostName = "app1"; options = { }; pkgs = { }; '
        "lib = { mkOption = o: o; inherit types; mkEnableOption = d: { default = false; }; literalExpression = t: t; "
        "literalMD = t: t; mkPackageOption = _: _: _: { }; }; }; "
        "o = m.options.services.warpwatch.monitoring; "
        "in { role = o.role.default; port = o.receiver.port.default; logShipper = o.logShipper.default; }"
    )
    # The declaration's values: the overrides win over the options when the stack is built.
    assert nix_eval(expr) == {"role": "server", "port": 8443, "logShipper": "promtail"}
