"""Shared helpers for the Python side of the suite (stack, flake and NixOS-mapping tests).

Tools are real (nix-instantiate, promtool, prometheus, docker-compose, yamllint); a missing one
fails the test with the package to install, it never skips.
"""

import json
import os
import shutil
import socket
import subprocess
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
