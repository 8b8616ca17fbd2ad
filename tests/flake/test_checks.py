"""The stack checks of `nix flake check` (nix/checks.nix), run here outside Nix: their scripts and
the files the flake hands them (taken from flake.nix's outputs under the stand-in nixpkgs),
executed with Debian's real promtool and docker-compose."""

import os
import subprocess
from pathlib import Path

from tests.conftest import nix_eval, require_tool, write_files
from tests.flake.helpers import OUTPUTS


def run_script(script: str, tmp: Path, env: dict) -> subprocess.CompletedProcess:
    """A check's script as runCommand runs it: bash -euo pipefail, $out to create on success."""
    work = tmp / "build"
    work.mkdir()
    full_env = {
        "PATH": os.environ["PATH"],
        "TMPDIR": str(tmp),
        "out": str(tmp / "out"),
        **env,
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_stack_promtool(tmp: Path, edit_rules=lambda rules: rules) -> subprocess.CompletedProcess:
    """checks.stack-promtool with its inputs from the flake (the rendered rules through edit_rules)."""
    require_tool("promtool")
    # The script and its inputs: file texts, and the repository paths the store copies come from.
    c = nix_eval(
        f"let o = {OUTPUTS}; c = o.checks.x86_64-linux.stack-promtool; in "
        "{ inherit (c) script; alerts = toString c.alerts; alertTests = toString c.alertTests; "
        "prometheusConfig = c.prometheusConfig.text; "
        "rules = c.rules.text; }"
    )
    inputs = write_files(tmp / "in", {"prometheus.yml": c["prometheusConfig"], "rules.yml": edit_rules(c["rules"])})
    env = {
        "prometheusConfig": str(inputs / "prometheus.yml"),
        "rules": str(inputs / "rules.yml"),
        "alerts": c["alerts"],
        "alertTests": c["alertTests"],
    }
    return run_script(c["script"], tmp, env)


def test_stack_promtool_check_passes_with_the_real_promtool(tmp_path):
    proc = run_stack_promtool(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out").exists()
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_stack_promtool_check_fails_on_a_broken_rule(tmp_path):
    proc = run_stack_promtool(tmp_path, lambda rules: rules.replace('expr: "up == 0"', 'expr: "up ==== 0"', 1))
    assert "up ==== 0" in (tmp_path / "in" / "rules.yml").read_text(), "the mutation must apply"
    assert proc.returncode != 0
    assert not (tmp_path / "out").exists()


def run_stack_compose(tmp: Path, edit_compose=lambda text: text) -> subprocess.CompletedProcess:
    """checks.stack-compose on the flake's compose package (docker-compose.yml through edit_compose)."""
    require_tool("docker-compose")
    c = nix_eval(
        f"let o = {OUTPUTS}; c = o.checks.x86_64-linux.stack-compose; in "
        "{ inherit (c) script; files = builtins.mapAttrs (_: e: e.text) c.compose.entries; }"
    )
    files = dict(c["files"], **{"docker-compose.yml": edit_compose(c["files"]["docker-compose.yml"])})
    return run_script(c["script"], tmp, {"compose": str(write_files(tmp / "compose", files))})


def test_stack_compose_check_passes_with_the_real_docker_compose(tmp_path):
    proc = run_stack_compose(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out").exists()


def test_stack_compose_check_fails_on_an_invalid_project(tmp_path):
    proc = run_stack_compose(tmp_path, lambda text: text + "\nservices_typo: {}\n")
    assert proc.returncode != 0
    assert "services_typo" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


def run_stack_amtool(tmp: Path, edit_config=lambda text: text) -> subprocess.CompletedProcess:
    """checks.stack-amtool (issue 17) with its inputs from the flake, run with Debian's amtool."""
    require_tool("amtool")
    c = nix_eval(
        f"let o = {OUTPUTS}; c = o.checks.x86_64-linux.stack-amtool; in "
        "{ inherit (c) script pagingReceiver; config = c.alertmanagerConfig.text; }"
    )
    inputs = write_files(tmp / "in", {"alertmanager.yml": edit_config(c["config"])})
    env = {"alertmanagerConfig": str(inputs / "alertmanager.yml"), "pagingReceiver": c["pagingReceiver"]}
    return run_script(c["script"], tmp, env)


def test_stack_amtool_check_passes_with_the_real_amtool(tmp_path):
    proc = run_stack_amtool(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out").exists()
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_stack_amtool_check_fails_on_a_broken_route(tmp_path):
    proc = run_stack_amtool(tmp_path, lambda text: text.replace("route:", "route:\n  receiver_typo: x", 1))
    assert proc.returncode != 0
    assert not (tmp_path / "out").exists()
