"""The VM test's script (nix/tests/vm.nix), checked offline: the driver runs each command under
`set -euo pipefail`, so a pipe into `grep -q` can die of SIGPIPE, and `journalctl | grep -q .`
passes on "-- No entries --". Journal checks use journalctl's own --grep and assert the text."""

import re

import pytest

from tests.conftest import nix_eval


@pytest.fixture(scope="module", params=["promtail", "alloy"])
def shipper(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def script(shipper) -> str:
    return nix_eval(f'(import ./nix/tests/vm.nix {{ module = {{ }}; logShipper = "{shipper}"; }}).testScript')


def test_no_command_pipes_into_grep(script):
    assert not re.search(r"\|\s*grep", script), [line for line in script.splitlines() if "grep" in line]


def test_journal_checks_grep_in_journalctl_and_assert_the_text(script):
    commands = [line for line in script.splitlines() if "journalctl" in line]
    assert commands, "the VM test reads no journal"
    assert all("--grep=" in line and " -q " in line for line in commands), commands


def test_the_units_are_the_mappings(script, shipper):
    units = nix_eval(f'(import ./nix/stack {{ overrides.logShipper = "{shipper}"; }}).nixos.unitNames')
    for unit in units.values():
        assert f'"{unit}.service"' in script
