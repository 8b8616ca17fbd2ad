"""Evaluating the pure NixOS mapping (nix/stack/nixos/) offline, and writing a unit of it.

The mapping takes store paths as plain strings, so tests pass fake ones (or a directory holding
the real warpwatch binary) and assert on the option values it returns. Its priorities come from a
`lib` argument; STANDIN_LIB builds exactly the values nixpkgs' lib.mkOverride/mkIf/mkMerge build
(`{ _type = "override"; priority; content; }` ...), so `mapping_raw` shows which values are
defaults (priority 1000) and `mapping` resolves them the way the module system does for a single
definition.
"""

import subprocess
from pathlib import Path

import yaml

from tests.conftest import nix_eval, nix_eval_error, nix_value, require_tool, write_files
from tests.nixos.units import Store, merge, render_service

FAKE = {
    "warpwatch": "/nix/store/00000000000000000000000000000000-warpwatch",
    "promtail": "/nix/store/11111111111111111111111111111111-promtail",
    "alloy": "/nix/store/22222222222222222222222222222222-alloy",
    "systemd": "/nix/store/33333333333333333333333333333333-systemd",
    "nginx": "/nix/store/99999999999999999999999999999999-nginx",
}
# What NixOS adds to every unit itself: the packages of its default PATH (systemd is the one the
# mapping also names) and the shell `script`s run with.
SYSTEM_FAKE = {
    "coreutils": "/nix/store/44444444444444444444444444444444-coreutils",
    "findutils": "/nix/store/55555555555555555555555555555555-findutils",
    "gnugrep": "/nix/store/66666666666666666666666666666666-gnugrep",
    "gnused": "/nix/store/77777777777777777777777777777777-gnused",
    "systemd": FAKE["systemd"],
    "bash": "/nix/store/88888888888888888888888888888888-bash",
}
SECRETS = {"adminPasswordFile": "/run/secrets/grafana-admin", "secretKeyFile": "/run/secrets/grafana-key"}
# Many hosts: an agent, and a server that receives from it (TLS files outside the store).
AGENT = {
    "role": "agent",
    "hosts": {"name": "app1"},
    "agent": {
        "serverAddress": "monitor.example.org:8443",
        "certFile": "/etc/warpwatch/tls/client.crt",
        "keyFile": "/run/keys/warpwatch/client.key",
        "caFile": "/etc/warpwatch/tls/ca.crt",
    },
}
RECEIVING = {
    "hosts": {"expected": ["app1"]},
    "receiver": {
        "enable": True,
        "certFile": "/etc/warpwatch/tls/server.crt",
        "keyFile": "/run/keys/warpwatch/server.key",
        "clientCaFile": "/etc/warpwatch/tls/ca.crt",
    },
}


def warpwatch_package(directory: Path, warpwatch_bin: Path) -> Path:
    """A package directory whose bin/warpwatch is the real binary, to pass as the mapping's
    `warpwatch` store path."""
    package = directory / "warpwatch-pkg"
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "warpwatch").symlink_to(warpwatch_bin)
    return package


STANDIN_LIB = (
    "rec { mkOverride = priority: content: { _type = \"override\"; inherit priority content; };"
    " mkDefault = mkOverride 1000; mkForce = mkOverride 50;"
    " mkIf = condition: content: { _type = \"if\"; inherit condition content; };"
    " mkMerge = contents: { _type = \"merge\"; inherit contents; }; }"
)
DEFAULT_PRIORITY = 1000


def mapping_expr(overrides: dict | None = None, **args) -> str:
    arguments = {**FAKE, "grafana": dict(SECRETS), "dashboardsPath": "/etc/test-dashboards", **args}
    return (
        f"(import ./nix/stack {{ overrides = {nix_value(overrides or {})}; }}).nixos "
        + nix_value(arguments)[:-1]
        + f"lib = {STANDIN_LIB}; }}"
    )


def mapping_raw(overrides: dict | None = None, **args) -> dict:
    """The mapping's values with their priority wrappers."""
    return nix_eval(mapping_expr(overrides, **args))


_DROPPED = object()


def resolve(value):
    """A mapped value as the only definition of its option: wrappers dropped, mkIf applied (an
    option under a false mkIf is not defined at all)."""
    if isinstance(value, dict):
        kind = value.get("_type")
        if kind == "override":
            return resolve(value["content"])
        if kind == "if":
            return resolve(value["content"]) if value["condition"] else _DROPPED
        resolved = {k: resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _DROPPED}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def guarded(value, condition: bool):
    """The content of a mapped `mkIf condition content`, checking the condition it carries."""
    assert isinstance(value, dict) and value.get("_type") == "if", value
    assert value["condition"] is condition, value
    return value["content"]


def is_default(value) -> bool:
    """Whether a mapped value is a default (mkDefault) that any host definition wins over."""
    return isinstance(value, dict) and value.get("_type") == "override" and value["priority"] == DEFAULT_PRIORITY


def mapping(overrides: dict | None = None, **args) -> dict:
    return resolve(mapping_raw(overrides, **args))


def mapping_error(overrides: dict | None = None, **args) -> str:
    return nix_eval_error(mapping_expr(overrides, **args))


def merged(result: dict) -> dict:
    """service + monitoring as the module applies them (lists concatenate, sets merge)."""
    return merge(merge(result["checks"], result["service"]), result["monitoring"])


def write_unit(directory: Path, name: str, unit: dict) -> Path:
    """<directory>/<name>.service from a mapped systemd.services.<name>, the way NixOS writes it
    (units.py); store objects it names (scripts, restart triggers) go to <directory>/store."""
    path = directory / f"{name}.service"
    path.write_text(render_service(name, unit, Store(directory / "store"), SYSTEM_FAKE, SYSTEM_FAKE["bash"]))
    return path


def start_prometheus(directory: Path, config: dict, port: int) -> subprocess.Popen:
    """A real Prometheus on 127.0.0.1:`port` with `config` as its prometheus.yml (state in
    `directory`); the caller stops it."""
    write_files(directory, {"prometheus.yml": yaml.safe_dump(config)})
    return subprocess.Popen(
        [
            require_tool("prometheus"),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def promtool_check_config(config: Path, *flags: str) -> str:
    """`promtool check config [flags] <config>` with the real promtool; fails the test unless it
    accepts the file. Its report (stdout)."""
    proc = subprocess.run(
        [require_tool("promtool"), "check", "config", *flags, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
