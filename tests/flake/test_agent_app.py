"""`nix run .#agent` (nix/stack-app.sh with WARPWATCH_STACK_ROLE=agent), run for real with the
recording fake docker and compose of test_stack_app.py (whose `up` validates the written project
with the real docker-compose): its flags, checked before anything is written or started, and the
project it writes. tests/live/test_hosts_compose.py runs its `up` against a real engine."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import nix_value, require_tool
from tests.flake.helpers import eval_specs, stack_app_env, tool_dir
from tests.flake.test_stack_app import BASE_TOOLS, Env

SERVER = "monitor.example.org:8443"
COLLECTOR_UID = 10002


@pytest.fixture(scope="module")
def agent_specs():
    return eval_specs(
        "{ inherit (specs) agentPlaceholders patterns; project = specs.api.compose.project; "
        "readers = map (n: { name = n; uid = specs.stack.services.${n}.uid; }) [ \"collector\" specs.stack.logShipper ]; }",
        role="agent",
    )


class AgentEnv(Env):
    def __init__(self, tmp: Path, specs: dict):
        super().__init__(tmp, specs["project"])
        self.specs = specs
        tool_dir(tmp, [*BASE_TOOLS, "uname"])
        placeholders = specs["agentPlaceholders"]
        self.agent_env = {
            "WARPWATCH_STACK_ROLE": "agent",
            "WARPWATCH_STACK_PROJECT": "warpwatch-agent",
            "WARPWATCH_AGENT_HOST_PLACEHOLDER": placeholders["host"],
            "WARPWATCH_AGENT_SERVER_PLACEHOLDER": placeholders["serverAddress"],
            "WARPWATCH_AGENT_TLS_DIR_PLACEHOLDER": placeholders["tlsDir"],
            "WARPWATCH_AGENT_HOST_PATTERN": specs["patterns"]["hostName"],
            "WARPWATCH_AGENT_SERVER_PATTERN": specs["patterns"]["serverAddress"],
            "WARPWATCH_AGENT_TLS_READERS": "\n".join(f"{r['name']} {r['uid']}" for r in specs["readers"]),
        }

    @property
    def state_dir(self) -> Path:
        return self.state_home / "warpwatch" / "agent"

    def tls(self, key_mode: int = 0o600, acl_uid: int | None = COLLECTOR_UID, missing: str | None = None) -> Path:
        """A TLS directory as the user keeps it: the key private to its owner (root), readable by
        the collector's uid through an ACL unless `acl_uid` is None."""
        directory = self.tmp / "tls"
        directory.mkdir(exist_ok=True)
        for name in ("client.crt", "client.key", "ca.crt"):
            if name != missing:
                (directory / name).write_text(f"PEM of {name}\n")
                (directory / name).chmod(key_mode if name == "client.key" else 0o644)
        if acl_uid is not None and missing != "client.key":
            subprocess.run([require_tool("setfacl"), "-m", f"u:{acl_uid}:r", str(directory / "client.key")], check=True)
        return directory

    def agent(self, *args):
        return self.run(*args, extra_env=self.agent_env)


@pytest.fixture
def agent_env(tmp_path, agent_specs):
    if os.geteuid() != 0:
        pytest.fail("these tests make root-owned keys and ask the kernel as root (setpriv): run pytest as root")
    env = AgentEnv(tmp_path, agent_specs)
    env.install_fake_docker()
    return env


