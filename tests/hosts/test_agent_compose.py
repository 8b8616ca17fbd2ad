"""The compose renderings of many hosts (issue 18), offline: the agent's project (its services,
limits, rotation, healthchecks, network, listeners) and the server's receiver. Run for real in
tests/live/test_hosts_compose.py."""

import subprocess

import pytest
import yaml

from tests import spec
from tests.conftest import require_tool
from tests.flake.helpers import FAKE_VERSIONS, eval_specs
from tests.hosts.helpers import agent_overrides, render, server_overrides

SERVER = "monitor.example.org:8443"
AGENT_SERVICES = {"warpwatch", "node-exporter", "collector"}
TLS_FILES = ["client.crt", "client.key", "ca.crt"]


def agent_project(shipper: str = "promtail") -> dict:
    return render("s.compose.project", agent_overrides("app1", SERVER, logShipper=shipper))


@pytest.fixture(scope="module", params=["promtail", "alloy"])
def agent(request):
    project = agent_project(request.param)
    return request.param, project, yaml.safe_load(project["docker-compose.yml"])


def test_an_agent_runs_warpwatch_the_node_exporter_and_the_two_collectors(agent):
    shipper, project, compose = agent
    assert set(compose["services"]) == AGENT_SERVICES | {shipper}
    # Only the collectors' configurations: nothing of the server's.
    assert sorted(p for p in project if not p.startswith("docker-compose")) == ["collector/prometheus.yml", "promtail/promtail.yml"]


def test_every_agent_service_has_the_servers_limits_rotation_healthcheck_and_confinement(agent):
    shipper, _, compose = agent
    declared = render("s.stack.services", agent_overrides("app1", SERVER))
    for name, service in compose["services"].items():
        memory = spec.MEMORY_MIB.get(name, declared[name]["memoryMiB"])
        assert service["mem_limit"] == f"{memory}m" == service["deploy"]["resources"]["limits"]["memory"], name
        assert service["logging"] == {
            "driver": "json-file",
            "options": {"max-size": "10m", "max-file": "3", "tag": f"warpwatch/{name}"},
        }, name
        check = service["healthcheck"]
        assert (check["interval"], check["timeout"], check["retries"]) == (
            f"{spec.HEALTHCHECK_INTERVAL_S}s", f"{spec.HEALTHCHECK_TIMEOUT_S}s", spec.HEALTHCHECK_RETRIES,
        ), name  # fmt: skip
        port = spec.PORTS.get(name, declared[name]["port"])
        assert check["test"][:3] == ["CMD", "/bin/warpwatch", "probe"], name
        assert check["test"][3].startswith(f"http://127.0.0.1:{port}/"), name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["restart"] == "unless-stopped", name
        uid = int(service["user"].split(":")[0])
        assert uid >= 1000 or name == shipper, name


