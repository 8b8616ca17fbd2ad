"""Shared helpers for the Python side of the suite (stack, flake and NixOS-mapping tests).

Tools are real (nix-instantiate, promtool, prometheus, docker-compose, yamllint); a missing one
fails the test with the package to install, it never skips.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

APT_PACKAGE = {
    "nix-instantiate": "nix-bin",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "docker-compose": "docker-compose",
    "yamllint": "yamllint",
    "jq": "jq",
    "getfacl": "acl",
    "setfacl": "acl",
    "systemd-analyze": "systemd",
    "docker": "docker.io",
    "dockerd": "docker.io",
    "ip": "iproute2",
    "busybox": "busybox-static",
    "ldd": "libc-bin",
    "debootstrap": "debootstrap",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "setpriv": "util-linux",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "nginx": "nginx",
    "openssl": "openssl",
    "ss": "iproute2",
    **{
        tool: "coreutils"
        for tool in ("cat", "chmod", "cp", "env", "id", "mkdir", "mktemp", "mv", "od", "stat", "tail", "test", "tr")
    },
}


def require_tool(name: str) -> str:
    """Absolute path of a command-line tool, or a test failure saying how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: apt-get install -y {APT_PACKAGE.get(name, name)}",
            pytrace=False,
        )
    return path


def nix_eval(expr: str):
    """Evaluate a Nix expression (strictly, offline) with the repository root as `./.`.

    Relative paths in `expr` resolve against the repository root, e.g.
    nix_eval('(import ./nix/stack { }).stack.services.loki.port').
    """
    proc = _nix_instantiate(expr)
    if proc.returncode != 0:
        raise AssertionError(f"nix evaluation failed:\n{expr}\n---\n{proc.stderr}")
    return json.loads(proc.stdout)


def nix_eval_error(expr: str) -> str:
    """Evaluate an expression that must fail; return its error text."""
    proc = _nix_instantiate(expr)
    if proc.returncode == 0:
        raise AssertionError(f"expected evaluation to fail, got: {proc.stdout[:500]}")
    return proc.stderr


def _nix_instantiate(expr: str) -> subprocess.CompletedProcess:
    require_tool("nix-instantiate")
    return subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expr],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def nix_value(value) -> str:
    """A Python value as a Nix expression (JSON is valid Nix for strings, numbers, bools, lists)."""
    if isinstance(value, dict):
        return "{ " + " ".join(f"{json.dumps(k)} = {nix_value(v)};" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[ " + " ".join(nix_value(v) for v in value) + " ]"
    if value is None:
        return "null"
    return json.dumps(value)


def write_files(root: Path, files: dict[str, str], mode: int | None = None) -> Path:
    """Write {relative path: text} under root (e.g. a rendered project); return root."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mode is not None:
            path.chmod(mode)
    return root


DASHBOARDS = ROOT / "configs" / "grafana" / "dashboards"

# What Grafana's interval variables become when a dashboard query is run or checked outside it.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__auto": "1m",
    "$__range": "1h",
    # The host selector's "All" (issue 18): every host, and series without a `host` label.
    "$host": ".*",
}


def dashboard_targets(datasource_type: str, pattern: str = "*.json"):
    """(file name, panel title, expression) of every `datasource_type` target of the dashboards
    matching `pattern` (rows have none)."""
    for path in sorted(DASHBOARDS.glob(pattern)):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == datasource_type:
                    yield path.name, panel["title"], target["expr"]


def substitute(expr: str) -> str:
    """`expr` with Grafana's interval variables replaced, and any other variable by `x`."""
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    expr = re.sub(r"\$\{?(\w+)\}?", "x", expr)
    assert "$" not in expr, expr
    return expr


def dashboard_queries(pattern: str = "*.json"):
    """("dashboard: panel title", runnable query) for every Prometheus query of the dashboards."""
    for name, title, expr in dashboard_targets("prometheus", pattern):
        yield f"{name}: {title}", substitute(expr)


def http_get(url: str, timeout: float = 5, headers: dict | None = None) -> tuple[int, str]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return response.status, response.read().decode()


def wait_for(what: str, probe, deadline: float = 60, processes=(), interval: float = 0.1):
    """Poll `probe` every `interval` seconds until it returns something truthy (returned); fail if a
    process in `processes` exits first or the deadline passes. Connection errors while a server
    starts, and a probe's own failed assertions, count as "not yet"."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        for proc in processes:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[0]} exited with {proc.returncode} while waiting for {what}", pytrace=False)
        try:
            last = probe()
            if last:
                return last
        except (OSError, ValueError, KeyError, IndexError, AssertionError) as err:
            last = err
        time.sleep(interval)
    pytest.fail(f"timed out after {deadline}s waiting for {what} (last: {last!r})", pytrace=False)


def stop_process(proc: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL if it has not exited within 10 s; the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def warpwatch_bin() -> Path:
    """The release binary built by scripts/test (WARPWATCH_BIN), or built here on demand."""
    env_path = os.environ.get("WARPWATCH_BIN")
    if env_path:
        path = Path(env_path)
    else:
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "--bin", "warpwatch"], cwd=ROOT, check=True
        )
        path = ROOT / "target" / "release" / "warpwatch"
    if not path.is_file():
        pytest.fail(f"warpwatch binary not found at {path}", pytrace=False)
    return path


# Session fixtures kept in their own modules; importing them here makes them available to every
# test directory. Last, because those modules import the helpers above.
from tests.dockerd import dockerd  # noqa: E402,F401