def assert_refused(env, proc, *needles):
    """Exit 1 naming the flag and the fix; nothing loaded, written or started."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not [c for c in env.calls() if c.startswith("compose ") or c.startswith("image")], env.calls()
    assert not env.state_dir.exists(), "nothing may be written before the checks pass"


def test_up_fills_in_the_flags_and_runs_the_agent_project(agent_env):
    tls = agent_env.tls()
    proc = agent_env.agent("up", "--server", SERVER, "--tls-dir", str(tls), "--host", "app1")
    assert proc.returncode == 0, proc.stderr
    assert "warpwatch agent is up" in proc.stdout
    compose = yaml.safe_load((agent_env.state_dir / "docker-compose.yml").read_text())
    assert {name: s["file"] for name, s in compose["secrets"].items()} == {
        name: f"{tls}/{name}" for name in ("client.crt", "client.key", "ca.crt")
    }
    collector = yaml.safe_load((agent_env.state_dir / "collector" / "prometheus.yml").read_text())
    assert collector["global"]["external_labels"] == {"host": "app1"}
    assert collector["remote_write"][0]["url"] == f"https://{SERVER}/api/v1/write"
    shipper = yaml.safe_load((agent_env.state_dir / "promtail" / "promtail.yml").read_text())
    assert shipper["clients"][0]["url"] == f"https://{SERVER}/loki/api/v1/push"
    assert shipper["clients"][0]["external_labels"] == {"host": "app1"}
    for path in agent_env.state_dir.rglob("*"):
        if path.is_file():
            for placeholder in agent_env.specs["agentPlaceholders"].values():
                assert placeholder not in path.read_text(), (path, placeholder)
    up = [c for c in agent_env.calls() if c.startswith("compose ") and " up " in f"{c} "]
    assert up == [
        f"compose --project-name warpwatch-agent --project-directory {agent_env.state_dir} "
        f"--file {agent_env.state_dir}/docker-compose.yml up -d"
    ]


def test_up_takes_the_short_host_name_by_default(agent_env):
    host = os.uname().nodename.split(".")[0].lower()
    proc = agent_env.agent("up", f"--server={SERVER}", f"--tls-dir={agent_env.tls()}")
    assert proc.returncode == 0, proc.stderr
    collector = yaml.safe_load((agent_env.state_dir / "collector" / "prometheus.yml").read_text())
    assert collector["global"]["external_labels"] == {"host": host}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--tls-dir", "TLS"], ["--server is missing", "--server monitor.example.org:8443"]),
        (["--server", "monitor.example.org", "--tls-dir", "TLS"], ["--server monitor.example.org is not HOST:PORT"]),
        (["--server", "https://monitor:8443", "--tls-dir", "TLS"], ["is not HOST:PORT"]),
        (["--server", SERVER], ["--tls-dir is missing", "client.crt", "client.key", "ca.crt"]),
        (["--server", SERVER, "--tls-dir", "/nonexistent/tls"], ["--tls-dir /nonexistent/tls is not a directory"]),
        (["--server", SERVER, "--tls-dir", "TLS", "--host", "App_1"], ["--host App_1 is not a valid host name", "--host app1"]),
        (["--server", SERVER, "--tls-dir", "TLS", "--host", "-x"], ["--host -x is not a valid host name"]),
        (["--server", SERVER, "--tls-dir", "TLS", "--host"], ["--host needs a value"]),
    ],
)
def test_bad_flags_are_named_with_the_fix_before_anything_starts(agent_env, args, needles):
    tls = str(agent_env.tls())
    proc = agent_env.agent("up", *[tls if a == "TLS" else a for a in args])
    assert_refused(agent_env, proc, *needles)


@pytest.mark.parametrize("missing", ["client.crt", "client.key", "ca.crt"])
def test_a_tls_directory_without_one_of_its_files_is_refused(agent_env, missing):
    tls = agent_env.tls(missing=missing)
    proc = agent_env.agent("up", "--server", SERVER, "--tls-dir", str(tls))
    assert_refused(agent_env, proc, f"{missing} in --tls-dir ({tls}/{missing}) does not exist", "--tls-dir")


def test_a_key_the_collector_may_not_read_is_refused_with_the_setfacl_fix(agent_env):
    tls = agent_env.tls(acl_uid=None)
    proc = agent_env.agent("up", "--server", SERVER, "--tls-dir", str(tls), "--host", "app1")
    assert_refused(
        agent_env, proc,
        f"The agent's collector cannot read client.key in --tls-dir ({tls}/client.key)",
        f"setfacl -m u:{COLLECTOR_UID}:r {tls}/client.key",
    )  # fmt: skip


def test_the_shipper_runs_as_root_without_capabilities_so_a_key_of_another_owner_is_refused(agent_env):
    # uid 0 with every capability dropped reads by owner, mode and ACL like anyone else.
    tls = agent_env.tls()
    shutil.chown(tls / "client.key", 4321, 4321)
    proc = agent_env.agent("up", "--server", SERVER, "--tls-dir", str(tls), "--host", "app1")
    assert_refused(agent_env, proc, "The agent's promtail cannot read client.key", "setfacl -m u:0:r")


def test_a_tls_directory_path_compose_would_expand_is_refused(agent_env, tmp_path):
    odd = tmp_path / "a$b"
    shutil.copytree(agent_env.tls(), odd, symlinks=True)
    proc = agent_env.agent("up", "--server", SERVER, "--tls-dir", str(odd))
    assert_refused(agent_env, proc, "the path may hold only letters, digits")


@pytest.mark.parametrize("unreadable", ["keyFile", "crlFile"])
def test_the_servers_receiver_files_are_checked_for_its_uid_before_anything_starts(unreadable, tmp_path):
    """Server side (`nix run .#stack` with receiver.enable): the receiver's files as
    nix/stack-app.nix hands them to `up`, the CRL when declared. One private to root stops `up`,
    naming the field and the fix; once the receiver's uid may read it, `up` goes on."""
    if os.geteuid() != 0:
        pytest.fail("this test makes a root-owned file and asks the kernel as root (setpriv): run pytest as root")
    env = Env(tmp_path, eval_specs("specs.api.compose.project"))
    env.install_fake_docker()
    tls = tmp_path / "server-tls"
    tls.mkdir()
    names = {"certFile": "server.crt", "keyFile": "server.key", "clientCaFile": "ca.crt"}
    if unreadable == "crlFile":
        names["crlFile"] = "ca.crl"
    files = {}
    for field, name in names.items():
        (tls / name).write_text(f"PEM of {name}\n")
        (tls / name).chmod(0o600 if field == unreadable else 0o644)
        files[field] = str(tls / name)
    app = stack_app_env(nix_value({"receiver": {"enable": True, **files}, "hosts": {"expected": ["app1"]}}))
    receiver = {name: app[name] for name in ("WARPWATCH_STACK_RECEIVER_UID", "WARPWATCH_STACK_RECEIVER_FILES")}
    proc = env.run("up", extra_env=receiver)
    assert proc.returncode == 1, proc.stderr
    assert f"The receiver (nginx) cannot read receiver.{unreadable} ({files[unreadable]})" in proc.stderr, proc.stderr
    assert f"setfacl -m u:10008:r {files[unreadable]}" in proc.stderr, proc.stderr
    assert not [c for c in env.calls() if c.startswith("compose ") or c.startswith("image")], env.calls()
    subprocess.run([require_tool("setfacl"), "-m", "u:10008:r", files[unreadable]], check=True)
    again = env.run("up", extra_env=receiver)
    assert again.returncode == 0, again.stderr
