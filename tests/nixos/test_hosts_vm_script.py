"""The two-host VM test's script (nix/tests/hosts.nix), checked offline as tests/nixos/
test_vm_script.py checks nix/tests/vm.nix: it is Python the driver can run, it pipes nothing into
grep (SIGPIPE under pipefail), it names the mapping's units, it makes every key at run time, and
its waits follow the declaration."""

import ast
import re

import pytest

from tests.conftest import nix_eval

TEST = "(import ./nix/tests/hosts.nix { module = { }; })"


@pytest.fixture(scope="module")
def script() -> str:
    return nix_eval(f"{TEST}.testScript")


def test_the_script_is_python(script):
    tree = ast.parse(script)
    called = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert {"wait_until_succeeds", "succeed", "fail", "systemctl"} <= called


def test_no_command_pipes_into_grep(script):
    assert not re.search(r"\|\s*grep", script), [line for line in script.splitlines() if "grep" in line]


def test_the_units_are_the_mappings(script):
    server_units = nix_eval(
        '(import ./nix/stack { overrides = { receiver = { enable = true; certFile = "/c"; keyFile = "/k"; '
        'clientCaFile = "/a"; }; hosts.expected = [ "app1" ]; }; }).nixos.unitNames'
    )
    agent_units = nix_eval(
        '(import ./nix/stack { overrides = { role = "agent"; hosts.name = "app1"; agent = { serverAddress = "m:1"; '
        'certFile = "/c"; keyFile = "/k"; caFile = "/a"; }; }; }).nixos.unitNames'
    )
    assert server_units["receiver"] == "warpwatch-receiver" and agent_units["collector"] == "prometheus"
    for unit in [*server_units.values(), *agent_units.values()]:
        assert f'"{unit}.service"' in script, unit


def test_keys_are_made_at_run_time_and_never_named_from_the_store(script):
    assert "openssl(" in script and "-keyout" in script
    assert "/nix/store" not in script
    assert "BEGIN" not in script, "key material written into the test's source"


def test_the_silence_wait_covers_the_declared_hold(script):
    node = f"({TEST}.nodes.monitor {{ lib = {{ mkForce = x: x; }}; pkgs = {{ }}; }})"
    silence = nix_eval(f"{node}.services.warpwatch.monitoring.overrides.hosts.silentForSeconds")
    scrape = nix_eval("(import ./nix/stack { }).stack.prometheus.scrapeIntervalSeconds")
    (timeout,) = [int(t) for t in re.findall(r'silent \+ " == 1\'", timeout=(\d+)\)', script)]
    # absent for `silence`, then held 4 scrape intervals (nix/stack/render/rules.nix).
    assert timeout > silence + 4 * scrape, (timeout, silence, scrape)
