"""Every .nix file parses; the declaration and every rendering evaluate offline."""

import subprocess

import pytest

from conftest import ROOT, nix_eval, nix_eval_error, require_tool
from stack_helpers import stack_expr


def test_every_stack_nix_file_parses():
    # scripts/test's nix_parse stage parses every .nix file of the repository; this covers the
    # declaration and its renderers (nixos.nix, the NixOS mapping, is tested with the module).
    tool = require_tool("nix-instantiate")
    files = sorted(p for p in ROOT.glob("nix/stack/**/*.nix") if p.name != "nixos.nix")
    assert any(f.name == "declaration.nix" for f in files)
    for path in files:
        proc = subprocess.run([tool, "--parse", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{path} does not parse:\n{proc.stderr}"


def test_declaration_evaluates_with_derived_fields():
    stack = nix_eval("(import ./nix/stack { }).stack")
    assert stack["activeServiceNames"] == ["warpwatch", "prometheus", "loki", "promtail", "grafana"]
    loki = stack["services"]["loki"]
    assert loki["memoryBytes"] == loki["memoryMiB"] * 1024 * 1024
    assert loki["healthUrl"] == f"http://127.0.0.1:{loki['port']}{loki['healthPath']}"


@pytest.mark.parametrize("shipper", ["promtail", "alloy"])
@pytest.mark.parametrize(
    "body",
    [
        "s.compose.project",
        "s.compose.file",
        "s.configs.rules",
        's.configs.prometheus { target = "compose"; }',
        's.configs.prometheus { target = "host"; }',
        's.configs.loki { target = "compose"; }',
        's.configs.loki { target = "host"; }',
        's.configs.promtail { target = "compose"; }',
        's.configs.promtail { target = "host"; journalPaths = [ "/var/log/journal" "/run/log/journal" ]; }',
        's.configs.grafana { target = "compose"; }',
        's.configs.grafana { target = "host"; dashboardsPath = "/etc/dashboards"; }',
        "s.configs.dashboardFiles",
    ],
)
def test_rendering_evaluates(body, shipper):
    value = nix_eval(stack_expr(body, f'{{ logShipper = "{shipper}"; }}'))
    assert value, f"{body} evaluated to an empty value"


def test_unknown_target_is_rejected_by_name():
    err = nix_eval_error(stack_expr('s.configs.loki { target = "k8s"; }'))
    assert 'configs.loki: target must be "compose" or "host" (got "k8s")' in err
