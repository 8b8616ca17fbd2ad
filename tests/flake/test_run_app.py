"""`nix run` (nix/run-app.sh): the real service started through the wrapper keeps its data in the
per-user state directory and listens on loopback at the declared port; the address rules are
checked with a recording stand-in."""

import os
import subprocess
from functools import cache

from tests import spec
from tests.conftest import free_port, http_get, nix_eval, stop_process, wait_for
from tests.flake.helpers import RUN_APP, tool_dir

RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$WARPWATCH_ADDR" "$WARPWATCH_DATA_DIR" "$*"
"""


def run_app_nix(overrides: str = "{ }") -> dict:
    """nix/run-app.nix with writeShellApplication replaced by the identity: what the flake builds."""
    return nix_eval(
        'import ./nix/run-app.nix { coreutils = "coreutils"; warpwatch = "warpwatch"; '
        "writeShellApplication = args: args; "
        f"stack = (import ./nix/stack {{ overrides = {overrides}; }}).stack; }}"
    )


@cache
def flake_default_addr() -> str:
    """The WARPWATCH_DEFAULT_ADDR the flake gives run-app.sh."""
    return run_app_nix()["runtimeEnv"]["WARPWATCH_DEFAULT_ADDR"]


def run_recorder(tmp_path, extra_env=None, args=()):
    bindir = tool_dir(tmp_path, ["bash", "mkdir"])
    (bindir / "warpwatch").write_text(RECORDER)
    (bindir / "warpwatch").chmod(0o755)
    env = {
        "PATH": str(bindir),
        "HOME": str(tmp_path / "home"),
        "WARPWATCH_DEFAULT_ADDR": flake_default_addr(),
    }
    env.update(extra_env or {})
    proc = subprocess.run(["bash", str(RUN_APP), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    addr, data_dir, argv = proc.stdout.splitlines()
    return addr, data_dir, argv


def test_defaults_loopback_required_port_and_home_state_dir(tmp_path):
    addr, data_dir, argv = run_recorder(tmp_path)
    assert addr == f"{spec.LOOPBACK}:{spec.PORTS['warpwatch']}"
    assert data_dir == str(tmp_path / "home" / ".local" / "state" / "warpwatch")
    assert (tmp_path / "home" / ".local" / "state" / "warpwatch").is_dir()
    assert argv == ""


def test_xdg_state_home_and_explicit_settings_win(tmp_path):
    _, data_dir, _ = run_recorder(tmp_path, {"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert data_dir == str(tmp_path / "xdg" / "warpwatch")
    addr, data_dir, argv = run_recorder(
        tmp_path,
        {"WARPWATCH_ADDR": "0.0.0.0:9999", "WARPWATCH_DATA_DIR": str(tmp_path / "mine")},
        args=("--addr", "127.0.0.1:1"),
    )
    assert (addr, data_dir, argv) == ("0.0.0.0:9999", str(tmp_path / "mine"), "--addr 127.0.0.1:1")


def test_port_alone_keeps_loopback(tmp_path):
    addr, _, _ = run_recorder(tmp_path, {"PORT": "9123"})
    assert addr == f"{spec.LOOPBACK}:9123"


def test_refuses_to_run_outside_the_flake(tmp_path):
    proc = subprocess.run(
        ["bash", str(RUN_APP)],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "WARPWATCH_DEFAULT_ADDR is not set" in proc.stderr


def test_real_service_through_the_wrapper(tmp_path, warpwatch_bin):
    bindir = tool_dir(tmp_path, ["bash", "mkdir"])
    (bindir / "warpwatch").symlink_to(warpwatch_bin)
    port = free_port()
    env = {
        "PATH": str(bindir),
        "HOME": str(tmp_path / "home"),
        "WARPWATCH_DEFAULT_ADDR": flake_default_addr(),
        "PORT": str(port),
    }
    # Output to a file: an unread pipe would block the service once its buffer filled.
    with open(tmp_path / "warpwatch.log", "w") as log:
        proc = subprocess.Popen(["bash", str(RUN_APP)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for("warpwatch /readyz", lambda: http_get(f"{base}/readyz")[0] == 200, deadline=20, processes=[proc])
        assert http_get(f"{base}/", headers={"Accept": "application/json"})[0] == 200
        assert listening_addresses(port) == {spec.LOOPBACK}, "loopback only by default"
    finally:
        status = stop_process(proc)
    assert status == 0, (tmp_path / "warpwatch.log").read_text()
    visits = tmp_path / "home" / ".local" / "state" / "warpwatch" / "visits"
    assert visits.is_file(), "the visit count must persist in the per-user state directory"


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a listening TCP socket on `port` (from /proc/net/tcp)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        hex_ip, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(hex_ip))))
    return found


def test_the_flake_passes_the_declared_port():
    # The default address follows the declaration (here overridden); the script is run-app.sh itself.
    app = run_app_nix("{ services.warpwatch.port = 8181; }")
    assert app["runtimeEnv"] == {"WARPWATCH_DEFAULT_ADDR": f"{spec.LOOPBACK}:8181"}
    assert app["text"] == RUN_APP.read_text()
    assert app["runtimeInputs"] == ["coreutils", "warpwatch"]
