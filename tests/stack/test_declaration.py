"""The declaration and every rendering evaluate offline (scripts/test's nix_parse stage parses
every .nix file of the repository)."""

import re

import pytest

from tests import spec
from tests.conftest import ROOT, nix_eval, nix_eval_error
from tests.stack.helpers import stack_expr


def test_declaration_evaluates_with_derived_fields():
    stack = nix_eval("(import ./nix/stack { }).stack")
    assert stack["activeServiceNames"] == list(spec.SERVICES)
    loki = stack["services"]["loki"]
    assert loki["memoryBytes"] == spec.MEMORY_MIB["loki"] * spec.MIB
    assert loki["healthUrl"] == f"http://127.0.0.1:{spec.PORTS['loki']}{spec.HEALTH_PATHS['loki']}"


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


def test_every_file_under_nix_stack_is_builtins_only():
    """The directory rule at the top of nix/stack/default.nix: nothing under nix/stack/ reaches
    for nixpkgs (a `<…>` search path, `pkgs`, nixpkgs' `lib.` functions), so a bare
    nix-instantiate evaluates all of it. The NixOS mapping gets lib's priority functions as an
    argument (`lib.mkDefault` is called from nix/module.nix, never imported here)."""
    reaches_nixpkgs = re.compile(r"<[A-Za-z][\w.+-]*(?:/[\w.+-]+)*>|\bpkgs\b|\blib\.(?!nix\b)\w")
    offending = []
    files = sorted((ROOT / "nix" / "stack").rglob("*.nix"))
    assert len(files) > 10, "nix/stack/ holds fewer files than expected"
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            # Without string literals and comments: a regex's (?P<name>...) is not a search path.
            code = re.sub(r"(^|\s)#.*", "", re.sub(r'"(?:\\.|[^"\\])*"', '""', line))
            if reaches_nixpkgs.search(code):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offending == [], "nix/stack/ must evaluate with builtins only:\n" + "\n".join(offending)