def test_every_agent_service_is_on_the_hosts_network_with_no_port_published(agent):
    _, _, compose = agent
    assert "networks" not in compose
    for name, service in compose["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service and "networks" not in service, name


def test_every_agent_listener_is_on_loopback(agent):
    shipper, project, compose = agent
    services = compose["services"]
    assert services["warpwatch"]["environment"]["WARPWATCH_ADDR"] == f"127.0.0.1:{spec.PORTS['warpwatch']}"
    for name in ("node-exporter", "collector"):
        (listen,) = [a for a in services[name]["command"] if a.startswith("--web.listen-address=")]
        assert listen.split("=", 1)[1].startswith("127.0.0.1:"), (name, listen)
    shipper_config = yaml.safe_load(project["promtail/promtail.yml"])
    assert shipper_config["server"]["http_listen_address"] == "127.0.0.1"
    assert shipper_config["server"]["grpc_listen_address"] == "127.0.0.1"
    if shipper == "alloy":
        (listen,) = [a for a in services["alloy"]["command"] if a.startswith("--server.http.listen-addr=")]
        assert listen.split("=", 1)[1].startswith("127.0.0.1:"), listen


def test_the_collectors_read_the_tls_files_as_compose_secrets(agent):
    shipper, project, compose = agent
    assert {name: s["file"] for name, s in compose["secrets"].items()} == {
        name: f"/etc/warpwatch/tls/{name}" for name in TLS_FILES
    }
    for name in ("collector", shipper):
        assert compose["services"][name]["secrets"] == TLS_FILES, name
    for name in ("warpwatch", "node-exporter"):
        assert "secrets" not in compose["services"][name], name
    tls = {"cert_file": "/run/secrets/client.crt", "key_file": "/run/secrets/client.key", "ca_file": "/run/secrets/ca.crt"}
    assert yaml.safe_load(project["collector/prometheus.yml"])["remote_write"][0]["tls_config"] == tls
    assert yaml.safe_load(project["promtail/promtail.yml"])["clients"][0]["tls_config"] == tls


def test_the_agent_compose_file_is_valid_for_docker_compose(agent, tmp_path):
    _, project, _ = agent
    path = tmp_path / "docker-compose.yml"
    path.write_text(project["docker-compose.yml"])
    proc = subprocess.run(
        [require_tool("docker-compose"), "--project-directory", str(tmp_path), "--file", str(path), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("version", "flag"), [("3.14.0", "--agent"), ("2.42.0+ds", "--enable-feature=agent"), ("2.53.1", "--enable-feature=agent")])
def test_the_collectors_agent_mode_flag_follows_the_prometheus_in_its_image(version, flag):
    """Prometheus 3 removed the `agent` feature flag for --agent; the image's tag is its version."""
    result = eval_specs(
        "{ command = specs.api.compose.file.services.collector.command; image = specs.api.compose.file.services.collector.image; ref = specs.images.prometheus.ref; }",
        versions={**FAKE_VERSIONS, "prometheus": version},
        role="agent",
    )
    assert result["command"][0] == flag
    assert [a for a in result["command"] if "agent" in a and a.startswith("--") and "path" not in a] == [flag]
    # The collector runs the prometheus image itself.
    assert result["image"] == result["ref"]


def test_the_servers_receiver_publishes_its_tls_port_alone_on_the_declared_address():
    overrides = server_overrides(["app1"], receiver={"bindAddress": "192.0.2.10"})
    project = render("s.compose.project", overrides)
    compose = yaml.safe_load(project["docker-compose.yml"])
    receiver = compose["services"]["receiver"]
    assert receiver["ports"] == ["192.0.2.10:8443:8443"]
    assert receiver["secrets"] == ["server.crt", "server.key", "client-ca.crt"]
    published = {name: s.get("ports", []) for name, s in compose["services"].items()}
    beyond_loopback = {name: [p for p in ports if not p.startswith("127.0.0.1:")] for name, ports in published.items()}
    assert {name: ports for name, ports in beyond_loopback.items() if ports} == {"receiver": ["192.0.2.10:8443:8443"]}
    # Inside its container nginx listens on every interface; the host address is the publish's.
    assert "listen 0.0.0.0:8443 ssl;" in project["receiver/nginx.conf"]
    host = render('s.configs.nginx { target = "host"; }', overrides)
    assert "listen 192.0.2.10:8443 ssl;" in host


def test_the_receivers_crl_is_a_compose_secret_nginx_reads_only_when_declared():
    crl = "/etc/warpwatch/tls/ca.crl"
    project = render("s.compose.project", server_overrides(["app1"], receiver={"crlFile": crl}))
    compose = yaml.safe_load(project["docker-compose.yml"])
    assert compose["services"]["receiver"]["secrets"] == ["server.crt", "server.key", "client-ca.crt", "client-ca.crl"]
    assert compose["secrets"]["client-ca.crl"] == {"file": crl}
    assert "\n    ssl_crl /run/secrets/client-ca.crl;\n" in project["receiver/nginx.conf"]
    without = render("s.compose.project", server_overrides(["app1"]))
    assert "client-ca.crl" not in yaml.safe_load(without["docker-compose.yml"])["secrets"]
    assert "ssl_crl" not in without["receiver/nginx.conf"]
