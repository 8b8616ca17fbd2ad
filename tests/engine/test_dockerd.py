"""The private Docker engine of tests/dockerd.py, exercised for real: a container on a network
of its own pool, a port published on 127.0.0.1, a second concurrent engine, and the clean-up."""

import ipaddress

import pytest

from tests import dockerd as engine_module  # the module; `dockerd` in a test is the fixture
from tests.conftest import http_get, wait_for
from tests.dockerd import DEFAULT_NETWORKS, busybox_image, private_dockerd


def test_a_container_serves_on_loopback_and_on_its_network(dockerd):
    image = busybox_image(dockerd)
    net = dockerd.run(["network", "create", "ww-engine-test"]).stdout.strip()
    try:
        serve_and_reach(dockerd, image, net)
    finally:
        # The engine is the session's: what this test made must not be found by later tests.
        dockerd.run(["rm", "-f", "ww-web"], check=False)
        dockerd.run(["network", "rm", net], check=False)
    assert dockerd.run(["ps", "-aq", "--filter", "name=ww-web"]).stdout.split() == []


def serve_and_reach(dockerd, image: str, net: str):
    subnet = dockerd.run(["network", "inspect", net, "--format", "{{(index .IPAM.Config 0).Subnet}}"]).stdout.strip()
    assert ipaddress.ip_network(subnet).subnet_of(ipaddress.ip_network(dockerd.pool)), (subnet, dockerd.pool)

    dockerd.run(["run", "-d", "--pull", "never", "--name", "ww-web", "--network", net, "-p", "127.0.0.1::80",
                 image, "sh", "-c", "echo hello > /index.html && exec busybox httpd -f -p 80 -h /"])  # fmt: skip
    port = dockerd.run(["port", "ww-web", "80/tcp"]).stdout.split(":")[-1].strip()
    status, body = wait_for("busybox httpd on loopback", lambda: http_get(f"http://127.0.0.1:{port}/index.html"))
    assert (status, body) == (200, "hello\n")

    # By name, over the daemon's own network (its embedded DNS).
    peer = dockerd.run(["run", "--rm", "--pull", "never", "--network", net, image,
                        "busybox", "wget", "-q", "-O", "-", "http://ww-web/index.html"])  # fmt: skip
    assert peer.stdout == "hello\n"


def test_a_second_engine_gets_its_own_pool_and_is_cleaned_up(dockerd, monkeypatch):
    monkeypatch.delenv(engine_module.CACHE_ENV, raising=False)  # the default: images are kept
    with private_dockerd() as other:
        assert other.pool != dockerd.pool and other.data_root != dockerd.data_root
        image = busybox_image(other)
        other.run(["network", "create", "ww-leftover"])
        other.run(["volume", "create", "ww-leftover"])
        other.run(["create", "--pull", "never", "--name", "ww-leftover", "-v", "ww-leftover:/data", image])
        pid, data_root = other.pid, other.data_root
    assert other.proc.poll() is not None, f"dockerd {pid} still running after the engine closed"

    # The pool just released, so the same data root: asked for by its octet, since a lower pool
    # another engine released meanwhile would otherwise be the first free one.
    monkeypatch.setattr(engine_module, "POOL_OCTETS", [int(other.pool.split(".")[1])])
    with private_dockerd() as again:
        assert again.data_root == data_root
        assert again.run(["ps", "-aq"]).stdout.split() == []
        assert again.run(["volume", "ls", "-q"]).stdout.split() == []
        networks = set(again.run(["network", "ls", "--format", "{{.Name}}"]).stdout.split())
        assert networks <= DEFAULT_NETWORKS, networks
        assert again.has_image(image), "imported images are a cache and must survive the engine"


def test_a_missing_dockerd_is_a_failure_naming_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y docker.io"):
        with private_dockerd():
            pass


def test_a_daemon_that_does_not_start_is_a_failure_quoting_its_log(monkeypatch):
    monkeypatch.setattr(engine_module, "POOL_SUBNET_PREFIX", 8)  # wider than the /16 pool: dockerd refuses it
    with pytest.raises(pytest.fail.Exception, match=r"(?s)private dockerd exited with \d+; last lines of .*dockerd\.log:\n.+"):
        with private_dockerd():
            pass
