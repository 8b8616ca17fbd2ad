"""The stack checks of `nix flake check` (nix/checks.nix), run here outside Nix: their scripts and
the files the flake hands them (taken from flake.nix's outputs under the stand-in nixpkgs),
executed with Debian's real promtool and docker-compose."""

import os
import subprocess
from pathlib import Path

from conftest import nix_eval, require_tool
from flake_helpers import OUTPUTS


def run_script(script: str, tmp: Path, env: dict) -> subprocess.CompletedProcess:
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


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def stack_promtool():
    # The script and its inputs: file texts, and the repository paths the store copies come from.
    return nix_eval(
        f"let o = {OUTPUTS}; c = o.checks.x86_64-linux.stack-promtool; in "
        "{ inherit (c) script; alerts = toString c.alerts; alertTests = toString c.alertTests; "
        "prometheusConfig = c.prometheusConfig.text; "
        "rules = c.rules.text; }"
    )


def test_stack_promtool_check_passes_with_the_real_promtool(tmp_path):
    require_tool("promtool")
    c = stack_promtool()
    proc = run_script(
        c["script"],
        tmp_path,
        {
            "prometheusConfig": write(tmp_path / "in" / "prometheus.yml", c["prometheusConfig"]),
            "rules": write(tmp_path / "in" / "rules.yml", c["rules"]),
            "alerts": c["alerts"],
            "alertTests": c["alertTests"],
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out").exists()
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_stack_promtool_check_fails_on_a_broken_rule(tmp_path):
    require_tool("promtool")
    c = stack_promtool()
    proc = run_script(
        c["script"],
        tmp_path,
        {
            "prometheusConfig": write(tmp_path / "in" / "prometheus.yml", c["prometheusConfig"]),
            "rules": write(
                tmp_path / "in" / "rules.yml",
                c["rules"].replace("expr: up == 0", "expr: up ==== 0", 1),
            ),
            "alerts": c["alerts"],
            "alertTests": c["alertTests"],
        },
    )
    assert "up ==== 0" in (tmp_path / "in" / "rules.yml").read_text(), "the mutation must apply"
    assert proc.returncode != 0
    assert not (tmp_path / "out").exists()


def stack_compose():
    return nix_eval(
        f"let o = {OUTPUTS}; c = o.checks.x86_64-linux.stack-compose; in "
        "{ inherit (c) script; files = builtins.mapAttrs (_: e: e.text) c.compose.entries; }"
    )


def materialise(files: dict, root: Path) -> str:
    for rel, text in files.items():
        write(root / rel, text)
    return str(root)


def test_stack_compose_check_passes_with_the_real_docker_compose(tmp_path):
    require_tool("docker-compose")
    c = stack_compose()
    proc = run_script(c["script"], tmp_path, {"compose": materialise(c["files"], tmp_path / "compose")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out").exists()


def test_stack_compose_check_fails_on_an_invalid_project(tmp_path):
    require_tool("docker-compose")
    c = stack_compose()
    files = dict(c["files"])
    files["docker-compose.yml"] += "\nservices_typo: {}\n"
    proc = run_script(c["script"], tmp_path, {"compose": materialise(files, tmp_path / "compose")})
    assert proc.returncode != 0
    assert not (tmp_path / "out").exists()
