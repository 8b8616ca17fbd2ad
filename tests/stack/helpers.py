"""Rendering helpers for the stack tests: everything goes through the real entry points
(scripts/render-compose, nix-instantiate) and the tests assert on what they produce."""

import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT, nix_eval, require_tool

RENDER = ROOT / "scripts" / "render-compose"

# The alerts the stack must ship: TargetDown generated from the declaration
# (nix/stack/render/rules.nix), the others in configs/prometheus/alerts.yml.
GENERATED_ALERTS = {"TargetDown"}
HOST_ALERTS = {"HostFilesystemWillFill", "HostMemoryPressure", "HostCpuSaturated", "HostFilesystemReadOnly", "HostClockSkew"}
STATIC_ALERTS = {"HighErrorRatio", "HighLatencyP99", "MemoryNearLimit", "LokiDown", "LogShipperDown", *HOST_ALERTS}
REQUIRED_ALERTS = GENERATED_ALERTS | STATIC_ALERTS


def run_render_compose(*args: str) -> subprocess.CompletedProcess:
    require_tool("nix-instantiate")
    return subprocess.run([str(RENDER), *args], capture_output=True, text=True, timeout=180)


def render_compose(out_dir: Path, overrides: str | None = None) -> dict:
    """Run scripts/render-compose into out_dir; return {relative path: text} read back from disk."""
    args = []
    if overrides is not None:
        override_file = out_dir.parent / f"{out_dir.name}-overrides.nix"
        override_file.write_text(overrides)
        args += ["--overrides", str(override_file)]
    proc = run_render_compose(*args, str(out_dir))
    assert proc.returncode == 0, f"render-compose failed:\n{proc.stderr}"
    return {str(p.relative_to(out_dir)): p.read_text() for p in out_dir.rglob("*") if p.is_file()}


def stack_expr(body: str, overrides: str = "{ }") -> str:
    """A Nix expression with `s` bound to the stack API."""
    return f"let s = import ./nix/stack {{ overrides = {overrides}; }}; in {body}"


def render_yaml(config: str, target: str, overrides: str = "{ }", args: str = "") -> str:
    """YAML text of one configs.<config> rendering, through the stack's own toYAML."""
    return nix_eval(stack_expr(f's.toYAML (s.configs.{config} {{ target = "{target}"; {args} }})', overrides))


def write_prometheus_host_config(directory: Path, overrides: str = "{ }") -> Path:
    """prometheus.yml (host target) and the rules.yml it loads, side by side in directory."""
    config = directory / "prometheus.yml"
    config.write_text(render_yaml("prometheus", "host", overrides))
    (directory / "rules.yml").write_text(nix_eval(stack_expr("s.configs.rules", overrides)))
    return config


def compose_services(files: dict) -> dict:
    return yaml.safe_load(files["docker-compose.yml"])["services"]
