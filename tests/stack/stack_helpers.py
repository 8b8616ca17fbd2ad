"""Rendering helpers for the stack tests: everything goes through the real entry points
(scripts/render-compose, nix-instantiate) and the tests assert on what they produce."""

import subprocess
from pathlib import Path

import yaml

from conftest import ROOT, nix_eval, require_tool

RENDER = ROOT / "scripts" / "render-compose"

# What the issue requires of every deployment (the specification the renderings are checked
# against, deliberately not read from nix/stack/declaration.nix).
REQUIRED_MEMORY_MIB = {"prometheus": 512, "loki": 512, "grafana": 512, "warpwatch": 256, "promtail": 256}
REQUIRED_HEALTH_PATHS = {
    "prometheus": "/-/healthy",
    "loki": "/ready",
    "grafana": "/api/health",
    "promtail": "/ready",
    "warpwatch": "/healthz",
}
REQUIRED_PORTS = {"warpwatch": 8080, "prometheus": 9090, "loki": 3100, "grafana": 3000, "promtail": 9080}


def render_compose(out_dir: Path, overrides: str | None = None) -> dict:
    """Run scripts/render-compose into out_dir; return {relative path: text} read back from disk."""
    require_tool("nix-instantiate")
    cmd = [str(RENDER)]
    if overrides is not None:
        override_file = out_dir.parent / f"{out_dir.name}-overrides.nix"
        override_file.write_text(overrides)
        cmd += ["--overrides", str(override_file)]
    proc = subprocess.run(cmd + [str(out_dir)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"render-compose failed:\n{proc.stderr}"
    return {str(p.relative_to(out_dir)): p.read_text() for p in out_dir.rglob("*") if p.is_file()}


def stack_expr(body: str, overrides: str = "{ }") -> str:
    """A Nix expression with `s` bound to the stack API."""
    return f"let s = import ./nix/stack {{ overrides = {overrides}; }}; in {body}"


def render_yaml(config: str, target: str, overrides: str = "{ }", args: str = "") -> str:
    """YAML text of one configs.<config> rendering, through the stack's own toYAML."""
    return nix_eval(stack_expr(f's.toYAML (s.configs.{config} {{ target = "{target}"; {args} }})', overrides))


def load(text: str):
    return yaml.safe_load(text)


def compose_services(files: dict) -> dict:
    return load(files["docker-compose.yml"])["services"]
