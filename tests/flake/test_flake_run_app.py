"""`nix run` (nix/run-app.sh): the real service started through the wrapper keeps its data in the
per-user state directory and listens on loopback at the declared port; the address rules are
checked with a recording stand-in."""

import os
import subprocess
import time
import urllib.request

import pytest

from conftest import free_port, nix_eval, require_tool
from flake_helpers import RUN_APP, tool_dir

RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$WARPWATCH_ADDR" "$WARPWATCH_DATA_DIR" "$*"
"""


def declared_default_addr() -> str:
    port = nix_eval("(import ./nix/stack/declaration.nix).services.warpwatch.port")
    return f"127.0.0.1:{port}"


def run_recorder(tmp_path, extra_env=None, args=()):
    bindir = tool_dir(tmp_path, ["bash", "mkdir"])
    (bindir / "warpwatch").write_text(RECORDER)
    (bindir / "warpwatch").chmod(0o755)
    env = {
        "PATH": str(bindir),
        "HOME": str(tmp_path / "home"),
        "WARPWATCH_DEFAULT_ADDR": declared_default_addr(),
    }
    env.update(extra_env or {})
    proc = subprocess.run(["bash", str(RUN_APP), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    addr, data_dir, argv = proc.stdout.splitlines()
    return addr, data_dir, argv


def test_shellcheck():
    subprocess.run([require_tool("shellcheck"), str(RUN_APP)], check=True)


def test_defaults_loopback_port_8080_and_home_state_dir(tmp_path):
    addr, data_dir, argv = run_recorder(tmp_path)
    assert addr == "127.0.0.1:8080"
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
    assert addr == "127.0.0.1:9123"


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
        "WARPWATCH_DEFAULT_ADDR": declared_default_addr(),
        "PORT": str(port),
    }
    proc = subprocess.Popen(["bash", str(RUN_APP)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "warpwatch did not become ready"
            time.sleep(0.1)
        req = urllib.request.Request(f"{base}/", headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        assert listening_addresses(port) == {"127.0.0.1"}, "loopback only by default"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0
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
    # nix/run-app.nix with writeShellApplication replaced by the identity: the default address
    # follows the declaration (here overridden), and the script is run-app.sh itself.
    app = nix_eval(
        "import ./nix/run-app.nix { coreutils = \"coreutils\"; warpwatch = \"warpwatch\"; "
        "writeShellApplication = args: args; "
        "stack = (import ./nix/stack { overrides = { services.warpwatch.port = 8181; }; }).stack; }"
    )
    assert app["runtimeEnv"] == {"WARPWATCH_DEFAULT_ADDR": "127.0.0.1:8181"}
    assert app["text"] == RUN_APP.read_text()
    assert app["runtimeInputs"] == ["coreutils", "warpwatch"]
